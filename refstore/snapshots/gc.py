"""Garbage collection: delete the manifests and blobs that no version references, safely beside live logs.

What is garbage. ``manifests/`` and ``blobs/`` hold what versions point at. A log that dies half-way (blobs
uploaded, no version claimed) leaves objects nothing references; so does content that was staged and then
logged as an unchanged version. Run files keep their bytes in ``blobs/`` too: every run file state is a
reference (:mod:`refstore.snapshots.run_refs`, which tells why a run pushing beside gc never loses a blob),
and the bytes of a deleted run are garbage once nothing else references them. Version records, aliases,
lineage and run records are never collected.

Deleted versions (a tombstone, see :mod:`refstore.snapshots.lifecycle`) reference nothing: ``versions()``
leaves them out, so what only they held is garbage. First, gc deletes the versions whose TTL has passed
(not those an alias points at), so the same run frees what only they held.

Why not a grace period on modification times. "Keep whatever was written in the last hour" protects the
objects a running log has *uploaded*, but not the ones it *reuses*: ``Registry.log`` skips uploading a blob or
a manifest that already exists, and an old orphan with the same content is exactly such an object. A gc
that decided the orphan was garbage deletes it a moment after the log checked that it exists, and the new
version points at nothing. Clocks (the machine's, the store's) would also have to agree.

The protocol instead (the two sides each write first, then read what the other wrote):

- **A log** first writes an *intent* (``intents/<id>.json``: the manifest and blob paths it is about to
  rely on), only then checks, uploads and claims its version, and deletes the intent at the end.
- **gc** (1) lists the candidates, (2) reads the intents and then every version's manifest (the *mark*),
  (3) moves each unreferenced candidate to ``trash/`` (the *write*), (4) reads the intents again and then
  the versions again, (5) moves back whatever step 4 found referenced and deletes the rest of the trash.

Why nothing a version references is lost. Take an object X that a version V needs and gc trashed in step 3.
V's log wrote its intent I before it checked for X. If it checked before X went to the trash, I was
written before step 4 started: step 4 sees I, or, if I is gone already, V itself (the log deletes I only
after claiming V, and step 4 reads the versions after the intents); either way X comes back in step 5. If
the log checked after X went to the trash, it found X missing and uploaded it again. Reading intents first
and versions second is what closes the gap between "intent deleted" and "version visible". A reader never
sees a trashed object of an existing version: step 2 saw every version that existed when step 3 began.

What it assumes. The store is strongly consistent (S3, GCS, Azure and local disks are). An intent older than
``intent_expiry`` (``$REFSTORE_INTENT_TTL``, else 7 days) belongs to a log that crashed: it stops protecting
anything and gc deletes it. The expiry must exceed the longest log: a live log's intent that expired no longer
keeps what the log reuses. The report says what each live intent protects and until when.
One gc at a time: gc holds ``gc.lock`` (create-only). A lock whose holder is certainly dead (same host,
boot and PID namespace, its process gone: :mod:`refstore.core.liveness`) is taken over at once; any other lock
older than a day is taken as abandoned. A gc that dies between steps 3 and 5 leaves objects in ``trash/``,
some of which a version may rely on (a log that checked them before step 3 and claimed its version after):
any reader that finds a version's manifest in ``trash/`` puts it back with the stored copies it names
(:func:`recover_manifest`), and the next gc puts back whatever is referenced and deletes the rest.
Without ``yes=True`` (``refstore gc --yes``) gc only reports what it would delete.

Temporary files. Writes to a registry on a local or shared filesystem go through ``<name>.tmp-<pid>-<hex>``
files renamed into place; a writer killed mid-write leaves one behind (a full disk no longer does: the
write removes it). gc deletes those unchanged for :data:`TEMP_EXPIRY` (a day) and reports them: a writer's
file changes while it writes and is renamed the moment it is complete, so a day-old one has no writer, and
should a writer stopped for a day wake up, its rename fails loudly instead of losing anything. Object stores
write whole objects and leave none.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..core import liveness
from ..core.bounded_json import parse
from ..core.chunks import stored_digests
from ..core.exceptions import ArtifactNotFoundError, ConflictError, IntegrityError, RefstoreError
from ..core.loop import run_sync
from ..core.manifest import Manifest, canonical_json
from ..storage.quarantine import QUARANTINE
from ..storage.store import Store
from .intents import (
    TRASH,
    copy_paths,
    log_intent,
    manifest_path,
)
from .intents import (
    listing as _listing,
)
from .intents import (
    remove as _remove,
)
from .intents import (
    restore as _restore,
)
from .intents import (
    run_all as _run_all,
)
from .intents import (
    trash_leftovers as _trash_leftovers,
)
from .lifecycle import TTL, delete_each, expiring
from .run_refs import RunReferences

if TYPE_CHECKING:
    from .registry import Registry
    from .version import ArtifactVersion

__all__ = ["GCReport", "InFlightLog", "collect_garbage", "intent_ttl", "log_intent", "parse_duration"]

INTENT_EXPIRY = timedelta(days=7)
LOCK_EXPIRY = timedelta(days=1)
#: Temporary files unchanged for this long are left by dead writers (see the module docstring).
TEMP_EXPIRY = timedelta(days=1)
#: Tests only: a file gc creates after moving garbage to ``trash/``, where it then waits to be killed.
HOLD_AFTER_TRASH = "REFSTORE_TEST_GC_HOLD_AFTER_TRASH"
COLLECTED = ("manifests", "blobs")
LOCK = "gc.lock"


@dataclass(frozen=True, slots=True)
class InFlightLog:
    """A live log intent gc honoured: what it names, and until when it protects it."""

    intent: str  #: registry-relative path, ``intents/<id>.json``
    created_at: datetime
    expires_at: datetime
    #: Every path the log relies on (some may not be uploaded yet).
    paths: list[str]
    #: Of the objects gc found, those that nothing but this intent keeps (else they would be garbage).
    kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "paths": self.paths,
            "kept": self.kept,
        }


@dataclass(frozen=True, slots=True)
class GCReport:
    """What one gc run deleted (or, in a dry run, would delete): registry-relative paths."""

    dry_run: bool
    manifests: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    size: int = 0
    #: Trashed objects that a concurrent log turned out to need, moved back.
    restored: list[str] = field(default_factory=list)
    #: Objects a crashed gc left in the trash, put back or deleted by this run (a dry run only lists them).
    leftovers: list[str] = field(default_factory=list)
    expired_intents: list[str] = field(default_factory=list)
    #: Logs in flight (their intents not expired): what they protect and until when.
    in_flight: list[InFlightLog] = field(default_factory=list)
    #: How long an intent protects its paths (``intent_expiry``).
    intent_expiry: timedelta = INTENT_EXPIRY
    #: Temporary files of dead writers (unchanged for :data:`TEMP_EXPIRY`), deleted (or to delete).
    temp_files: list[str] = field(default_factory=list)
    #: Blobs found corrupt on read and moved to ``quarantine/`` (:mod:`refstore.storage.quarantine`): never
    #: deleted by gc, listed so that someone looks at them.
    quarantined: list[str] = field(default_factory=list)
    #: Versions whose TTL has passed, deleted (or to delete) before collecting: ``name:vN``.
    expired: list[str] = field(default_factory=list)
    #: Versions whose TTL has passed, kept because aliases point at them.
    expired_aliased: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "size": self.size,
            "restored": self.restored,
            "leftovers": self.leftovers,
            "expired_intents": self.expired_intents,
            "in_flight": [log.to_json() for log in self.in_flight],
            "intent_expiry_seconds": self.intent_expiry.total_seconds(),
            "temp_files": self.temp_files,
            "quarantined": self.quarantined,
            "expired": self.expired,
            "expired_aliased": self.expired_aliased,
        }


# -- the log's side -------------------------------------------------------------------------------------


# -- gc's side ------------------------------------------------------------------------------------------


def collect_garbage(
    registry: Registry, *, yes: bool = False, intent_expiry: timedelta | None = None
) -> GCReport:
    """Delete (with ``yes=True``; else only report) the manifests and blobs that no version references.

    ``intent_expiry``: how long a log's intent protects what it names (default :func:`intent_ttl`).
    """
    expiry = intent_ttl() if intent_expiry is None else intent_expiry
    store = registry.store
    runs = RunReferences(store)  # run file states are references too
    due = expiring(registry)  # versions whose TTL has passed (see refstore.snapshots.lifecycle)
    aliased = [v.qualified_name for v in due.aliased]
    if not yes:
        candidates = _listing(store, COLLECTED)
        marks = _references(registry, expiry, runs, skip=due.expired)
        leftovers, temp_files = _trash_leftovers(store), _stale_temp_files(store)
        report = _report(
            True,
            candidates,
            marks,
            expiry,
            leftovers=leftovers,
            temp_files=temp_files,
            quarantined=_listing(store, [QUARANTINE]),
        )
        return replace(report, expired=[v.qualified_name for v in due.expired], expired_aliased=aliased)
    with _gc_lock(store):
        expired = delete_each(registry, due.expired, reason=TTL)  # not those aliased meanwhile
        leftovers = _trash_leftovers(store)
        candidates = _listing(store, COLLECTED)
        marks = _references(registry, expiry, runs)
        garbage = sorted(set(candidates) - marks.keep)
        _run_all(store.backend.move(store.full(p), store.full(f"{TRASH}/{p}")) for p in garbage)
        _hold_for_tests()
        keep_now = _references(registry, expiry, runs).keep
        restored = _empty_trash(store, sorted({*garbage, *leftovers}), keep_now)
        _delete_all(store, marks.expired)
        temp_files = _stale_temp_files(store)
        _delete_all(store, temp_files)
        gone = set(garbage) - set(restored)
        report = _report(
            False,
            candidates,
            marks,
            expiry,
            gone=gone,
            restored=restored,
            leftovers=leftovers,
            temp_files=temp_files,
            quarantined=_listing(store, [QUARANTINE]),
        )
        return replace(report, expired=[v.qualified_name for v in expired], expired_aliased=aliased)


def _report(
    dry_run: bool,
    candidates: dict[str, int],
    marks: _Marks,
    expiry: timedelta,
    *,
    gone: set[str] | None = None,
    restored: Iterable[str] = (),
    leftovers: Iterable[str] = (),
    temp_files: Iterable[str] = (),
    quarantined: Iterable[str] = (),
) -> GCReport:
    """``gone``: what was deleted (default: what a dry run would delete)."""
    garbage = sorted(set(candidates) - marks.keep if gone is None else gone)
    in_flight = [
        InFlightLog(
            intent,
            created,
            created + expiry,
            paths,
            sorted(p for p in set(paths) & set(candidates) if p not in marks.versions),
        )
        for intent, created, paths in marks.intents
    ]
    return GCReport(
        dry_run=dry_run,
        manifests=[p for p in garbage if p.startswith("manifests/")],
        blobs=[p for p in garbage if p.startswith("blobs/")],
        size=sum(candidates[p] for p in garbage),
        restored=sorted(restored),
        leftovers=sorted(leftovers),
        expired_intents=sorted(marks.expired),
        in_flight=in_flight,
        intent_expiry=expiry,
        temp_files=sorted(temp_files),
        quarantined=sorted(quarantined),
    )


@dataclass(frozen=True, slots=True)
class _Marks:
    """What gc found referenced: by versions and run file states, and by live intents ``(path, created_at,
    paths)``."""

    versions: set[str]
    intents: list[tuple[str, datetime, list[str]]]
    expired: list[str]

    @property
    def keep(self) -> set[str]:
        return self.versions.union(*(paths for _, _, paths in self.intents))


def _references(
    registry: Registry, intent_expiry: timedelta, runs: RunReferences, skip: Iterable[ArtifactVersion] = ()
) -> _Marks:
    """Paths that live intents, versions and run file states rely on (intents read before versions), and
    the expired intents. ``skip``: versions not counted (a dry run's expired ones)."""
    intents, expired = _intent_references(registry.store, intent_expiry)
    versions: set[str] = set()
    skipped = set(skip)
    for name in registry.artifacts():
        for version in registry.versions(name):
            if version in skipped:
                continue
            manifest = _manifest_of(version, registry.store)
            versions.update(map(manifest_path, stored_digests(manifest)))  # a chunked one's chunks too
            versions.update(copy_paths(manifest))
    versions.update(runs.blobs())
    return _Marks(versions, intents, expired)


def _manifest_of(version: ArtifactVersion, store: Store) -> Manifest:
    """A version's manifest; one a gc moved to the trash just before the version appeared is put back
    (:func:`recover_manifest`, through the registry)."""
    try:
        return version.manifest
    except ArtifactNotFoundError:
        raise ArtifactNotFoundError(f"{version.qualified_name}: its manifest is missing") from None


def _intent_references(
    store: Store, expiry: timedelta
) -> tuple[list[tuple[str, datetime, list[str]]], list[str]]:
    live: list[tuple[str, datetime, list[str]]] = []
    expired: list[str] = []
    oldest = _now() - expiry
    for name in store.list("intents"):
        relative = f"intents/{name}"
        try:
            body = parse(store.read(relative), store.url_of(relative), "log intent")
            created, paths = datetime.fromisoformat(body["created_at"]), body["paths"]
            paths = sorted(p for p in paths if isinstance(p, str))
            is_expired = created < oldest  # TypeError for a time without a zone
        except FileNotFoundError:
            continue  # its log finished since the listing: its version is read after this
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}; gc stops") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"{store.url_of(relative)}: unreadable log intent ({exc}); gc stops"
            ) from None
        if is_expired:
            expired.append(relative)
        else:
            live.append((relative, created, paths))
    return live, expired


