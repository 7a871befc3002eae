"""Where refstore keeps its own folders by default (snapshots of a folder leave them out)."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Not a valid module name: ``import refstore`` can never pick up the run area instead of the package.
AREA_NAME = "refstore-runs"
#: Where runs lived before (it shadowed the package); its run directories are still found.
LEGACY_AREA_NAME = "refstore"
#: A run directory's own folder (its state; never synced).
INTERNAL_DIR = ".refstore-run"


def run_area(dir: str | os.PathLike[str] | None = None) -> Path:
    """``<dir or $REFSTORE_DIR or .>/refstore-runs``, absolute."""
    base = dir if dir is not None else os.environ.get("REFSTORE_DIR") or "."
    return Path(base).expanduser().absolute() / AREA_NAME


#: A run directory's name: ``run-YYYYmmdd_HHMMSS-<id>``.
RUN_DIR_NAME = re.compile(r"run-\d{8}_\d{6}-[A-Za-z0-9][A-Za-z0-9._-]*")


def is_legacy_area(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a run area of an older version: named ``refstore`` and holding a run directory
    (``run-YYYYmmdd_HHMMSS-<id>`` with its ``.refstore-run`` state). A ``refstore`` folder of source code
    holds none, so it is never taken for one."""
    if os.path.basename(os.path.normpath(folder)) != LEGACY_AREA_NAME:
        return False
    try:
        with os.scandir(folder) as entries:
            names = [
                e.name for e in entries if RUN_DIR_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return False
    return any(os.path.isdir(os.path.join(folder, name, INTERNAL_DIR)) for name in names)
