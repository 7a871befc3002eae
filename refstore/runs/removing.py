"""Deleting a run from a registry (``refstore runs rm``): its record and the records of its file states.

The bytes of its file states are in the registry's blob store, shared with artifact copies and other runs:
the next ``refstore gc --yes`` frees those nothing else references (:mod:`refstore.snapshots.run_refs`).
A run made before that store kept its bytes in ``runs/<project>/<id>/blobs/``: they go at once. The record
goes last, so a deletion cut short can be run again. Local run directories are left alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from ..core.exceptions import RunError
from ..core.loop import run_sync
from ..snapshots.intents import listing, remove, run_all
from ..snapshots.registry import Registry
from ..storage.backends._base import call_fs
from . import status
from .run import read_record, record_path


@dataclass(frozen=True, slots=True)
class RunRemoval:
    """What deleting one run removed."""

    run_path: str
    name: str
    #: Files with at least one synced state, and their states.
    files: int
    states: int
    #: Bytes deleted at once (a run made before the shared blob store); the rest is freed by gc.
    freed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def remove_run(registry: Registry, run_path: str, *, force: bool = False) -> RunRemoval:
    """Delete the run ``run_path`` from ``registry``; :class:`RunError` for an unknown run, or one whose
    record says ``running`` unless ``force`` (its process is gone: a crash the registry never heard of)."""
    record = read_record(registry, run_path)
    if record.state == status.RUNNING and not force:
        raise RunError(
            f"run {run_path} is running (its record says so): let it finish, or pass force=True "
            "(refstore runs rm --force) if its process is gone"
        )
    store = registry.store
    folder = f"runs/{run_path}"
    contents = listing(store, [folder])
    states = [p for p in contents if p.startswith(f"{folder}/files/") and p.endswith(".json")]
    files = len({p.rsplit("/", 1)[0] for p in states})
    freed = sum(size for p, size in contents.items() if p.startswith(f"{folder}/blobs/"))
    run_all(remove(store, p) for p in contents if p != record_path(run_path))
    store.delete(record_path(run_path))
    store.backend.fs.invalidate_cache(store.full(folder))
    if run_sync(call_fs, store.backend.fs, "isdir", store.full(folder)):  # folders of a local registry
        with contextlib.suppress(FileNotFoundError):  # (and its temporary files): object stores have none
            run_sync(call_fs, store.backend.fs, "rm", store.full(folder), recursive=True)
    return RunRemoval(run_path, record.name, files, len(states), freed)
