"""Run directories on this machine and the state each keeps in ``<run dir>/.refstore-run/`` (never synced).

The run area is ``<dir or $REFSTORE_DIR or .>/refstore-runs``, a name Python cannot import, so that a
``python train.py`` run beside it never imports the run area instead of the ``refstore`` package. Each run
directory in it is ``run-YYYYmmdd_HHMMSS-<id>``. Run directories that older versions made in the legacy area
``<dir>/refstore`` are still found (``refstore sync``, resume).

``state.json`` remembers the run (project, id, registry URL, process), the
patterns saved for the directory, the policy of each tracked file and what was synced of each file;
``run.json`` is a copy of the run record; ``leases/`` holds one lease per process that has the run open
(:mod:`refstore.runs.lease`: what says whether the run is still in use, not ``state.json``'s pid).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.exceptions import RunError
from ..core.places import INTERNAL_DIR as INTERNAL_DIR  # the runs code names it from here
from ..core.places import LEGACY_AREA_NAME
from ..storage.backends.local import write_atomic

_STATE_NAME = "state.json"
#: The run directory's copy of its run record.
LOCAL_RECORD = "run.json"
#: A file modified this close to being read may change again within the same mtime tick.
RACY_NS = 2 * 10**9


def legacy_area(area: Path) -> Path:
    """The run area older versions used beside ``area`` (``<dir>/refstore``)."""
    return area.parent / LEGACY_AREA_NAME


def new_run_dir(area: Path, run_id: str) -> Path:
    return area / f"run-{datetime.now():%Y%m%d_%H%M%S}-{run_id}"


def _by_start(found: list[Path]) -> list[Path]:
    """Run directories oldest first, by the start time in their names, whichever area holds them."""
    return sorted(found, key=lambda p: (p.name, p.parent.name != LEGACY_AREA_NAME))


def find_run_dir(area: Path, run_id: str) -> Path | None:
    """The newest run directory of ``run_id`` in ``area`` or its legacy area, if any."""
    found = [
        p for a in (area, legacy_area(area)) for p in a.glob(f"run-*-{run_id}") if (p / INTERNAL_DIR).is_dir()
    ]
    return _by_start(found)[-1] if found else None


def run_dirs(area: Path) -> list[Path]:
    """Every run directory in ``area`` and its legacy area, oldest first."""
    areas = (area, legacy_area(area))
    found = [p for a in areas for p in a.glob("run-*") if (p / INTERNAL_DIR / _STATE_NAME).is_file()]
    return _by_start(found)


def state_path(run_dir: Path) -> Path:
    return run_dir / INTERNAL_DIR / _STATE_NAME


@dataclass(frozen=True, slots=True)
class Signature:
    """What a cheap ``stat`` says of a file: a change here means the bytes may have changed."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Signature | None:
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return cls(info.st_size, info.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class SyncedFile:
    """The last state of a file that reached the registry.

    ``racy``: the file had been modified less than :data:`RACY_NS` before it was read, so an unchanged
    size and mtime do not prove unchanged bytes (coarse mtimes); its bytes are hashed again before it
    counts as synced (git's "racily clean" rule).
    """

    digest: str
    size: int
    mtime_ns: int
    state: int
    racy: bool = False

    @classmethod
    def of(cls, digest: str, size: int, signature: Signature, state: int, read_ns: int) -> SyncedFile:
        """Bytes read at ``read_ns`` (``time.time_ns()``) from a file whose stat gave ``signature``."""
        return cls(digest, size, signature.mtime_ns, state, racy=read_ns - signature.mtime_ns < RACY_NS)

    @property
    def signature(self) -> Signature:
        return Signature(self.size, self.mtime_ns)

    def matches(self, signature: Signature | None) -> bool:
        """True when ``signature`` proves the file still holds these bytes (no hashing needed)."""
        return not self.racy and signature == self.signature


@dataclass
class LocalState:
    """What a run directory knows about its run (mutable; saved atomically)."""

    project: str
    id: str
    name: str
    root: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    status: str = "running"
    error: str | None = None
    patterns: list[tuple[str, str]] = field(default_factory=list)
    tracked: dict[str, str] = field(default_factory=dict)
    synced: dict[str, SyncedFile] = field(default_factory=dict)

    @property
    def run_path(self) -> str:
        return f"{self.project}/{self.id}"

    def save(self, run_dir: Path) -> None:
        write_atomic(str(state_path(run_dir)), self.to_bytes())

    def to_bytes(self) -> bytes:
        """The state as JSON, built field by field (``asdict`` deep-copies, and ``indent`` makes ``json``
        leave its C encoder: both cost seconds for a run of 10,000 files)."""
        body = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "synced"}
        body["synced"] = {
            path: {
                "digest": f.digest,
                "size": f.size,
                "mtime_ns": f.mtime_ns,
                "state": f.state,
                "racy": f.racy,
            }
            for path, f in self.synced.items()
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def load(cls, run_dir: Path) -> LocalState:
        path = state_path(run_dir)
        try:
            body: dict[str, Any] = json.loads(path.read_bytes())
            body["patterns"] = [(g, p) for g, p in body.get("patterns", [])]
            body["synced"] = {k: SyncedFile(**v) for k, v in body.get("synced", {}).items()}
            return cls(**body)
        except (OSError, ValueError, TypeError) as exc:
            raise RunError(f"{path}: cannot read the run directory's state ({exc})") from None

    @property
    def open(self) -> bool:
        """Whether the state says ``running``: some process had the run open when it last wrote here
        (whether one still has is told by :mod:`refstore.runs.lease`)."""
        return self.status == "running"


#: Marks the name of a link being made into a run directory (``.<name>.refstore-link-<hex>``), renamed
#: onto its real name a moment later: never a run file.
LINK_SCRATCH = ".refstore-link-"


def files_in(run_dir: Path) -> list[str]:
    """Run-relative POSIX paths of every file (or link to one) in ``run_dir``, its own state and links in
    the making left out."""
    found = []
    for folder, dirs, names in os.walk(run_dir):
        if Path(folder) == run_dir and INTERNAL_DIR in dirs:
            dirs.remove(INTERNAL_DIR)
        dirs.sort()
        relative = Path(folder).relative_to(run_dir).as_posix()
        names = sorted(n for n in names if LINK_SCRATCH not in n)
        found += [name if relative == "." else f"{relative}/{name}" for name in names]
    return found
