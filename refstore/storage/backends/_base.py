"""The per-scheme backend interface and the one typed metadata record at its boundary.

A backend is the only place that knows a scheme: how to build its fsspec filesystem from the environment,
how its listings and ``info()`` dicts spell size, ETag, checksum and version id, how to read a pinned
version, and how to write create-only. Everything above it works on :class:`ObjectMeta` only.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import functools
import inspect
import os
import random
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol, TypeVar

import xxhash
from fsspec import AbstractFileSystem

from ...core.exceptions import (
    InvalidURLError,
    ObjectChangedError,
    RefstoreError,
    StorageAccessError,
    StorageUnavailableError,
)
from ...core.meta import KeyVersion, ObjectMeta
from ..hashing import copy_checked

if TYPE_CHECKING:
    from ..exclusion import Exclusion
    from ..listing import PageSource

T = TypeVar("T")

#: Called with the number of bytes just transferred; drives progress bars.
ProgressHook = Callable[[int], None]

CHUNK_SIZE = 4 * 2**20


#: Called with each batch of records of a listing that is made over time (see ``reference_listing``).
RecordsHook = Callable[[list[ObjectMeta]], None]


def _storage_call(method: Callable[..., Any], position: int) -> Callable[..., Any]:
    """``method`` with its failures told by :meth:`Backend.storage_error`, about the object named by its
    argument at ``position`` (a path of the backend, or an :class:`ObjectMeta`)."""

    def url_of(backend: Backend, args: tuple[Any, ...]) -> str:
        target = args[position] if len(args) > position else None
        if isinstance(target, ObjectMeta):
            return target.url
        if isinstance(target, str):
            return target if "://" in target else backend.url(target)
        return backend.url_prefix

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def call_async(self: Backend, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except Exception as exc:
                self.reraise(exc, url_of(self, args))

        wrapper: Any = call_async
    else:

        @functools.wraps(method)
        def call(self: Backend, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                self.reraise(exc, url_of(self, args))

        wrapper = call
    wrapper.storage_call = True
    return wrapper  # type: ignore[no-any-return]


#: The backend methods whose failures every backend tells in refstore's terms, with the position of the
#: argument naming the object (see :meth:`Backend.storage_error`).
STORAGE_CALLS = {
    "stat": 0,
    "list_prefix": 0,
    "reference_listing": 0,
    "fetch": 0,
    "open_pinned": 0,
    "put_create_only": 0,
    "upload": 1,
    "put_atomic": 0,
    "move": 0,
}


class BatchedWrites(Protocol):
    """New files written into storage on a local file system, made durable together by
    :meth:`make_durable` (an fsync per file as it is written made saving many small files slow)."""

    def staging_path(self, folder: str) -> str:
        """A new name in ``folder`` (created if needed) for a file staged on the storage's own file system;
        a staged name is a temporary one, which readers never list and gc sweeps when it is left behind."""

    def put_staged(self, staged: str, path: str) -> bool:
        """Give the staged file the name ``path`` without a copy, unless a file is there (``False``)."""

    def create_only(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` only if nothing is there; else raise :class:`FileExistsError`."""

    def make_durable(self) -> None:
        """Make every file written so far survive a crash (until then, a crash may leave them empty)."""