# -- how long an intent protects ------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``"7d"``, ``"36h"``, ``"90m"``, ``"600s"``, ``"1w"`` or plain seconds (``"3600"``); positive."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a positive duration such as 7d, 36h, 90m or 3600")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


def intent_ttl() -> timedelta:
    """How long a log intent protects what it names: ``$REFSTORE_INTENT_TTL``, else :data:`INTENT_EXPIRY`."""
    setting = os.environ.get("REFSTORE_INTENT_TTL", "").strip()
    if not setting:
        return INTENT_EXPIRY
    try:
        return parse_duration(setting)
    except ValueError as exc:
        raise RefstoreError(f"REFSTORE_INTENT_TTL: {exc}") from None


def _empty_trash(store: Store, trashed: list[str], keep: set[str]) -> list[str]:
    """Put back what ``keep`` names (unless a log uploaded it again meanwhile); delete the rest."""
    restored = [p for p in trashed if p in keep]
    _run_all(_restore(store, p) for p in restored)
    _delete_all(store, [f"{TRASH}/{p}" for p in trashed if p not in keep])
    return restored


def _hold_for_tests() -> None:
    """Tests only (:data:`HOLD_AFTER_TRASH`): say so in a file, then wait to be killed right here."""
    marker = os.environ.get(HOLD_AFTER_TRASH)
    if marker:
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
        while True:
            time.sleep(1)


