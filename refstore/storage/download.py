"""Downloading a version: pinned bytes, checked, through the cache, renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..core.exceptions import (
    ConflictError,
    LocalChangesError,
    ObjectChangedError,
    RefstoreError,
    StorageAccessError,
    UnsafePathError,
)
from ..core.loop import finish_in_thread, gather_limited, run_sync
from ..core.manifest import ManifestEntry
from ..core.names import check_logical_path
from ..core.progress import progress_bar
from . import cache_bounds
from .backends import Backend, ObjectMeta, ProgressHook
from .cache import Cache, CorruptCacheEntry, copy_file, install
from .dirfd import Folders, Spot
from .hashing import ALGORITHM, hash_file, parallel_pays
from .local_folder import FolderState, replaced, scan
from .locations import resolve
from .quarantine import corrupt_blob_error, quarantine_if_corrupt
from .scratch import Staging, is_scratch_name
from .store import Store

CONCURRENCY = 32
#: Transfers in flight when every object fetched is small (at most :data:`SMALL_OBJECT` bytes): their cost
#: is per request, not per byte, so more in flight keep the connections busy (2,000 objects of 16 KiB on
#: Ceph RGW: about 7% less wall and CPU than with 32, in a short run under load).
SMALL_CONCURRENCY = 64
SMALL_OBJECT = 2**20
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
        allow_local_refs: bool = False,
    ) -> None:
        self.store = store
        self.cache = cache or Cache()
        self.skip_cache = skip_cache
        self.storage_options = dict(storage_options or {})
        #: Where fetches run when given: batches of entries go to its workers (a Dask cluster, processes).
        self.executor = executor
        #: Whether local files that a manifest from a remote registry names without a content hash are read.
        self.allow_local_refs = allow_local_refs
        self._backends: dict[str, Backend] = {}  # by the scheme and authority of a ref

    @functools.cached_property
    def _staging(self) -> Staging:
        """Where this downloader builds files; made on first use, after removing what crashes left."""
        self.cache.remove_stale_tmp()
        return Staging(self.cache.tmp_dir())

    def download(
        self,
        entries: list[ManifestEntry],
        root: Path,
        *,
        description: str,
        overwrite: bool = False,
        clean: bool = False,
        prefix: str | None = None,
    ) -> DownloadedPath:
        """Make ``root`` hold ``entries``' pinned bytes, keeping the files already right (see the module
        :mod:`refstore.storage.local_folder` for how they are checked). Refuses with
        :class:`LocalChangesError`, before writing anything, when files there hold other bytes (``overwrite``
        replaces them) or stand where a folder must go; ``clean`` removes the files the entries do not name
        (under ``prefix``)."""
        limit = None if self.skip_cache else cache_bounds.limit_from_env()  # a bad value: before any work
        root = root.expanduser().absolute()
        real = functools.lru_cache(maxsize=None)(os.path.realpath)  # this download's folders, checked once
        top = os.fspath(root)  # paths are strings from here on: 10,000 pathlib objects cost more than the I/O
        targets = [(entry, destination(top, entry.path, realpath=real)) for entry in entries]
        check_no_clashes(entry.path for entry in entries)
        self.check_local_refs(entries)  # before anything is written
        if os.path.lexists(top) and not os.path.isdir(top):
            raise LocalChangesError(f"{top}: a file stands where the download folder {description} goes")
        state = scan(top, entries, cache=self.cache, prefix=prefix, protected=self.protected_folders())
        undecided = set(state.paths("undecided"))
        if undecided:
            self._settle(state, [e for e in entries if e.path in undecided])
        _refuse_local_changes(state, description, overwrite=overwrite, clean=clean)
        removed = _remove(state, [*state.extra, *state.blocking], folders=True) if clean else []
        if overwrite and not clean:  # files where the version needs folders: replaced by those folders
            removed = _remove(state, state.blocking, folders=False)
        gone = set(removed)
        extra = [] if clean else [path for path in state.extra if path not in gone]
        kept = set(state.paths("ok"))
        todo = [(entry, dest) for entry, dest in targets if entry.path not in kept]
        try:
            fetched = self._place(todo, description, top)
        except Exception as exc:
            placed = len(kept) + sum(replaced(state, entry.path) for entry, _ in todo)
            note = (
                f"{description}: {placed} of {len(entries)} entries in place in {top}, "
                f"{len(entries) - placed} not; run the download again to complete it"
            )
            if isinstance(exc, ObjectChangedError):  # a retry cannot help until the pinned bytes are back
                note += " once the pinned bytes of that object are back"
            _raise_with_note(exc, note)
        if fetched or undecided:  # bytes entered the cache
            cache_bounds.prune_after_download(self.cache, limit)
        return DownloadedPath(root, extra=extra, removed=removed)

    def _place(self, targets: list[tuple[ManifestEntry, str]], description: str, root: str) -> bool:
        """Fetch (or copy from the cache) each target's bytes and rename them into place under ``root``;
        whether anything was fetched."""
        _ = self._staging  # made before any thread starts
        if targets:
            os.makedirs(root, exist_ok=True)
        with progress_bar(sum(e.size for e, _ in targets), description) as bar:
            missing = targets if self.skip_cache else self._copy_cached(targets, bar.update, root)
            if self.executor is None:
                self.fetch_all(missing, bar.update, root)
            else:
                self._fetch_on(self.executor, missing, bar.update, root)
        return bool(missing)

    def protected_folders(self) -> list[str]:
        """Folders a download never lists as extra nor cleans: the cache, and a registry on local disk."""
        folders = [os.fspath(self.cache.root)]
        if self.store.backend.protocol == "file":
            folders.append(self.store.base)
        return folders

    def _settle(self, state: FolderState, entries: list[ManifestEntry]) -> None:
        """Decide files whose bytes cannot be checked locally by fetching their pinned objects into the
        cache (never to the destination) and comparing; the next download checks them with no request."""
        _ = self._staging

        async def compare(entry: ManifestEntry) -> tuple[str, str]:
            fetched = self.cache.tmp_path()
            try:
                content = await self._fetch(entry, Path(fetched), None)
                _check_content(entry, content)
                await finish_in_thread(self.cache.admit, entry, fetched, content)
            except RefstoreError as exc:
                _discard(fetched)
                note = f"fetched to compare with {state.absolute(entry.path)}; nothing was written there"
                _raise_with_note(exc, note)
            except BaseException:
                _discard(fetched)
                raise
            local = await asyncio.to_thread(hash_file, state.absolute(entry.path))
            return entry.path, "ok" if local == f"{ALGORITHM}:{content}" else "changed"

        try:
            state.states.update(run_sync(gather_limited, [compare(e) for e in entries], CONCURRENCY))
        finally:
            self.cache.write_pins()

    def fetch_all(self, targets: list[tuple[ManifestEntry, str]], progress: ProgressHook, root: str) -> None:
        """Fetch every entry to its destination under ``root``, ``CONCURRENCY`` at a time
        (``SMALL_CONCURRENCY`` when every object is small); then write the pins learned (also when a fetch
        failed: those of the files in place)."""
        jobs = [self._one(entry, dest, root, progress) for entry, dest in targets]
        small = all(entry.size <= SMALL_OBJECT for entry, _ in targets)
        try:
            run_sync(gather_limited, jobs, SMALL_CONCURRENCY if small else CONCURRENCY)
        finally:
            self.cache.write_pins()

    def _copy_cached(
        self, targets: list[tuple[ManifestEntry, str]], progress: ProgressHook, root: str
    ) -> list[tuple[ManifestEntry, str]]:
        """Place what the cache holds before any network work (a warm download of 10,000 files is file
        system work only), and record that use (:func:`refstore.storage.cache_bounds.record_uses`);
        returns the targets still to fetch."""
        used: list[str] = []

        def place_batch(batch: list[tuple[ManifestEntry, str]]) -> list[bool]:
            with Folders(root) as folders:  # one thread's open folders (see refstore.storage.dirfd)
                return [place(folders, entry, dest) for entry, dest in batch]

        def place(folders: Folders, entry: ManifestEntry, dest: str) -> bool:
            content = self._from_cache(entry, *self._spots(folders, entry, dest))
            if content is None:
                return False
            used.append(content)
            progress(entry.size)
            return True

        batches = [targets[i : i + _BATCH] for i in range(0, len(targets), _BATCH)]
        if not parallel_pays(sum(entry.size for entry, _ in targets), len(targets)):  # small: one thread
            done = [placed for batch in batches for placed in place_batch(batch)]
        else:
            with ThreadPoolExecutor(os.cpu_count(), thread_name_prefix="refstore-cache") as pool:
                done = [placed for batch in pool.map(place_batch, batches) for placed in batch]
        cache_bounds.record_uses(self.cache, used)
        return [item for item, placed in zip(targets, done, strict=True) if not placed]

    def _spots(self, folders: Folders, entry: ManifestEntry, dest: str) -> tuple[Spot, Spot]:
        """The file ``entry`` goes to (its folder opened, made if missing) and a scratch file to build it
        at."""
        target = folders.spot(entry.path)
        return target, self._staging.spot_for(target, os.path.dirname(dest))

    def _from_cache(self, entry: ManifestEntry, dest: Spot, scratch: Spot) -> str | None:
        """Put the cached bytes of ``entry`` at ``dest``; their content hash, or ``None`` when the cache
        has none (or had corrupt ones, now dropped, or they or the scratch file vanished meanwhile: pruned,
        say)."""
        cached = self.cache.lookup(entry)
        if cached is None:
            return None
        try:
            self.cache.place(entry, cached, dest, scratch)
        except CorruptCacheEntry:
            scratch.discard()
            return None
        except FileNotFoundError as exc:
            scratch.discard()
            if not self._vanished(exc):
                raise
            return None  # fetched instead
        except BaseException:
            scratch.discard()
            raise
        return os.path.basename(cached)

    def _vanished(self, exc: BaseException) -> bool:
        """Whether ``exc`` says a file of this download's own vanished: a scratch file or a cached blob
        removed by another process (not a source object that is missing)."""
        if isinstance(exc, RefstoreError) or not isinstance(exc, FileNotFoundError):
            return False
        names = [os.fspath(n) for n in (exc.filename, exc.filename2) if isinstance(n, (str, os.PathLike))]
        cache = os.fspath(self.cache.root)
        return any(n.startswith(cache) or is_scratch_name(os.path.basename(n)) for n in names)

    def _fetch_on(
        self, executor: Executor, targets: list[tuple[ManifestEntry, str]], progress: ProgressHook, root: str
    ) -> None:
        """Fetch in batches on ``executor``'s workers, each with its own connections and this cache."""
        jobs = [
            _Batch(
                self.store.url,
                self.store.storage_options,
                self.storage_options,
                str(self.cache.root),
                self.skip_cache,
                targets[start : start + _BATCH],
                self.allow_local_refs,
                root,
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

    async def _one(self, entry: ManifestEntry, dest: str, root: str, progress: Any) -> None:
        """Fetch one entry into the cache's ``tmp/`` and put it at ``dest``; fetched again when a file
        of its own vanished meanwhile (another process cleaning ``tmp/``), up to ``_ATTEMPTS`` times."""
        for attempt in range(1, _ATTEMPTS + 1):
            fetched = self.cache.tmp_path()
            try:
                content = await self._fetch(entry, Path(fetched), progress)
                await finish_in_thread(self._admit, entry, content, fetched, dest, root)
                return
            except ObjectChangedError as exc:
                _discard(fetched)
                if entry.is_copy:  # the registry's own blob: corrupt in the store, or damaged on the way?
                    relative, pin = blob_path(entry.digest), self.source(entry)[1]
                    moved = await quarantine_if_corrupt(self.store, relative, pin, self.cache.tmp_path())
                    if moved is not None:
                        raise corrupt_blob_error(self.store, relative, moved, exc) from exc
                raise
            except FileNotFoundError as exc:
                _discard(fetched)
                if not self._vanished(exc):
                    raise
                if attempt == _ATTEMPTS:
                    raise ConflictError(
                        f"{dest}: a file this download was writing ({exc.filename}) vanished {_ATTEMPTS} "
                        f"times; is another process removing files in {self.cache.tmp_dir()}?"
                    ) from exc
            except BaseException:
                _discard(fetched)
                raise

    def _admit(self, entry: ManifestEntry, content: str, fetched: str, dest: str, root: str) -> None:
        """Check fetched bytes, whose xxh3_128 hex is ``content``, put them at ``dest``, then into the
        cache, whose file ``dest`` then shares (a hard link, else a copy in the kernel). ``dest`` is made
        from this download's own file in ``tmp/`` before the cache gets it, so a prune in another process
        can never take the bytes away first. With ``skip_cache`` the file is renamed there from ``tmp/``
        (copied when ``tmp/`` is on another filesystem)."""
        _check_content(entry, content)
        with Folders(root) as folders:
            target, scratch = self._spots(folders, entry, dest)
            try:
                if self.skip_cache and scratch.fd is None:  # tmp/ shares the destination's filesystem
                    Spot(None, fetched).move_to(target)
                else:
                    install(fetched, target, scratch, lambda spot: copy_file(fetched, spot))
            except BaseException:
                scratch.discard()
                raise
        if self.skip_cache:
            self.cache.remember(entry, content)
            _discard(fetched)
        else:
            self.cache.admit(entry, fetched, content)

    async def _fetch(self, entry: ManifestEntry, target: Path, progress: Any) -> str:
        """Fetch the entry's bytes to ``target``; their xxh3_128 hex."""
        backend, pin = self.source(entry)
        return await backend.fetch(pin, target, progress)

    def source(self, entry: ManifestEntry) -> tuple[Backend, ObjectMeta]:
        """The backend that holds the entry's bytes, and the pin to read them with."""
        if entry.is_copy:
            relative = blob_path(entry.digest)
            pin = ObjectMeta(url=self.store.url_of(relative), size=entry.size, digest=entry.digest)
            return self.store.backend, pin
        self.check_local_refs([entry])
        return self._backend_of(entry), entry.pin

    def _backend_of(self, entry: ManifestEntry) -> Backend:
        assert entry.ref is not None
        authority = _authority(entry.ref)
        backend = self._backends.get(authority)
        if backend is None:  # resolved once per bucket or host, not per entry
            backend = self._backends[authority] = resolve(entry.ref, self.storage_options).backend
        return backend

    def check_local_refs(self, entries: Iterable[ManifestEntry]) -> None:
        """Refuse a local file that a manifest from a registry off this machine's disk names without a
        content hash (``checksum=False``, or a digest the local backend does not check), unless
        ``allow_local_refs``: whoever can write that registry must not be able to make a download, ``open``
        or ``verify`` read this machine's files (``file:///home/you/.aws/credentials``). Local entries that
        pin their xxh3_128 hash stay allowed: only the bytes the manifest already knows can come out. A
        ref is local by the backend it resolves to (``file://``, ``FILE://``, a plain path)."""
        if self.allow_local_refs or self.store.backend.protocol == "file":
            return
        for entry in entries:
            if entry.ref is None or entry.digest.startswith(f"{ALGORITHM}:"):
                continue
            scheme, sep, _ = entry.ref.partition("://")
            if (sep and scheme.lower() != "file") or self._backend_of(entry).protocol != "file":
                continue  # (other schemes are not resolved here: a warm download needs no client)
            raise StorageAccessError(
                f"{entry.ref}: entry {entry.path!r} names a local file without a content hash, in a "
                f"manifest from {self.store.url}, a registry not on this machine's disk; refused unless you "
                "trust it: allow_local_refs=True (refstore get/verify --allow-local-refs)"
            )


_BATCH = 256
#: How many times a download fetches one file whose scratch file vanished before it gives up.
_ATTEMPTS = 3


@dataclass(frozen=True)
class _Batch:
    """Entries for one executor task, with what a worker needs to rebuild the downloader."""

    store_url: str
    store_options: dict[str, Any]
    storage_options: dict[str, Any]
    cache_root: str
    skip_cache: bool
    items: list[tuple[ManifestEntry, str]]
    allow_local_refs: bool = False
    root: str = ""


def _download_batch(batch: _Batch) -> int:
    """Run in an executor's worker: fetch a batch of entries to their destinations; the bytes done."""
    downloader = Downloader(
        Store(batch.store_url, batch.store_options),
        cache=Cache(Path(batch.cache_root)),
        skip_cache=batch.skip_cache,
        allow_local_refs=batch.allow_local_refs,
        storage_options=batch.storage_options,
    )
    targets, root = batch.items, batch.root
    missing = targets if batch.skip_cache else downloader._copy_cached(targets, _ignore, root)
    downloader.fetch_all(missing, _ignore, root)
    return sum(entry.size for entry, _ in batch.items)


def _ignore(done: int) -> None:
    """A progress hook that reports nowhere."""


if sys.platform == "win32":
    from pathlib import WindowsPath as _ConcretePath
else:
    from pathlib import PosixPath as _ConcretePath


class DownloadedPath(_ConcretePath):
    """The folder a download filled: a :class:`pathlib.Path` that also tells what else it found there.

    ``extra``: files under the folder (under ``path_prefix`` when one was given) that the version does not
    hold, left in place; ``removed``: those that ``clean=True`` deleted instead. Logical paths (relative,
    POSIX), sorted. Paths made from this one (``path / "x"``) have both empty.
    """

    extra: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __init__(self, *args: Any, extra: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
        if sys.version_info >= (3, 12):
            super().__init__(*args)
        self.extra = tuple(extra)
        self.removed = tuple(removed)

    if sys.version_info < (3, 12):

        def __new__(cls, *args: Any, **kwargs: Any) -> DownloadedPath:
            return super().__new__(cls, *args)


def _refuse_local_changes(state: FolderState, description: str, *, overwrite: bool, clean: bool) -> None:
    """:class:`LocalChangesError` naming the files a download would destroy, if there are any."""
    changed = state.paths("changed", "special") if not overwrite else []
    folders = [] if clean else state.paths("folder")
    blocking = [] if (clean or overwrite) else state.blocking
    found = [*(f"{p} (changed)" for p in changed), *(f"{p} (a folder)" for p in folders)]
    found += [f"{p} (a file where the version has a folder)" for p in blocking]
    if not found:
        return
    hint = "--clean (clean=True) removes folders and files the version does not hold"
    if changed or blocking:
        hint = "--force (overwrite=True) replaces them" + ("" if not folders else f"; {hint}")
    raise LocalChangesError(
        f"{state.root}: {len(found)} local file(s) differ from {description} and would be replaced: "
        f"{first_few(found)}; nothing was written; {hint}"
    )


def first_few(items: Sequence[str], count: int = 5) -> str:
    """The first ``count`` items, and how many more there are."""
    shown = ", ".join(items[:count])
    return shown if len(items) <= count else f"{shown} and {len(items) - count} more"


def _remove(state: FolderState, paths: list[str], *, folders: bool) -> list[str]:
    """Delete the files (or links: never what they point to) at ``paths``, then (``folders``) the spare
    folders that are empty now; the paths deleted."""
    removed = []
    for path in paths:
        try:
            os.unlink(state.absolute(path))
        except FileNotFoundError:
            continue
        removed.append(path)
    for folder in state.spare_folders if folders else []:
        with contextlib.suppress(OSError):  # not empty: it holds something the walk leaves alone
            os.rmdir(state.absolute(folder))
    return sorted(removed)


def _raise_with_note(exc: Exception, note: str) -> NoReturn:
    """Raise ``exc`` again, its message ending with ``note`` (a refstore error or an OS error keeps its
    type; another exception gets the note as a PEP 678 note)."""
    noted = _with_note(exc, note)
    if noted is exc:
        raise exc
    raise noted from exc


def _with_note(exc: Exception, note: str) -> Exception:
    try:
        if isinstance(exc, RefstoreError):
            return type(exc)(f"{exc}; {note}")
        if isinstance(exc, OSError) and exc.strerror is not None:
            return type(exc)(exc.errno, f"{exc.strerror}; {note}", exc.filename)
        if isinstance(exc, OSError):
            return type(exc)(f"{exc}; {note}")
    except Exception:  # an exception class with another signature
        pass
    exc.add_note(note)
    return exc


def _authority(ref: str) -> str:
    """``s3://bucket/key`` -> ``s3://bucket``: a ref's scheme and authority, which pick its backend."""
    start = ref.find("://")
    end = ref.find("/", start + 3) if start >= 0 else -1
    return ref[:end] if end >= 0 else ref


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def blob_path(digest: str) -> str:
    """Where the registry keeps the copy with this content digest."""
    hexdigest = digest.split(":", 1)[1]
    return f"blobs/{hexdigest[:2]}/{hexdigest}"


def _check_content(entry: ManifestEntry, content: str) -> None:
    """Refuse fetched bytes whose xxh3_128 hex ``content`` differs from an entry that pins that hash."""
    if entry.digest.startswith(f"{ALGORITHM}:") and entry.digest != f"{ALGORITHM}:{content}":
        raise ObjectChangedError(
            f"{entry.ref or entry.path}: content hashes to {ALGORITHM}:{content}, pinned {entry.digest}"
        )


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
    """``root / logical_path``, refusing any path that would land outside ``root``."""
    return Path(destination(os.fspath(root), logical_path, realpath=realpath))


def destination(root: str, logical_path: str, *, realpath: Callable[[str], str] = os.path.realpath) -> str:
    """:func:`safe_destination` on strings. ``realpath``: a memo of :func:`os.path.realpath` for one
    download (10,000 files share few folders)."""
    check_logical_path(logical_path)
    # UTF-8 takes at most 4 bytes a character: shorter paths cannot hold a segment over the limit
    if len(logical_path) * 4 > _MAX_FILE_NAME and any(
        len(part.encode()) > _MAX_FILE_NAME for part in logical_path.split("/")
    ):
        raise UnsafePathError(f"logical path {logical_path[:60]!r}...: a segment is longer than 255 bytes")
    dest = (
        os.path.join(root, *logical_path.split("/"))
        if os.sep != "/"
        else f"{root.rstrip('/')}/{logical_path}"
    )
    try:
        real_root = realpath(root)
        real_parent = realpath(os.path.dirname(dest))
    except OSError as exc:  # a link swapped for a folder between realpath's lstat and readlink
        raise UnsafePathError(
            f"logical path {logical_path!r}: its folder changed while it was checked"
        ) from exc
    inside = real_parent == real_root or real_parent.startswith(real_root.rstrip(os.sep) + os.sep)
    if not inside and os.path.commonpath([real_root, real_parent]) != real_root:
        raise UnsafePathError(f"logical path {logical_path!r}: would be written outside {root}")
    return dest
