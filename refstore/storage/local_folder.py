"""A local folder against a version's entries: what is in place, what differs, what is missing, and which
files the version does not hold. Reads only: downloads and ``verify(root=...)`` decide what to do with it.

Cheap where it matters: a destination that does not exist costs one ``stat``, an empty one a ``scandir``;
only files that exist with the pinned size are read, each once. A file's bytes are compared with its entry
by the first of these that applies:

1. the xxh3_128 hash the entry pins (local files, copies), or the one this machine's download cache
   recorded when it fetched the entry's pinned object (every download records it);
2. an ``md5:`` digest (GCS, Azure), computed from the file;
3. an ETag of 32 hex digits that equals the file's MD5 (what S3 gives for single-part uploads) proves the
   same bytes; a different MD5 proves nothing (an SSE-KMS ETag is no MD5);
4. otherwise (multipart S3 ETags, ``crc32c:``, HTTP ETags, ``checksum=False`` pins, and 3. without a match)
   the file is *undecided*: its bytes cannot be checked without the source.

Symbolic links are never followed: a link at an entry's place is reported as ``link``, and the walk does not
descend into linked folders (they are listed as extra files). refstore's own folders, as
:mod:`refstore.storage.exclusion` defines them (named ``.refstore`` or ``refstore-runs``, holding a registry
marker or a run's state, the registries this process opened, ``$REFSTORE_ROOT``, the cache, the run area), and
the ``protected`` ones are never walked, so they are never extra and never cleaned; entries inside them are
still checked, one ``stat`` each.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.manifest import ManifestEntry
from ..core.names import under_prefix
from .cache import Cache
from .exclusion import exclusion_for
from .hashing import hash_many, parallel_pays, stat_and_hash
from .locations import resolve
from .scratch import is_scratch_name

_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_BLOCK = 2**20

#: An entry's state in the folder: ``ok`` (the pinned bytes), ``changed`` (other bytes), ``missing``
#: (nothing there), ``undecided`` (the pinned size, bytes not checkable without the source), ``link`` (a
#: symbolic link), ``folder`` (a folder at the entry's place), ``special`` (a FIFO, socket or device).
STATES = ("ok", "changed", "missing", "undecided", "link", "folder", "special")


@dataclass(frozen=True, slots=True)
class Found:
    """One thing in the folder, seen with ``lstat``: its kind, size and identity (to see it replaced)."""

    kind: str  # "file", "link", "dir" or "special"
    size: int
    stamp: tuple[int, int]  # (st_ino, st_mtime_ns)


@dataclass
class FolderState:
    """What a folder holds for some entries. Paths are logical (relative, POSIX), sorted."""

    root: str
    #: logical path -> one of :data:`STATES`
    states: dict[str, str] = field(default_factory=dict)
    #: files (and links, special files) in scope that no entry names
    extra: list[str] = field(default_factory=list)
    #: the extra files that stand where an entry needs a folder
    blocking: list[str] = field(default_factory=list)
    #: folders in scope that hold no entry, deepest first (emptied and removed by a clean download)
    spare_folders: list[str] = field(default_factory=list)
    #: what was at each entry's place before (to tell, after a failure, which entries were replaced)
    before: dict[str, Found] = field(default_factory=dict)

    def paths(self, *states: str) -> list[str]:
        return sorted(p for p, s in self.states.items() if s in states)

    def absolute(self, logical_path: str) -> str:
        return os.path.join(self.root, *logical_path.split("/"))


def scan(
    root: str,
    entries: Iterable[ManifestEntry],
    *,
    cache: Cache,
    prefix: str | None = None,
    protected: Iterable[str] = (),
) -> FolderState:
    """Compare the folder ``root`` with ``entries`` (all of them start with ``prefix`` when it is given;
    extra files are looked for under that prefix only)."""
    entries = list(entries)
    state = FolderState(root)
    if not os.path.isdir(root):
        state.states = dict.fromkeys((e.path for e in entries), "missing")
        return state
    skipped: list[str] = []
    found = _walk(root, prefix or "", {os.path.realpath(p) for p in protected}, skipped)
    wanted = {e.path for e in entries}
    inside = tuple(f"{s}/" if s else "" for s in skipped)
    for path in wanted if skipped else ():  # entries in a folder the walk leaves alone: one by one
        if path.startswith(inside) or path in skipped:
            item = _lstat(os.path.join(root, *path.split("/")))
            if item is not None:
                found[path] = item
    folders = {p.rpartition("/")[0] for p in wanted} - {""}
    folders |= {f.rsplit("/", depth)[0] for f in folders for depth in range(1, f.count("/") + 1)}
    for folder in sorted(folders):
        item = found.get(folder) or _lstat(os.path.join(root, *folder.split("/")))
        if item is not None and item.kind != "dir" and not (item.kind == "link" and _is_dir(state, folder)):
            state.blocking.append(folder)
    state.extra = sorted(p for p, item in found.items() if item.kind != "dir" and p not in wanted)
    spare = [p for p, item in found.items() if item.kind == "dir" and p not in folders]
    state.spare_folders = sorted(spare, key=lambda p: (-p.count("/"), p))
    to_hash: list[tuple[ManifestEntry, str, tuple[str, str] | None]] = []
    for entry in entries:
        item = found.get(entry.path)
        if item is None:
            state.states[entry.path] = "missing"
            continue
        state.before[entry.path] = item
        if item.kind != "file":
            state.states[entry.path] = {"dir": "folder", "link": "link"}.get(item.kind, "special")
        elif item.size != entry.size:
            state.states[entry.path] = "changed"
        else:
            to_hash.append((entry, state.absolute(entry.path), _expected(entry, cache)))
    state.states.update(_compare(to_hash))
    return state


def _expected(entry: ManifestEntry, cache: Cache) -> tuple[str, str] | None:
    """How to check a file's bytes against ``entry`` locally: ``(kind, hex)``; ``None`` when it cannot."""
    content = cache.known_content(entry)
    if content is not None:
        return "xxh3", content
    algorithm, _, value = entry.digest.partition(":")
    if algorithm == "md5" and _MD5_HEX.fullmatch(value):
        return "md5", value
    if entry.etag is not None and _MD5_HEX.fullmatch(entry.etag):
        return "etag", entry.etag
    return None


