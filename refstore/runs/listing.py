"""Which runs a registry holds: ``runs/<project>/<id>/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..snapshots.registry import Registry


def run_paths(registry: Registry) -> list[str]:
    """Every run path (``project/id``) with a folder in the registry, sorted; its record may still be
    missing (a run that is being created) and is read separately (:func:`refstore.runs.run.read_record`)."""
    store = registry.store
    return [f"{project}/{run}" for project in store.list("runs") for run in store.list(f"runs/{project}")]
