"""What is known of one run (``refstore runs show``): its record, how it ended and its synced files.

The registry's record says ``running`` until the run ends; a run whose process died never ends it. When
this machine holds the run's directory and every process that had it open is provably gone (see
:mod:`refstore.runs.lease`), the run is reported ``crashed`` (and ``refstore sync`` records that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..snapshots.registry import Registry
from . import status
from .files import RunFiles
from .lease import live_leases
from .local import LocalState, find_run_dir
from .records import RunRecord
from .run import read_record


@dataclass(frozen=True, slots=True)
class RunOverview:
    """A run as ``refstore runs show`` prints it."""

    record: RunRecord
    state: str
    files: tuple[str, ...]
    dir: Path | None = None

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {
            "path": record.path,
            "name": record.name,
            "state": self.state,
            "error": record.error,
            "created_at": record.created_at,
            "finished_at": record.finished_at,
            "config": record.config,
            "code": record.code.to_json() if record.code else None,
            "files": list(self.files),
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
            ("files", f"{len(self.files)} synced" + (f": {', '.join(self.files)}" if self.files else "")),
            ("dir", str(self.dir) if self.dir else "- (not on this machine)"),
        ]
        return [f"{key:<9}{value}" for key, value in rows]


def overview(registry: Registry, run_path: str, area: Path) -> RunOverview:
    """The run ``run_path`` of ``registry``; ``area`` is where its run directory would be on this machine."""
    record = read_record(registry, run_path)
    run_dir = find_run_dir(area, record.id)
    state = record.state
    if run_dir is not None and state == status.RUNNING:
        local = LocalState.load(run_dir)
        if local.run_path == record.path and local.open and not live_leases(run_dir, local):
            state = status.CRASHED
    files = tuple(RunFiles(registry.store, run_path).names())
    return RunOverview(record, state, files, run_dir)


def _code(record: RunRecord) -> str:
    code = record.code
    if code is None:
        return "-"
    text = f"{code.commit[:12]}" + (f" on {code.branch}" if code.branch else "")
    return text + (" + diff.patch" if code.patch else "")
