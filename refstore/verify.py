"""Checking a version against live storage from metadata alone: never a body download.

Entries are grouped by the folder that holds them. A group of several entries on a backend whose listings
carry every object's metadata (S3, GCS, Azure) is checked with **one listing** of its topmost folder, which
costs one request per 1,000 objects instead of one HEAD per entry; a lone entry, a backend without such
listings (HTTP, local files) and a folder that holds far more objects than the group checks
(:data:`LISTING_BUDGET` per entry) get one stat per entry instead.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._exceptions import TooManyObjectsError
from ._sync import gather_limited, run_sync
from .backends import Backend, ObjectMeta
from .download import Downloader
from .manifest import ManifestEntry

CONCURRENCY = 32
#: A listing is given up for one stat per entry once it holds this many objects per entry it checks.
LISTING_BUDGET = 100


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Each entry checked against live storage: sorted logical paths."""

    ok: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not (self.changed or self.missing)

    def to_json(self) -> dict[str, list[str]]:
        return {"ok": self.ok, "changed": self.changed, "missing": self.missing}


@dataclass(frozen=True, slots=True)
class _Check:
    """One entry to check: its logical path, where it lives, and what the manifest pinned."""

    path: str
    backend: Backend
    pin: ObjectMeta

    @property
    def location(self) -> str:
        return self.backend.path(self.pin.url)


def verify_entries(entries: Iterable[ManifestEntry], downloader: Downloader) -> VerifyReport:
    """Compare every entry with the current metadata of its object (listings where cheaper, else stats)."""
    checks = [_Check(e.path, *downloader.source(e)) for e in entries]
    jobs = [_check_folder(folder, group) for folder, group in _by_folder(checks)]
    jobs += [_check_one(c) for c in checks if not _listable(c)]
    states: dict[str, str] = {}
    for result in run_sync(gather_limited, jobs, CONCURRENCY):
        states.update(result)
    report = VerifyReport()
    for path in sorted(states):
        getattr(report, states[path]).append(path)
    return report


def _listable(check: _Check) -> bool:
    return check.backend.lists_metadata


def _by_folder(checks: list[_Check]) -> list[tuple[str, list[_Check]]]:
    """Listable entries grouped under their topmost folder, per backend (nested folders merge upwards)."""
    per_backend: dict[int, list[_Check]] = defaultdict(list)
    for check in filter(_listable, checks):
        per_backend[id(check.backend)].append(check)
    groups: list[tuple[str, list[_Check]]] = []
    for members in per_backend.values():
        groups += _merge_nested(sorted(members, key=lambda c: _parent(c).split("/")))
    return groups


def _merge_nested(members: list[_Check]) -> list[tuple[str, list[_Check]]]:
    """Checks sorted by folder, each joined to the group of the folder above it when there is one."""
    groups: list[tuple[str, list[_Check]]] = []
    for check in members:
        parent = _parent(check)
        if groups and (parent == groups[-1][0] or parent.startswith(groups[-1][0] + "/")):
            groups[-1][1].append(check)
        else:
            groups.append((parent, [check]))
    return groups


def _parent(check: _Check) -> str:
    return posixpath.dirname(check.location)


async def _check_folder(folder: str, group: list[_Check]) -> dict[str, str]:
    """One listing of ``folder`` for the whole group; a lone entry or an oversized folder: stats."""
    backend = group[0].backend
    if len(group) > 1:
        try:
            listed = await backend.list_prefix(folder, max_objects=LISTING_BUDGET * len(group))
        except TooManyObjectsError:
            pass
        else:
            current = {backend.path(meta.url): meta for meta in listed}
            return {c.path: drift(c.pin, current.get(c.location)) for c in group}
    results: dict[str, str] = {}
    for partial in await gather_limited([_check_one(c) for c in group], CONCURRENCY):
        results.update(partial)
    return results


async def _check_one(check: _Check) -> dict[str, str]:
    return {check.path: drift(check.pin, await check.backend.stat(check.location))}


def drift(pin: ObjectMeta, current: ObjectMeta | None) -> str:
    """``"ok"``, ``"changed"`` or ``"missing"``: the current metadata of an object against its pin.

    Sizes are compared, ETags where both sides have one, and digests where both use the same algorithm (a
    copy pinned by xxh3_128 in an S3 registry is compared by size and ETag only). A location-only pin
    (``checksum=False``) is ok as long as something is there.
    """
    if current is None:
        return "missing"
    if (pin.digest or "").startswith("ref:"):
        return "ok"
    same = current.size == pin.size
    if pin.etag is not None and current.etag is not None:
        same = same and current.etag == pin.etag
    if pin.digest and current.digest and _algorithm(pin.digest) == _algorithm(current.digest):
        same = same and current.digest == pin.digest
    return "ok" if same else "changed"


def _algorithm(digest: str) -> str:
    return digest.split(":", 1)[0]
