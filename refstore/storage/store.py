"""The registry's storage: small files under a root URL, with create-only and atomic writes."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..core.exceptions import RefstoreError
from ..core.loop import run_sync
from .backends._base import call_fs
from .claims import CreateOnly
from .locations import resolve

#: The folder name of a registry on local disk that no root names (like git's ``.git``).
DEFAULT_NAME = ".refstore"
DEFAULT_ROOT = f"./{DEFAULT_NAME}"
#: The file at the top of every registry that ``refstore init`` made or a ``log`` wrote into.
REGISTRY_MARKER = ".refstore-registry"


def default_root() -> str:
    """``$REFSTORE_ROOT``; else the nearest registry in the current folder or its parents (as git finds
    ``.git``, see :func:`find_default_root`); else ``./.refstore``, made by the first write."""
    return os.environ.get("REFSTORE_ROOT") or find_default_root() or DEFAULT_ROOT


def find_default_root(start: str | os.PathLike[str] | None = None) -> str | None:
    """The nearest registry in ``start`` (default: the current folder) or its parents: a ``.refstore``
    folder in it, else the folder itself when it is a registry (its :data:`REGISTRY_MARKER`: ``refstore
    init .`` made one there)."""
    folder = os.path.abspath(start if start is not None else os.getcwd())
    while True:
        candidate = os.path.join(folder, DEFAULT_NAME)
        if os.path.isdir(candidate):
            return candidate
        if os.path.isfile(os.path.join(folder, REGISTRY_MARKER)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


class Store:
    """Relative paths under a registry root on any writable fsspec URL."""

    def __init__(
        self, root: str | os.PathLike[str] | None, storage_options: Mapping[str, Any] | None
    ) -> None:
        location = resolve(os.fspath(root) if root is not None else default_root(), storage_options)
        self.backend = location.backend
        self.base = location.path.rstrip("/")
        self.url = location.url
        #: Kept in memory only (never written): to rebuild this store in another process.
        self.storage_options = dict(storage_options or {})

    def full(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def url_of(self, relative: str) -> str:
        return self.backend.url(self.full(relative))

    def read(self, relative: str) -> bytes:
        """The bytes at ``relative``; :class:`FileNotFoundError` when there are none."""
        with self.failures(relative):
            data: bytes = run_sync(self.read_async, relative)
        return data

    def exists(self, relative: str) -> bool:
        return run_sync(self.exists_async, relative)

    async def exists_async(self, relative: str) -> bool:
        self.backend.fs.invalidate_cache(self.full(relative))
        with self.failures(relative):
            return bool(await call_fs(self.backend.fs, "exists", self.full(relative)))

    def list(self, relative: str) -> list[str]:
        """Names (not paths) directly inside the folder ``relative``; empty when it does not exist."""
        self.backend.fs.invalidate_cache(self.full(relative))
        try:
            with self.failures(relative):
                found = run_sync(call_fs, self.backend.fs, "ls", self.full(relative), detail=False)
        except FileNotFoundError as exc:
            if isinstance(exc, RefstoreError):  # a missing bucket, not an empty folder
                raise
            return []
        prefix = self.full(relative).rstrip("/") + "/"
        names = []
        for item in found:
            path = str(item).rstrip("/")
            path = self.backend.path(path) if "://" in path else path
            if path.startswith(prefix):
                names.append(path[len(prefix) :])
        return sorted(n for n in names if n and ".tmp-" not in n)

    def create(self, relative: str, data: bytes) -> None:
        """Write only if nothing is there; :class:`FileExistsError` otherwise. On storage that ignores
        create-only writes, a claim that cannot lie instead (see :mod:`refstore.storage.claims`)."""
        with self.failures(relative):
            run_sync(self._create_only.create, relative, data)

    def read_created(self, relative: str) -> bytes:
        """The bytes that :meth:`create` put at ``relative``, for keys that are never replaced (version
        records, the content index, ``gc.lock``); :class:`FileNotFoundError` when there are none."""
        with self.failures(relative):
            data: bytes = run_sync(self._create_only.read, relative)
        return data

    def read_if_there(self, relative: str, *, created: bool = False) -> bytes | None:
        """Like :meth:`read` (:meth:`read_created` when ``created``), but None when nothing is there; a
        missing bucket still raises, naming it."""
        try:
            return self.read_created(relative) if created else self.read(relative)
        except FileNotFoundError as exc:
            if isinstance(exc, RefstoreError):  # a missing bucket, named by the backend
                raise
            return None

    async def create_async(self, relative: str, data: bytes) -> None:
        """Like :meth:`create`, on the IO loop."""
        with self.failures(relative):
            await self._create_only.create(relative, data)

    @functools.cached_property
    def _create_only(self) -> CreateOnly:
        return CreateOnly(self)

    async def read_async(self, relative: str) -> bytes:
        """Like :meth:`read`. A key that reads as missing is read again after dropping the filesystem's
        listing cache: that cache is shared by every registry on the same storage in this process, and
        s3fs sizes a ``cat_file`` from it, so a key written by another process after a listing would read
        as missing. (A stale size is harmless: registry files are small, or never replaced.)"""
        path = self.full(relative)
        try:
            data: bytes = await call_fs(self.backend.fs, "cat_file", path)
        except FileNotFoundError:
            self.backend.fs.invalidate_cache(path)
            data = await call_fs(self.backend.fs, "cat_file", path)
        return data

    async def replace_async(self, relative: str, data: bytes) -> None:
        await self.backend.put_atomic(self.full(relative), data)

    async def delete_async(self, relative: str) -> None:
        await call_fs(self.backend.fs, "rm_file", self.full(relative))

    def replace(self, relative: str, data: bytes) -> None:
        """Write or overwrite, atomically for readers."""
        with self.failures(relative):
            run_sync(self.backend.put_atomic, self.full(relative), data)

    @contextlib.contextmanager
    def failures(self, relative: str) -> Iterator[None]:
        """Failures told by the backend (``Backend.storage_error``): :class:`StorageUnavailableError` for
        storage that kept failing after its retries, :class:`StorageAccessError` for refused credentials."""
        with self.backend.storage_errors(self.url_of(relative)):
            yield

    def delete(self, relative: str) -> None:
        run_sync(call_fs, self.backend.fs, "rm_file", self.full(relative))
