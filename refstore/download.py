"""Downloading a version: pinned bytes, checked, through the cache, renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._exceptions import ObjectChangedError, UnsafePathError
from ._sync import gather_limited, run_sync
from .backends import Backend, ObjectMeta
from .cache import Cache, CorruptCacheEntry
from .hashing import ALGORITHM, hash_file
from .locations import resolve
from .manifest import ManifestEntry
from .names import check_logical_path
from .progress import progress_bar
from .scratch import Staging
from .store import Store

CONCURRENCY = 32
#: The longest file name most filesystems take (NAME_MAX), in bytes.
_MAX_FILE_NAME = 255


class Downloader:
    """Fetches manifest entries to a local folder; one GET per object when cold, none when warm."""

    def __init__(
        self,
        store: Store,
        *,
        cache: Cache | None = None,
        skip_cache: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.cache = cache or Cache()
        self.skip_cache = skip_cache
        self.storage_options = dict(storage_options or {})

    def download(self, entries: list[ManifestEntry], root: Path, *, description: str) -> Path:
        root = root.expanduser().absolute()
        targets = [(entry, safe_destination(root, entry.path)) for entry in entries]
        check_no_clashes(entry.path for entry in entries)
        self.cache.remove_stale_tmp()
        self._staging = Staging(self.cache.tmp_dir())
        with progress_bar(sum(e.size for e in entries), description) as bar:
            run_sync(
                gather_limited,
                [self._one(entry, dest, bar.update) for entry, dest in targets],
                CONCURRENCY,
            )
        return root

    async def _one(self, entry: ManifestEntry, dest: Path, progress: Any) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = self._staging.path_for(dest)
        try:
            await self._produce(entry, staging, progress)
            os.replace(staging, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()

    async def _produce(self, entry: ManifestEntry, staging: Path, progress: Any) -> None:
        """Write the entry's checked bytes to ``staging``: from the cache, else fetched."""
        if not self.skip_cache:
            cached = self.cache.lookup(entry)
            if cached is not None:
                try:
                    await asyncio.to_thread(self.cache.copy_out, entry, cached, staging)
                    progress(entry.size)
                    return
                except CorruptCacheEntry:
                    pass  # dropped from the cache; fetch it again below
        fetched = staging if self.skip_cache else self.cache.tmp_path()
        try:
            await self._fetch(entry, fetched, progress)
            content = await asyncio.to_thread(_checked_content, entry, fetched)
            if fetched != staging:
                cached = self.cache.admit(entry, fetched, content)
                await asyncio.to_thread(self.cache.copy_out, entry, cached, staging)
        finally:
            if fetched != staging:
                with contextlib.suppress(FileNotFoundError):
                    fetched.unlink()

    async def _fetch(self, entry: ManifestEntry, target: Path, progress: Any) -> None:
        backend, pin = self.source(entry)
        await backend.fetch(pin, target, progress)

    def source(self, entry: ManifestEntry) -> tuple[Backend, ObjectMeta]:
        """The backend that holds the entry's bytes, and the pin to read them with."""
        if entry.is_copy:
            relative = blob_path(entry.digest)
            pin = ObjectMeta(url=self.store.url_of(relative), size=entry.size, digest=entry.digest)
            return self.store.backend, pin
        assert entry.ref is not None
        return resolve(entry.ref, self.storage_options).backend, entry.pin


def blob_path(digest: str) -> str:
    """Where the registry keeps the copy with this content digest."""
    hexdigest = digest.split(":", 1)[1]
    return f"blobs/{hexdigest[:2]}/{hexdigest}"


def _checked_content(entry: ManifestEntry, fetched: Path) -> str:
    """The xxh3_128 hex of fetched bytes, checked against the entry when it pins that hash."""
    digest = hash_file(fetched)
    if entry.digest.startswith(f"{ALGORITHM}:") and digest != entry.digest:
        raise ObjectChangedError(
            f"{entry.ref or entry.path}: content hashes to {digest}, pinned {entry.digest}"
        )
    return digest.split(":", 1)[1]


def check_no_clashes(paths: Iterable[str]) -> None:
    """Refuse a manifest where one logical path is a folder of another (``a`` and ``a/b``)."""
    files = set(paths)
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                raise UnsafePathError(f"logical path {path!r}: {folder!r} is both a file and a folder")


def safe_destination(root: Path, logical_path: str) -> Path:
    """``root / logical_path``, refusing any path that would land outside ``root``."""
    check_logical_path(logical_path)
    if any(len(part.encode()) > _MAX_FILE_NAME for part in logical_path.split("/")):
        raise UnsafePathError(f"logical path {logical_path[:60]!r}...: a segment is longer than 255 bytes")
    dest = root.joinpath(*logical_path.split("/"))
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(dest.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise UnsafePathError(f"logical path {logical_path!r}: would be written outside {root}")
    return dest
