"""Run settings: ignore globs from ``REFSTORE_IGNORE_GLOBS`` and the settings file of the run area.

The settings file is ``<run area>/settings`` (the run area is ``<dir>/refstore``, which holds the run
directories), INI style, with or without a ``[default]`` header::

    ignore_globs = *.patch,*.tmp
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from .._exceptions import RunError

SETTINGS_NAME = "settings"


def ignore_globs(area: Path) -> tuple[str, ...]:
    """The ignore globs of runs in ``area``: the environment's, then the settings file's."""
    from_env = _split(os.environ.get("REFSTORE_IGNORE_GLOBS", ""))
    return (*from_env, *_split(read_settings(area).get("ignore_globs", "")))


def read_settings(area: Path) -> dict[str, str]:
    """The ``[default]`` section of ``<area>/settings``; empty when there is no such file."""
    path = area / SETTINGS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
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
