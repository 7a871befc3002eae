"""What a local folder's files hashed to, by their stat, so that a tree referenced again is read no more.

A second ``add_reference``/``add_dir`` of a folder reads only the files whose stat changed since the last
listing of that folder on this machine; the others get the digest their bytes had then. One file per
folder listed, under ``$REFSTORE_CACHE_DIR/stat/`` (see :func:`~refstore.storage.cache.default_cache_dir`),
holds for each file (by its path inside the folder) its size, mtime and ctime (nanoseconds), inode and
device, with the digest. A file's record is used only when all of them are the same now and:

- its **filesystem** is the one it was recorded on: the device number and the filesystem's id
  (``statvfs().f_fsid``) both match, and where a filesystem has no id, the boot too (``boot_id``); a
  different disk mounted at the same place, or a new tmpfs, never matches;
- it was **settled** when it was hashed: its mtime and ctime were more than a second older than the read
  (issue 14's rule for files changed around a read, :data:`~refstore.storage.hashing._RECENT_NS`), so no
  later write can leave the same ctime behind: a writer cannot set the ctime, and a file rewritten with the
  same size and its mtime put back (``os.utime``) still gets a new ctime. Files that were not settled are
  not recorded, and are read again next time.

Writes replace the whole file by rename, and only when the records changed; the file carries a checksum
of its contents, and one that fails it (a crash mid-write on a filesystem that does not order the rename
after the data) or another version's is ignored: the folder is hashed as if never seen (format 1's JSON
files are not read; the first write of format 2 deletes the folder's). ``REFSTORE_STAT_CACHE=0`` turns the
cache off.

Format 2 (``<sha256 of the folder's path>.bin``), little work per file to load and compare: a line with
the xxh3_128 hex of the rest; a line of JSON (``format``, ``root``, ``byteorder``, ``count``, the byte
lengths of the two text blocks as ``blobs``, ``filesystems``: device number -> identity); the relative
paths in sorted order, UTF-8 (``surrogateescape``), joined by NUL; the digests, joined by newlines; then the
five stat columns (size, mtime_ns, ctime_ns: signed; inode, device: unsigned), ``count`` 64-bit integers
each, in the machine's byte order.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import xxhash

from .cache import default_cache_dir
from .stat_columns import TYPECODES as _TYPECODES
from .stat_columns import Columns, new_columns

_FORMAT = "refstore.stat-cache/2"
#: ``REFSTORE_STAT_CACHE=0`` turns the cache off (every file is read, nothing is recorded).
ENV_SWITCH = "REFSTORE_STAT_CACHE"


#: A file's stat, as recorded and compared: ``(size, mtime_ns, ctime_ns, inode, device)``.
Stat = tuple[int, int, int, int, int]
#: A file's stat when it was hashed, and its digest: ``(size, mtime_ns, ctime_ns, inode, device, digest)``.
FileState = tuple[int, int, int, int, int, str]


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


class StatCache:
    """The recorded files of one local folder (``root``), keyed by their path relative to it, in path
    order: :attr:`paths`, their stat as five arrays (:attr:`columns`, made by :func:`new_columns`; or as
    rows: :attr:`stats`) and :attr:`digests`.

    The file holds them as columns too (see the module's docstring), so that 100,000 records load in
    milliseconds, and a tree whose paths and stats are all the recorded ones is matched by comparing lists,
    with no work per file (:meth:`lookup`)."""

    def __init__(self, root: str, file: Path) -> None:
        self.root = root
        self.file = file
        self._top = root if root.endswith("/") else f"{root}/"  # what a relative path goes after
        self._paths: list[str] | None = []
        self._path_blob: bytes | memoryview = b""  # the paths joined by NUL, encoded (until decoded)
        self._digests: list[str] = []
        self._columns = new_columns()
        self._stats: list[Stat] | None = None
        #: how many records the file holds (its header), and its body until :meth:`_parse` reads it
        self.count = 0
        self._body: memoryview | None = None
        self._blobs = (0, 0)
        #: device -> filesystem identity, as recorded
        self.filesystems: dict[int, str] = {}
        self._index: dict[str, int] | None = None  # path -> row, made when a lookup needs it
        self._current: dict[int, str] = {}  # device -> identity now, computed once per device
        self._trusted: dict[int, bool] = {}  # device -> whether its records hold

    @classmethod
    def load(cls, root: str, cache_dir: Path | None = None) -> StatCache:
        """The records of ``root`` (an absolute path), empty when there are none or they are unusable."""
        name = hashlib.sha256(os.fsencode(root)).hexdigest()
        cache = cls(root, (cache_dir or default_cache_dir()) / "stat" / name[:2] / f"{name}.bin")
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError):
            cache._read()
        return cache

    @property
    def paths(self) -> list[str]:
        """The recorded relative paths, in order."""
        self._parse()
        if self._paths is None:
            self._paths = str(self._path_blob, "utf-8", "surrogateescape").split("\0")
        return self._paths

    def same_paths(self, relatives: list[str]) -> bool:
        """Whether ``relatives`` are the recorded paths, in order (compared as encoded text until the
        paths are needed one by one)."""
        self._parse()
        if self._paths is not None:
            return relatives == self._paths
        if len(relatives) != self.count:
            return False
        return "\0".join(relatives).encode("utf-8", "surrogateescape") == self._path_blob

    @property
    def digests(self) -> list[str]:
        """The recorded digest of each path."""
        self._parse()
        return self._digests

    @property
    def columns(self) -> Columns:
        """The recorded stat of each path, as five arrays (see :func:`new_columns`)."""
        self._parse()
        return self._columns

    @property
    def stats(self) -> list[Stat]:
        """The recorded stat of each path."""
        if self._stats is None:
            self._stats = list(zip(*self.columns, strict=True))
        return self._stats

    @property
    def states(self) -> dict[str, FileState]:
        """Each recorded path's state (stat and digest)."""
        return {p: (*s, d) for p, s, d in zip(self.paths, self.stats, self.digests, strict=True)}

    def _read(self) -> None:
        """Check the file and read its header; the records are parsed when first used (:meth:`_parse`)."""
        raw = self.file.read_bytes()
        view, cut = memoryview(raw), raw.index(b"\n")  # (slices of the view: no copy of 10 MB)
        if raw[:cut] != xxhash.xxh3_128_hexdigest(view[cut + 1 :]).encode():
            return
        end = raw.index(b"\n", cut + 1)
        data = json.loads(raw[cut + 1 : end])
        if data["format"] != _FORMAT or data["root"] != self.root or data["byteorder"] != sys.byteorder:
            return
        count, (path_bytes, digest_bytes) = int(data["count"]), data["blobs"]
        rest = view[end + 1 :]
        if path_bytes + digest_bytes + 8 * len(_TYPECODES) * count != len(rest):
            return
        self.filesystems = {int(k): str(v) for k, v in data["filesystems"].items()}
        self.count, self._body, self._blobs = count, rest, (int(path_bytes), int(digest_bytes))

    def _parse(self) -> None:
        """The records of the body :meth:`_read` kept (none if they do not add up); the paths stay encoded
        until :attr:`paths` is read."""
        rest, self._body = self._body, None
        if rest is None:
            return
        count, (path_bytes, digest_bytes) = self.count, self._blobs
        path_blob = rest[:path_bytes]
        try:
            digests = str(rest[path_bytes : path_bytes + digest_bytes], "ascii").split("\n") if count else []
        except UnicodeDecodeError:
            digests = []
        offset, columns = path_bytes + digest_bytes, new_columns()
        for column in columns:
            column.frombytes(rest[offset : offset + 8 * count])
            offset += 8 * count
        paths_counted = bytes(path_blob).count(b"\0") + 1 if count else 0
        if all(c.itemsize == 8 for c in columns) and paths_counted == count and len(digests) == count:
            self._paths, self._path_blob, self._digests, self._columns = None, path_blob, digests, columns
        else:
            self.count, self.filesystems = 0, {}

    def lookup(self, relatives: list[str], columns: Sequence[array.array[int]]) -> list[str | None]:
        """The recorded digest of each file (at ``relatives[i]`` inside the folder) whose stat now (the
        ``i``-th of each of the five ``columns``, as :func:`new_columns` makes them) is the one recorded, on
        the same filesystem; ``None`` for the others. A tree that is all as recorded costs comparing a list
        and five arrays (their bytes)."""
        if (
            self.same_paths(relatives)
            and all(now == recorded for now, recorded in zip(columns, self.columns, strict=True))
            and self._trusted_all(relatives, columns[4])
        ):
            return list(self.digests)
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.paths)}
        index, recorded, digests = self._index, self.stats, self.digests
        found: list[str | None] = []
        for relative, now in zip(relatives, zip(*columns, strict=True), strict=True):
            i = index.get(relative, -1)
            if i >= 0 and recorded[i] == now and self.same_filesystem(now[4], self._top + relative):
                found.append(digests[i])
            else:
                found.append(None)
        return found

    def _trusted_all(self, relatives: list[str], devices: array.array[int]) -> bool:
        """Whether the filesystem of each device (``devices[i]``, of the file at ``relatives[i]``) is the
        recorded one."""
        distinct = set(devices)
        for device in distinct - self._trusted.keys():
            self.same_filesystem(device, self._top + relatives[devices.index(device)])
        return all(self._trusted[device] for device in distinct)

    def same_filesystem(self, device: int, path: str) -> bool:
        """Whether ``device`` (of the file at ``path``) is the filesystem recorded with that number."""
        trusted = self._trusted.get(device)
        if trusted is None:
            recorded = self.filesystems.get(device)
            trusted = self._trusted[device] = recorded is not None and recorded == self.filesystem(
                device, path
            )
        return trusted

    def filesystem(self, device: int, path: str) -> str:
        """The identity of the filesystem that holds ``path`` (on ``device``): its id, or the boot's where
        it has none."""
        known = self._current.get(device)
        if known is None:
            try:
                fsid = os.statvfs(path).f_fsid
            except OSError:
                return ""  # matches no record: the file is read
            known = f"{device}:{fsid}" if fsid else f"{device}:boot:{_boot_id()}"
            self._current[device] = known
        return known

    def save(self, relatives: list[str], stats: list[Stat], digests: list[str]) -> None:
        """Replace the records with those of the files listed and settled (``relatives[i]`` inside the
        folder, with its stat and digest), unless they are the same; a failure to write is ignored (the
        cache is an optimisation)."""
        where: dict[int, str] = {}
        for stat, relative in zip(stats, relatives, strict=True):
            if stat[4] not in where:
                where[stat[4]] = self._top + relative
        filesystems = {device: self.filesystem(device, path) for device, path in where.items()}
        order = sorted(range(len(relatives)), key=relatives.__getitem__)  # mostly in order already
        if order != list(range(len(order))):
            relatives = [relatives[i] for i in order]
            stats = [stats[i] for i in order]
            digests = [digests[i] for i in order]
        same = relatives == self.paths and stats == self.stats and digests == self.digests
        if not same or filesystems != self.filesystems:
            self._write(relatives, stats, digests, filesystems)

    def write(self, states: Mapping[str, FileState], filesystems: dict[int, str]) -> None:
        """Replace the cache file with these records, by rename (a failure to write is ignored)."""
        paths = sorted(states)
        rows = [states[p] for p in paths]
        stats = [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        self._write(paths, stats, [r[5] for r in rows], filesystems)

    def _write(
        self, paths: list[str], stats: list[Stat], digests: list[str], filesystems: dict[int, str]
    ) -> None:
        """Replace the cache file with these records (in path order), by rename; see :meth:`write`."""
        rows = zip(*stats, strict=True) if stats else [()] * len(_TYPECODES)
        columns = [array.array(code, column) for code, column in zip(_TYPECODES, rows, strict=True)]
        path_blob = "\0".join(paths).encode("utf-8", "surrogateescape")
        digest_blob = "\n".join(digests).encode()
        header = {
            "format": _FORMAT,
            "root": self.root,
            "byteorder": sys.byteorder,
            "count": len(paths),
            "blobs": [len(path_blob), len(digest_blob)],
            "filesystems": {str(k): v for k, v in filesystems.items()},
        }
        body = b"".join(
            [
                json.dumps(header, separators=(",", ":")).encode(),
                b"\n",
                path_blob,
                digest_blob,
                *(column.tobytes() for column in columns),
            ]
        )
        with contextlib.suppress(OSError):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f"{self.file.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                tmp.write_bytes(xxhash.xxh3_128_hexdigest(body).encode() + b"\n" + body)
                os.replace(tmp, self.file)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            with contextlib.suppress(FileNotFoundError):  # format 1's file, in JSON
                self.file.with_suffix(".json").unlink()
        self._paths, self._path_blob, self._digests, self.filesystems = paths, path_blob, digests, filesystems
        self._columns, self._stats, self._index, self._body = columns, stats, None, None
        self.count = len(paths)


_BOOT_ID: str | None = None


def _boot_id() -> str:
    """This boot's id (Linux), else ``"unknown"``: a filesystem without an id is trusted for one boot."""
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = "unknown"
    return _BOOT_ID
