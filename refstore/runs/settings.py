"""Run settings: ignore globs from ``REFSTORE_IGNORE_GLOBS`` and the settings file of the run area.

The settings file is ``<run area>/settings`` (the run area is ``<dir>/refstore-runs``, which holds the run
directories), INI style, with or without a ``[default]`` header::

    ignore_globs = *.patch,*.tmp

Where the run area has no settings file, the one of the legacy area (``<dir>/refstore/settings``) is read.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from ..core.exceptions import RunError
from .local import legacy_area

SETTINGS_NAME = "settings"


def ignore_globs(area: Path) -> tuple[str, ...]:
    """The ignore globs of runs in ``area``: the environment's, then the settings file's."""
    from_env = _split(os.environ.get("REFSTORE_IGNORE_GLOBS", ""))
    return (*from_env, *_split(read_settings(area).get("ignore_globs", "")))


def read_settings(area: Path) -> dict[str, str]:
    """The ``[default]`` section of ``<area>/settings`` (else of the legacy area's); empty without one."""
    for path in (area / SETTINGS_NAME, legacy_area(area) / SETTINGS_NAME):
        try:
            return _parse(path, path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
    return {}


def _parse(path: Path, text: str) -> dict[str, str]:
    if not text.lstrip().startswith("["):
        text = "[default]\n" + text
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise RunError(f"{path}: cannot read the settings file ({exc})") from None
    return dict(parser["default"]) if parser.has_section("default") else {}


def _split(value: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in value.split(",") if g.strip())
