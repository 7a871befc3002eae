"""Runs: a local run directory whose files are synced to a registry, with lineage and code state.

Registry layout, under ``runs/<project>/<run-id>/``::

    run.json                         the run record (name, times, config, git commit/branch/remote)
    blobs/<hex>                      bytes of synced file states, by xxh3_128
    files/<quoted path>/<N>.json     state N of a run file (every state of a ``live`` file is kept)

Lineage lives with the artifacts: ``created_by`` in version records, ``artifacts/<name>/lineage/``.
"""

from __future__ import annotations

from .restore import restore, restore_code
from .run import Run, current_run, finish, init, save

__all__ = ["Run", "current_run", "finish", "init", "restore", "restore_code", "save"]
