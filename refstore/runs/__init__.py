"""Runs: a local run directory whose files are synced to a registry, with lineage and code state.

Registry layout, under ``runs/<project>/<run-id>/``::

    run.json                         the run record (name, times, config, git commit/branch/remote)
    files/<quoted path>/<N>.json     state N of a run file (every state of a ``live`` file is kept)
    blobs/<hex>                      bytes of synced file states of runs made before the shared store

The bytes of file states go to the registry's blob store, ``blobs/<aa>/<hex>`` by xxh3_128, shared with
artifact copies; gc keeps every blob a file state names (:mod:`refstore.snapshots.run_refs`).

Lineage lives with the artifacts: ``created_by`` in version records, ``artifacts/<name>/lineage/``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .restoring import restore, restore_code
    from .run import Run, current_run, finish, init, save

__all__ = ["Run", "current_run", "finish", "init", "restore", "restore_code", "save"]

#: Where each public name lives; imported on first use (``refstore.surfaces.cli`` imports ``runs.commands``).
_MODULES = {
    **dict.fromkeys(("Run", "current_run", "finish", "init", "save"), "run"),
    **dict.fromkeys(("restore", "restore_code"), "restoring"),
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    return value
