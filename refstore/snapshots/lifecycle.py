"""Deleting versions and artifacts, removing aliases, retention and TTLs, on storage without locks.

A deletion is a record, not a removal. ``artifacts/<name>/deleted/<N>.json`` (a *tombstone*: when, by whom,
why, the aliases it took along) is written create-only; the version record stays where it is, sealed and
unchanged. So:

- the version number is never handed out again: a log claims numbers with create-only writes of version
  records, and that record is still there;
- what a run recorded keeps its meaning: lineage still names the version, which reads as deleted;
- deleting races nothing into a torn state: of two deletions of one version one writes the tombstone, the
  other finds it there. Nothing is ever removed in place, which object storage could not do atomically
  beside a concurrent reader.

A deleted version is not *read*: ``get`` raises :class:`~refstore.DeletedVersionError`, ``versions`` and
``latest`` leave it out (``latest`` names the highest version that is not deleted), and gc no longer counts
what it references, so the next ``gc --yes`` frees the bytes only it held, with gc's usual protocol against
concurrent logs (see :mod:`.gc`). Readers list the tombstones *before* the version records: a version
that was live when the listing began is never missed, so ``latest`` names nothing only when every version
is deleted.

Aliases and deletion, without a lock. Aliases are create-only records too (:mod:`.aliases`), and every
change of one is a compare-and-swap. The two sides each write first, then read what the other wrote:

- pointing an alias at vN writes the alias record, *then* reads vN's tombstone; if it is there, it removes
  the alias again (only if it still points at vN) and fails with ``DeletedVersionError``;
- deleting vN writes the tombstone, *then* reads every alias and removes those that point at vN.

Whichever write came second, its writer's read sees the other's write: an alias is never left pointing at a
deleted version by two processes that finish. (One that dies between its write and its read can leave
one; a reader treats an alias whose version is deleted as absent, and the next deletion or gc removes it.)
A delete refuses, before writing anything, while aliases other than ``latest`` point at the version, unless
``force``; an alias pointed at it by a process racing the delete is removed all the same, and its records say
so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..core.exceptions import (
    AliasedVersionError,
    ArtifactNotFoundError,
    DeletedVersionError,
)
from ..core.names import check_alias, check_name, is_name
from ..core.records import Tombstone, actor, record_numbers
from ..storage.store import Store
from . import aliases, edits
from .intents import listing

if TYPE_CHECKING:
    from .registry import Registry
    from .version import ArtifactVersion

__all__ = [
    "Expiry",
    "delete",
    "delete_artifact",
    "delete_each",
    "deleted_numbers",
    "expiring",
    "retain",
    "tombstone_of",
    "unalias",
    "used_by_run",
]

#: Why a version was deleted (the tombstone's ``reason``).
DELETED, REMOVED_ARTIFACT, RETENTION, TTL = "deleted", "artifact removed", "retention", "ttl"


def folder(name: str) -> str:
    return f"artifacts/{name}/deleted"


def deleted_numbers(store: Store, name: str) -> set[int]:
    """The numbers of ``name``'s deleted versions (list these before the version records, see above)."""
    return set(record_numbers(store.list(folder(name))))


def tombstone_of(store: Store, name: str, version: int) -> Tombstone | None:
    """The tombstone of ``name:v<version>``; None when the version is not deleted (one listing: cheaper
    than reading a key that is not there, which s3fs makes four requests)."""
    if version not in deleted_numbers(store, name):
        return None
    relative = f"{folder(name)}/{version}.json"
    data = store.read_if_there(relative, created=True)
    return None if data is None else Tombstone.from_bytes(data, store.url_of(relative), name, version)


def delete(registry: Registry, ref: str, *, force: bool = False, reason: str = DELETED) -> ArtifactVersion:
    """Delete the version ``ref`` names (see the module docstring); the deleted version, whose
    ``deleted`` tombstone lists the aliases removed with it."""
    store = registry.store
    record = registry._resolve(ref)
    name, number = record.name, record.version
    pointing = sorted(a for a, r in aliases.heads(store, name).items() if r.version == number)
    if pointing and not force:
        raise AliasedVersionError(
            f"{name}:v{number}: {', '.join(pointing)} point{'s' if len(pointing) == 1 else ''} at it; "
            "move or remove them first, or delete with force=True (--force) to remove them too"
        )
    tombstone = Tombstone(name, number, _now().isoformat(), actor(), reason, pointing)
    try:
        store.create(f"{folder(name)}/{number}.json", tombstone.to_bytes())
    except FileExistsError:
        raise DeletedVersionError(f"{name}:v{number} was deleted by another process meanwhile") from None
    remove_aliases_of(store, name, number)
    return registry._version(record, deleted=tombstone)


def remove_aliases_of(store: Store, name: str, number: int) -> list[str]:
    """Remove every alias that points at ``name:v<number>`` (a compare-and-swap each); those removed."""
    removed = []
    for alias, record in aliases.heads(store, name).items():
        if record.version == number and aliases.remove(store, name, alias, only_from=number):
            removed.append(alias)
    return removed


