"""Keeping the download cache within bounds: what it holds, when each object was last used, and pruning the
least recently used objects first.

**Last use.** An object's last use is the later of its file's modification time (when it was admitted: a
fetched file is renamed into ``blobs/``) and the newest *use record* that names it. A download that puts
cached files in place writes one use record when it is done with the cache: ``uses/<name>.uses``, one line
``<content hex> <unix time>`` per object, written under a scratch name and renamed, so never read
half-written. A cached file's access time is no guide (``noatime`` and ``relatime`` mounts), and its
modification time cannot be touched on use: a cached file is also a downloaded file, through a hard link,
whose times are the user's. Records are merged into one by :func:`prune` and once more than
:data:`MAX_RECORDS` pile up; a merged record is written before the records it merges are deleted, so no
use is ever lost, and two processes merging at once only leave two records.

**Pruning beside running downloads** (in this or other processes) only ever unlinks names in ``blobs/`` and
``pins/``: the bytes of a file handed out as a hard link stay under the download's name, whole. A download
never needs a cached file to still be there once it decided to use it: it reads a cached object through a
descriptor opened first (a hard link made by name after the object was pruned fails, and the open file is
copied instead), and it puts fetched bytes at their destination from its own file in ``tmp/`` before it
admits them into ``blobs/``. An object pruned between a download's lookup and its open is fetched again,
like any object pruned earlier. Before unlinking, :func:`prune` checks that the file is still the one it
chose (same inode and modification time) and that no use was recorded for it meanwhile.

**Pins** (``pins/``: which bytes a reference's pinned object holds) go with the objects: a prune that
removes anything, and every prune to ``0``, also removes the pins that name no cached object (older than
the prune; in packs, the lines that name none), so the cache's file count stays bounded too. Files
already in a download folder whose entry pins no content hash (an S3 multipart ETag, ``checksum=False``)
are then checked by fetching their object once more.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.exceptions import RefstoreError
from ..core.sizes import parse_size
from .cache import Cache, read_pack
from .scratch import remove_stale, scratch_name

#: How many use records may pile up in ``uses/`` before a download merges them.
MAX_RECORDS = 64
#: What a prune after a download (``$REFSTORE_CACHE_MAX_SIZE``) brings the cache down to, as a fraction of
#: the limit: the next downloads then add bytes without a prune each time.
AUTO_TARGET = 0.9
_HEX = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(r"[0-9a-f]{2}")
_RECORD = ".uses"


@dataclass(frozen=True, slots=True)
class CachedObject:
    """One object in the cache: its content hash, size and last use; ``linked`` when a download folder
    holds the same file (a hard link: removing it from the cache frees no disk space)."""

    content: str
    size: int
    last_use: float
    linked: bool
    stamp: tuple[int, int]  # (st_ino, st_mtime_ns): to tell it from a file admitted again meanwhile


@dataclass(frozen=True)
class CacheInfo:
    """What the cache holds (``refstore cache info``)."""

    root: str
    size: int
    entries: int
    linked_size: int
    pins: int
    oldest_use: float | None
    newest_use: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.root,
            "size": self.size,
            "entries": self.entries,
            "linked_size": self.linked_size,
            "pins": self.pins,
            "oldest_use": _iso(self.oldest_use),
            "newest_use": _iso(self.newest_use),
        }


@dataclass(frozen=True)
class PrunePlan:
    """The objects a prune to ``max_size`` removes, least recently used first, and what stays."""

    root: str
    max_size: int
    size: int
    doomed: tuple[CachedObject, ...]
    kept: tuple[CachedObject, ...]

    @property
    def freed(self) -> int:
        return sum(o.size for o in self.doomed)


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed (``refstore cache prune``)."""

    root: str
    max_size: int
    removed: int
    freed: int
    pins_removed: int
    size: int
    entries: int
    #: objects chosen but left because a download used or admitted them again meanwhile
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.root,
            "max_size": self.max_size,
            "removed": self.removed,
            "freed": self.freed,
            "pins_removed": self.pins_removed,
            "skipped": self.skipped,
            "size": self.size,
            "entries": self.entries,
        }


