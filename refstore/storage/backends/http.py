"""Plain HTTP(S) servers (``https://``, ``http://``): read-only, one object per URL, pinned by ETag.

fsspec's HTTPFileSystem keeps the whole URL as the path, so :meth:`HTTPBackend.url` and
:meth:`HTTPBackend.path` are the identity (an ``http://`` URL stays ``http://``).

Requests go through the filesystem's own aiohttp session (``await fs.set_session()``) with its request
options (``fs.kwargs``: headers, auth, ssl ...), but refstore sends them itself rather than through
``fs._info`` / ``fs._cat_file``: fsspec turns *every* failure of ``_info`` (a 500, a refused connection)
into ``FileNotFoundError``, and its file objects raise aiohttp errors on a 412. Here a missing object is
a 404/410 only, and a precondition failure is :class:`~refstore.ObjectChangedError`.

Weak ETags (``W/"..."``) never satisfy ``If-Match`` (RFC 9110 strong comparison). The manifest keeps the
normalized ETag only, so a 412 on a pinned GET is retried once without ``If-Match`` and the response's
ETag is compared instead: one request in the common case, two when the server's ETags are weak or the
object changed.

Waits are bounded by stalls, never by total time: a request fails when no byte arrives for the stall timeout
(``REFSTORE_HTTP_STALL_TIMEOUT`` seconds, or ``storage_options={"stall_timeout": ...}``; 60 by default), so a
slow but steady server is downloaded however long it takes (aiohttp's session default of 300 s in total cut
those off). A fetch that stalls, breaks off or is answered "try again" (HTTP 429, 500, 502, 503, 504) is tried
again, :data:`FETCH_ATTEMPTS` times in all with backoff: it resumes with ``Range: bytes=<received>-`` pinned
by ``If-Match`` and ``If-Range`` on the ETag where there is one (the server then sends the rest of the same
bytes, or the whole object again, which starts the file over), else it starts over; what still fails is
:class:`~refstore.StorageUnavailableError` naming the URL. Range reads of ``open`` are retried the same way.

HTTP has no listing: :meth:`HTTPBackend.list_prefix` raises :class:`~refstore.InvalidURLError` rather
than scraping HTML index pages (what fsspec's ``ls`` does), which is unreliable and not a complete
listing. HTTP locations are read-only: registry writes raise :class:`~refstore.InvalidURLError`.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, ClassVar, cast

import aiohttp
from fsspec import AbstractFileSystem
from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from ...core.exceptions import InvalidURLError, StorageAccessError, StorageUnavailableError
from ...core.meta import ObjectMeta
from ._base import (
    CHUNK_SIZE,
    FETCH_ATTEMPTS,
    Backend,
    BodyFile,
    ProgressHook,
    backoff,
    changed,
    is_unchecked,
    normalize_etag,
    short_reason,
)

__all__ = ["HTTPBackend"]

_GONE = (404, 410)
#: Seconds without a byte (or without a connection) after which a request is given up and tried again.
DEFAULT_STALL_TIMEOUT = 60.0
STALL_TIMEOUT_VARIABLE = "REFSTORE_HTTP_STALL_TIMEOUT"
_CREDENTIALS = "pass storage_options={'headers': {'Authorization': ...}} (or client_kwargs={'auth': ...})"


class HTTPBackend(Backend):
    """Single objects on HTTP(S) servers through fsspec's HTTPFileSystem (aiohttp)."""

    protocols: ClassVar[tuple[str, ...]] = ("https", "http")
    package: ClassVar[str] = "aiohttp"
    can_list: ClassVar[bool] = False
    lists_metadata: ClassVar[bool] = False
    credentials_hint: ClassVar[str | None] = _CREDENTIALS

    def is_unavailable(self, exc: BaseException) -> bool:
        """A refused connection, an unknown host, a broken or timed-out response (aiohttp's errors)."""
        return isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError))

    @classmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        from fsspec.implementations.http import HTTPFileSystem

        options = dict(storage_options)
        stall = options.pop("stall_timeout", None)  # refstore's own option, not a request option
        fs = HTTPFileSystem(**options)
        fs.refstore_stall_timeout = (
            None if stall is None else _seconds(stall, "storage_options stall_timeout")
        )
        return cast(AbstractFileSystem, fs)

    @property
    def stall_timeout(self) -> float:
        """Seconds without a byte after which a request is given up: ``storage_options["stall_timeout"]``,
        else ``$REFSTORE_HTTP_STALL_TIMEOUT``, else :data:`DEFAULT_STALL_TIMEOUT`."""
        chosen = getattr(self.fs, "refstore_stall_timeout", None)
        if chosen is not None:
            return float(chosen)
        value = os.environ.get(STALL_TIMEOUT_VARIABLE)
        return _seconds(value, STALL_TIMEOUT_VARIABLE) if value else DEFAULT_STALL_TIMEOUT

    def url(self, path: str) -> str:
        return path

    def path(self, url: str) -> str:
        return url

    # -- requests ---------------------------------------------------------------------------------------

    def _request_options(self, extra_headers: Mapping[str, str]) -> dict[str, Any]:
        """The filesystem's request options with ``extra_headers`` merged into its headers."""
        options = dict(self.fs.kwargs)
        headers = dict(options.pop("headers", None) or {})
        headers["Accept-Encoding"] = "identity"  # sizes are of the stored bytes, not of a gzip stream
        headers.update(extra_headers)
        options["headers"] = headers
        options.setdefault("allow_redirects", True)
        if "timeout" not in options:  # stalls, not total time (a session's default total is 300 s)
            stall = self.stall_timeout
            options["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
        return options

    async def _request(self, method: str, url: str, headers: Mapping[str, str] | None = None) -> Any:
        session = await self.fs.set_session()
        return await session.request(method, self.fs.encode_url(url), **self._request_options(headers or {}))

    # -- metadata ---------------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectMeta | None:
        """One HEAD: size from Content-Length, ETag, Last-Modified; ``None`` on 404/410."""
        async with await self._request("HEAD", path) as response:
            if response.status in _GONE:
                return None
            _raise_for_status(path, response)
            headers = response.headers
        size = _identity_length(headers)
        if size is None:
            raise InvalidURLError(
                f"{path}: the server sends no Content-Length for the stored bytes, "
                "so the object cannot be pinned"
            )
        etag = normalize_etag(headers["ETag"]) if headers.get("ETag") else None
        return ObjectMeta(
            url=path,
            size=size,
            digest=f"etag:{etag}" if etag else None,
            etag=etag,
            version_id=None,
            last_modified=_http_date_to_iso(headers.get("Last-Modified")),
        )

    async def list_prefix(self, path: str, *, max_objects: int) -> list[ObjectMeta]:
        raise InvalidURLError(
            f"{path}: cannot list a prefix over HTTP(S) (there is no listing API); reference single objects, "
            "one URL per file"
        )

    # -- reading pinned bytes ---------------------------------------------------------------------------

    async def _get(
        self, pin: ObjectMeta, range_header: str | None = None, *, if_range: str | None = None
    ) -> Any:
        """A GET of the pinned object (``If-Match`` when pinned by ETag), its status and ETag checked;
        ``if_range``: the ETag that the range must still have (else the server sends the whole object)."""
        extra = {"Range": range_header} if range_header else {}
        if range_header and if_range:
            extra["If-Range"] = f'"{if_range}"'
        conditional = pin.etag is not None
        headers = {**extra, "If-Match": f'"{pin.etag}"'} if conditional else extra
        response = await self._request("GET", pin.url, headers)
        if response.status == 412 and conditional:
            # Changed, or a weak ETag that If-Match can never match: ask again unconditionally and let the
            # ETag of the response decide (below).
            response.release()
            response = await self._request("GET", pin.url, extra)
        try:
            if response.status in _GONE:
                raise changed(pin, f"the server answers HTTP {response.status} (gone)")
            if response.status == 412:
                raise changed(pin, "the server's ETag no longer matches (HTTP 412)")
            if response.status == 416 and range_header:
                # only ranges inside the pinned size are asked for (aiohttp checks Range before If-Match)
                raise changed(pin, f"the object is shorter than the pinned {pin.size} bytes (HTTP 416)")
            _raise_for_status(pin.url, response)
            etag = response.headers.get("ETag")
            if pin.etag is not None and (not etag or normalize_etag(etag) != pin.etag):
                now = normalize_etag(etag) if etag else "missing"
                raise changed(pin, f"ETag is {now}, the manifest pinned {pin.etag}")
        except BaseException:
            response.release()
            raise
        return response

    async def fetch(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None = None) -> str:
        """The pinned bytes into ``dest``; a response that stalls or breaks off is resumed or started over
        (see the module's doc), at most :data:`FETCH_ATTEMPTS` requests in all."""
        body = _Body(dest, progress)
        try:
            for attempt in range(1, FETCH_ATTEMPTS + 1):
                try:
                    await self._fetch_into(pin, body)
                    return body.file.hexdigest()
                except _TRANSIENT as exc:
                    if attempt == FETCH_ATTEMPTS:
                        raise StorageUnavailableError(
                            f"{pin.url}: {_what_failed(exc, self.stall_timeout)}, {FETCH_ATTEMPTS} times "
                            f"({body.file.size} of {pin.size} bytes received)"
                        ) from exc
                    await backoff(attempt)
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            body.close()
            with contextlib.suppress(OSError):
                dest.unlink()
            raise
        finally:
            body.close()

    async def _fetch_into(self, pin: ObjectMeta, body: _Body) -> None:
        """One request: the rest of the bytes when some arrived and the ETag pins them, else all of them."""
        checked = not is_unchecked(pin)
        validator = pin.etag or body.etag  # a location-only pin resumes on the ETag of its first answer
        resume = body.file.size > 0 and validator is not None
        if resume:
            response = await self._get(pin, f"bytes={body.file.size}-", if_range=validator)
        else:
            response = await self._get(pin)
        async with response:
            if response.status == 206 and resume and _range_start(response.headers) == body.file.size:
                length = _identity_length(response.headers)
                expected_total = None if length is None else body.file.size + length
            elif response.status == 200:
                body.restart()
                expected_total = _identity_length(response.headers)
                etag = response.headers.get("ETag", "")
                body.etag = normalize_etag(etag) if etag and not etag.startswith("W/") else None
            else:
                raise OSError(f"{pin.url}: unexpected HTTP {response.status} to a GET")
            if checked and expected_total is not None and expected_total != pin.size:
                raise changed(pin, f"expected {pin.size} bytes, the server has {expected_total}")
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                body.write(chunk)
                if checked and body.file.size > pin.size:
                    raise changed(pin, f"expected {pin.size} bytes, received more")
        if expected_total is not None and body.file.size < expected_total:
            raise _CutShort(f"the response ended after {body.file.size} of {expected_total} bytes")
        if checked and body.file.size != pin.size:
            raise changed(pin, f"expected {pin.size} bytes, received {body.file.size}")
        if expected_total is not None and body.file.size != expected_total:
            raise OSError(f"{pin.url}: the response ended after {body.file.size} of {expected_total} bytes")

    def open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        """A seekable file of range reads, each one ``If-Match``-conditional; the ETag is checked at open."""
        meta = sync(self.fs.loop, self.stat, pin.url)
        if meta is None:
            raise changed(pin, "the server answers 404 (gone)")
        if is_unchecked(pin):
            # A location-only pin reads whatever is there now, but the same bytes throughout the read.
            return cast(IO[bytes], _PinnedHTTPFile(self, replace(meta, digest=None)))
        if pin.etag is not None and meta.etag != pin.etag:
            raise changed(pin, f"ETag is {meta.etag or 'missing'}, the manifest pinned {pin.etag}")
        if meta.size != pin.size:
            raise changed(pin, f"expected {pin.size} bytes, the server has {meta.size}")
        return cast(IO[bytes], _PinnedHTTPFile(self, pin))

    async def _read_range(self, pin: ObjectMeta, start: int, end: int) -> bytes:
        """``[start, end)`` of the pinned object; a read that stalls or breaks off is tried again."""
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                return await self._read_range_once(pin, start, end)
            except _TRANSIENT as exc:
                if attempt == FETCH_ATTEMPTS:
                    raise StorageUnavailableError(
                        f"{pin.url}: {_what_failed(exc, self.stall_timeout)}, {FETCH_ATTEMPTS} times "
                        f"(bytes {start}-{end - 1})"
                    ) from exc
                await backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_range_once(self, pin: ObjectMeta, start: int, end: int) -> bytes:
        response = await self._get(pin, f"bytes={start}-{end - 1}")
        async with response:
            total = _content_range_total(response.headers)
            if response.status != 206 or total is None:
                raise OSError(
                    f"{pin.url}: the server does not honour Range requests (HTTP {response.status})"
                )
            if total != pin.size:
                raise changed(pin, f"expected {pin.size} bytes, the server has {total}")
            data = await response.read()
        if len(data) != end - start:
            raise changed(pin, f"a range read of {end - start} bytes returned {len(data)}")
        return cast(bytes, data)

    # -- registry writes --------------------------------------------------------------------------------

    async def put_create_only(self, path: str, data: bytes) -> None:
        raise _read_only(path)

    async def put_atomic(self, path: str, data: bytes) -> None:
        raise _read_only(path)

    async def upload(self, local: Path, path: str) -> None:
        raise _read_only(path)


class _PinnedHTTPFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only, seekable, buffered file whose every range read is pinned by ``If-Match``."""

    def __init__(self, backend: HTTPBackend, pin: ObjectMeta) -> None:
        self._backend = backend
        self._pin = pin
        super().__init__(
            backend.fs, pin.url, mode="rb", block_size=CHUNK_SIZE, cache_type="readahead", size=pin.size
        )
        self.details = {"name": pin.url, "size": pin.size, "type": "file"}

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self._pin.size)
        if start >= end:
            return b""
        return cast(bytes, sync(self.fs.loop, self._backend._read_range, self._pin, start, end))


class _CutShort(Exception):
    """Internal: a response that ended before the bytes its headers announced (the connection closed)."""


#: What a request that stalled or broke off raises: tried again (a refused connection included).
class _ServerBusy(OSError):
    """An answer that says "try again" (HTTP 429, 500, 502, 503, 504): retried with backoff like a stall."""

    def __init__(self, url: str, answer: str) -> None:
        super().__init__(f"{url}: {answer}")
        self.answer = answer


#: Statuses a server gives for a failure that passes (overload, a restart behind a proxy).
_BUSY_STATUSES = frozenset({429, 500, 502, 503, 504})

_TRANSIENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,
    TimeoutError,
    _CutShort,
    _ServerBusy,
)


class _Body:
    """The local file of one fetch across its attempts: appended to when a request resumes, started over
    (truncated, its progress taken back) when a request sends the whole object."""

    def __init__(self, dest: Path, progress: ProgressHook | None) -> None:
        self.dest = dest
        self.progress = progress
        self.file = BodyFile(dest)
        self.file.__enter__()
        self.open = True
        #: The strong ETag of the first whole answer: what a location-only pin resumes on.
        self.etag: str | None = None

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        if self.progress is not None:
            self.progress(len(chunk))

    def restart(self) -> None:
        if self.file.size:
            if self.progress is not None:
                self.progress(-self.file.size)
            self.close()
            self.file = BodyFile(self.dest)
            self.file.__enter__()
            self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            self.file.__exit__(None, None, None)


def _what_failed(exc: BaseException, stall: float) -> str:
    """A failed attempt in a few words: a stall names the timeout."""
    if isinstance(exc, TimeoutError):
        return f"no byte for {stall:g} s (stalled; set {STALL_TIMEOUT_VARIABLE} to wait longer)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"no connection ({short_reason(exc)})"
    if isinstance(exc, _ServerBusy):
        return f"the server answered {exc.answer}"
    return f"the response broke off ({short_reason(exc)})"


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidURLError(f"{what}: {value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise InvalidURLError(f"{what}: {value!r} is not a positive number of seconds")
    return seconds


def _range_start(headers: Mapping[str, str]) -> int | None:
    """The first byte in ``Content-Range: bytes a-b/total``."""
    value = headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _read_only(url: str) -> InvalidURLError:
    return InvalidURLError(f"{url}: an HTTP(S) location is read-only; a registry needs a writable URL")


def _raise_for_status(url: str, response: Any) -> None:
    if response.status < 400:
        return
    answer = f"HTTP {response.status} {response.reason or ''}".rstrip()
    if response.status in (401, 403):
        raise StorageAccessError(f"{url}: access refused ({answer}); {_CREDENTIALS}")
    if response.status in _BUSY_STATUSES:
        raise _ServerBusy(url, answer)
    raise OSError(f"{url}: {answer}")


def _identity_length(headers: Mapping[str, str]) -> int | None:
    """Content-Length, when it counts the stored bytes (no content coding)."""
    if headers.get("Content-Encoding", "identity") not in ("identity", ""):
        return None
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _content_range_total(headers: Mapping[str, str]) -> int | None:
    """The total size in ``Content-Range: bytes a-b/total``, when there is one."""
    value = headers.get("Content-Range", "")
    _, _, total = value.rpartition("/")
    return int(total) if total.isdigit() else None


def _http_date_to_iso(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError):
        return value
