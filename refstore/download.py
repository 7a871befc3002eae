"""Downloading a version: pinned bytes, checked, through the cache, renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import ObjectChangedError, UnsafePathError
from ._sync import gather_limited, run_sync
from .backends import Backend, ObjectMeta, ProgressHook
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
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.cache = cache or Cache()
        self.skip_cache = skip_cache
        self.storage_options = dict(storage_options or {})
        #: Where fetches run when given: batches of entries go to its workers (a Dask cluster, processes).
        self.executor = executor

    def download(self, entries: list[ManifestEntry], root: Path, *, description: str) -> Path:
        root = root.expanduser().absolute()
        real = functools.lru_cache(maxsize=None)(os.path.realpath)  # this download's folders, checked once
        targets = [(entry, safe_destination(root, entry.path, realpath=real)) for entry in entries]
        check_no_clashes(entry.path for entry in entries)
        self.cache.remove_stale_tmp()
        self._staging = Staging(self.cache.tmp_dir())
        with progress_bar(sum(e.size for e in entries), description) as bar:
            missing = targets if self.skip_cache else self._copy_cached(targets, bar.update)
            if self.executor is None:
                self.fetch_all(missing, bar.update)
            else:
                self._fetch_on(self.executor, missing, bar.update)
        return root

    def fetch_all(self, targets: list[tuple[ManifestEntry, Path]], progress: ProgressHook) -> None:
        """Fetch (or copy from the cache) every entry to its destination, ``CONCURRENCY`` at a time."""
        if not hasattr(self, "_staging"):
            self._staging = Staging(self.cache.tmp_dir())
        run_sync(gather_limited, [self._one(entry, dest, progress) for entry, dest in targets], CONCURRENCY)

    def _copy_cached(
        self, targets: list[tuple[ManifestEntry, Path]], progress: ProgressHook
    ) -> list[tuple[ManifestEntry, Path]]:
        """Copy out what the cache holds, on a thread per core, before any network work (a warm
        download of 10,000 files is file copies only); returns the targets still to fetch."""
        made: set[Path] = set()

        def copy_batch(batch: list[tuple[ManifestEntry, Path]]) -> list[bool]:
            return [copy(item) for item in batch]

        def copy(item: tuple[ManifestEntry, Path]) -> bool:
            entry, dest = item
            cached = self.cache.lookup(entry)
            if cached is None:
                return False
            if dest.parent not in made:
                dest.parent.mkdir(parents=True, exist_ok=True)
                made.add(dest.parent)
            staging = self._staging.path_for(dest)
            try:
                self.cache.copy_out(entry, cached, staging)
                os.replace(staging, dest)
            except CorruptCacheEntry:
                return False  # dropped from the cache: fetched again
            finally:
                with contextlib.suppress(FileNotFoundError):
                    staging.unlink()
            progress(entry.size)
            return True

        with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="refstore-cache") as pool:
            batches = [targets[i : i + _BATCH] for i in range(0, len(targets), _BATCH)]
            done = [copied for batch in pool.map(copy_batch, batches) for copied in batch]
        return [item for item, copied in zip(targets, done, strict=True) if not copied]

    def _fetch_on(
        self, executor: Executor, targets: list[tuple[ManifestEntry, Path]], progress: ProgressHook
    ) -> None:
        """Fetch in batches on ``executor``'s workers, each with its own connections and this cache."""
        jobs = [
            _Batch(
                self.store.url,
                self.store.storage_options,
                self.storage_options,
                str(self.cache.root),
                self.skip_cache,
                [(entry, str(dest)) for entry, dest in targets[start : start + _BATCH]],
            )
            for start in range(0, len(targets), _BATCH)
        ]
        futures = [executor.submit(_download_batch, job) for job in jobs]
        try:
            for future in futures:
                progress(future.result())
        finally:
            for future in futures:
                future.cancel()  # interrupted or failed: batches not started never start

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
            await asyncio.to_thread(self._admit, entry, fetched, staging)
        finally:
            if fetched != staging:
                with contextlib.suppress(FileNotFoundError):
                    fetched.unlink()

    def _admit(self, entry: ManifestEntry, fetched: Path, staging: Path) -> None:
        """Check fetched bytes (one read), admit them to the cache and copy them to ``staging`` in the
        kernel (``copyfile``: no second hash, the bytes were just checked)."""
        content = _checked_content(entry, fetched)
        if fetched != staging:
            shutil.copyfile(self.cache.admit(entry, fetched, content), staging)

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


_BATCH = 256


@dataclass(frozen=True)
class _Batch:
    """Entries for one executor task, with what a worker needs to rebuild the downloader."""

    store_url: str
    store_options: dict[str, Any]
    storage_options: dict[str, Any]
    cache_root: str
    skip_cache: bool
    items: list[tuple[ManifestEntry, str]]


def _download_batch(batch: _Batch) -> int:
    """Run in an executor's worker: fetch a batch of entries to their destinations; the bytes done."""
    downloader = Downloader(
        Store(batch.store_url, batch.store_options),
        cache=Cache(Path(batch.cache_root)),
        skip_cache=batch.skip_cache,
        storage_options=batch.storage_options,
    )
    downloader.fetch_all([(entry, Path(dest)) for entry, dest in batch.items], lambda n: None)
    return sum(entry.size for entry, _ in batch.items)


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


def safe_destination(
    root: Path, logical_path: str, *, realpath: Callable[[str], str] = os.path.realpath
) -> Path:
    """``root / logical_path``, refusing any path that would land outside ``root``.

    ``realpath``: a memo of :func:`os.path.realpath` for one download (10,000 files share few folders).
    """
    check_logical_path(logical_path)
    if any(len(part.encode()) > _MAX_FILE_NAME for part in logical_path.split("/")):
        raise UnsafePathError(f"logical path {logical_path[:60]!r}...: a segment is longer than 255 bytes")
    dest = root.joinpath(*logical_path.split("/"))
    real_root = realpath(str(root))
    real_parent = realpath(str(dest.parent))
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise UnsafePathError(f"logical path {logical_path!r}: would be written outside {root}")
    return dest
