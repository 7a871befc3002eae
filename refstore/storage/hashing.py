"""Content hashes of local files: xxh3_128, streamed, spread over all cores.

Measured on the project's 2-core machine (benchmarks/): python-xxhash releases the GIL in ``update()`` for
buffers over 64 KiB, and ``readinto`` releases it too, so threads hash large files in parallel; reading into a
per-thread 256 KiB buffer (it stays in the CPU cache) beats both 1 MiB buffers and ``mmap``. Small files are
bound by per-file system calls, not hashing: each is opened by name in its open folder and read in one
``os.read`` with no file object, and many of them go to worker processes (:mod:`refstore.storage.workers`),
since threads contend for the GIL at every call. Files travel in batches (tens to a thousand files, or tens of
MiB), so that any ``concurrent.futures.Executor`` - threads or worker processes by default, a process pool, or
a Dask cluster's executor - gets coarse, picklable tasks.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import xxhash

from ..core.exceptions import ObjectChangedError
from .stat_columns import FOLDER_FLAGS
from .workers import shared_executor

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
#: Smaller files go to worker processes from this many files on (fewer do not repay starting them).
PROCESS_MIN_FILES = 4096
#: Files per task sent to a worker process: large enough that the pipe round trip is noise.
_PROCESS_BATCH_FILES = 1024
#: Batches queued on an executor ahead of the one awaited.
_AHEAD = 256

_local = threading.local()
_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
_RELATIVE_OPEN = os.open in os.supports_dir_fd and os.sep == "/"


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
    fd = os.open(path, _FLAGS)
    try:
        return _hash_open(fd, path)[0]
    finally:
        os.close(fd)


#: Reads of a file that keeps changing while it is hashed, before it is refused.
_READS = 4
#: A file whose ctime or mtime is this close to the start of its read may have had a write in progress
#: when it was first stat'ed (a write stamps the file when it starts, then copies its bytes): it is read
#: twice, and both reads must agree.
_RECENT_NS = 1_000_000_000


def _hash_open(fd: int, path: str) -> tuple[FileHash, os.stat_result]:
    """:func:`hash_open_checked`: the one call every file hashed for a listing or a copy goes through."""
    return hash_open_checked(fd, path)


def hash_open_checked(fd: int, path: str) -> tuple[FileHash, os.stat_result]:
    """Size and digest taken from one read, with the file's stat before and after it, so that a record
    never pairs bytes that did not exist together:

    - a file written to meanwhile (its size, mtime or ctime moved, or the read did not end at its size)
      is read again;
    - a file changed less than :data:`_RECENT_NS` before the read started is read a second time and both
      reads must give the same digest (a write already under way at the first stat leaves no mark on it);
    - after :data:`_READS` reads without that, it is refused with :class:`ObjectChangedError`.

    The ctime is part of the check because a writer cannot set it back, while ``touch`` can set an mtime
    (writes through a shared ``mmap`` may update neither until later: not covered)."""
    agreed: tuple[int, str] | None = None
    for attempt in range(_READS):
        if attempt:
            os.lseek(fd, 0, os.SEEK_SET)
        start = time.time_ns()
        before = os.fstat(fd)
        if before.st_size <= _WHOLE:
            data = os.read(fd, before.st_size + 1)
            if len(data) <= before.st_size:
                digest, size = hash_bytes(data), len(data)
            else:
                digest, size = _stream(fd, xxhash.xxh3_128(data), len(data))  # it grew meanwhile
        else:
            digest, size = _stream(fd, xxhash.xxh3_128(), 0)
        after = os.fstat(fd)
        if size != after.st_size or not same_state(before, after):
            agreed = None
            continue
        recent = min(abs(start - after.st_ctime_ns), abs(start - after.st_mtime_ns)) < _RECENT_NS
        if not recent or agreed == (size, digest):
            return FileHash(size, before.st_mtime_ns, digest), after
        agreed = (size, digest)
    raise ObjectChangedError(
        f"{path}: the file kept changing while it was read ({_READS} reads); "
        "snapshot it once nothing writes to it"
    )


def copy_checked(source: str, out: int, digest: str) -> int:
    """Copy the bytes of the file ``source`` into the open file descriptor ``out`` while hashing them,
    through one read; return their size. Raises :class:`ObjectChangedError` naming ``source`` unless they
    hash to ``digest`` and the file did not change meanwhile: the copy is the bytes that were hashed, so a
    blob is never named by a hash its bytes do not have (checking first and copying after would leave a
    window for a writer)."""
    fd = os.open(source, _FLAGS)
    try:
        before = os.fstat(fd)
        hasher, size = xxhash.xxh3_128(), 0
        buffer = bytearray(_BLOCK)
        view = memoryview(buffer)
        while n := os.readv(fd, [buffer]):
            hasher.update(view[:n])
            done = 0
            while done < n:
                done += os.write(out, view[done:n])
            size += n
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (
        size != after.st_size
        or not same_state(before, after)
        or f"{ALGORITHM}:{hasher.hexdigest()}" != digest
    ):
        raise ObjectChangedError(
            f"{source}: the file changed after it was added to the artifact; add it again"
        )
    return size


def same_state(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats of one open file show no write in between (size, mtime and ctime)."""
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns and a.st_ctime_ns == b.st_ctime_ns


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