def _stale_temp_files(store: Store) -> list[str]:
    """Registry-relative paths of temporary files left by dead writers (see the module docstring)."""
    found = run_sync(store.backend.stale_temp_files, store.base, TEMP_EXPIRY.total_seconds())
    return sorted(p[len(store.base) + 1 :] for p in found if p.startswith(store.base + "/"))


def _delete_all(store: Store, relatives: Iterable[str]) -> None:
    _run_all(_remove(store, p) for p in relatives)


@contextlib.contextmanager
def _gc_lock(store: Store) -> Iterator[None]:
    """``gc.lock``, written create-only; one whose holder is certainly dead, or older than
    :data:`LOCK_EXPIRY`, is taken as abandoned."""
    body = {"created_at": _now().isoformat(), **liveness.identity()}
    try:
        store.create(LOCK, canonical_json(body))
    except FileExistsError:
        _break_abandoned_lock(store)
        try:
            store.create(LOCK, canonical_json(body))
        except FileExistsError:
            raise ConflictError(f"{store.url_of(LOCK)}: another gc took the lock first") from None
    try:
        yield
    finally:
        store.delete(LOCK)


def _break_abandoned_lock(store: Store) -> None:
    """Delete ``gc.lock`` if its holder is certainly dead or it expired; else :class:`ConflictError`."""
    try:
        data = store.read_created(LOCK)
    except FileNotFoundError:
        return
    try:
        holder = parse(data, store.url_of(LOCK), "gc lock")
        age = _now() - datetime.fromisoformat(holder["created_at"])  # TypeError for a time without a zone
    except (ValueError, KeyError, TypeError):  # IntegrityError included
        holder, age = {}, LOCK_EXPIRY  # unreadable: as good as abandoned
    if age < LOCK_EXPIRY and not liveness.is_dead(holder):
        raise ConflictError(
            f"{store.url_of(LOCK)}: another gc is running (since {holder.get('created_at')}, "
            f"host {holder.get('host')}, pid {holder.get('pid')}); delete the lock if it crashed"
        )
    with contextlib.suppress(FileNotFoundError):
        if store.read_created(LOCK) != data:  # another gc broke it and holds its own: not ours to delete
            raise ConflictError(f"{store.url_of(LOCK)}: another gc took the lock first")
        store.delete(LOCK)


def _now() -> datetime:
    return datetime.now(timezone.utc)
