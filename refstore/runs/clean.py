"""Local run directories after the fact: upload what they still hold (``refstore sync``) and delete the
ones whose every file is synced (``refstore sync --clean``).

Each run directory goes to the registry its run recorded (``state.json``), whatever ``REFSTORE_ROOT`` says
now. A run directory that any process may still have open (see :mod:`refstore.runs.lease`: this host's
processes are looked at, another host's lease counts until it expires) is neither synced nor deleted. A run
left ``running`` whose every process is provably gone is recorded as ``crashed`` on the way.

Deleting is careful about a process that opens the run directory while ``--clean`` decides: the directory
is first renamed aside (a resume can no longer find it), its leases are looked at again, and only then is
it removed; a lease that appeared in between gets the directory back under its name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.exceptions import RunError
from ..core.places import LEGACY_AREA_NAME
from ..snapshots.registry import Registry
from ..storage.hashing import hash_file
from . import status
from .files import RunFiles
from .lease import live_leases
from .local import (
    INTERNAL_DIR,
    LOCAL_RECORD,
    LocalState,
    Signature,
    SyncedFile,
    files_in,
    run_dirs,
)
from .records import RunRecord
from .run import keep_record, republish_record
from .settings import ignore_globs
from .sync import Syncer, UploadFailure

#: Prefix of a run directory's name while ``--clean`` deletes it (``run_dirs`` lists only ``run-*``).
_ASIDE = ".refstore-deleting-"


@dataclass(frozen=True, slots=True)
class RunDirStatus:
    """One local run directory: how much disk it takes and what in it has not reached the registry."""

    dir: Path
    run_path: str
    size: int
    running: bool = False
    unsynced: tuple[str, ...] = ()
    #: Why the run counts as running: the processes that may still have it open.
    holders: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Safe to delete: the run is over and every file's current bytes are in the registry."""
        return not self.running and not self.unsynced


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What ``refstore sync`` did for one run directory.

    ``uploaded``: the files whose bytes went to the registry now (never a file found unchanged);
    ``state``: how the run ended (``finished``, ``failed``, ``crashed``), ``running`` when it was skipped.
    """

    dir: Path
    run_path: str
    uploaded: tuple[str, ...] = ()
    failures: tuple[UploadFailure, ...] = ()
    running: bool = False
    state: str = status.FINISHED
    error: str | None = None
    registry: str = ""


@dataclass
class _Registries:
    """One :class:`Registry` per root URL that run directories recorded."""

    by_url: dict[str, Registry] = field(default_factory=dict)

    def of(self, state: LocalState) -> Registry:
        if state.root not in self.by_url:
            self.by_url[state.root] = Registry(state.root)
        return self.by_url[state.root]


def survey(area: Path) -> list[RunDirStatus]:
    """The status of every run directory in ``area`` (and its legacy area), oldest first."""
    registries = _Registries()
    return [_status(run_dir, registries) for run_dir in run_dirs(area)]


def _status(run_dir: Path, registries: _Registries) -> RunDirStatus:
    state = LocalState.load(run_dir)
    size = disk_usage(run_dir)
    live = live_leases(run_dir, state)
    if live:
        holders = tuple(lease.describe() for lease in live)
        return RunDirStatus(run_dir, state.run_path, size, running=True, holders=holders)
    if state.open:
        record_crash(run_dir, state, registries.of(state))
    files = RunFiles(registries.of(state).store, state.run_path)
    unsynced = [p for p in files_in(run_dir) if not _is_synced(run_dir / p, p, state.synced.get(p), files)]
    return RunDirStatus(run_dir, state.run_path, size, unsynced=tuple(unsynced))


def _is_synced(path: Path, relpath: str, synced: SyncedFile | None, files: RunFiles) -> bool:
    if path.is_symlink() and not path.exists():
        return True  # a link whose file is gone: deleting it loses nothing
    if synced is None:
        return False
    if not synced.matches(Signature.of(path)) and hash_file(path) != synced.digest:
        return False
    try:
        return files.has(relpath, synced.state)
    except Exception:  # registry unreachable: not known to be synced
        return False


def disk_usage(folder: Path) -> int:
    """Bytes of the files in ``folder`` themselves (a link counts as a link, not as what it names)."""
    total = 0
    for parent, _, names in os.walk(folder):
        total += sum(os.lstat(os.path.join(parent, n)).st_size for n in names)
    return total


def delete(status: RunDirStatus) -> bool:
    """Remove a run directory (links inside are removed, never the files they name) unless a process opened
    it since ``status`` was taken; whether it was removed. The legacy run area (``./refstore``, which
    shadows the package) goes too once it is empty."""
    aside = status.dir.with_name(f"{_ASIDE}{status.dir.name}")
    os.rename(status.dir, aside)
    if live_leases(aside, LocalState.load(aside)):
        try:
            os.rename(aside, status.dir)
        except OSError as exc:
            raise RunError(
                f"{status.dir}: opened again while it was being cleaned; it is kept as {aside} ({exc})"
            ) from None
        return False
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        raise RunError(
            f"{aside}: could not delete all of it ({exc}); its files are synced, delete it"
        ) from None
    if status.dir.parent.name == LEGACY_AREA_NAME:
        with contextlib.suppress(OSError):  # not empty: other run directories, a settings file
            status.dir.parent.rmdir()
    return True


def sync_pending(area: Path) -> list[SyncResult]:
    """Upload what each ended (or crashed) run directory in ``area`` has not synced yet, each to the
    registry its run recorded."""
    registries = _Registries()
    ignore = ignore_globs(area)
    return [_sync_one(run_dir, registries, ignore) for run_dir in run_dirs(area)]


def _sync_one(run_dir: Path, registries: _Registries, ignore: tuple[str, ...]) -> SyncResult:
    state = LocalState.load(run_dir)
    if live_leases(run_dir, state):
        return SyncResult(run_dir, state.run_path, running=True, state=status.RUNNING, registry=state.root)
    registry = registries.of(state)
    failures: list[UploadFailure] = []
    if state.open:
        record_crash(run_dir, state, None)
    syncer = Syncer(run_dir, state, RunFiles(registry.store, state.run_path), ignore, interval=0)
    failures += syncer.flush()
    try:
        republish_record(registry, run_dir)
    except Exception as exc:
        failures.append(UploadFailure("run record", run_dir / INTERNAL_DIR / LOCAL_RECORD, str(exc)))
    return SyncResult(
        run_dir,
        state.run_path,
        tuple(sorted(syncer.uploaded)),
        tuple(failures),
        state=state.status,
        error=state.error,
        registry=registry.root,
    )


def record_crash(run_dir: Path, state: LocalState, registry: Registry | None) -> None:
    """Mark the run of ``run_dir``, whose process died, ``crashed``: in its state, in its copy of the run
    record and, given ``registry``, there too (``refstore sync`` publishes the copy after its uploads)."""
    state.status = status.CRASHED
    state.save(run_dir)
    kept = run_dir / INTERNAL_DIR / LOCAL_RECORD
    if kept.is_file():
        record = RunRecord.from_bytes(kept.read_bytes(), str(kept))
        if record.state == status.RUNNING:
            keep_record(run_dir, replace(record, state=status.CRASHED))
    if registry is not None:
        with contextlib.suppress(Exception):  # unreachable: the next ``refstore sync`` publishes it
            republish_record(registry, run_dir)
