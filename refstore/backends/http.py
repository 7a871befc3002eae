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

HTTP has no listing: :meth:`HTTPBackend.list_prefix` raises :class:`~refstore.InvalidURLError` rather
than scraping HTML index pages (what fsspec's ``ls`` does), which is unreliable and not a complete
listing. HTTP locations are read-only: registry writes raise :class:`~refstore.InvalidURLError`.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, ClassVar, cast

from fsspec import AbstractFileSystem
from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from .._exceptions import InvalidURLError, StorageAccessError
from ._base import (
    CHUNK_SIZE,
    Backend,
    BodyFile,
    ObjectMeta,
    ProgressHook,
    changed,
    is_unchecked,
    normalize_etag,
)

__all__ = ["HTTPBackend"]

_GONE = (404, 410)
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
        import aiohttp

        return isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError))

    @classmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        from fsspec.implementations.http import HTTPFileSystem

        return cast(AbstractFileSystem, HTTPFileSystem(**dict(storage_options)))

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

    async def _get(self, pin: ObjectMeta, range_header: str | None = None) -> Any:
        """A GET of the pinned object (``If-Match`` when pinned by ETag), its status and ETag checked."""
        extra = {"Range": range_header} if range_header else {}
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
        checked = not is_unchecked(pin)
        response = await self._get(pin)
        async with response:
            if response.status != 200:
                raise OSError(f"{pin.url}: unexpected HTTP {response.status} to a GET")
            length = _identity_length(response.headers)
            if checked and length is not None and length != pin.size:
                raise changed(pin, f"expected {pin.size} bytes, the server has {length}")
            out = BodyFile(dest)
            try:
                with out:
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        out.write(chunk)
                        if checked and out.size > pin.size:
                            raise changed(pin, f"expected {pin.size} bytes, received more")
                        if progress is not None:
                            progress(len(chunk))
                if checked and out.size != pin.size:
                    raise changed(pin, f"expected {pin.size} bytes, received {out.size}")
                if length is not None and out.size != length:
                    raise OSError(f"{pin.url}: the response ended after {out.size} of {length} bytes")
            except BaseException:
                with contextlib.suppress(OSError):
                    dest.unlink()
                raise
            return out.hexdigest()

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


def _read_only(url: str) -> InvalidURLError:
    return InvalidURLError(f"{url}: an HTTP(S) location is read-only; a registry needs a writable URL")


def _raise_for_status(url: str, response: Any) -> None:
    if response.status < 400:
        return
    answer = f"HTTP {response.status} {response.reason or ''}".rstrip()
    if response.status in (401, 403):
        raise StorageAccessError(f"{url}: access refused ({answer}); {_CREDENTIALS}")
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
