"""Checking a version against live storage from metadata alone (never a body download), or a downloaded
folder against the manifest (no request at all).

Against storage, entries are grouped by the folder that holds them. A group of several entries on a
backend whose listings carry every object's metadata (S3, GCS, Azure) is checked with **one listing** of its
topmost folder, which costs one request per 1,000 objects instead of one HEAD per entry; a lone entry, a
backend without such listings (HTTP, local files) and a folder that holds far more objects than the group
checks (:data:`LISTING_BUDGET` per entry) get one stat per entry instead. Then only the entries that drifted
(or whose current version is not the pinned one) are probed for their pinned version: one metadata request
each (a HEAD of the S3 version, the GCS generation, a conditional Azure or HTTP HEAD), never a body, so that
"the source moved on but the pinned bytes are still there" is told apart from "the bytes are gone".
"""

from __future__ import annotations

import asyncio
import functools
import os
import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.exceptions import ObjectChangedError, ObjectNotFoundError, TooManyObjectsError
from ..core.loop import gather_limited, run_sync
from ..core.manifest import ManifestEntry
from ..storage.backends import Backend, ObjectMeta
from ..storage.download import Downloader, check_no_clashes, destination
from ..storage.local_folder import scan

CONCURRENCY = 32
#: A listing is given up for one stat per entry once it holds this many objects per entry it checks.
LISTING_BUDGET = 100


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Each entry checked against live storage, or against a local folder: sorted logical paths.

    ``ok`` / ``changed`` / ``missing``: what stands at each entry's place now, compared with the manifest.
    ``unretrievable`` (storage checks): the entries whose pinned bytes the source no longer serves, so
    that a download of the version fails; an entry can be ``changed`` or ``missing`` and still retrievable
    (a versioned bucket keeps the pinned version). ``extra`` and ``unverified`` (folder checks): files
    the version does not hold, and files of the pinned size whose bytes cannot be checked without the
    source (no content hash of theirs is known on this machine). ``bool(report)``: nothing changed or
    went missing.
    """

    ok: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unretrievable: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not (self.changed or self.missing)

    @property
    def retrievable(self) -> bool:
        """Whether every entry's pinned bytes can still be fetched (always true for a folder check, which
        asks the source nothing)."""
        return not self.unretrievable

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "missing": self.missing,
            "unretrievable": self.unretrievable,
            "retrievable": self.retrievable,
            "extra": self.extra,
            "unverified": self.unverified,
        }


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
    """Compare every entry with the current metadata of its object (listings where cheaper, else stats),
    then probe the pinned version of each entry that drifted."""
    checks = [_Check(e.path, *downloader.source(e)) for e in entries]
    jobs = [_check_folder(folder, group) for folder, group in _by_folder(checks)]
    jobs += [_check_one(c) for c in checks if not _listable(c)]
    results: dict[str, _Result] = {}
    for result in run_sync(gather_limited, jobs, CONCURRENCY):
        results.update(result)
    to_probe = [c for c in checks if results[c.path][1] == "probe"]
    found = run_sync(gather_limited, [_pinned_readable(c) for c in to_probe], CONCURRENCY)
    gone = [c.path for c, readable in zip(to_probe, found, strict=True) if not readable]
    gone += [path for path, (_, retrieval) in results.items() if retrieval == "gone"]
    report = VerifyReport(unretrievable=sorted(gone))
    for path in sorted(results):
        getattr(report, results[path][0]).append(path)
    return report


def verify_folder(entries: Iterable[ManifestEntry], root: Path, downloader: Downloader) -> VerifyReport:
    """Compare the folder ``root`` with the entries, locally: no request to any source."""
    entries = list(entries)
    top = os.fspath(root.expanduser().absolute())
    if not os.path.isdir(top):
        raise ObjectNotFoundError(f"{top}: no such folder to verify")
    check_no_clashes(e.path for e in entries)
    real = functools.lru_cache(maxsize=None)(os.path.realpath)
    for entry in entries:  # a manifest from elsewhere never makes us read outside the folder
        destination(top, entry.path, realpath=real)
    state = scan(top, entries, cache=downloader.cache, protected=downloader.protected_folders())
    return VerifyReport(
        ok=state.paths("ok"),
        changed=state.paths("changed", "link", "folder", "special"),
        missing=state.paths("missing"),
        extra=state.extra,
        unverified=state.paths("undecided"),
    )


async def _pinned_readable(check: _Check) -> bool:
    """Whether the pinned version of ``check`` can still be read: one metadata request, no body."""

    def probe() -> bool:
        try:
            check.backend.open_pinned(check.pin).close()
        except (ObjectChangedError, FileNotFoundError):
            return False
        return True

    return await asyncio.to_thread(probe)


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


#: An entry's state (``ok``, ``changed``, ``missing``) and what that says about its pinned bytes:
#: ``None`` (still there), ``"probe"`` (ask for the pinned version) or ``"gone"``.
_Result = tuple[str, str | None]


async def _check_folder(folder: str, group: list[_Check]) -> dict[str, _Result]:
    """One listing of ``folder`` for the whole group; a lone entry or an oversized folder: stats."""
    backend = group[0].backend
    if len(group) > 1:
        try:
            listed = await backend.list_prefix(folder, max_objects=LISTING_BUDGET * len(group))
        except TooManyObjectsError:
            pass
        else:
            current = {backend.path(meta.url): meta for meta in listed}
            return {c.path: _result(c.pin, current.get(c.location)) for c in group}
    results: dict[str, _Result] = {}
    for partial in await gather_limited([_check_one(c) for c in group], CONCURRENCY):
        results.update(partial)
    return results


async def _check_one(check: _Check) -> dict[str, _Result]:
    return {check.path: _result(check.pin, await check.backend.stat(check.location))}


def _result(pin: ObjectMeta, current: ObjectMeta | None) -> _Result:
    """The drift of an object, and what it says about its pinned bytes. A pin without a version id is
    read from the current object, so drift means they are gone; a versioned pin that drifted, or whose
    object is now another version (maybe the same bytes, but the pinned version may be gone), is probed."""
    state = drift(pin, current)
    if pin.version_id is None:
        return state, None if state == "ok" else "gone"
    other_version = current is not None and current.version_id not in (None, pin.version_id)
    return state, "probe" if state != "ok" or other_version else None


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
