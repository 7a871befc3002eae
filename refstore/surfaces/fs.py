"""``refstore://NAME:VERSION/path``: a logged version as a read-only fsspec filesystem.

Registered through the ``fsspec.specs`` entry point, so pandas, PyArrow, Dask and DuckDB read snapshots by
URL::

    pandas.read_parquet("refstore://sales:v3/part-0.parquet", storage_options={"root": "s3://team/reg"})

The first path segment names the version (``sales:v3``, ``sales:prod``, ``sales:latest`` or just ``sales``);
the rest is a logical path of its manifest. Listings come from the manifest alone; reads go to the pinned
source object through the backend's pinned reader, range by range, so reading a Parquet footer fetches the
footer, not the file. The bytes are exactly the pinned ones: a source that moved on without keeping the
pinned version raises :class:`~refstore.ObjectChangedError`.

Options: ``root`` (the registry URL; default ``$REFSTORE_ROOT``, else the nearest ``.refstore``),
``registry_options`` (fsspec storage options for the registry) and ``source_options`` (for the sources).
An alias is resolved once per filesystem instance; instances are not cached, so each ``fsspec.open`` /
``pandas.read_*`` call looks aliases up afresh. Use ``name:vN`` for the same bytes on every worker.
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections.abc import Mapping
from datetime import datetime
from typing import IO, Any

from fsspec import AbstractFileSystem

from ..core.manifest import Manifest, ManifestEntry
from ..snapshots.registry import Registry
from ..snapshots.version import ArtifactVersion

__all__ = ["RefstoreFileSystem"]


class _Snapshot:
    """One version's manifest as a tree: logical paths of files, and the children of each folder. The
    folders are made the first time one is asked for; a file's ``info``, ``open`` or ``cat`` looks its path
    up in the manifest (a chunked one reads only the chunks on its way)."""

    def __init__(self, version: ArtifactVersion) -> None:
        self.version = version
        self.files: Mapping[str, ManifestEntry] = version.manifest

    @classmethod
    def of(cls, version: ArtifactVersion) -> _Snapshot:
        return cls(version)

    @functools.cached_property
    def folders(self) -> dict[str, set[str]]:
        folders: dict[str, set[str]] = {"": set()}
        for path in self.files.paths() if isinstance(self.files, Manifest) else self.files:
            parts = path.split("/")
            for depth in range(len(parts)):
                folders.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
        return folders


class RefstoreFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Read-only view of logged versions: ``ls``, ``info``, ``find``, ``open``, ``cat`` and range reads."""

    protocol = "refstore"
    root_marker = ""
    cachable = False

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        registry_options: Mapping[str, Any] | None = None,
        source_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.registry = Registry(root, storage_options=registry_options)
        self.source_options = dict(source_options or {})
        self._snapshots: dict[str, _Snapshot] = {}

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return str(super()._strip_protocol(path)).strip("/")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """A file's own entry, or what a folder of the version holds."""
        ref, inner = self._split(path)
        snapshot = self._snapshot(ref)
        if inner in snapshot.files:
            found = [self._file_info(ref, inner, snapshot.files[inner])]
        elif inner in snapshot.folders:
            children = sorted(snapshot.folders[inner])
            found = [self._info(ref, snapshot, posixpath.join(inner, c)) for c in children]
        else:
            raise FileNotFoundError(f"refstore://{path}: no such file or folder in {snapshot.version}")
        return found if detail else [i["name"] for i in found]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Size, type and pins of a file (from the manifest), or a folder."""
        ref, inner = self._split(path)
        snapshot = self._snapshot(ref)
        if inner not in snapshot.files and inner not in snapshot.folders:
            raise FileNotFoundError(f"refstore://{path}: no such file or folder in {snapshot.version}")
        return self._info(ref, snapshot, inner)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> IO[bytes]:
        if mode != "rb":
            raise PermissionError(f"refstore://{path}: versions are read-only (mode {mode!r})")
        ref, inner = self._split(path)
        return self._snapshot(ref).version.open(inner, storage_options=self.source_options)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """The bytes of ``path``, or of ``[start, end)`` (negative: from the end), read by range."""
        size = int(self.info(path)["size"])
        first = _absolute(start, size, default=0)
        stop = max(first, _absolute(end, size, default=size))
        with self._open(path) as handle:
            handle.seek(first)
            return handle.read(stop - first)

    def ukey(self, path: str) -> str:
        """The manifest entry's content digest: the same bytes give the same key on every machine."""
        info = self.info(path)
        return str(info.get("digest") or info["name"])

    def modified(self, path: str) -> datetime:
        """When the version was logged: its bytes cannot have changed since (DuckDB asks for it)."""
        ref, _ = self._split(path)
        self.info(path)
        return datetime.fromisoformat(self._snapshot(ref).version.created_at)

    def _split(self, path: str) -> tuple[str, str]:
        stripped = self._strip_protocol(path)
        ref, _, inner = stripped.partition("/")
        if not ref:
            raise ValueError(f"refstore://{path}: name a version, as in refstore://NAME:VERSION/path")
        return ref, inner

    def _snapshot(self, ref: str) -> _Snapshot:
        snapshot = self._snapshots.get(ref)
        if snapshot is None:
            snapshot = self._snapshots[ref] = _Snapshot.of(self.registry.get(ref))
        return snapshot

    def _info(self, ref: str, snapshot: _Snapshot, inner: str) -> dict[str, Any]:
        if inner in snapshot.files:
            return self._file_info(ref, inner, snapshot.files[inner])
        return {"name": _join(ref, inner), "size": 0, "type": "directory"}

    @staticmethod
    def _file_info(ref: str, inner: str, entry: ManifestEntry) -> dict[str, Any]:
        return {"name": _join(ref, inner), "size": entry.size, "type": "file", **entry.to_json()}


def _join(ref: str, inner: str) -> str:
    return f"{ref}/{inner}" if inner else ref


def _absolute(offset: int | None, size: int, *, default: int) -> int:
    if offset is None:
        return default
    return max(0, min(size, offset if offset >= 0 else size + offset))
