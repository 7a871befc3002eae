"""In-flight files: named after the process that writes them, and placed so that a destination never
holds a partial file.

A scratch name is ``<host>-<pid>-<random>.part``, ``<host>`` being a short hash of this machine's name; a
scratch file whose process no longer runs on this machine is stale (a ``kill -9`` or a power cut left it).
A download prepares each file in the cache's ``tmp/`` folder when that folder shares the destination's
filesystem, so the destination only ever receives complete files by rename; otherwise in a hidden
``.refstore-<scratch name>`` file next to the destination. Stale scratch files are removed from ``tmp/`` at
the start of each download, and from a destination folder the first time a download writes into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from pathlib import Path

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_SCRATCH = re.compile(r"(?:\.refstore-)?([0-9a-f]{8})-(\d+)-[0-9a-f]{16}\.part")


def scratch_name(*, hidden: bool = False) -> str:
    """A fresh name for a file this process is writing."""
    name = f"{HOST}-{os.getpid()}-{os.urandom(8).hex()}.part"
    return f".refstore-{name}" if hidden else name


def is_scratch_name(name: str) -> bool:
    """Whether ``name`` is a scratch file's name (of any process, running or not)."""
    return _SCRATCH.fullmatch(name) is not None


def is_stale(name: str) -> bool:
    """Whether ``name`` is a scratch file left by a process of this machine that is gone."""
    match = _SCRATCH.fullmatch(name)
    return match is not None and match[1] == HOST and not _running(int(match[2]))


def remove_stale(folder: Path) -> None:
    """Delete the stale scratch files directly inside ``folder`` (nothing else is touched)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if is_stale(name):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                (folder / name).unlink()


def _running(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness probe: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Staging:
    """Where one download prepares each file before renaming it into place."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self._tmp = os.fspath(tmp_dir)
        self._device = os.stat(tmp_dir).st_dev
        #: destination folder -> whether it shares ``tmp_dir``'s filesystem (checked once per folder)
        self._shares: dict[str, bool] = {}

    def path_for(self, dest: str) -> str:
        """A scratch path on ``dest``'s filesystem, outside the destination when possible."""
        folder = os.path.dirname(dest)
        shares = self._shares.get(folder)
        if shares is None:
            shares = self._shares[folder] = os.stat(folder).st_dev == self._device
            if not shares:
                remove_stale(Path(folder))
        if shares:
            return f"{self._tmp}/{scratch_name()}"
        return f"{folder}/{scratch_name(hidden=True)}"
