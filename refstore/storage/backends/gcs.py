"""Google Cloud Storage, through gcsfs.

What GCS gives, and how this module uses it:

- Object resources (``objects.get`` and ``objects.list`` JSON) carry ``size`` (a string), ``etag``,
  ``generation`` (a string), ``md5Hash`` (base64; absent for composite objects), ``crc32c`` (base64,
  big-endian) and ``updated``. Listings carry all of them, so a reference needs no per-object request.
- A generation is read by adding ``generation=<N>`` to the media URL. gcsfs only honours ``bucket/key#<N>``
  paths on a ``version_aware=True`` filesystem, ignores ``generation=`` in ``info()``/``open()``, and would
  misparse keys that really end in ``#<digits>``; so this module builds its requests itself from the
  filesystem's session, URL builder and auth headers, and splits paths literally.
- Reads ask for the *stored* bytes (``Accept-Encoding: gzip``, no client-side decompression), so objects
  uploaded with ``Content-Encoding: gzip`` come back exactly as recorded (size and md5 match).
- Create-only writes send ``ifGenerationMatch=0``; the 412 answer is :class:`FileExistsError`.

The emulator (``STORAGE_EMULATOR_HOST``, e.g. fake-gcs-server) needs anonymous credentials, no GCE
metadata probe and none of gcsfs's experimental zonal/HNS layer (which first waits on a gRPC probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar
from urllib.parse import quote

import aiohttp
import fsspec.asyn
from fsspec import AbstractFileSystem
from fsspec.spec import AbstractBufferedFile
from multidict import CIMultiDictProxy

from ...core.exceptions import (
    ObjectNotFoundError,
    RefstoreError,
    StorageUnavailableError,
    TooManyObjectsError,
)
from ...core.meta import ObjectMeta
from ..listing import Page, PageSource, list_in_parallel
from ._base import (
    CHUNK_SIZE,
    Backend,
    BodyFile,
    ProgressHook,
    b64_to_hex,
    changed,
    check_received,
    normalize_etag,
    short_reason,
)

__all__ = ["GCSBackend"]

T = TypeVar("T")
_EMULATOR_VAR = "STORAGE_EMULATOR_HOST"
_ZB_HNS_VAR = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"
#: Objects per listing page: the most ``objects.list`` returns.
LIST_PAGE_SIZE = 1000
#: For streamed reads: no total deadline (aiohttp's default 300 s would cut big downloads), but a stall
#: between two reads of the body, or a slow connect, still fails (and is retried).
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=300)


def _emulator_host() -> str | None:
    host = os.environ.get(_EMULATOR_VAR, "")
    return None if host in ("", "default") else host


def _emulator_env_defaults() -> None:
    """Environment defaults an emulator run needs; must be in place before ``import gcsfs``."""
    if _emulator_host() is not None:
        os.environ.setdefault(_ZB_HNS_VAR, "false")
        os.environ.setdefault("NO_GCE_CHECK", "true")


# refstore imports this module lazily, by the time a gs:// URL is used; gcsfs is imported even later.
_emulator_env_defaults()


def _split(path: str) -> tuple[str, str]:
    """``bucket/key`` -> (bucket, key), literally: ``#`` and ``?`` are parts of a GCS object name."""
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


def _iso(timestamp: str | None) -> str | None:
    """A GCS timestamp (RFC 3339 in UTC: ``2024-01-02T03:04:05.678Z``) as ``datetime.isoformat()``."""
    if not timestamp:
        return None
    text = timestamp.strip()
    if not text.endswith(("Z", "z")):
        return timestamp
    whole, _, frac = text[:-1].partition(".")
    try:  # padded to microseconds: Python 3.10's fromisoformat accepts only 3 or 6 fractional digits
        parsed = datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}")
    except ValueError:
        return timestamp
    return parsed.replace(tzinfo=timezone.utc).isoformat()


def _digest(resource: Mapping[str, Any]) -> str | None:
    md5 = resource.get("md5Hash")
    if md5:
        return f"md5:{b64_to_hex(md5)}"
    crc = resource.get("crc32c")
    if crc:
        return f"crc32c:{b64_to_hex(crc)}"
    return None


