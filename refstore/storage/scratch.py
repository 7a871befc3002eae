"""In-flight files: named after the process that writes them, and placed so that a destination never
holds a partial file.

A scratch name is ``<machine>-<pid>-<start>-<random>.part``: ``<machine>`` a short hash of this machine's
name, boot id and PID namespace, ``<start>`` the process's start time (clock ticks after boot), so that a
pid names one process even when containers on one host share a host name and a cache (two PID namespaces
both run a pid 7). A scratch file is stale (a ``kill -9`` or a power cut left it) only when
:func:`refstore.core.liveness.is_dead` says its process is certainly gone: same host, boot and namespace, and
the pid runs no process or another one. Without ``/proc`` (no namespaces, no boot id) the rule falls back to
"the pid runs no process on this machine". Names of the older form ``<host>-<pid>-<random>.part`` cannot
tell namespaces apart: they are stale only once a day old.

A download prepares each file in the cache's ``tmp/`` folder when that folder shares the destination's
filesystem, so the destination only ever receives complete files by rename; otherwise in a hidden
``.refstore-<scratch name>`` file next to the destination. Stale scratch files are removed from ``tmp/`` at
the start of each download, and from a destination folder the first time a download writes into it. A
scratch file that vanishes anyway (removed by hand, or by an older refstore in another namespace) makes
the download fetch that file again, never fail with a raw ``FileNotFoundError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
from pathlib import Path

from ..core import liveness
from .dirfd import Spot

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_SCRATCH = re.compile(r"(?:\.refstore-)?([0-9a-f]{8})-(\d+)-(\d+)-[0-9a-f]{16}\.part")
_OLD_SCRATCH = re.compile(r"(?:\.refstore-)?([0-9a-f]{8})-(\d+)-[0-9a-f]{16}\.part")
#: How old a scratch file of the older name form must be to count as stale, in seconds.
OLD_FORM_AGE = 24 * 3600
_identity: tuple[int, str] | None = None  # (pid, "<machine>-<pid>-<start>") of this process


def _machine(holder: dict[str, object]) -> str:
    """The short hash of a holder's host name, boot id and PID namespace."""
    key = f"{holder['host']}\0{holder['boot_id']}\0{holder['pid_ns']}"
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _this_process() -> str:
    """``<machine>-<pid>-<start>`` of this process (worked out again after a fork)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        holder = liveness.identity()
        _identity = (pid, f"{_machine(holder)}-{pid}-{holder['started'] or 0}")
    return _identity[1]


def scratch_name(*, hidden: bool = False) -> str:
    """A fresh name for a file this process is writing."""
    name = f"{_this_process()}-{os.urandom(8).hex()}.part"
    return f".refstore-{name}" if hidden else name


def is_scratch_name(name: str) -> bool:
    """Whether ``name`` is a scratch file's name (of any process, running or not)."""
    return _SCRATCH.fullmatch(name) is not None or _OLD_SCRATCH.fullmatch(name) is not None


def is_stale(name: str, folder: str | os.PathLike[str] | int = ".") -> bool:
    """Whether ``name`` (in ``folder``, a path or an open folder's descriptor) is a scratch file left by a
    process of this machine that is gone."""
    match = _SCRATCH.fullmatch(name)
    if match is None:
        return _OLD_SCRATCH.fullmatch(name) is not None and _older_than(name, folder, OLD_FORM_AGE)
    me = liveness.identity()
    if match[1] != _machine(me):
        return False  # another machine, boot or PID namespace: its pids are not ours to probe
    if me["boot_id"] is None or me["pid_ns"] is None:  # no /proc: no namespaces to tell apart either
        return not liveness.pid_running(int(match[2]))
    started = int(match[3]) or None
    return liveness.is_dead({**me, "pid": int(match[2]), "started": started})


def _older_than(name: str, folder: str | os.PathLike[str] | int, seconds: float) -> bool:
    try:
        if isinstance(folder, int):
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        else:
            info = os.lstat(os.path.join(folder, name))
        return time.time() - info.st_mtime > seconds
    except OSError:
        return False


def remove_stale(folder: Path | int) -> None:
    """Delete the stale scratch files directly inside ``folder`` (a path, or an open folder's descriptor;
    nothing else is touched)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if is_stale(name, folder):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                if isinstance(folder, int):
                    os.unlink(name, dir_fd=folder)
                else:
                    os.unlink(folder / name)


class Staging:
    """Where one download prepares each file before renaming it into place."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self._tmp = os.fspath(tmp_dir)
        self._device = os.stat(tmp_dir).st_dev
        #: destination folder -> whether it shares ``tmp_dir``'s filesystem (checked once per folder)
        self._shares: dict[str, bool] = {}

    def spot_for(self, dest: Spot, folder: str) -> Spot:
        """A scratch file on the filesystem of ``dest`` (whose folder's path is ``folder``), outside the
        destination when possible, else a hidden file in ``dest``'s open folder."""
        shares = self._shares.get(folder)
        if shares is None:
            info = os.stat(folder) if dest.fd is None else os.fstat(dest.fd)
            shares = self._shares[folder] = info.st_dev == self._device
            if not shares:
                remove_stale(Path(folder) if dest.fd is None else dest.fd)
        if shares:
            return Spot(None, f"{self._tmp}/{scratch_name()}")
        if dest.fd is None:
            return Spot(None, os.path.join(folder, scratch_name(hidden=True)))
        return Spot(dest.fd, scratch_name(hidden=True))