def limit_from_env() -> int | None:
    """``$REFSTORE_CACHE_MAX_SIZE`` in bytes, or ``None`` when unset; a value that is no size is an error
    naming the variable."""
    setting = os.environ.get("REFSTORE_CACHE_MAX_SIZE", "").strip()
    if not setting:
        return None
    try:
        return parse_size(setting)
    except ValueError as exc:
        raise RefstoreError(f"REFSTORE_CACHE_MAX_SIZE: {exc}") from None


def info(cache: Cache) -> CacheInfo:
    """The cache's size, objects, pins and the range of their last uses."""
    objects = scan(cache)
    uses = [o.last_use for o in objects]
    return CacheInfo(
        os.fspath(cache.root),
        sum(o.size for o in objects),
        len(objects),
        sum(o.size for o in objects if o.linked),
        sum(1 for _ in _files(os.path.join(cache.root, "pins"))) + len(_packed(cache)),
        min(uses, default=None),
        max(uses, default=None),
    )


def scan(cache: Cache) -> list[CachedObject]:
    """Every object in ``blobs/``, with its last use (see the module docstring)."""
    uses = read_uses(cache)
    found = []
    for entry in _files(os.path.join(cache.root, "blobs")):
        if not _HEX.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # pruned or replaced meanwhile
        if not entry.is_file(follow_symlinks=False):
            continue
        last = max(info.st_mtime, uses.get(entry.name, 0.0))
        stamp = (info.st_ino, info.st_mtime_ns)
        found.append(CachedObject(entry.name, info.st_size, last, info.st_nlink > 1, stamp))
    return found


def plan(cache: Cache, max_size: int, *, target: int | None = None) -> PrunePlan:
    """Which objects go so that the cache holds at most ``target`` bytes (default ``max_size``), least
    recently used first; nothing goes when it holds at most ``max_size``."""
    objects = sorted(scan(cache), key=lambda o: (o.last_use, o.content))
    size = sum(o.size for o in objects)
    goal = max_size if target is None else target
    cut = 0
    if size > max_size:
        left = size
        while cut < len(objects) and left > goal:
            left -= objects[cut].size
            cut += 1
    return PrunePlan(os.fspath(cache.root), max_size, size, tuple(objects[:cut]), tuple(objects[cut:]))


def prune(
    cache: Cache, max_size: int, *, target: int | None = None, chosen: PrunePlan | None = None
) -> PruneReport:
    """Remove the least recently used objects until the cache holds at most ``target`` bytes (default
    ``max_size``; ``0`` empties it, pins and stale scratch files too). ``chosen``: a :func:`plan` made
    earlier (shown to the user first); objects used since are kept."""
    started = time.time()
    chosen = chosen or plan(cache, max_size, target=target)
    uses = read_uses(cache) if chosen.doomed else {}
    removed, skipped, freed = [], 0, 0
    for item in chosen.doomed:
        if uses.get(item.content, 0.0) > item.last_use or not _unlink_if_same(cache, item):
            skipped += 1
            continue
        removed.append(item.content)
        freed += item.size
    pins_removed = 0
    if removed or max_size == 0:
        remaining = {o.content for o in scan(cache)}
        merge_uses(cache, keep=remaining)
        pins_removed = _remove_orphan_pins(cache, remaining, started)
    if max_size == 0:
        cache.remove_stale_tmp()
    after = scan(cache)
    return PruneReport(
        os.fspath(cache.root),
        max_size,
        len(removed),
        freed,
        pins_removed,
        sum(o.size for o in after),
        len(after),
        skipped,
    )


def prune_after_download(cache: Cache, limit: int | None) -> None:
    """Bring the cache down to :data:`AUTO_TARGET` of ``limit`` when it holds more (``None``: no limit)."""
    if limit is not None:
        prune(cache, limit, target=int(limit * AUTO_TARGET))


def record_uses(cache: Cache, contents: Iterable[str]) -> None:
    """Write one use record naming ``contents`` (xxh3_128 hex of cached objects) as used now; merge the
    records when more than :data:`MAX_RECORDS` pile up."""
    now = time.time()
    lines = "".join(f"{c} {now:.6f}\n" for c in set(contents))
    if not lines:
        return
    folder = _uses_folder(cache)
    _write_record(folder, lines)
    try:
        count = sum(1 for name in os.listdir(folder) if name.endswith(_RECORD))
    except OSError:
        return
    if count > MAX_RECORDS:
        merge_uses(cache, keep={entry.name for entry in _files(os.path.join(cache.root, "blobs"))})