def point_alias(store: Store, name: str, number: int, alias: str) -> None:
    """Point ``alias`` at ``name:v<number>``, never leaving it on a version deleted meanwhile."""
    aliases.point(store, name, alias, number)
    tombstone = tombstone_of(store, name, number)
    if tombstone is not None:
        aliases.remove(store, name, alias, only_from=number)
        raise DeletedVersionError(
            f"{name}:v{number} was deleted ({_when(tombstone)}) as {alias} was moved to it"
        )


def delete_artifact(registry: Registry, name: str) -> list[ArtifactVersion]:
    """Delete every version of ``name`` (oldest first, so that ``latest`` stays readable until the last)
    and remove its aliases; the versions deleted. A version logged meanwhile survives."""
    deleted = []
    for version in registry.versions(name):
        with contextlib.suppress(DeletedVersionError):  # another process was quicker
            deleted.append(delete(registry, version.qualified_name, force=True, reason=REMOVED_ARTIFACT))
    for alias in aliases.heads(registry.store, name):  # any left pointing at a version deleted earlier
        aliases.remove(registry.store, name, alias)
    return deleted


def unalias(registry: Registry, name: str, alias: str) -> ArtifactVersion:
    """Remove ``alias`` from ``name``; the version it pointed at."""
    check_name(name)
    check_alias(alias)
    previous = aliases.remove(registry.store, name, alias)
    if previous is None or previous.version is None:
        raise ArtifactNotFoundError(f"{name}:{alias}: no such alias in {registry.root}")
    return registry._version(registry._record(name, previous.version))


def retain(
    registry: Registry,
    name: str,
    *,
    keep_last: int | None = None,
    keep_aliased: bool = True,
    older_than: timedelta | None = None,
    dry_run: bool = False,
) -> list[ArtifactVersion]:
    """Delete the versions of ``name`` the policy does not keep; those deleted (with ``dry_run``, those it
    would delete). Kept: the ``keep_last`` newest; with ``keep_aliased`` every version an alias points at,
    ``latest`` included; with ``older_than`` every version logged more recently than that."""
    if keep_last is None and older_than is None:
        raise ValueError(f"{name}: retain needs keep_last, older_than or both (else it would delete all)")
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"{name}: keep_last must be 0 or more, not {keep_last}")
    versions = registry.versions(name)
    kept = {v.version for v in versions[len(versions) - keep_last :]} if keep_last else set()
    if keep_aliased:
        kept |= {r.version for r in aliases.heads(registry.store, name).values() if r.version is not None}
        kept.add(versions[-1].version)
    cutoff = None if older_than is None else _now() - older_than
    doomed = [
        v
        for v in versions
        if v.version not in kept and (cutoff is None or datetime.fromisoformat(v.created_at) <= cutoff)
    ]
    if dry_run:
        return doomed
    return delete_each(registry, doomed, force=not keep_aliased, reason=RETENTION)


def delete_each(
    registry: Registry, versions: list[ArtifactVersion], *, force: bool = False, reason: str = DELETED
) -> list[ArtifactVersion]:
    """Delete each of ``versions`` that is still there (and, unless ``force``, not aliased since it was
    chosen); those deleted."""
    deleted = []
    for version in versions:
        with contextlib.suppress(DeletedVersionError, AliasedVersionError):  # changed since it was chosen
            deleted.append(delete(registry, version.qualified_name, force=force, reason=reason))
    return deleted


@dataclass(frozen=True, slots=True)
class Expiry:
    """Versions whose TTL has passed: those gc deletes, and those kept because aliases point at them."""

    expired: list[ArtifactVersion]
    aliased: list[ArtifactVersion]


def expiring(registry: Registry, now: datetime | None = None) -> Expiry:
    """The versions whose TTL (``created_at`` + ``ttl``) has passed by ``now``."""
    now = now or _now()
    expired: list[ArtifactVersion] = []
    aliased: list[ArtifactVersion] = []
    for name in registry.artifacts():
        newest = edits.newest_edits(registry.store, name)
        pointed = {r.version for r in aliases.heads(registry.store, name).values()}
        for version in registry.versions(name):
            values = edits.values_of(
                version.record, edits.newest_from(registry.store, version.record, newest)
            )
            if values.ttl_seconds is None:
                continue
            if datetime.fromisoformat(version.created_at) + timedelta(seconds=values.ttl_seconds) <= now:
                (aliased if version.version in pointed else expired).append(version)
    return Expiry(expired, aliased)


def used_by_run(registry: Registry, run_path: str) -> list[ArtifactVersion]:
    """The versions the run ``run_path`` used (lineage), deleted ones included (their ``.deleted`` set)."""
    key = run_path.replace("/", "~")
    found = []
    for name in registry.store.list("artifacts"):
        if not is_name(name):
            continue
        base = f"artifacts/{name}/lineage"
        used = sorted({int(p.split("/")[-2]) for p in listing(registry.store, [base]) if _used(p, base, key)})
        for number in used:
            record = registry._record(name, number)
            found.append(registry._version(record, deleted=tombstone_of(registry.store, name, number)))
    return found


def _used(path: str, base: str, key: str) -> bool:
    number, _, run = path.removeprefix(base + "/").partition("/")
    return run == key and number.isascii() and number.isdigit()


def _when(tombstone: Tombstone) -> str:
    return f"{tombstone.deleted_at} by {tombstone.deleted_by}"


def _now() -> datetime:
    return datetime.now(timezone.utc)
