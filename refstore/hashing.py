"""Content hashes of local files: xxh3_128, streamed, spread over all cores.

Measured on the project's 2-core machine (benchmarks/): python-xxhash releases the GIL in ``update()`` for
buffers over 64 KiB, and ``readinto`` releases it too, so threads hash large files in parallel; reading
into a per-thread 256 KiB buffer (it stays in the CPU cache) beats both 1 MiB buffers and ``mmap``. Small
files are bound by per-file system calls, not hashing: each is read in one ``os.read`` with no file object.
Files travel in batches (a few hundred files or tens of MiB), so that any ``concurrent.futures.Executor``
- threads by default, a process pool, or a Dask cluster's executor - gets coarse, picklable tasks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import xxhash

ALGORITHM = "xxh3_128"
_BLOCK = 256 * 1024
#: Files up to this size are read with a single call.
_WHOLE = 4 * 2**20
#: A batch closes at this many files or bytes.
_BATCH_FILES = 64
_BATCH_BYTES = 64 * 2**20
#: Mean file size from which files are hashed (and downloads placed) on a thread per core. Smaller files
#: are bound by per-file system calls and Python work, which contend when run on threads (measured on the
#: 2-core benchmark machine: 100,000 files of 0.5-4 KiB hash in 0.6 s on one thread, 1.9 s on two; 64 KiB
#: files 0.08 s vs 0.11 s; 256 KiB files 0.18 s vs 0.12 s).
PARALLEL_FILE_SIZE = 128 * 1024

_local = threading.local()


class FileHash(NamedTuple):
    """What hashing one file found: the bytes hashed, the modification time and the digest."""

    size: int
    mtime_ns: int
    digest: str


def hash_file(path: str | os.PathLike[str]) -> str:
    """``"xxh3_128:<hex>"`` of the file's bytes."""
    return stat_and_hash(os.fspath(path)).digest


def hash_bytes(data: bytes) -> str:
    """``"xxh3_128:<hex>"`` of ``data``."""
    return f"{ALGORITHM}:{xxhash.xxh3_128_hexdigest(data)}"


def stat_and_hash(path: str) -> FileHash:
    """Size, mtime and digest of one file, read once through a single file descriptor."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if info.st_size <= _WHOLE:
            data = os.read(fd, info.st_size + 1)
            if len(data) <= info.st_size:
                return FileHash(len(data), info.st_mtime_ns, hash_bytes(data))
            digest, size = _stream(fd, xxhash.xxh3_128(data), len(data))  # it grew meanwhile
        else:
            digest, size = _stream(fd, xxhash.xxh3_128(), 0)
        return FileHash(size, info.st_mtime_ns, digest)
    finally:
        os.close(fd)


def hash_open_file(fd: int) -> str:
    """The xxh3_128 hex of what is left to read in the open file ``fd``, through this thread's buffer."""
    return _stream(fd, xxhash.xxh3_128(), 0)[0].split(":", 1)[1]


def parallel_pays(total_bytes: int, files: int) -> bool:
    """Whether files of this mean size are worth a thread per core (see :data:`PARALLEL_FILE_SIZE`)."""
    return total_bytes >= PARALLEL_FILE_SIZE * max(1, files)


def _stream(fd: int, digest: xxhash.xxh3_128, size: int) -> tuple[str, int]:
    buffer = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    while n := os.readv(fd, [buffer]):
        digest.update(view[:n])
        size += n
    return f"{ALGORITHM}:{digest.hexdigest()}", size


def hash_batch(paths: Sequence[str]) -> list[FileHash]:
    """:func:`stat_and_hash` of each path: the unit of work an executor runs (picklable, top-level)."""
    return [stat_and_hash(p) for p in paths]


def batches(paths: Iterable[tuple[str, int]]) -> Iterator[list[str]]:
    """Group ``(path, size estimate)`` pairs into batches of at most ``_BATCH_FILES`` files or
    ``_BATCH_BYTES`` bytes (a larger file goes alone)."""
    batch: list[str] = []
    nbytes = 0
    for path, size in paths:
        if batch and (len(batch) >= _BATCH_FILES or nbytes + size > _BATCH_BYTES):
            yield batch
            batch, nbytes = [], 0
        batch.append(path)
        nbytes += size
    if batch:
        yield batch


def hash_many(
    paths: Iterable[tuple[str, int]],
    *,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> list[FileHash]:
    """Hash files given as ``(path, size estimate)``, in order; batches run on ``executor``. By default
    the first batch decides: files of :data:`PARALLEL_FILE_SIZE` or more on average go to a thread per
    core, smaller ones stay on this thread. ``progress`` gets the number of files of each finished batch.

    If anything fails, the caller is interrupted (Ctrl-C) or ``stop`` is set, batches not started yet are
    cancelled (``stop`` raises :class:`concurrent.futures.CancelledError`).
    """
    pending = batches(paths)
    results: list[FileHash] = []

    def collect(done: list[FileHash]) -> None:
        results.extend(done)
        if progress is not None:
            progress(len(done))

    if executor is None:
        first = next(pending, [])
        collect(hash_batch(first))
        if not parallel_pays(sum(f.size for f in results), len(results)):
            for batch in pending:  # small files: per-file system calls, which contend on threads
                _check_stop(stop)
                collect(hash_batch(batch))
            return results
    pool = executor or ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="refstore-hash")
    futures: list[Future[list[FileHash]]] = []
    try:
        futures = [pool.submit(hash_batch, batch) for batch in pending]
        for future in futures:
            _check_stop(stop)
            collect(future.result())
        return results
    finally:
        for future in futures:
            future.cancel()
        if executor is None:
            pool.shutdown(wait=True, cancel_futures=True)


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise CancelledError("hashing was stopped")


def hash_files(
    paths: Iterable[Path],
    *,
    executor: Executor | None = None,
    on_done: Callable[[Path], None] | None = None,
) -> dict[Path, str]:
    """Hash many files concurrently (see :func:`hash_many`), digests keyed by path."""
    items = list(paths)
    found = hash_many(((os.fspath(p), _size(p)) for p in items), executor=executor)
    if on_done is not None:
        for path in items:
            on_done(path)
    return {path: facts.digest for path, facts in zip(items, found, strict=True)}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
