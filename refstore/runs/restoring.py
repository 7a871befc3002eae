"""Bringing back what a run synced: one of its files, or the code it ran (commit plus ``diff.patch``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..core.exceptions import InvalidNameError, RunError
from ..core.names import check_name
from ..snapshots.registry import Registry
from ..storage.download import safe_destination
from . import code_state
from .files import RunFiles
from .records import FileState
from .run import Run, current_run, read_record


def restore(
    name: str,
    run_path: str | None = None,
    *,
    replace: bool = False,
    root: str | os.PathLike[str] | None = None,
    registry: Registry | str | os.PathLike[str] | None = None,
) -> BinaryIO:
    """The newest synced state of the run file ``name``, downloaded into ``root`` and opened for reading.

    ``run_path`` (``"project/run_id"``) defaults to the current run; ``root`` to the current run's
    directory, else ``.``. A local file already there is returned untouched unless ``replace=True``.
    Raises :class:`RunError` for an unknown run or a file the run has not synced.
    """
    current = current_run()
    run_path = _run_path(run_path, current)
    folder = Path(root) if root is not None else current.dir if current is not None else Path(".")
    dest = safe_destination(folder.expanduser().absolute(), name)
    if replace or not dest.exists():
        reg = _registry(registry, current)
        state = fetch_file(reg, run_path, name, dest)
        if current is not None and current.path == run_path and dest == current.dir / name:
            current._syncer.mark_synced(name, state.digest, state.size, state.state)
    return open(dest, "rb")


def fetch_file(reg: Registry, run_path: str, name: str, dest: Path) -> FileState:
    """Download the newest synced state of ``name`` of ``run_path`` to ``dest``."""
    read_record(reg, run_path)  # an unknown run is RunError
    files = RunFiles(reg.store, run_path)
    state = files.newest(name)
    if state is None:
        raise RunError(
            f"run {run_path} has not synced {name!r} (files saved with policy 'end' are synced at finish)"
        )
    files.download(state, dest)
    return state


def restore_code(
    run_path: str,
    *,
    registry: Registry | str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Create branch ``refstore/<run_path>`` at the run's commit and apply its ``diff.patch``.

    Works in the git repository around ``cwd`` (default: the current directory); returns the branch name.
    """
    run_path = _run_path(run_path, None)
    reg = _registry(registry, None)
    record = read_record(reg, run_path)
    if record.code is None:
        raise RunError(f"run {run_path} recorded no code state (it did not start in a git repository)")
    with tempfile.TemporaryDirectory(prefix="refstore-patch-") as scratch:
        patch = None
        if record.code.patch:
            patch = Path(scratch) / code_state.PATCH_NAME
            fetch_file(reg, run_path, code_state.PATCH_NAME, patch)
        return code_state.restore_code(record.code, run_path, patch, Path(cwd or Path.cwd()))


def _run_path(run_path: str | None, current: Run | None) -> str:
    if run_path is None:
        if current is None:
            raise RunError("no current run: pass run_path='project/run_id'")
        return current.path
    return check_run_path(run_path)


def check_run_path(run_path: str) -> str:
    """``run_path`` when it reads ``project/run_id``; :class:`RunError` otherwise."""
    project, _, run_id = run_path.partition("/")
    try:
        check_name(project, "project")
        check_name(run_id, "run id")
    except InvalidNameError:
        raise RunError(f"run path {run_path!r}: expected 'project/run_id'") from None
    return run_path


def _registry(registry: Registry | str | os.PathLike[str] | None, current: Run | None) -> Registry:
    if isinstance(registry, Registry):
        return registry
    if registry is None and current is not None:
        return current.registry
    return Registry(registry)