def read_uses(cache: Cache) -> dict[str, float]:
    """Content hex -> the newest recorded use, from every record in ``uses/``."""
    return _read_records(os.path.join(cache.root, "uses"))[0]


def merge_uses(cache: Cache, *, keep: set[str] | None = None) -> None:
    """Replace the use records by one (only the objects in ``keep``, when given)."""
    folder = os.path.join(cache.root, "uses")
    uses, read = _read_records(folder)
    if not read:
        return
    if keep is not None:
        uses = {c: t for c, t in uses.items() if c in keep}
    if uses:
        _write_record(folder, "".join(f"{c} {t:.6f}\n" for c, t in sorted(uses.items())))
    for name in read:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    remove_stale(Path(folder))  # records a killed process left half-written


def _read_records(folder: str) -> tuple[dict[str, float], list[str]]:
    uses: dict[str, float] = {}
    read: list[str] = []
    try:
        names = [n for n in os.listdir(folder) if n.endswith(_RECORD)]
    except (FileNotFoundError, NotADirectoryError):
        return uses, read
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue  # merged by another process
        read.append(name)
        for line in text.splitlines():
            content, _, stamp = line.partition(" ")
            try:
                when = float(stamp)
            except ValueError:
                continue
            if _HEX.fullmatch(content) and when > uses.get(content, 0.0):
                uses[content] = when
    return uses, read


def _write_record(folder: str, text: str) -> None:
    scratch = os.path.join(folder, scratch_name())
    try:
        with open(scratch, "x", encoding="ascii") as handle:
            handle.write(text)
        os.replace(scratch, scratch.removesuffix(".part") + _RECORD)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
        raise


def _uses_folder(cache: Cache) -> str:
    folder = os.path.join(cache.root, "uses")
    os.makedirs(folder, exist_ok=True)
    return folder


def _unlink_if_same(cache: Cache, item: CachedObject) -> bool:
    """Unlink the object's file if it is still the one :func:`scan` saw."""
    path = os.path.join(cache.root, "blobs", item.content[:2], item.content)
    try:
        info = os.lstat(path)
        if (info.st_ino, info.st_mtime_ns) != item.stamp:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _remove_orphan_pins(cache: Cache, remaining: set[str], before: float) -> int:
    """Remove the pins older than ``before`` that name no object in ``remaining``; how many."""
    count = 0
    for entry in _files(os.path.join(cache.root, "pins")):
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= before:
                continue  # written by a download during the prune
            with open(entry.path, "rb") as handle:
                content = handle.read(64).decode("ascii", "replace").strip()
            if content in remaining:
                continue
            os.unlink(entry.path)
            count += 1
        except FileNotFoundError:
            continue
    for path in cache.pack_files():
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_mtime >= before:
                continue  # written by a download during the prune
            pins = read_pack(path)
            kept = [(key, content) for key, content in pins.items() if content in remaining]
            if len(kept) == len(pins):
                continue
            if kept:
                cache.write_pack(kept)  # before the old pack goes: no pin that names an object is lost
            os.unlink(path)
            count += len(pins) - len(kept)
    return count


def _packed(cache: Cache) -> set[str]:
    """The keys of the pins in ``pins/packs/``."""
    keys: set[str] = set()
    for path in cache.pack_files():
        with contextlib.suppress(FileNotFoundError):
            keys.update(read_pack(path))
    return keys


def _files(top: str) -> Iterator[os.DirEntry[str]]:
    """The entries of the two-hex-digit folders under ``top`` (``blobs/`` or ``pins/``)."""
    try:
        prefixes = [n for n in os.listdir(top) if _PREFIX.fullmatch(n)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for prefix in sorted(prefixes):
        folder = os.path.join(top, prefix)
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            continue
        yield from listed


def _iso(stamp: float | None) -> str | None:
    return (
        None if stamp is None else datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
    )