def _compare(items: list[tuple[ManifestEntry, str, tuple[str, str] | None]]) -> dict[str, str]:
    """Hash the files that can be checked (xxh3_128 ones on all cores) and compare them."""
    states = {entry.path: "undecided" for entry, _, expect in items if expect is None}
    by_xxh3 = [(entry, path, expect[1]) for entry, path, expect in items if expect and expect[0] == "xxh3"]
    by_md5 = [(entry, path, expect) for entry, path, expect in items if expect and expect[0] != "xxh3"]
    for (entry, _, expected), actual in zip(by_xxh3, _xxh3_hexes(by_xxh3), strict=True):
        states[entry.path] = "missing" if actual is None else "ok" if actual == expected else "changed"
    if parallel_pays(sum(e.size for e, _, _ in by_md5), len(by_md5)) and len(by_md5) > 1:
        with ThreadPoolExecutor(os.cpu_count(), thread_name_prefix="refstore-md5") as pool:
            md5s = list(pool.map(_md5_hex, (path for _, path, _ in by_md5)))
    else:
        md5s = [_md5_hex(path) for _, path, _ in by_md5]
    for (entry, _, (kind, expected)), actual in zip(by_md5, md5s, strict=True):
        if actual is None:
            states[entry.path] = "missing"
        elif actual == expected:
            states[entry.path] = "ok"
        else:  # an ETag that is not the MD5 of these bytes may still be another hash of them
            states[entry.path] = "changed" if kind == "md5" else "undecided"
    return states


def _xxh3_hexes(items: list[tuple[ManifestEntry, str, str]]) -> list[str | None]:
    """The xxh3_128 hex of each file (``None`` for one that vanished meanwhile)."""
    try:
        hashed = hash_many((path, entry.size) for entry, path, _ in items)
        return [found.digest.split(":", 1)[1] for found in hashed]
    except OSError:  # one of them vanished or became unreadable: one by one
        return [_one_xxh3(path) for _, path, _ in items]


def _one_xxh3(path: str) -> str | None:
    try:
        return stat_and_hash(path).digest.split(":", 1)[1]
    except FileNotFoundError:
        return None


def _md5_hex(path: str) -> str | None:
    digest = hashlib.md5()
    try:
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(_BLOCK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _walk(root: str, prefix: str, protected: set[str], skipped: list[str]) -> dict[str, Found]:
    """Everything under ``root`` whose logical path starts with ``prefix``, by logical path; links are
    listed, never followed; scratch files of downloads in flight are left out, and so are refstore's own
    folders (added to ``skipped``; ``""`` when ``root`` itself is one)."""
    own = exclusion_for(resolve(root).url, None, None)  # registries, run areas, the cache inside root
    start = prefix.rpartition("/")[0]
    found: dict[str, Found] = {}
    stack = [(os.path.join(root, *start.split("/")) if start else root, f"{start}/" if start else "", True)]
    while stack:
        folder, rel, top = stack.pop()
        try:
            with os.scandir(folder) as listing:
                items = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if any(item.name in own.markers for item in items):  # a registry or a run directory
            skipped.append(rel.rstrip("/"))
            found.pop(rel.rstrip("/"), None)
            continue
        for item in items:
            path = rel + item.name
            if top and not (under_prefix(path, prefix) or prefix.startswith(f"{path}/")):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if own.excludes(path, True) or os.path.realpath(item.path) in protected:
                    skipped.append(path)
                    continue
                if under_prefix(path, prefix):
                    found[path] = _found(info)
                stack.append((item.path, f"{path}/", not under_prefix(path, prefix)))
            elif not is_scratch_name(item.name) and under_prefix(path, prefix):
                found[path] = _found(info)
    return found


def _found(info: os.stat_result) -> Found:
    mode = info.st_mode
    kind = (
        "file"
        if stat.S_ISREG(mode)
        else "dir"
        if stat.S_ISDIR(mode)
        else "link"
        if stat.S_ISLNK(mode)
        else "special"
    )
    return Found(kind, info.st_size, (info.st_ino, info.st_mtime_ns))


def _lstat(path: str) -> Found | None:
    try:
        return _found(os.lstat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_dir(state: FolderState, folder: str) -> bool:
    """A link at a folder's place that leads to a folder (whether it stays inside is checked elsewhere)."""
    return os.path.isdir(state.absolute(folder))


def replaced(state: FolderState, logical_path: str) -> bool:
    """Whether something new stands at ``logical_path`` since the scan (downloads only rename complete
    files into place, so a new file there holds the pinned bytes)."""
    now = _lstat(state.absolute(logical_path))
    if now is None or now.kind != "file":
        return False
    before = state.before.get(logical_path)
    return before is None or before.stamp != now.stamp
