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

Writes replace the whole file by rename; the file carries a checksum of its contents, and one that fails
it (a crash mid-write on a filesystem that does not order the rename after the data) or another version's
is ignored: the folder is hashed as if never seen. ``REFSTORE_STAT_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import xxhash

from .cache import default_cache_dir

_FORMAT = "refstore.stat-cache/1"
_COLUMNS = ("sizes", "mtimes", "ctimes", "inodes", "devices", "digests")
#: ``REFSTORE_STAT_CACHE=0`` turns the cache off (every file is read, nothing is recorded).
ENV_SWITCH = "REFSTORE_STAT_CACHE"


#: A file's stat when it was hashed, and its digest: ``(size, mtime_ns, ctime_ns, inode, device, digest)``.
FileState = tuple[int, int, int, int, int, str]


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


class StatCache:
    """The recorded files of one local folder (``root``), keyed by their path relative to it."""

    def __init__(self, root: str, file: Path) -> None:
        self.root = root
        self.file = file
        self.states: dict[str, FileState] = {}
        #: device -> filesystem identity, as recorded
        self.filesystems: dict[int, str] = {}
        self._current: dict[int, str] = {}  # device -> identity now, computed once per device
        self._trusted: dict[int, bool] = {}  # device -> whether its records hold

    @classmethod
    def load(cls, root: str, cache_dir: Path | None = None) -> StatCache:
        """The records of ``root`` (an absolute path), empty when there are none or they are unusable."""
        name = hashlib.sha256(os.fsencode(root)).hexdigest()
        cache = cls(root, (cache_dir or default_cache_dir()) / "stat" / name[:2] / f"{name}.json")
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cache._read()
        return cache

    def _read(self) -> None:
        raw = self.file.read_bytes()
        head, _, body = raw.partition(b"\n")
        if head != xxhash.xxh3_128_hexdigest(body).encode():
            return
        data = json.loads(body)
        if data["format"] != _FORMAT or data["root"] != self.root:
            return
        columns = [data[c] for c in _COLUMNS]
        self.states = dict(zip(data["paths"], zip(*columns, strict=True), strict=True))
        self.filesystems = {int(k): str(v) for k, v in data["filesystems"].items()}

    def known(self, relative: str, path: str, now: os.stat_result) -> FileState | None:
        """The record of the file at ``path`` (``relative`` inside the folder) if its stat ``now`` is the
        one recorded, on the same filesystem; else ``None``."""
        state = self.states.get(relative)
        if (
            state is None
            or state[0] != now.st_size
            or state[1] != now.st_mtime_ns
            or state[2] != now.st_ctime_ns
            or state[3] != now.st_ino
            or state[4] != now.st_dev
            or not self.same_filesystem(now.st_dev, path)
        ):
            return None
        return state

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

    def save(self, states: list[tuple[str, str, FileState]]) -> None:
        """Replace the records with ``states`` (``(relative, path, state)`` of each file listed and
        settled), unless they are the same; a failure to write is ignored (the cache is an optimisation)."""
        new = {relative: state for relative, _, state in states}
        where: dict[int, str] = {}
        for _, path, state in states:
            where.setdefault(state[4], path)
        filesystems = {device: self.filesystem(device, path) for device, path in where.items()}
        if new != self.states or filesystems != self.filesystems:
            self.write(new, filesystems)

    def write(self, states: dict[str, FileState], filesystems: dict[int, str]) -> None:
        """Replace the cache file with these records, by rename (a failure to write is ignored)."""
        names = sorted(states)
        rows = [states[n] for n in names]
        body = json.dumps(
            {
                "format": _FORMAT,
                "root": self.root,
                "filesystems": {str(k): v for k, v in filesystems.items()},
                "paths": names,
                **{c: [r[i] for r in rows] for i, c in enumerate(_COLUMNS)},
            },
            separators=(",", ":"),
        ).encode()
        with contextlib.suppress(OSError):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f"{self.file.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                tmp.write_bytes(xxhash.xxh3_128_hexdigest(body).encode() + b"\n" + body)
                os.replace(tmp, self.file)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self.states, self.filesystems = states, filesystems


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
