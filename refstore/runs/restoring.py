"""Bringing back what a run synced: one of its files, or the code it ran (commit plus ``diff.patch``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..core.exceptions import InvalidNameError, LocalChangesError, RunError
from ..core.names import check_name
from ..snapshots.registry import Registry
from ..storage.download import safe_destination
from ..storage.hashing import hash_file
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
    state: int | None = None,
) -> BinaryIO:
    """The newest synced state of the run file ``name`` (state number ``state``, counted from 0 for its
    first synced state, when given), downloaded into ``root`` and opened for reading.

    ``run_path`` (``"project/run_id"``) defaults to the current run; ``root`` to the current run's
    directory, else ``.``. A local file already there is returned untouched unless ``replace=True``; with
    ``state``, only when it holds that state's bytes (else :class:`LocalChangesError`). Raises
    :class:`RunError` for an unknown run, a file the run has not synced, or a state it does not have.
    """
    current = current_run()
    run_path = _run_path(run_path, current)
    folder = Path(root) if root is not None else current.dir if current is not None else Path(".")
    dest = safe_destination(folder.expanduser().absolute(), name)
    if state is not None and not replace and dest.exists():
        _check_local_state(_registry(registry, current), run_path, name, state, dest)
    elif replace or not dest.exists():
        reg = _registry(registry, current)
        synced = fetch_file(reg, run_path, name, dest, state)
        if current is not None and current.path == run_path and dest == current.dir / name:
            current._syncer.mark_synced(name, synced.digest, synced.size, synced.state)
    return open(dest, "rb")


def fetch_file(reg: Registry, run_path: str, name: str, dest: Path, state: int | None = None) -> FileState:
    """Download the newest synced state of ``name`` of ``run_path`` (state ``state`` when given) to
    ``dest``."""
    found = synced_state(reg, run_path, name, state)
    RunFiles(reg.store, run_path).download(found, dest)
    return found


def synced_state(reg: Registry, run_path: str, name: str, state: int | None = None) -> FileState:
    """The newest synced state of ``name`` of ``run_path``, or state number ``state``; :class:`RunError`
    when the run, the file or that state is unknown."""
    read_record(reg, run_path)  # an unknown run is RunError
    files = RunFiles(reg.store, run_path)
    if state is None:
        newest = files.newest(name)
        if newest is None:
            raise RunError(
                f"run {run_path} has not synced {name!r} (files saved with policy 'end' are synced at finish)"
            )
        return newest
    if type(state) is not int or state < 0:
        raise RunError(f"state {state!r}: a state number is 0 or more")
    numbers = files.states(name)
    if state not in numbers:
        have = f"its states are {_spans(numbers)}" if numbers else "it has none (not synced yet)"
        raise RunError(f"run {run_path} has no state {state} of {name!r}: {have}")
    return files.state(name, state)


def _spans(numbers: list[int]) -> str:
    """``0-3, 5`` for ``[0, 1, 2, 3, 5]``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _check_local_state(reg: Registry, run_path: str, name: str, state: int, dest: Path) -> None:
    """Refuse to hand out the local file ``dest`` as state ``state`` unless it holds its bytes."""
    wanted = synced_state(reg, run_path, name, state)
    if hash_file(dest) != wanted.digest:
        raise LocalChangesError(
            f"{dest}: holds other bytes than state {state} of {name!r} of run {run_path}; pass "
            "replace=True (refstore restore --replace) to write over it, or restore into another folder"
        )


def restore_code(
    run_path: str,
    *,
    registry: Registry | str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Create branch ``refstore/<run_path>`` and recreate the run's working tree on it: at the run's commit
    with its ``diff.patch`` where the repository has that commit, else (a fresh clone of the remote) at the
    run's upstream commit with its ``upstream.patch`` (see :mod:`refstore.runs.code_state`).

    Works in the git repository around ``cwd`` (default: the current directory); returns the branch name.
    """
    run_path = _run_path(run_path, None)
    reg = _registry(registry, None)
    record = read_record(reg, run_path)
    if record.code is None:
        raise RunError(f"run {run_path} recorded no code state (it did not start in a git repository)")
    with tempfile.TemporaryDirectory(prefix="refstore-patch-") as scratch:
        patches = {}
        for name in record.code.patch_names():
            patches[name] = Path(scratch) / name
            fetch_file(reg, run_path, name, patches[name])
        return code_state.restore_code(record.code, run_path, patches, Path(cwd or Path.cwd()))


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
