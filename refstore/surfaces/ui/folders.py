"""Folders of a version, one page at a time, from its logical paths in sorted order.

A folder's entries are one contiguous run of the sorted paths; a subfolder is skipped with one binary
search (``"/"`` sorts just before ``"0"``), so a page costs about ``page size x log(entries)`` whatever the
folder holds: the root of a 1,000,000-entry version pages as fast as a folder of ten. Pages continue after
a name (``after``), not at an offset, so their URLs stay short and cheap to answer.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

#: Children listed on one page of a folder.
PAGE_SIZE = 500
_AFTER_SLASH = chr(ord("/") + 1)


@dataclass(frozen=True, slots=True)
class Child:
    """A file (``path`` is its logical path) or a subfolder (``entries`` counts the files below it)."""

    name: str
    path: str
    folder: bool
    entries: int = 1


@dataclass(frozen=True, slots=True)
class FolderPage:
    folder: str
    children: list[Child]
    #: Files anywhere below the folder.
    entries: int
    #: The cursor of the next page (the last child's name, ``/`` after a folder's); ``None`` at the end.
    next_after: str | None


def prefix_of(folder: str) -> str:
    """``""`` for the root, else ``folder/``."""
    return f"{folder.strip('/')}/" if folder.strip("/") else ""


def span(paths: Sequence[str], folder: str) -> tuple[int, int]:
    """The positions ``[lo, hi)`` of the paths below ``folder``."""
    prefix = prefix_of(folder)
    if not prefix:
        return 0, len(paths)
    return bisect_left(paths, prefix), bisect_left(paths, prefix[:-1] + _AFTER_SLASH)


def is_folder(paths: Sequence[str], folder: str) -> bool:
    lo, hi = span(paths, folder)
    return hi > lo


def list_folder(
    paths: Sequence[str], folder: str, *, after: str | None = None, limit: int = PAGE_SIZE
) -> FolderPage:
    """Up to ``limit`` children of ``folder`` in path order, starting after the child named ``after``."""
    prefix = prefix_of(folder)
    lo, hi = span(paths, folder)
    position = lo
    if after:
        if after.endswith("/"):  # a subfolder: continue past everything below it
            position = bisect_left(paths, prefix + after[:-1] + _AFTER_SLASH, lo, hi)
        else:
            position = bisect_right(paths, prefix + after, lo, hi)
    children: list[Child] = []
    while position < hi and len(children) < limit:
        rest = paths[position][len(prefix) :]
        name, slash, _ = rest.partition("/")
        if slash:
            end = bisect_left(paths, prefix + name + _AFTER_SLASH, position, hi)
            children.append(Child(name, prefix + name, True, end - position))
            position = end
        else:
            children.append(Child(name, paths[position], False))
            position += 1
    last = children[-1] if children else None
    next_after = None
    if position < hi and last is not None:
        next_after = last.name + "/" if last.folder else last.name
    return FolderPage(prefix.rstrip("/"), children, hi - lo, next_after)


def all_folders(paths: Sequence[str]) -> list[str]:
    """Every folder of a version (``""`` for the root), sorted."""
    found = {""}
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(len(parts)):
            found.add("/".join(parts[: i + 1]))
    return sorted(found)
