"""What a snapshot of a folder leaves out: the user's ``exclude`` globs and refstore's own folders.

``exclude`` globs are matched against logical paths (the paths in the artifact, ``name=`` included), as
``.gitignore`` patterns are:

- a glob without ``/`` matches the name of a file or folder at any depth: ``*.tmp``, ``__pycache__``;
- a glob with ``/`` matches the whole logical path from its start: ``raw/*.csv``, ``/scratch``;
- ``*`` and ``?`` stay within one path segment, ``**`` spans any number of them, ``[abc]`` is a class;
- a glob that matches a folder leaves out everything in it; a trailing ``/`` matches folders only.

refstore's own folders are always left out when they lie inside the folder being snapshotted (naming one of
them directly still snapshots it):

- a folder named ``.refstore`` (the default registry), ``.refstore-run`` (a run directory's own state) or
  ``refstore-runs`` (the run area);
- a folder that holds a ``.refstore-registry`` file (a registry: ``refstore init`` and every ``log`` write
  it) or a ``.refstore-run`` folder (a run directory);
- a folder named ``refstore`` that holds a run directory (``run-YYYYmmdd_HHMMSS-<id>`` with its
  ``.refstore-run``): the run area of older versions, settings file included;
- ``$REFSTORE_ROOT``, the root of every ``Registry`` this process opened, the download cache
  (``$REFSTORE_CACHE_DIR``, else ``~/.cache/refstore``) and the run area of this process
  (``$REFSTORE_DIR/refstore-runs``, else ``./refstore-runs``).

The local walk applies these rules as it goes, so that what is left out is never read, hashed or counted
against ``max_objects``; other listings are filtered once listed (:meth:`Exclusion.keep`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..core.exceptions import InvalidURLError
from ..core.places import is_legacy_area
from .store import DEFAULT_NAME, REGISTRY_MARKER

if TYPE_CHECKING:
    from .backends import ObjectMeta

#: A run directory keeps its own state in this folder (refstore.runs.local.INTERNAL_DIR).
_RUN_STATE = ".refstore-run"
#: The run area's folder name (refstore.runs.local.AREA_NAME).
_RUN_AREA = "refstore-runs"
#: The run area's name in older versions (refstore.runs.local.LEGACY_AREA_NAME), left out only when it holds
#: a run directory: a ``refstore`` folder of source code is snapshotted.
_OLD_RUN_AREA = "refstore"
#: Folders left out by name, wherever they are below the snapshotted folder.
OWN_NAMES = frozenset({DEFAULT_NAME, _RUN_STATE, _RUN_AREA})
#: Entries that mark the folder holding them as refstore's own.
MARKERS = frozenset({REGISTRY_MARKER, _RUN_STATE})


class _Glob:
    """One exclude glob, compiled."""

    def __init__(self, glob: str) -> None:
        if not isinstance(glob, str) or not glob.strip("/"):
            raise InvalidURLError(f"exclude glob {glob!r}: must be a non-empty path pattern")
        self.folders_only = glob.endswith("/")
        body = glob.strip("/")
        self.anchored = "/" in glob.rstrip("/")
        self.regex = re.compile(_translate(body) if self.anchored else _segment(body))

    def matches(self, logical: str, name: str, is_folder: bool) -> bool:
        if self.folders_only and not is_folder:
            return False
        return self.regex.fullmatch(logical if self.anchored else name) is not None


class Exclusion:
    """The rules for one snapshotted folder: paths are relative to it (POSIX), ``prefix`` is ``name=``."""

    def __init__(
        self,
        globs: Iterable[str] = (),
        *,
        prefix: str | None = None,
        own_paths: Iterable[str] = (),
        local_root: str | None = None,
    ) -> None:
        self._local_root = local_root  # the snapshotted folder on local disk, to look into old run areas
        self._globs = [_Glob(g) for g in globs]
        self._prefix = f"{prefix.strip('/')}/" if prefix else ""
        self._own_paths = frozenset(own_paths)
        #: Whether files (not only folders) need a check: there are globs.
        self.checks_files = bool(self._globs)
        self.markers = MARKERS

    def excludes(self, relative: str, is_folder: bool) -> bool:
        """Whether the file or folder at ``relative`` is left out, with everything in it (its own entries
        are not looked at: see :attr:`markers`)."""
        name = relative.rpartition("/")[2]
        if is_folder and (name in OWN_NAMES or relative in self._own_paths):
            return True
        if (
            is_folder
            and name == _OLD_RUN_AREA
            and self._local_root is not None
            and is_legacy_area(os.path.join(self._local_root, relative))
        ):
            return True
        logical = self._prefix + relative
        return any(g.matches(logical, name, is_folder) for g in self._globs)

    def keep(self, records: Sequence[ObjectMeta], base_url: str) -> list[ObjectMeta]:
        """The records of a listing of ``base_url`` that no rule leaves out (for listings that cannot skip
        folders as they go)."""
        cut = len(base_url) + 1
        relatives = [meta.url[cut:] for meta in records]
        marked: set[str] = set()
        for relative in relatives:
            parts = relative.split("/")
            marked.update("/".join(parts[:i]) for i in range(1, len(parts)) if parts[i] in self.markers)
            marked.update(
                "/".join(parts[: i - 1])  # an old run area: refstore/run-<stamp>-<id>/.refstore-run/...
                for i in range(2, len(parts))
                if parts[i] == _RUN_STATE
                and parts[i - 2] == _OLD_RUN_AREA
                and parts[i - 1].startswith("run-")
            )
        left_out: dict[str, bool] = {}  # folder -> whether it is left out, decided once

        def folder_left_out(folder: str) -> bool:
            if folder not in left_out:
                parent = folder.rpartition("/")[0]
                left_out[folder] = (
                    (bool(parent) and folder_left_out(parent))
                    or folder in marked
                    or self.excludes(folder, True)
                )
            return left_out[folder]

        kept = []
        for meta, relative in zip(records, relatives, strict=True):
            folder = relative.rpartition("/")[0]
            if not (folder and folder_left_out(folder)) and not self.excludes(relative, False):
                kept.append(meta)
        return kept


#: The roots of the registries this process opened (``Registry(...)``): left out wherever they are.
_registries: set[str] = set()


def note_registry(url: str) -> None:
    """Remember a registry root that this process uses, so that a folder that holds it leaves it out."""
    _registries.add(url)


def exclusion_for(url: str, globs: Iterable[str] | str | None, prefix: str | None) -> Exclusion:
    """The rules for snapshotting the folder at the canonical ``url``: ``globs`` (one glob or several) and
    refstore's own folders that lie inside it."""
    from .locations import resolve

    inside: set[str] = set()
    for own in _own_folders():
        try:
            own_url = resolve(own).url
        except InvalidURLError:
            continue  # a malformed $REFSTORE_ROOT is reported where it is used
        if own_url.startswith(url.rstrip("/") + "/"):
            inside.add(own_url[len(url.rstrip("/")) + 1 :])
    listed = [globs] if isinstance(globs, str) else list(globs or ())
    location = resolve(url)
    local_root = location.path if url.startswith("file://") else None
    return Exclusion(listed, prefix=prefix, own_paths=inside, local_root=local_root)


def _own_folders() -> list[str]:
    from ..core.places import run_area
    from .cache import default_cache_dir

    found = [os.fspath(default_cache_dir()), os.fspath(run_area()), *_registries]
    root = os.environ.get("REFSTORE_ROOT")
    if root:
        found.append(root)
    local = [p for p in found if "://" not in p]
    return found + [os.path.realpath(os.path.expanduser(p)) for p in local]


def _segment(glob: str) -> str:
    """A regex for a glob within one path segment (``*``, ``?``, ``[abc]``, ``[!abc]``)."""
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        start = i + 2 if glob[i + 1 : i + 2] in ("!", "^") else i + 1
        end = glob.find("]", start + 1) if char == "[" else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif end > 0:
            inner = "".join("\\" + c if c in "\\[]^" else c for c in glob[start:end])
            out.append(f"[^/{inner}]" if start == i + 2 else f"[{inner}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _translate(glob: str) -> str:
    """A regex for a glob over whole paths: segments joined by ``/``, ``**`` for any number of them."""
    parts = glob.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    return "".join(out)