def _goog_hashes(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """``X-Goog-Hash: crc32c=...,md5=...`` (one header or several) as {"crc32c": hex, "md5": hex}."""
    out: dict[str, str] = {}
    for value in headers.getall("X-Goog-Hash", []):
        for part in value.split(","):
            alg, sep, b64 = part.strip().partition("=")
            if sep and b64:
                with contextlib.suppress(ValueError):
                    out[alg.lower()] = b64_to_hex(b64)
    return out


class _Hasher:
    """The digest a pin records (md5, or crc32c when the library is there), computed over the bytes."""

    def __init__(self, digest: str | None) -> None:
        self.alg, _, self.expected = (digest or "").partition(":")
        self._update: Callable[[bytes], Any] | None = None
        self._hexdigest: Callable[[], str] | None = None
        if self.alg == "md5":
            md5 = hashlib.md5(usedforsecurity=False)
            self._update, self._hexdigest = md5.update, md5.hexdigest
        elif self.alg == "crc32c":
            try:
                import google_crc32c
            except ImportError:  # pragma: no cover - google-cloud-storage brings it
                return
            crc: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
            self._update, self._hexdigest = crc.update, lambda: bytes(crc.digest()).hex()

    def update(self, data: bytes) -> None:
        if self._update is not None:
            self._update(data)

    def check(self, pin: ObjectMeta, headers: CIMultiDictProxy[str]) -> None:
        """Raise ``changed()`` when the bytes (or, lacking a hasher, the server's hash) differ."""
        if not self.expected:
            return
        if self._hexdigest is not None:
            actual: str | None = self._hexdigest()
            source = "the bytes received have"
        else:
            actual = _goog_hashes(headers).get(self.alg)
            source = "the server reports"
        if actual is not None and actual != self.expected:
            raise changed(pin, f"{source} {self.alg} {actual}, the manifest pinned {self.expected}")


class GCSBackend(Backend):
    """``gs://bucket/key``: GCS object generations as version ids."""

    protocols: ClassVar[tuple[str, ...]] = ("gs", "gcs")
    package: ClassVar[str] = "gcsfs"
    pages_listings: ClassVar[bool] = True
    credentials_hint: ClassVar[str | None] = (
        "set GOOGLE_APPLICATION_CREDENTIALS (or run gcloud auth application-default login), "
        "or pass storage_options={'token': ...}"
    )

    def storage_error(self, exc: BaseException, url: str) -> Exception | None:
        """gcsfs's answers: ``OSError("Forbidden: ...")`` for a 403, ``HttpError`` with its code (a 401),
        google-auth errors for credentials that cannot be found or refreshed, and ``FileNotFoundError``
        naming the request path, ``b/<bucket>/o`` for a listing of a bucket that does not exist."""
        if isinstance(exc, RefstoreError):
            return None
        code = getattr(exc, "code", None)
        forbidden = isinstance(exc, OSError) and str(exc).startswith("Forbidden")
        if forbidden or (type(exc).__name__ == "HttpError" and code in (401, 403)):
            status = 403 if forbidden else code
            message = " ".join(str(exc).split("\n", 1)[-1].split())[:200]
            return self.access_error(url, f"GCS refused the request (HTTP {status}: {message})")
        if type(exc).__module__.startswith("google.auth"):
            return self.access_error(url, f"no usable Google credentials ({type(exc).__name__})")
        if isinstance(exc, FileNotFoundError) and str(exc).startswith("b/") and str(exc).endswith("/o"):
            bucket = str(exc)[2:-2]
            return ObjectNotFoundError(f"gs://{bucket}: no such bucket (HTTP 404, for {url})")
        if isinstance(exc, (aiohttp.ClientConnectionError, TimeoutError)):  # after gcsfs's own retries
            return StorageUnavailableError(f"{url}: GCS did not answer ({short_reason(exc)})")
        return super().storage_error(exc, url)

    @classmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        _emulator_env_defaults()
        import fsspec.config
        import gcsfs
        import gcsfs.core

        fs_class: Any = gcsfs.GCSFileSystem
        if os.environ.get(_ZB_HNS_VAR, "true").lower() not in ("true", "1"):
            # gcsfs picks its class at import time; if it was imported before the variable was set,
            # honour the variable anyway.
            fs_class = gcsfs.core.GCSFileSystem
        options = fsspec.config.apply_config(fs_class, dict(storage_options))
        options.pop("asynchronous", None)  # the backend awaits the _methods on fsspec's own loop
        if _emulator_host() is not None and options.get("token") is None:
            options["token"] = "anon"
        fs: AbstractFileSystem = fs_class(**options)
        return fs

    # -- requests ---------------------------------------------------------------------------------------

    async def _json(self, bucket: str, key: str, **params: Any) -> dict[str, Any]:
        """``objects.get`` (metadata) of one object, or of one generation with ``generation=``."""
        out: dict[str, Any] = await self.fs._call("GET", "b/{}/o/{}", bucket, key, json_out=True, **params)
        return out

    @contextlib.asynccontextmanager
    async def _media(
        self, bucket: str, key: str, generation: str | None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One streamed GET of an object's stored bytes (of ``generation`` when given)."""
        fs = self.fs
        await fs._set_session()
        # Built here rather than by fs.url(): that one parses "#<digits>" in a key as a generation on
        # version-aware filesystems.
        url = f"{fs._location}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"
        timeout = _STREAM_TIMEOUT if fs.requests_timeout is None else fs.requests_timeout
        async with fs.session.get(
            url,
            params=fs._get_params({"alt": "media", "generation": generation}),
            headers=fs._get_headers({"Accept-Encoding": "gzip", **(headers or {})}),
            timeout=timeout,
            auto_decompress=False,
        ) as response:
            yield response

    async def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt()`` again after transient failures, the way gcsfs retries its own requests."""
        from gcsfs.retry import is_retriable

        retries = max(1, int(getattr(self.fs, "retries", 6)))
        for n in range(retries):
            if n:
                await asyncio.sleep(min(random.random() + 2 ** (n - 1), 32))
            try:
                return await attempt()
            except Exception as exc:
                if n == retries - 1 or not is_retriable(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise_for_status(response: aiohttp.ClientResponse, body: bytes, path: str) -> None:
        from gcsfs.retry import validate_response

        validate_response(response.status, body, path)

    # -- metadata ---------------------------------------------------------------------------------------

    def _meta(self, bucket: str, resource: Mapping[str, Any]) -> ObjectMeta:
        etag = resource.get("etag")
        generation = resource.get("generation")
        return ObjectMeta(
            url=self.url(f"{bucket}/{resource['name']}"),
            size=int(resource.get("size", 0)),
            digest=_digest(resource),
            etag=normalize_etag(etag) if etag else None,
            version_id=str(generation) if generation is not None else None,
            last_modified=_iso(resource.get("updated")),
        )

    async def stat(self, path: str) -> ObjectMeta | None:
        bucket, key = _split(self.path(path) if "://" in path else path)
        if not bucket or not key or key.endswith("/"):
            return None  # a bucket or a folder (its marker object, if any, is not data)
        try:
            resource = await self._json(bucket, key)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if not str(exc).startswith("Forbidden"):
                raise
            # Like gcsfs: a principal with storage.objects.list but not .get can still see it listed.
            page = await self.fs._call("GET", "b/{}/o", bucket, json_out=True, prefix=key, maxResults=1)
            found = [item for item in page.get("items", []) if item.get("name") == key]
            if not found:
                return None
            resource = found[0]
        return self._meta(bucket, resource)

    async def list_prefix(self, path: str, *, max_objects: int) -> list[ObjectMeta]:
        """Live objects under ``path``, listed by several requests at once where the prefix is large
        (:mod:`refstore.storage.listing`)."""
        bucket, key = _split(self.path(path) if "://" in path else path)
        where = self.url(f"{bucket}/{key.rstrip('/') + '/' if key.strip('/') else ''}")

        def too_many(count: int) -> TooManyObjectsError:
            return TooManyObjectsError(
                f"{where}: more than max_objects={max_objects} objects "
                f"(stopped listing at {count}); pass a larger max_objects or a narrower prefix"
            )

        def listing(source: PageSource, prefix: str) -> Awaitable[list[ObjectMeta]]:
            return list_in_parallel(source, prefix, max_objects=max_objects, too_many=too_many)

        return await self.paged(path, listing)

    async def paged(self, path: str, listing: Callable[[PageSource, str], Awaitable[T]]) -> T:
        bucket, key = _split(self.path(path) if "://" in path else path)
        return await listing(_GCSPages(self, bucket), key.rstrip("/") + "/" if key.strip("/") else "")

    # -- reading pinned bytes ---------------------------------------------------------------------------

    async def fetch(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None = None) -> str:
        bucket, key = _split(self.path(pin.url))
        reported = 0  # bytes already announced to ``progress``, across retries

        async def attempt() -> str:
            nonlocal reported
            hasher = _Hasher(pin.digest)
            out = BodyFile(dest)
            async with self._media(bucket, key, pin.version_id) as response:
                if response.status == 404:
                    raise changed(pin, self._gone(pin))
                if response.status >= 400:
                    self._raise_for_status(response, await response.read(), pin.url)
                self._check_generation(pin, response.headers)
                with out:
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        out.write(chunk)
                        hasher.update(chunk)
                        if progress is not None and out.size > reported:
                            progress(out.size - reported)
                            reported = out.size
            check_received(pin, out.size)
            hasher.check(pin, response.headers)
            return out.hexdigest()

        try:
            return str(await self._retrying(attempt))
        except BaseException:
            with contextlib.suppress(OSError):
                Path(dest).unlink()
            raise

    @staticmethod
    def _gone(pin: ObjectMeta) -> str:
        if pin.version_id is None:
            return "the object no longer exists"
        return (
            f"generation {pin.version_id} no longer exists (overwritten or deleted, "
            "and the bucket keeps no noncurrent versions)"
        )

    @staticmethod
    def _check_generation(pin: ObjectMeta, headers: CIMultiDictProxy[str]) -> None:
        served = headers.get("X-Goog-Generation")
        if pin.version_id is not None and served is not None and served != pin.version_id:
            raise changed(pin, f"the server sent generation {served}, the manifest pinned {pin.version_id}")

    def open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        result: IO[bytes] = fsspec.asyn.sync(self.fs.loop, self._open_pinned, pin)
        return result

    async def _open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        """Check the pinned generation is there (one metadata request), then read it by ranges."""
        bucket, key = _split(self.path(pin.url))
        params = {"generation": pin.version_id} if pin.version_id is not None else {}
        try:
            resource = await self._json(bucket, key, **params)
        except FileNotFoundError:
            raise changed(pin, self._gone(pin)) from None
        live = self._meta(bucket, resource)
        if live.size != pin.size:
            raise changed(pin, f"the object has {live.size} bytes, the manifest pinned {pin.size}")
        same_alg = pin.digest and live.digest and pin.digest.split(":")[0] == live.digest.split(":")[0]
        if same_alg and pin.digest != live.digest:
            raise changed(pin, f"the object's checksum is {live.digest}, the manifest pinned {pin.digest}")
        # Unversioned pins read the generation seen now, so a concurrent overwrite cannot mix bytes.
        generation = pin.version_id or live.version_id
        return _PinnedGCSFile(self, pin, bucket, key, generation)

    async def _read_range(
        self, pin: ObjectMeta, bucket: str, key: str, generation: str | None, start: int, end: int
    ) -> bytes:
        async def attempt() -> bytes:
            headers = {"Range": f"bytes={start}-{end - 1}"}
            async with self._media(bucket, key, generation, headers) as response:
                if response.status == 404:
                    raise changed(pin, self._gone(pin))
                body = await response.read()
                if response.status >= 400:
                    self._raise_for_status(response, body, pin.url)
                served = response.headers.get("X-Goog-Generation")
                if generation is not None and served is not None and served != generation:
                    raise changed(pin, f"the server sent generation {served}, expected {generation}")
                if response.status == 200:  # Range ignored: the whole object came back
                    body = body[start:end]
                return body

        result: bytes = await self._retrying(attempt)
        return result

    # -- registry writes --------------------------------------------------------------------------------

    async def put_create_only(self, path: str, data: bytes) -> None:
        try:
            await self.fs._pipe_file(path, data, mode="create")
        except FileExistsError:
            raise FileExistsError(f"{self.url(path)} already exists") from None


class _GCSPages:
    """``objects.list`` pages of one bucket (a :class:`~refstore.storage.listing.PageSource`); GCS starts
    a listing at a key itself (``startOffset``, inclusive)."""

    def __init__(self, backend: GCSBackend, bucket: str) -> None:
        self.backend = backend
        self.bucket = bucket

    async def pages(
        self,
        prefix: str,
        *,
        delimiter: bool = False,
        start_after: str | None = None,
        ahead: Callable[[Page], bool] | None = None,  # (pages are asked for one after the other)
    ) -> AsyncGenerator[Page, None]:
        token: str | None = None
        while True:
            page = await self.backend.fs._call(
                "GET",
                "b/{}/o",
                self.bucket,
                json_out=True,
                prefix=prefix or None,
                delimiter="/" if delimiter else None,
                startOffset=start_after,
                maxResults=LIST_PAGE_SIZE,
                pageToken=token,
            )
            items = page.get("items", [])
            entries = [
                (item["name"], self.backend._meta(self.bucket, item))
                for item in items
                # never trust a server with the boundary; folder markers are not data
                if item["name"].startswith(prefix)
                and not (item["name"].endswith("/") and int(item.get("size", 0)) == 0)
            ]
            token = page.get("nextPageToken")
            last = items[-1]["name"] if items else None
            yield Page(entries, last, bool(token), [str(p) for p in page.get("prefixes", [])])
            if not token:
                return


class _PinnedGCSFile(AbstractBufferedFile):  # type: ignore[misc]
    """Read-only, seekable view of one generation; each cache miss is one ranged GET of it."""

    def __init__(
        self, backend: GCSBackend, pin: ObjectMeta, bucket: str, key: str, generation: str | None
    ) -> None:
        self._backend = backend
        self._pin = pin
        self._bucket = bucket
        self._key = key
        self.generation = generation
        super().__init__(
            backend.fs,
            f"{bucket}/{key}",
            mode="rb",
            block_size=CHUNK_SIZE,
            cache_type="readahead",
            size=pin.size,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        data: bytes = fsspec.asyn.sync(
            self.fs.loop,
            self._backend._read_range,
            self._pin,
            self._bucket,
            self._key,
            self.generation,
            start,
            end,
        )
        return data

    def __repr__(self) -> str:
        return f"<pinned {self._pin.url}#{self.generation}>"
