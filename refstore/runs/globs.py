"""Glob patterns over run-relative POSIX paths: the patterns a run remembers, and ignore globs."""

from __future__ import annotations

import os
from fnmatch import fnmatchcase

from ..core.exceptions import RunError


def matches(relpath: str, pattern: str) -> bool:
    """Shell glob semantics: ``*`` and ``?`` stay within one ``/`` segment, ``**`` spans segments."""
    return _match(relpath.split("/"), pattern.split("/"))


def _match(parts: list[str], patterns: list[str]) -> bool:
    if not patterns:
        return not parts
    if patterns[0] == "**":
        return any(_match(parts[i:], patterns[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], patterns[0]) and _match(parts[1:], patterns[1:])


def is_ignored(relpath: str, ignore_globs: tuple[str, ...]) -> bool:
    """True when an ignore glob matches the whole path or its file name (``*.log`` ignores ``a/b.log``)."""
    name = relpath.rsplit("/", 1)[-1]
    return any(fnmatchcase(relpath, g) or fnmatchcase(name, g) for g in ignore_globs)


def run_relative(path: str, base_path: str | None, run_dir: str) -> str:
    """Where ``path`` (a file or a glob, absolute) goes in the run directory.

    Inside the run directory: its path there. Else without ``base_path``: its basename; with it: its path
    relative to ``base_path``, which must contain it.
    """
    if _is_within(path, run_dir):
        return _posix(os.path.relpath(path, run_dir))
    if base_path is None:
        return os.path.basename(path)
    base = os.path.abspath(base_path)
    if not _is_within(path, base):
        raise RunError(f"{path} is not under base_path {base_path}")
    return _posix(os.path.relpath(path, base))


def _is_within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder and path != folder


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")
