"""What is known of one run (``refstore runs show``): its record, how it ended, every synced state of its
files and its lineage (the versions it used and logged).

The registry's record says ``running`` until the run ends; a run whose process died never ends it. When
this machine holds the run's directory and every process that had it open is provably gone (see
:mod:`refstore.runs.lease`), the run is reported ``crashed`` (and ``refstore sync`` records that).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.sizes import human_size
from ..snapshots.registry import Registry
from . import status
from .files import RunFiles
from .lease import live_leases
from .lineage import LineageIndex
from .local import LocalState, find_run_dir
from .records import FileState, RunRecord
from .run import read_record

#: Registry reads at once while states and lineage are gathered (each is one small request).
READERS = 16


@dataclass(frozen=True, slots=True)
class RunOverview:
    """A run as ``refstore runs show`` prints it."""

    record: RunRecord
    state: str
    files: tuple[str, ...]
    dir: Path | None = None
    #: Every synced state of each file, oldest first (``restore(..., state=N)`` brings back state N).
    states: Mapping[str, tuple[FileState, ...]] = field(default_factory=dict)
    #: Versions the run used (``run.use_artifact``) and logged (``run.log_artifact``): ``name:vN``.
    used: tuple[str, ...] = ()
    logged: tuple[str, ...] = ()
    #: Those of ``used`` and ``logged`` that are deleted since (they stay in the run's lineage).
    deleted: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {
            **run_json(record, self.state),
            "config": record.config,
            "code": record.code.to_json() if record.code else None,
            "files": list(self.files),
            "states": {path: [_state_json(s) for s in found] for path, found in self.states.items()},
            "used": list(self.used),
            "logged": list(self.logged),
            "deleted": list(self.deleted),
            "dir": str(self.dir) if self.dir else None,
        }

    def lines(self) -> list[str]:
        record = self.record
        state = self.state + (f": {record.error}" if record.error else "")
        if self.state == status.CRASHED and record.state == status.RUNNING:
            state += " (its process died; refstore sync records it)"
        rows = [
            ("run", f"{record.path} ({record.name})"),
            ("state", state),
            ("started", record.created_at),
            ("ended", record.finished_at or "-"),
            ("config", ", ".join(f"{k}={v!r}" for k, v in sorted(record.config.items())) or "-"),
            ("code", _code(record)),
            ("files", f"{len(self.files)} synced, {sum(map(len, self.states.values()))} states"),
            ("used", self._versions(self.used)),
            ("logged", self._versions(self.logged)),
            ("dir", str(self.dir) if self.dir else "- (not on this machine)"),
        ]
        lines = [f"{key:<9}{value}" for key, value in rows]
        files_row = [key for key, _ in rows].index("files")
        return [*lines[: files_row + 1], *self._file_lines(), *lines[files_row + 1 :]]

    def _versions(self, keys: tuple[str, ...]) -> str:
        return ", ".join(k + (" (deleted)" if k in self.deleted else "") for k in keys) or "-"

    def _file_lines(self) -> list[str]:
        """Each file, then one line per synced state: number, size, when, policy."""
        lines = []
        for path in self.files:
            lines.append(f"  {path}")
            for state in self.states.get(path, ()):
                size = human_size(state.size)
                lines.append(f"    state {state.state:<4} {size:>10}  {state.synced_at}  {state.policy}")
        return lines


def overview(registry: Registry, run_path: str, area: Path) -> RunOverview:
    """The run ``run_path`` of ``registry``; ``area`` is where its run directory would be on this machine."""
    record = read_record(registry, run_path)
    run_dir = find_run_dir(area, record.id)
    state = observed_state(record, run_dir)
    files = RunFiles(registry.store, run_path)
    names = tuple(files.names())
    with ThreadPoolExecutor(READERS) as pool:
        histories = dict(zip(names, pool.map(lambda n: tuple(files.history(n)), names), strict=True))
    index = LineageIndex(registry)
    used, logged = tuple(index.used.get(run_path, ())), tuple(index.logged.get(run_path, ()))
    deleted = tuple(k for k in (*used, *logged) if k in index.deleted)
    return RunOverview(record, state, names, run_dir, histories, used, logged, deleted)


def run_json(record: RunRecord, state: str) -> dict[str, Any]:
    """What ``runs ls --json`` and ``runs show --json`` say of every run; ``state`` as observed."""
    return {
        "path": record.path,
        "name": record.name,
        "state": state,
        "error": record.error,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
    }


def observed_state(record: RunRecord, run_dir: Path | None) -> str:
    """How the run stands: its record's state, or ``crashed`` where the record says ``running`` and its
    directory ``run_dir`` on this machine (``None``: not here) shows every process that had it open gone."""
    if run_dir is not None and record.state == status.RUNNING:
        local = LocalState.load(run_dir)
        if local.run_path == record.path and local.open and not live_leases(run_dir, local):
            return status.CRASHED
    return record.state


def _state_json(state: FileState) -> dict[str, Any]:
    body = asdict(state)
    del body["path"]
    return body


def _code(record: RunRecord) -> str:
    code = record.code
    if code is None:
        return "-"
    text = f"{code.commit[:12]}" + (f" on {code.branch}" if code.branch else "")
    text += " + diff.patch" if code.patch else ""
    if code.upstream is not None and code.upstream != code.commit:
        text += f"; not on the remote: upstream {code.upstream[:12]}"
        text += " + upstream.patch" if code.upstream_patch else ""
    if code.untracked or code.untracked_left_out:
        text += f"; {code.untracked} untracked file(s) in the patches"
        text += f", {code.untracked_left_out} left out (too big)" if code.untracked_left_out else ""
    return text