class Backend(abc.ABC):
    """One scheme's knowledge, over one fsspec filesystem.

    Every method in :data:`STORAGE_CALLS`, in every subclass, raises what its client raised through
    :meth:`storage_error`: refused or missing credentials are :class:`~refstore.StorageAccessError`, a
    storage that cannot be reached :class:`~refstore.StorageUnavailableError`, each naming the URL.
    """

    #: URL schemes served by this backend; the first is the canonical one written into manifests.
    protocols: ClassVar[tuple[str, ...]]
    #: The pip package that provides the fsspec implementation (named in install hints).
    package: ClassVar[str]
    #: Whether prefixes can be listed (HTTP cannot: only single objects are referenced there).
    can_list: ClassVar[bool] = True
    #: Whether a listing carries each object's metadata without reading its bytes, so that one listing is
    #: cheaper than a stat per object (local files are hashed to be listed, HTTP cannot list).
    lists_metadata: ClassVar[bool] = True
    #: What a user sets to give this backend credentials, named when they are missing or refused; ``None``
    #: for backends without credentials (a refused local file stays a plain :class:`PermissionError`).
    credentials_hint: ClassVar[str | None] = None
    #: Whether listings go page by page through :meth:`paged` (S3, GCS, Azure), so that a listing can be
    #: spread over an executor's workers (:mod:`refstore.storage.spread_listing`).
    pages_listings: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, position in STORAGE_CALLS.items():
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "storage_call", False):
                setattr(cls, name, _storage_call(method, position))

    def __init__(
        self,
        fs: AbstractFileSystem | Callable[[], AbstractFileSystem],
        protocol: str,
        url_prefix: str | None = None,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._fs = fs if isinstance(fs, AbstractFileSystem) else None
        #: The storage options the filesystem is made from (credentials included): held in memory, and
        #: sent with a task to an executor's workers so that they make the same backend; never written.
        self.options: Mapping[str, Any] = dict(options or {})
        self._make_fs = None if isinstance(fs, AbstractFileSystem) else fs
        self._lock = threading.Lock()
        self.protocol = protocol
        #: What :meth:`url` puts before an fsspec path (``"s3://"``, or an Azure account's https endpoint).
        self.url_prefix = url_prefix or f"{self.protocols[0]}://"

    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem, built on first use (so parsing a URL never connects anywhere)."""
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    assert self._make_fs is not None
                    try:
                        self._fs = self._make_fs()
                    except (ValueError, TypeError, OSError) as exc:
                        told = self.storage_error(exc, self.url_prefix)
                        raise told or RefstoreError(
                            f"{self.url_prefix}: cannot set up the {self.package} filesystem: {exc}"
                        ) from exc
        return self._fs

    # -- errors -----------------------------------------------------------------------------------------

    def storage_error(self, exc: BaseException, url: str) -> Exception | None:
        """What ``exc``, raised by this backend's client while working on ``url``, means to a user: a
        :class:`~refstore.StorageAccessError` (credentials missing or refused), a
        :class:`~refstore.StorageUnavailableError`, an :class:`~refstore.ObjectNotFoundError` for a missing
        bucket, or ``None`` to let ``exc`` through as it is. Backends add what their clients raise."""
        if isinstance(exc, RefstoreError):
            return None
        if isinstance(exc, PermissionError) and self.credentials_hint is not None:
            return self.access_error(url, f"access refused ({short_reason(exc)})")
        if self.is_unavailable(exc):
            return StorageUnavailableError(f"{url}: storage did not answer ({short_reason(exc)})")
        return None

    def access_error(self, url: str, why: str) -> StorageAccessError:
        """``url: why; <what to set>``; never a credential's value."""
        hint = self.credentials_hint or "pass credentials in storage_options"
        return StorageAccessError(f"{url}: {why}; {hint}")

    def reraise(self, exc: Exception, url: str) -> NoReturn:
        """Raise what :meth:`storage_error` makes of ``exc`` (chained to it), else ``exc`` itself."""
        told = self.storage_error(exc, url)
        if told is None:
            raise exc
        raise told from exc

    @contextlib.contextmanager
    def storage_errors(self, url: str) -> Iterator[None]:
        """Failures inside the block told by :meth:`storage_error` (for calls outside the backend)."""
        try:
            yield
        except Exception as exc:
            self.reraise(exc, url)

    @classmethod
    @abc.abstractmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        """Build the fsspec filesystem, adding what the environment implies (endpoints, emulators)."""

    def url(self, path: str) -> str:
        """The canonical URI of an fsspec path of this filesystem."""
        return f"{self.url_prefix}{path}"

    def path(self, url: str) -> str:
        """The fsspec path of a URI of this backend (inverse of :meth:`url`)."""
        if url.startswith(self.url_prefix):
            return url[len(self.url_prefix) :]
        return str(self.fs._strip_protocol(url))

    # -- metadata ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def stat(self, path: str) -> ObjectMeta | None:
        """The metadata of the single object at ``path``, or ``None`` if there is none."""

    @abc.abstractmethod
    async def list_prefix(self, path: str, *, max_objects: int) -> list[ObjectMeta]:
        """Every object strictly below the folder ``path`` (matched at ``/``), folder markers skipped.

        Raises :class:`~refstore.TooManyObjectsError` past ``max_objects``; the list is complete or an
        error, never truncated.
        """

    @functools.partial(_storage_call, position=0)
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
        """:meth:`list_prefix` for a reference. A backend that hashes content to list it (local files)
        runs the hashing on ``executor``, reports files done to ``progress`` and may hand each batch of
        records to ``on_records`` (in order, from its own thread) while later ones are hashed; listings that
        carry checksums need none of these. The returned sequence holds every record either way, except those
        ``exclude`` leaves out (filtered here once listed; a walk skips them as it goes). (A listing on
        an executor's workers is :func:`refstore.storage.spread_listing.list_on_workers`.)"""
        found = await self.list_prefix(path, max_objects=max_objects)
        return found if exclude is None else exclude.keep(found, self.url(path))

    async def paged(self, path: str, listing: Callable[[PageSource, str], Awaitable[T]]) -> T:
        """``await listing(source, prefix)``: ``source`` the pages of the bucket or container holding the
        folder ``path``, ``prefix`` the folder's key prefix (ending in ``/``, or ``""``). A backend that
        lists page by page (:attr:`pages_listings`) makes every listing of a folder through it, and may
        run ``listing`` again where the first answer cannot be trusted (S3)."""
        raise NotImplementedError(f"{self.url(path)}: {type(self).__name__} does not list page by page")

    async def inventory_listing(self, path: str, inventory: str, *, max_objects: int) -> list[ObjectMeta]:
        """The objects under the folder ``path``, and the object at ``path`` itself if there is one, as an
        inventory report at ``inventory`` (a path of this backend) lists them, instead of a listing. Only
        S3 reads inventories."""
        raise InvalidURLError(f"{self.url(path)}: inventory reports are read for S3 references only")

    # -- reading pinned bytes ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def fetch(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None = None) -> str:
        """Write exactly the pinned bytes of ``pin`` to the local file ``dest`` (through a
        :class:`BodyFile`); return their xxh3_128 hex, so that they are never read back to be hashed.

        One request in the common case. Raises :class:`~refstore.ObjectChangedError` naming the object
        when the pinned version is gone or what came back does not match ``pin``.
        """

    @abc.abstractmethod
    def open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        """A read-only, seekable file of the pinned bytes, streamed (no full download)."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the storage could not be reached or kept failing after its retries."""
        return isinstance(exc, (ConnectionError, TimeoutError))

    # -- registry writes --------------------------------------------------------------------------------

    @functools.partial(_storage_call, position=0)
    async def put_create_only(self, path: str, data: bytes) -> str | None:
        """Write ``data`` at ``path`` only if nothing is there; else raise :class:`FileExistsError`.
        Returns the id of the object version written where the backend tells it (S3), else ``None``."""
        await _maybe_async(self.fs, "pipe_file", path, data, mode="create")
        return None

    def batched_writes(self) -> BatchedWrites | None:
        """Writes made durable in one batch, where the storage is a local file system; ``None`` elsewhere
        (a remote write is durable when it returns)."""
        return None

    # -- create-only writes on storage that ignores them (see refstore.storage.claims) -------------------

    #: Whether a registry here must be probed once before its create-only writes are trusted (S3-compatible
    #: servers differ: Ceph RGW ignores ``If-None-Match: *`` in versioned buckets). Local files, GCS and
    #: Azure refuse a second create-only write by their API's contract.
    probe_create_only: ClassVar[bool] = False

    async def put_version(self, path: str, data: bytes) -> str | None:
        """Write ``data`` at ``path`` unconditionally; the id of the object version it made (``None``
        where the storage keeps no versions)."""
        raise NotImplementedError(f"{self.url(path)}: {type(self).__name__} keeps no object versions")

    async def key_versions(self, path: str) -> list[KeyVersion]:
        """Every stored version of the one object at ``path`` (delete markers included), oldest first;
        empty where the storage keeps no versions."""
        return []

    async def read_version(self, path: str, version_id: str) -> bytes:
        """The bytes of one version of ``path``; :class:`FileNotFoundError` when it is gone."""
        raise NotImplementedError(f"{self.url(path)}: {type(self).__name__} keeps no object versions")

    async def delete_version(self, path: str, version_id: str) -> None:
        """Remove one version of ``path`` for good (no delete marker)."""
        raise NotImplementedError(f"{self.url(path)}: {type(self).__name__} keeps no object versions")

    @functools.partial(_storage_call, position=1)
    async def upload(self, local: Path, path: str) -> None:
        """Copy a local file to ``path``; readers never see it half-written."""
        await _maybe_async(self.fs, "put_file", str(local), path)

    async def upload_checked(self, local: Path, path: str, digest: str) -> None:
        """Copy a local file to ``path`` only as bytes that hash to ``digest`` (else
        :class:`~refstore.ObjectChangedError`): they are first copied aside through one checked read
        (:func:`~refstore.storage.hashing.copy_checked`), and the private copy is uploaded."""
        fd, staged = tempfile.mkstemp(prefix="refstore-upload-")
        try:
            try:
                await asyncio.to_thread(copy_checked, str(local), fd, digest)
            finally:
                os.close(fd)
            await self.upload(Path(staged), path)
        finally:
            os.unlink(staged)

    @functools.partial(_storage_call, position=0)
    async def put_atomic(self, path: str, data: bytes) -> None:
        """Write (or replace) ``path`` so that a reader sees the old or the new bytes, never a mix."""
        await _maybe_async(self.fs, "pipe_file", path, data)

    @functools.partial(_storage_call, position=0)
    async def move(self, path: str, new_path: str) -> None:
        """Move the object at ``path`` to ``new_path`` (replacing what is there): a copy, then a delete."""
        await _maybe_async(self.fs, "cp_file", path, new_path)
        await _maybe_async(self.fs, "rm_file", path)

    async def stale_temp_files(self, path: str, older_than: float) -> list[str]:
        """Temporary files under ``path`` that a writer made on the way to an object and left (killed),
        unchanged for ``older_than`` seconds. None by default: object stores write whole objects."""
        return []


async def _maybe_async(fs: AbstractFileSystem, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``fs.<method>`` natively when the filesystem is async, else in a worker thread."""
    if getattr(fs, "async_impl", False):
        return await getattr(fs, "_" + method)(*args, **kwargs)
    return await asyncio.to_thread(getattr(fs, method), *args, **kwargs)


call_fs = _maybe_async


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


class BodyFile:
    """The local file a fetch writes: counts and hashes (xxh3_128) the bytes as they are written.

    ``with BodyFile(dest) as out: out.write(chunk)``; then ``out.size`` and ``out.hexdigest()``.
    """

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = dest
        self.size = 0
        self._digest = xxhash.xxh3_128()
        self._fd = -1

    def __enter__(self) -> BodyFile:
        self._fd = os.open(self.dest, _NEW_FILE, 0o666)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        self._digest.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self._fd, view) :]

    def hexdigest(self) -> str:
        return str(self._digest.hexdigest())


#: Whole-object fetches tried at most this often when a body breaks off or arrives damaged.
FETCH_ATTEMPTS = 4
#: First pause between those attempts, in seconds; doubled each time, with jitter.
FETCH_BACKOFF = 0.25


async def backoff(attempt: int) -> None:
    """Pause after failed attempt number ``attempt`` (from 1): :data:`FETCH_BACKOFF` doubled each time,
    with jitter."""
    await asyncio.sleep(FETCH_BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random()))


class BrokenTransfer(Exception):
    """Internal: a response body broke off (reset, timeout, cut short); the object is fetched again."""


class DamagedTransfer(Exception):
    """Internal: a complete body did not match its pin (size, checksum); the object is fetched again."""


async def fetch_with_retries(
    fetch_once: Callable[[ProgressHook | None], Awaitable[str]],
    pin: ObjectMeta,
    progress: ProgressHook | None,
) -> str:
    """Run a whole-object fetch up to :data:`FETCH_ATTEMPTS` times, with exponential backoff and jitter.

    A body that keeps breaking off ends in :class:`~refstore.StorageUnavailableError`, one that keeps
    arriving damaged in :class:`~refstore.ObjectChangedError`; damaged bytes are never accepted.
    """
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        counted = _CountingHook(progress)
        try:
            return await fetch_once(counted)
        except (BrokenTransfer, DamagedTransfer) as exc:
            counted.rewind()
            if attempt < FETCH_ATTEMPTS:
                await backoff(attempt)
                continue
            error = StorageUnavailableError if isinstance(exc, BrokenTransfer) else ObjectChangedError
            raise error(f"{pin.url}: {exc} (gave up after {FETCH_ATTEMPTS} attempts)") from exc
    raise AssertionError("unreachable")  # pragma: no cover


class _CountingHook:
    """A progress hook that can take back what one failed attempt reported."""

    def __init__(self, progress: ProgressHook | None) -> None:
        self.progress = progress
        self.reported = 0

    def __call__(self, n: int) -> None:
        self.reported += n
        if self.progress is not None:
            self.progress(n)

    def rewind(self) -> None:
        if self.progress is not None and self.reported:
            self.progress(-self.reported)
        self.reported = 0


def short_reason(exc: BaseException) -> str:
    """A failure in a few words for a message: its type and its first 200 characters, on one line."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text and text != "None" else type(exc).__name__


def changed(pin: ObjectMeta, why: str) -> ObjectChangedError:
    """The one way to say that a pinned object cannot be had any more."""
    return ObjectChangedError(f"{pin.url}: {why}")


def check_received(pin: ObjectMeta, size: int, etag: str | None = None) -> None:
    """Raise :class:`ObjectChangedError` when a response does not match the pin.

    Pins recorded with ``checksum=False`` (digest ``ref:...``) are not checked: they name a location only.
    """
    if is_unchecked(pin):
        return
    if size != pin.size:
        raise changed(pin, f"expected {pin.size} bytes, received {size}")
    if etag is not None and pin.etag is not None and normalize_etag(etag) != pin.etag:
        raise changed(pin, f"ETag is {normalize_etag(etag)}, the manifest pinned {pin.etag}")


def is_unchecked(pin: ObjectMeta) -> bool:
    """True for a location-only pin (``checksum=False``): fetch whatever is there now."""
    return (pin.digest or "").startswith("ref:")


def normalize_etag(etag: str) -> str:
    """An ETag without quotes or the weak marker: ``W/"abc"`` -> ``abc``."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def b64_to_hex(value: str) -> str:
    """A base64 checksum (GCS ``md5Hash``, Azure ``Content-MD5``) as lowercase hex."""
    return base64.b64decode(value).hex()
