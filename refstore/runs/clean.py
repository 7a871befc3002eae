"""Local run directories after the fact: upload what they still hold (``refstore sync``) and delete the
ones whose every file is synced (``refstore sync --clean``)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import hash_file
from ..registry import Registry
from .files import RunFiles
from .local import INTERNAL_DIR, LOCAL_RECORD, LocalState, Signature, SyncedFile, files_in, run_dirs
from .run import republish_record
from .settings import ignore_globs
from .sync import Syncer, UploadFailure


@dataclass(frozen=True, slots=True)
class RunDirStatus:
    """One local run directory: how much disk it takes and what in it has not reached the registry."""

    dir: Path
    run_path: str
    size: int
    running: bool = False
    unsynced: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Safe to delete: the run is over and every file's current bytes are in the registry."""
        return not self.running and not self.unsynced


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What ``refstore sync`` did for one run directory."""

    dir: Path
    run_path: str
    uploaded: tuple[str, ...] = ()
    failures: tuple[UploadFailure, ...] = ()
    running: bool = False


@dataclass
class _Registries:
    """One :class:`Registry` per root URL (``root`` overrides what each run directory recorded)."""

    root: str | None
    by_url: dict[str, Registry] = field(default_factory=dict)

    def of(self, state: LocalState) -> Registry:
        url = self.root or state.root
        if url not in self.by_url:
            self.by_url[url] = Registry(url)
        return self.by_url[url]


def survey(area: Path, root: str | None = None) -> list[RunDirStatus]:
    """The status of every run directory in ``area``, oldest first."""
    registries = _Registries(root)
    return [_status(run_dir, registries) for run_dir in run_dirs(area)]


def _status(run_dir: Path, registries: _Registries) -> RunDirStatus:
    state = LocalState.load(run_dir)
    size = disk_usage(run_dir)
    if state.is_running():
        return RunDirStatus(run_dir, state.run_path, size, running=True)
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


def delete(status: RunDirStatus) -> None:
    """Remove a run directory (links inside are removed, never the files they name)."""
    shutil.rmtree(status.dir)


def sync_pending(area: Path, root: str | None = None) -> list[SyncResult]:
    """Upload what each finished (or crashed) run directory in ``area`` has not synced yet."""
    registries = _Registries(root)
    ignore = ignore_globs(area)
    return [_sync_one(run_dir, registries, ignore) for run_dir in run_dirs(area)]


def _sync_one(run_dir: Path, registries: _Registries, ignore: tuple[str, ...]) -> SyncResult:
    state = LocalState.load(run_dir)
    if state.is_running():
        return SyncResult(run_dir, state.run_path, running=True)
    before = dict(state.synced)
    registry = registries.of(state)
    failures = Syncer(run_dir, state, RunFiles(registry.store, state.run_path), ignore, interval=0).flush()
    try:
        republish_record(registry, run_dir)
    except Exception as exc:
        failures.append(UploadFailure("run record", run_dir / INTERNAL_DIR / LOCAL_RECORD, str(exc)))
    uploaded = sorted(p for p, s in state.synced.items() if before.get(p) != s)
    return SyncResult(run_dir, state.run_path, tuple(uploaded), tuple(failures))