class Hashed(NamedTuple):
    """A batch's results as columns, in path order (cheap to pickle back from a worker process)."""

    sizes: list[int]
    mtimes_ns: list[int]
    digests: list[str]
    #: ``(ctime_ns, inode, device)`` of each file whose mtime and ctime were more than
    #: :data:`_RECENT_NS` older than its read (settled: see :mod:`refstore.storage.stat_cache`), else None.
    settled: list[tuple[int, int, int] | None]


def hash_batch(paths: Sequence[str]) -> Hashed:
    """:func:`stat_and_hash` of each path: the unit of work an executor runs (picklable, top-level)."""
    sizes: list[int] = []
    mtimes: list[int] = []
    digests: list[str] = []
    settled: list[tuple[int, int, int] | None] = []
    opener = _Opener()
    before = time.time_ns() - _RECENT_NS  # taken before any file of the batch is read: conservative
    try:
        for path in paths:
            fd = opener.open(path)
            try:
                (size, mtime, digest), state = _hash_open(fd, path)
            finally:
                os.close(fd)
            sizes.append(size)
            mtimes.append(mtime)
            digests.append(digest)
            old = state.st_mtime_ns < before and state.st_ctime_ns < before
            settled.append((state.st_ctime_ns, state.st_ino, state.st_dev) if old else None)
    finally:
        opener.close()
    return Hashed(sizes, mtimes, digests, settled)


class _Opener:
    """Opens files by name inside their open folder, which skips the lookup of every folder above it
    (measured: 8% less time for small files two folders deep). Paths from one folder come in a row."""

    def __init__(self) -> None:
        self._folder = ""
        self._fd = -1

    def open(self, path: str) -> int:
        cut = path.rfind("/")
        if not _RELATIVE_OPEN or cut <= 0:
            return os.open(path, _FLAGS)
        try:
            if path[:cut] != self._folder:
                self.close()
                self._fd = os.open(path[:cut], FOLDER_FLAGS)
                self._folder = path[:cut]
            return os.open(path[cut + 1 :], _FLAGS, dir_fd=self._fd)
        except OSError:
            return os.open(path, _FLAGS)  # the error, if any, names the whole path

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._folder = -1, ""


def batches(paths: Iterator[tuple[str, int]], *, files: int = _BATCH_FILES) -> Iterator[list[str]]:
    """Group ``(path, size estimate)`` pairs into batches of ``files`` files, or fewer once they reach
    ``_BATCH_BYTES`` bytes. A batch closes after its last pair, so the iterator holds no pair between
    batches and another ``batches`` may carry on from it."""
    batch: list[str] = []
    nbytes = 0
    for path, size in paths:
        batch.append(path)
        nbytes += size
        if len(batch) >= files or nbytes >= _BATCH_BYTES:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch


def hash_many(
    paths: Iterable[tuple[str, int]],
    *,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> list[FileHash]:
    """Hash files given as ``(path, size estimate)``, in order (see :func:`hash_stream`)."""
    results: list[FileHash] = []
    for _, done in hash_stream(paths, executor=executor, progress=progress, stop=stop):
        results += map(FileHash, done.sizes, done.mtimes_ns, done.digests)
    return results


def hash_stream(
    paths: Iterable[tuple[str, int]],
    *,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[tuple[list[str], Hashed]]:
    """Hash files given as ``(path, size estimate)``, yielding each batch's paths and results, in order,
    so that the caller works on one batch while the next ones are hashed. ``paths`` is read lazily:
    batches start hashing while a walk still produces later paths. Batches run on ``executor``. By
    default the first batch decides: files of :data:`PARALLEL_FILE_SIZE` or more on average go to a thread
    per core; smaller ones go to worker processes (:mod:`refstore.storage.workers`) when there are at least
    :data:`PROCESS_MIN_FILES`, else stay on this thread. ``progress`` gets the number of files of each
    finished batch.

    If anything fails, the caller is interrupted (Ctrl-C) or ``stop`` is set, batches not started yet are
    cancelled (``stop`` raises :class:`concurrent.futures.CancelledError`).
    """

    def report(batch: list[str], done: Hashed) -> tuple[list[str], Hashed]:
        if progress is not None:
            progress(len(batch))
        return batch, done

    source = iter(paths)
    pending = batches(source)
    pool, owned = executor, False
    if executor is None:
        first = next(pending, [])
        hashed = hash_batch(first)
        yield report(first, hashed)
        if not parallel_pays(sum(hashed.sizes), len(first)):
            ahead = list(itertools.islice(source, PROCESS_MIN_FILES))
            source = itertools.chain(ahead, source)
            pool = shared_executor() if len(ahead) == PROCESS_MIN_FILES else None
            if pool is None:  # per-file system calls, which contend on threads: stay on this thread
                for batch in batches(source):
                    _check_stop(stop)
                    yield report(batch, hash_batch(batch))
                return
            pending = batches(source, files=_PROCESS_BATCH_FILES)
        else:
            pool, owned = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="refstore-hash"), True
    assert pool is not None
    window: collections.deque[tuple[list[str], Future[Hashed]]] = collections.deque()
    try:
        for batch in pending:  # paths are still being produced: keep a bounded window of batches queued
            window.append((batch, pool.submit(hash_batch, batch)))
            if len(window) > _AHEAD or window[0][1].done():
                _check_stop(stop)
                batch, future = window.popleft()
                yield report(batch, future.result())
        while window:
            _check_stop(stop)
            batch, future = window.popleft()
            yield report(batch, future.result())
    finally:
        for _, future in window:
            future.cancel()
        if owned:
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
