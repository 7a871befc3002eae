"""What the pages of one registry share: the registry, read-only, and what is cheap to keep of it.

Versions and manifests never change once logged, so the sorted paths of a version are kept (a few
versions at a time: a 1,000,000-entry version is paged from them); the lineage index is read again when
it is older than a few seconds (new versions and uses appear), and kept for good by an export.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ...core.exceptions import ArtifactNotFoundError
from ...runs.lineage import LineageIndex

if TYPE_CHECKING:
    from ...snapshots.registry import Registry
    from ...snapshots.version import ArtifactVersion

#: Versions whose sorted paths are kept.
KEPT_VERSIONS = 4
#: Seconds the server keeps a lineage index (an export keeps it for good).
INDEX_SECONDS = 10.0


class Site:
    """A registry as the pages see it; ``previews`` says whether pages read source bytes."""

    def __init__(self, registry: Registry, *, previews: bool = True, export: bool = False) -> None:
        self.registry = registry
        self.previews = previews
        self.export = export
        self._paths: OrderedDict[str, list[str]] = OrderedDict()
        self._index: tuple[float, LineageIndex] | None = None
        self._lock = threading.Lock()

    def version(self, name: str, number: int) -> ArtifactVersion:
        """``name:v<number>``; :class:`ArtifactNotFoundError` when there is none."""
        return self.registry.get(f"{name}:v{number}")

    def paths(self, version: ArtifactVersion) -> list[str]:
        """The logical paths of ``version``, sorted (a manifest iterates in path order)."""
        key = version.manifest_digest
        with self._lock:
            if key in self._paths:
                self._paths.move_to_end(key)
                return self._paths[key]
        paths = version.manifest.paths()  # a chunked manifest: paths only, no entries made
        with self._lock:
            self._paths[key] = paths
            while len(self._paths) > KEPT_VERSIONS:
                self._paths.popitem(last=False)
        return paths

    def lineage_index(self) -> LineageIndex:
        now = time.monotonic()
        with self._lock:
            if self._index is not None and (self.export or now - self._index[0] < INDEX_SECONDS):
                return self._index[1]
        index = LineageIndex(self.registry)
        with self._lock:
            self._index = (now, index)
        return index

    def check_version_number(self, label: str) -> int:
        """The number of a ``v<N>`` path segment; :class:`ArtifactNotFoundError` for anything else."""
        if not (label.startswith("v") and label[1:].isascii() and label[1:].isdigit()):
            raise ArtifactNotFoundError(f"{label}: not a version (v0, v1, ...)")
        return int(label[1:])
