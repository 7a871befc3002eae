"""Which runs a registry holds: ``runs/<project>/<id>/``; and a line on each (``refstore runs ls``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.exceptions import InvalidNameError, RunError
from ..core.names import check_name
from . import status
from .local import run_dirs
from .overview import READERS, observed_state, run_json
from .records import RunRecord
from .run import read_record

if TYPE_CHECKING:
    from ..snapshots.registry import Registry


def run_paths(registry: Registry) -> list[str]:
    """Every run path (``project/id``) with a folder in the registry, sorted; its record may still be
    missing (a run that is being created) and is read separately (:func:`refstore.runs.run.read_record`)."""
    store = registry.store
    return [f"{project}/{run}" for project in store.list("runs") for run in store.list(f"runs/{project}")]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run as ``refstore runs ls`` prints it."""

    record: RunRecord
    #: The record's state, or ``crashed`` when this machine can tell (see :func:`observed_state`).
    state: str
    #: How many files have at least one synced state.
    files: int
    registry: str

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (to now while it runs); ``None`` when a time cannot be read."""
        try:
            start = datetime.fromisoformat(self.record.created_at)
            end = (
                datetime.fromisoformat(self.record.finished_at)
                if self.record.finished_at
                else datetime.now(timezone.utc)
                if self.state == status.RUNNING
                else None
            )
            return (end - start).total_seconds() if end is not None else None
        except (ValueError, TypeError):  # TypeError: a time without a zone
            return None

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {
            **run_json(record, self.state),
            "project": record.project,
            "id": record.id,
            "duration_seconds": self.duration,
            "files": self.files,
            "registry": self.registry,
        }


def list_runs(registry: Registry, project: str | None = None, area: Path | None = None) -> list[RunSummary]:
    """Every run of ``project`` (default: of every project) in ``registry``, oldest first. ``area`` is
    where run directories live on this machine: a run whose record says ``running`` there and whose
    processes are all gone is ``crashed``. A folder that holds no run record (a run deleted half-way) is
    left out. :class:`RunError` names a ``project`` that has no runs."""
    if project is None:
        paths = [p for p in run_paths(registry) if _is_run_path(p)]
    else:
        check_name(project, "project")
        found = (f"{project}/{run_id}" for run_id in registry.store.list(f"runs/{project}"))
        paths = [p for p in found if _is_run_path(p)]
        if not paths:
            raise RunError(f"no runs of project {project!r} in {registry.root}")
    local = {d.name.rsplit("-", 1)[-1]: d for d in run_dirs(area)} if area is not None else {}

    def summary(path: str) -> RunSummary | None:
        try:
            record = read_record(registry, path)
        except RunError:
            return None
        files = len(registry.store.list(f"runs/{path}/files"))
        return RunSummary(record, observed_state(record, local.get(record.id)), files, registry.root)

    with ThreadPoolExecutor(READERS) as pool:
        summaries = [s for s in pool.map(summary, paths) if s is not None]
    return sorted(summaries, key=lambda s: (s.record.created_at, s.record.path))


def _is_run_path(path: str) -> bool:
    """Whether ``path`` (``project/id`` from a listing) can name a run."""
    try:
        check_name(path.split("/", 1)[0], "project")
        check_name(path.split("/", 1)[1], "run id")
    except InvalidNameError:
        return False
    return True
