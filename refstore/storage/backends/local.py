"""Local disks and NFS mounts: size, mtime and an xxh3_128 content hash, computed in parallel."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import functools
import io
import os
import re
import shutil
import stat as stat_module
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Executor, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

import xxhash
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ...core.exceptions import (
    InvalidURLError,
    ObjectNotFoundError,
    RefstoreError,
    StorageAccessError,
    StorageUnavailableError,
    TooManyObjectsError,
)
from ...core.meta import MetaColumns, ObjectMeta, new_meta
from ..hashing import (
    ALGORITHM,
    Hashed,
    copy_checked,
    hash_bytes,
    hash_open_checked,
    hash_stream,
    same_state,
    stat_and_hash,
)
from ..stat_cache import Stat, StatCache
from ..stat_cache import enabled as stat_cache_enabled
from ..stat_columns import TreeStats
from ._base import CHUNK_SIZE, Backend, BodyFile, ProgressHook, RecordsHook, changed, is_unchecked

if TYPE_CHECKING:
    from ..exclusion import Exclusion


class LocalBackend(Backend):
    """Files on a mounted filesystem. There are no versions: a changed file cannot be had back. Records
    leave ``last_modified`` unset: nothing reads it, and formatting mtimes was a tenth of the time of a
    100,000-file reference.

    What a folder snapshot (``add_reference`` of a folder, and ``add_dir``, which walks the same way) takes
    and refuses, one rule for both:

    - regular files are taken; symbolic links that lead to regular files are followed (the snapshot records
      the bytes they name, under the link's path);
    - links to folders are not descended into, so a walk never enters a loop; FIFOs, sockets and devices
      are left out (they hold no bytes to pin);
    - anything else that cannot be read is an error naming it, never a silent gap in the snapshot: a folder
      that cannot be listed (``StorageAccessError`` when permission is denied), a link to a missing file or
      a loop of links (``ObjectNotFoundError``), a file that cannot be opened, a name that is not UTF-8
      (``InvalidURLError``: logical paths, manifests and object stores are UTF-8, and a name that cannot be
      written back the same on another machine is refused rather than changed). An ``exclude`` glob that
      matches it leaves it out instead, unread.
    """

    protocols: ClassVar[tuple[str, ...]] = ("file",)
    package: ClassVar[str] = "fsspec"
    lists_metadata: ClassVar[bool] = False  # a listing hashes every file

    def url(self, path: str) -> str:
        return f"file://{path}"

    def path(self, url: str) -> str:
        return url[len("file://") :] if url.startswith("file://") else url

    @classmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        return LocalFileSystem(**storage_options)

    async def stat(self, path: str) -> ObjectMeta | None:
        return await asyncio.to_thread(self._stat_sync, path)

    def _stat_sync(self, path: str) -> ObjectMeta | None:
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # a folder above that cannot be searched
            if exc.errno == errno.ELOOP:
                return None  # no object here (verify: missing); a reference of it says why when listing it
            raise read_error(path, exc) from exc
        if not stat_module.S_ISREG(info.st_mode):
            return None
        check_utf8(path)
        try:
            facts = stat_and_hash(path)
        except OSError as exc:
            raise read_error(path, exc) from exc
        return ObjectMeta(url=self.url(path), size=facts.size, digest=facts.digest)

    async def list_prefix(self, path: str, *, max_objects: int) -> list[ObjectMeta]:
        return list(await self.reference_listing(path, max_objects=max_objects))

    async def reference_listing(
        self,
        path: str,
        *,
        max_objects: int,
        executor: Executor | None = None,
        progress: ProgressHook | None = None,
        on_records: RecordsHook | None = None,
        exclude: Exclusion | None = None,
    ) -> Sequence[ObjectMeta]:
        stop = threading.Event()
        listing = functools.partial(
            self._list_sync, path, max_objects, executor, progress, on_records, stop, exclude
        )
        try:
            return await asyncio.to_thread(listing)
        finally:
            stop.set()  # cancelled (Ctrl-C): the hashing thread stops after its current batch

    def _list_sync(
        self,
        path: str,
        max_objects: int,
        executor: Executor | None,
        progress: ProgressHook | None,
        on_records: RecordsHook | None,
        stop: threading.Event,
        exclude: Exclusion | None = None,
    ) -> Sequence[ObjectMeta]:
        found: Sequence[ObjectMeta] = ()
        runs = _walk_runs(path, max_objects, self.url(path), exclude)
        cache = StatCache.load(path) if stat_cache_enabled() else None
        cut = len(_prefix(path))
        settled: _Settled | None = None
        try:
            if cache is not None and cache.count:
                found, settled = _list_known(runs, cut, cache, executor, progress, stop)
            else:
                settled, hashed = _Settled(cut), []
                files = ((folder + name, 0) for folder, names in runs for name in names)
                for names, done in hash_stream(files, executor=executor, progress=progress, stop=stop):
                    # records made while hashing goes on
                    facts = zip(names, done.sizes, done.digests, strict=True)
                    batch = [new_meta(f"file://{f}", size, digest) for f, size, digest in facts]
                    hashed += batch
                    settled.add(names, done)
                    if on_records is not None:
                        on_records(batch)
                found = hashed
        except OSError as exc:  # a file the walk found cannot be read: a dangling link, a loop, EACCES
            if isinstance(exc, RefstoreError):
                raise
            raise read_error(exc.filename or path, exc) from exc
        if cache is not None and settled is not None:
            cache.save(settled.relatives, settled.stats, settled.digests)
        return found

    async def fetch(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None = None) -> str:
        return await asyncio.to_thread(self._fetch_sync, pin, dest, progress)

    def _fetch_sync(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None) -> str:
        source = self.path(pin.url)
        try:
            fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang here
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise changed(pin, "the file no longer exists (local files keep no versions)") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise changed(pin, "a loop of symbolic links stands there now") from exc
            if isinstance(exc, PermissionError):
                raise StorageAccessError(f"{shown(source)}: permission denied ({exc.strerror})") from exc
            raise
        try:
            if not stat_module.S_ISREG(os.fstat(fd).st_mode):  # /dev/zero, a FIFO: no end, no pinnable bytes
                raise changed(pin, "not a regular file")
            out = BodyFile(dest)
        except BaseException:
            os.close(fd)
            raise
        try:
            with open(fd, "rb", buffering=0) as src, out:
                buffer = bytearray(min(CHUNK_SIZE, os.fstat(src.fileno()).st_size + 1))  # not 4 MiB per file
                view = memoryview(buffer)
                while n := src.readinto(buffer):
                    out.write(view[:n])
                    if progress is not None:
                        progress(n)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise changed(pin, "the file no longer exists (local files keep no versions)") from exc
        if not is_unchecked(pin) and (
            out.size != pin.size
            or ((pin.digest or "").startswith(ALGORITHM) and f"{ALGORITHM}:{out.hexdigest()}" != pin.digest)
        ):
            raise changed(pin, "the file's content changed since the snapshot (local files keep no versions)")
        return out.hexdigest()

    def open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        """The pinned bytes through one file descriptor, checked: see :class:`PinnedLocalFile`."""
        source = self.path(pin.url)
        try:
            fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang here
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise changed(pin, "the file no longer exists") from exc
        try:
            if not stat_module.S_ISREG(os.fstat(fd).st_mode):
                raise changed(pin, "not a regular file")
            facts, state = hash_open_checked(fd, source)
            if facts.size != pin.size or (not is_unchecked(pin) and facts.digest != pin.digest):
                raise changed(pin, "the file's content changed since the snapshot")
            if facts.size <= _IN_MEMORY:
                data = os.pread(fd, facts.size + 1, 0)
                if len(data) != facts.size or hash_bytes(data) != facts.digest:
                    raise changed(pin, "the file changed while it was opened")
                return io.BytesIO(data)
            raw = PinnedLocalFile(fd, source, pin, state, facts.digest)
        except BaseException:
            os.close(fd)
            raise
        return io.BufferedReader(raw, CHUNK_SIZE)

    def batched_writes(self) -> LocalBatchedWrites:
        return LocalBatchedWrites()

    async def put_create_only(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(write_create_only, path, data)

    async def put_atomic(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(write_atomic, path, data)

    async def upload(self, local: Path, path: str) -> None:
        await asyncio.to_thread(copy_atomic, local, path)

    async def upload_checked(self, local: Path, path: str, digest: str) -> None:
        await asyncio.to_thread(copy_checked_atomic, local, path, digest)

    async def move(self, path: str, new_path: str) -> None:
        await asyncio.to_thread(move_atomic, path, new_path)

    async def stale_temp_files(self, path: str, older_than: float) -> list[str]:
        return await asyncio.to_thread(_stale_temp_files, path, older_than)


def _walk_files(
    root: str, max_objects: int, url: str, exclude: Exclusion | None = None
) -> Iterator[tuple[str, int]]:
    """``(path, 0)`` for each file under ``root``, in sorted order, as :func:`_walk_runs` finds them."""
    for folder, names in _walk_runs(root, max_objects, url, exclude):
        for name in names:
            yield folder + name, 0


class _Folder:
    """A folder on the walk's stack: its files and subfolders (sorted), and how far the walk is in each."""

    __slots__ = ("files", "folders", "next_file", "next_folder", "prefix")

    def __init__(self, prefix: str, names: tuple[list[str], list[str]]) -> None:
        self.prefix = prefix
        self.files, self.folders = names
        self.next_file = self.next_folder = 0


def _walk_runs(
    root: str, max_objects: int, url: str, exclude: Exclusion | None = None
) -> Iterator[tuple[str, list[str]]]:
    """The files under ``root`` (links to files followed, links to folders not) as runs of one folder's
    files, ``(folder path ending in "/", names)``, in the sorted order of their whole paths, yielded as the
    walk goes; one ``scandir`` per folder and no ``stat`` for plain files. What ``exclude`` leaves out is
    not walked: a folder it excludes or that holds one of its markers, a file it excludes; the files left
    out are not counted against ``max_objects``.

    A folder's files that sort before its first subfolder (keyed as ``name/``) make a run, those between it
    and the next subfolder another, and so on; with each subfolder walked at its place, that is exactly the
    sorted order of the whole paths.
    """
    count = 0
    top = _prefix(root)
    cut = len(top)
    check_utf8(root)
    markers = exclude.markers if exclude is not None else frozenset()
    check_files = exclude is not None and exclude.checks_files
    stack = [_Folder(top, _sorted_names(root))]
    while stack:
        here = stack[-1]
        prefix, files, start = here.prefix, here.files, here.next_file
        folder = here.folders[here.next_folder] if here.next_folder < len(here.folders) else None
        if folder is not None:
            here.next_folder += 1
            here.next_file = end = bisect.bisect_left(files, folder, start)
        else:
            end = len(files)
            stack.pop()
        run = files[start:end]
        if check_files:
            run = [n for n in run if not exclude.excludes((prefix + n)[cut:], False)]  # type: ignore[union-attr]
        if not "".join(run).isascii():
            for name in run:
                check_utf8(prefix + name)
        count += len(run)
        if count > max_objects:
            raise TooManyObjectsError(
                f"{url}: more than max_objects={max_objects} files; "
                "raise max_objects or reference a narrower folder"
            )
        if run:
            yield prefix, run
        if folder is None or (exclude is not None and exclude.excludes((prefix + folder)[cut:-1], True)):
            continue
        if not folder.isascii():
            check_utf8(prefix + folder[:-1])
        stack.append(_Folder(prefix + folder, _sorted_names(prefix + folder[:-1], markers)))


class _Settled:
    """The files hashed or matched that the stat cache may record (settled when read), as columns."""

    def __init__(self, cut: int) -> None:
        self.cut = cut  # the length of the folder's path with its "/": what a relative path leaves out
        self.relatives: list[str] = []
        self.stats: list[Stat] = []
        self.digests: list[str] = []

    def add(self, names: list[str], done: Hashed) -> None:
        """Add the files of a hashed batch (``names``: their paths) that were settled when read."""
        rows = zip(names, done.sizes, done.mtimes_ns, done.digests, done.settled, strict=True)
        for name, size, mtime, digest, known in rows:
            if known is not None:
                self.relatives.append(name[self.cut :])
                self.stats.append((size, mtime, *known))
                self.digests.append(digest)


def _list_known(
    runs: Iterator[tuple[str, list[str]]],
    cut: int,
    cache: StatCache,
    executor: Executor | None,
    progress: ProgressHook | None,
    stop: threading.Event,
) -> tuple[MetaColumns, _Settled | None]:
    """The records of the walked files, those whose stat the cache recorded (:mod:`~refstore.storage.
    stat_cache`) with their recorded digest and no read, the others hashed; and the settled files to
    record (``None`` when the cache holds them already)."""
    top = ""
    relatives: list[str] = []
    with TreeStats(cache.count) as stats:  # (on two cores when there are many: stat'ed as walked)
        for folder, names in runs:
            if stop.is_set():  # (cancelled, Ctrl-C: the thread ends here, not after the whole tree)
                raise CancelledError("the listing was stopped")
            top, relative = folder[:cut], folder[cut:]
            relatives += [relative + name for name in names] if relative else names
            stats.add(folder, names)
        cache.digests  # noqa: B018 (the records parsed while the second interpreter finishes)
        columns = stats.finish()
    found = cache.lookup(relatives, columns)
    misses = [i for i, digest in enumerate(found) if digest is None] if None in found else []
    sizes = columns[0]  # those of the misses come from their read
    if progress is not None and len(misses) < len(relatives):
        progress(len(relatives) - len(misses))
    if not misses and len(relatives) == cache.count:  # every record held, none gone: nothing to write
        return _records(top, relatives, sizes, cast(list[str], found)), None
    settled = _Settled(cut)
    for relative, stat, digest in zip(relatives, zip(*columns, strict=True), found, strict=True):
        if digest is not None:
            settled.relatives.append(relative)
            settled.stats.append(stat)
            settled.digests.append(digest)
    order = iter(misses)
    for names, done in hash_stream(
        ((top + relatives[i], 0) for i in misses), executor=executor, progress=progress, stop=stop
    ):
        for size, digest in zip(done.sizes, done.digests, strict=True):
            i = next(order)
            sizes[i], found[i] = size, digest
        settled.add(names, done)
    return _records(top, relatives, sizes, cast(list[str], found)), settled


def _records(top: str, relatives: list[str], sizes: Sequence[int], digests: list[str]) -> MetaColumns:
    """The records of the files at ``top`` + each relative path."""
    return MetaColumns(f"file://{top}", relatives, sizes, digests)


def _prefix(folder: str) -> str:
    return folder if folder.endswith("/") else folder + "/"


def _sorted_names(folder: str, markers: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """The names of the files in ``folder`` and, ending in ``/``, of its folders, each sorted; none when it
    holds an entry named in ``markers`` (a folder that is refstore's own). Links to regular files count as
    files, and so do links that lead nowhere (dangling, or a loop): reading them fails, naming them, unless
    an exclude glob leaves them out first. A folder that cannot be listed is an error naming it."""
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return [], []  # no such folder (or it vanished meanwhile), as os.walk does
    except OSError as exc:
        raise read_error(folder, exc) from exc
    try:
        with entries:
            listed = list(entries)
        if markers and not markers.isdisjoint([entry.name for entry in listed]):
            return [], []
        files = [entry.name for entry in listed if entry.is_file(follow_symlinks=False)]
        folders: list[str] = []
        if len(files) < len(listed):  # folders, links, FIFOs...: a second look at those
            for entry in listed:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name + "/")
                elif not entry.is_file(follow_symlinks=False) and _links_to_file(entry):
                    files.append(entry.name)
    except OSError as exc:
        raise read_error(folder, exc) from exc
    files.sort()
    folders.sort()
    return files, folders


def _links_to_file(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a symbolic link that leads to a regular file or to nothing (dangling, a loop):
    not to a folder, a device or a FIFO."""
    if not entry.is_symlink():
        return False
    try:
        return stat_module.S_ISREG(os.stat(entry.path).st_mode)
    except OSError:
        return True


def shown(path: str) -> str:
    """``path`` for a message: bytes that are not UTF-8 (kept by Python as surrogates) as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if not path.isascii() else path


def check_utf8(path: str) -> None:
    """Refuse a local path that is not valid UTF-8 (see :class:`LocalBackend`), naming it escaped."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidURLError(
            f"{shown(path)}: the name is not valid UTF-8 and cannot be a logical path; rename it, "
            "or leave it out with an exclude glob"
        ) from None


def read_error(path: str, exc: OSError) -> RefstoreError:
    """The one-line error for a local file or folder that a snapshot cannot read."""
    name = os.fsdecode(path)
    where = shown(name)
    hint = "or leave it out with an exclude glob"
    if isinstance(exc, PermissionError):
        return StorageAccessError(f"{where}: permission denied ({exc.strerror}); make it readable, {hint}")
    if exc.errno == errno.ELOOP:
        return ObjectNotFoundError(f"{where}: a loop of symbolic links; remove the link, {hint}")
    if isinstance(exc, FileNotFoundError) and os.path.islink(name):
        return ObjectNotFoundError(f"{where}: a symbolic link to a missing file; remove the link, {hint}")
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFoundError(f"{where}: it vanished while it was read; snapshot it again")
    return StorageUnavailableError(f"{where}: cannot be read ({exc.strerror or exc}); {hint}")


def _temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"


_TEMP_NAME = re.compile(r".+\.tmp-\d+-[0-9a-f]{8}")


def _stale_temp_files(root: str, older_than: float) -> list[str]:
    """Files under ``root`` named by :func:`_temp_name` and unchanged for ``older_than`` seconds (links
    are neither followed nor taken)."""
    cutoff = time.time() - older_than
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not _TEMP_NAME.fullmatch(name):
                continue
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if stat_module.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    found.append(path)
    return found


def write_create_only(path: str, data: bytes) -> None:
    """Complete bytes appear at ``path`` at once, only if nothing is there (hard link: atomic, O_EXCL)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temp_name(path)
    _write_synced(tmp, data)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` by rename: readers see the old or the new bytes, never a mix."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temp_name(path)
    _write_synced(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def copy_atomic(source: Path, path: str) -> None:
    """Copy ``source`` to ``path`` through a temporary file and a rename."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temp_name(path)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def copy_checked_atomic(source: Path, path: str, digest: str) -> None:
    """Copy ``source`` to ``path`` through a temporary file and a rename, only as bytes that hash to
    ``digest`` (:func:`~refstore.storage.hashing.copy_checked`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            copy_checked(os.fspath(source), fd, digest)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def move_atomic(path: str, new_path: str) -> None:
    """Rename ``path`` to ``new_path`` (one atomic step), creating the folders it needs."""
    os.makedirs(os.path.dirname(new_path) or ".", exist_ok=True)
    os.replace(path, new_path)


class LocalBatchedWrites:
    """New files in a local registry, fsynced together by :meth:`make_durable` (see
    :class:`~refstore.storage.backends._base.BatchedWrites`).

    Each file costs one new inode and no copy: saving 10,000 run files was bound by inode creation (about
    0.5 ms each on this project's CI disks), so a staged file becomes its final name by a hard link (a copy
    where the file system has none), and a create-only record is written straight into its ``O_EXCL`` name
    rather than through a temporary file. A record is a few hundred bytes written by one ``write``; a crash
    before :meth:`make_durable` may leave it empty, and readers skip empty records (never reported written).
    """

    def __init__(self) -> None:
        self._written: list[str] = []
        self._lock = threading.Lock()

    def staging_path(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        return _temp_name(os.path.join(folder, "staged"))

    def put_staged(self, staged: str, path: str) -> bool:
        try:
            try:
                os.link(staged, path)
            except FileNotFoundError:  # the folder is new (the staged file is there: the caller made it)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.link(staged, path)
        except FileExistsError:
            return False
        except OSError as exc:  # a file system without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.exists(path):
                return False
            copy_atomic(Path(staged), path)
        self._note(path)
        return True

    def create_only(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with open(fd, "wb", closefd=False) as handle:
                handle.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._note(path)

    def make_durable(self) -> None:
        with self._lock:
            paths, self._written = self._written, []
        if not paths:
            return
        try:
            make_durable(paths)
        except BaseException:
            with self._lock:
                self._written[:0] = paths
            raise

    def _note(self, path: str) -> None:
        with self._lock:
            self._written.append(path)


#: Threads that fsync one batch (:func:`make_durable`): concurrent fsyncs share the file system's commits.
_SYNC_THREADS = 16


def make_durable(paths: list[str]) -> None:
    """fsync each file in ``paths``, then the folders that hold them and the folders above those (new
    entries in both), so that all of them survive a crash; one batch, fsynced from several threads."""
    parents = sorted({os.path.dirname(p) for p in paths})
    grandparents = sorted({os.path.dirname(p) for p in parents} - set(parents))
    with ThreadPoolExecutor(_SYNC_THREADS) as pool:
        for group in (paths, parents, grandparents):
            list(pool.map(_fsync_path, group))


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: str, data: bytes) -> None:
    """Write a new temporary file, fsynced; one that could not be written whole (a full disk) is removed."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


#: Local files up to this size are opened by reading them whole: the bytes returned are the bytes hashed.
_IN_MEMORY = 4 * 2**20


class PinnedLocalFile(io.RawIOBase):
    """Reads of a local file whose bytes were checked against the pinned digest through this same file
    descriptor. A file descriptor keeps reading the inode it opened, so a same-size ``os.replace`` of the
    path cannot slip other bytes in; an in-place write can, so every read is followed by an ``fstat``, and
    a file whose size, mtime or ctime moved since the check fails the read with ``ObjectChangedError``
    instead of returning its bytes. A read from the start to the end is also hashed as it goes and
    checked again at the end."""

    def __init__(self, fd: int, name: str, pin: ObjectMeta, state: os.stat_result, digest: str) -> None:
        super().__init__()
        self._fd, self.name, self._pin, self._state, self._digest = fd, name, pin, state, digest
        self._pos = 0
        self._hasher: Any = xxhash.xxh3_128()  # None once a read is not sequential from the start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._state.st_size}[whence]
        if base + offset != self._pos:
            self._hasher = None
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        if not same_state(self._state, os.fstat(self._fd)):
            raise changed(self._pin, "the file was written to while it was read")
        view[: len(data)] = data
        self._pos += len(data)
        if self._hasher is not None:
            self._hasher.update(data)
            if self._pos == self._state.st_size:
                if f"{ALGORITHM}:{self._hasher.hexdigest()}" != self._digest:
                    raise changed(self._pin, "the bytes read do not match the pinned digest")
                self._hasher = None
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
