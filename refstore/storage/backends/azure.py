"""Azure Blob Storage (``az://``, ``abfs://``, ``abfss://``, ``https://<account>.blob.core.windows.net/``).

The filesystem is adlfs; metadata, listings and pinned reads go through the Azure SDK's async clients that
adlfs already holds (``fs.service_client``), because that is where the SDK exposes what refstore needs and
adlfs does not: conditional downloads (``If-Match``), the version id of a blob whatever ``version_aware``
says, and listings that are not served from adlfs's directory cache.

What the Azure SDK gives (checked against Azurite 3.35, azure-storage-blob 12.31, adlfs 2026.8):

* ``BlobProperties`` from ``get_blob_properties()`` and from ``list_blobs()`` carry ``size``, ``etag``
  (quoted from a HEAD, *unquoted* from a listing), ``content_settings.content_md5`` (a ``bytearray``, the
  decoded ``Content-MD5``; present for single-shot uploads, absent for block uploads unless the writer set
  it), ``version_id`` / ``is_current_version`` (``None`` unless the account has blob versioning) and
  ``metadata`` (``hdi_isfolder`` marks a directory of a hierarchical-namespace account; adlfs writes
  ``is_directory``). adlfs's own ``info()`` / ``find(detail=True)`` dicts hold the same under ``"etag"``
  (always re-quoted), ``"content_settings"]["content_md5"]`` and, only with ``version_aware=True``,
  ``"version_id"``.
* ``download_blob()`` sets ``properties.content_md5`` to ``None`` (the SDK drops it on ranged reads), so
  the MD5 of a pinned download is computed from the bytes received.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar, cast

from fsspec import AbstractFileSystem
from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from ...core.exceptions import (
    InvalidURLError,
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
    is_unchecked,
    normalize_etag,
    short_reason,
)

__all__ = ["AzureBackend"]

T = TypeVar("T")
#: Blobs per listing page; ``None`` leaves the service's own default (5,000).
LIST_PAGE_SIZE: int | None = None

#: Environment variables adlfs does not read by itself, mapped to the option they mean. These are the
#: Azure CLI's names (``az storage ... `` reads ``AZURE_STORAGE_ACCOUNT`` / ``AZURE_STORAGE_KEY``).
_EXTRA_ENV = {"account_name": "AZURE_STORAGE_ACCOUNT", "account_key": "AZURE_STORAGE_KEY"}

#: What adlfs reads from the environment when an option is missing. refstore resolves these itself and
#: passes them explicitly, so that fsspec's instance cache (keyed by the constructor arguments) never
#: hands back a filesystem built for a different environment.
_ADLFS_ENV = {
    "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "account_name": "AZURE_STORAGE_ACCOUNT_NAME",
    "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
    "sas_token": "AZURE_STORAGE_SAS_TOKEN",
    "client_id": "AZURE_STORAGE_CLIENT_ID",
    "client_secret": "AZURE_STORAGE_CLIENT_SECRET",
    "tenant_id": "AZURE_STORAGE_TENANT_ID",
}


class AzureBackend(Backend):
    """Azure Blob Storage through adlfs and the Azure SDK."""

    protocols: ClassVar[tuple[str, ...]] = ("az", "abfs", "abfss")
    package: ClassVar[str] = "adlfs"
    pages_listings: ClassVar[bool] = True
    credentials_hint: ClassVar[str | None] = (
        "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY "
        "or AZURE_STORAGE_SAS_TOKEN, or pass storage_options={'account_name': ..., 'account_key': ...}"
    )

    def storage_error(self, exc: BaseException, url: str) -> Exception | None:
        """The Azure SDK's answers by status and error code: 401/403 (``AuthenticationFailed``,
        ``AuthorizationFailure``, ...) refuse the credentials, ``ContainerNotFound`` names the container;
        adlfs's ``ValueError`` when it has no account or credentials at all."""
        if isinstance(exc, RefstoreError):
            return None
        status, code = getattr(exc, "status_code", None), getattr(exc, "error_code", None) or ""
        code = str(getattr(code, "value", code))  # the SDK's StorageErrorCode enum, or a string
        if type(exc).__name__ == "ClientAuthenticationError" or status in (401, 403):
            what = " ".join(part for part in (f"HTTP {status}" if status else "", code) if part)
            return self.access_error(url, f"Azure refused the request ({what or type(exc).__name__})")
        if code == "ContainerNotFound":
            container = self._split(self.path(url))[0]
            return ObjectNotFoundError(f"{self.url(container)}: no such container (HTTP 404, for {url})")
        if isinstance(exc, ValueError) and "credentials" in str(exc):
            return self.access_error(url, "no Azure account or credentials were found")
        if type(exc).__name__ == "ServiceRequestError":  # the SDK's refused connection or unknown host
            return StorageUnavailableError(f"{url}: Azure did not answer ({short_reason(exc)})")
        return super().storage_error(exc, url)

    @classmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        import adlfs

        options = dict(storage_options)
        explicit_account = options.get("account_name")
        for option, var in _ADLFS_ENV.items():
            if options.get(option) is None and os.environ.get(var):
                options[option] = os.environ[var]
        for option, var in _EXTRA_ENV.items():
            if options.get(option) is None and os.environ.get(var):
                options[option] = os.environ[var]
        connection_string = options.get("connection_string")
        if explicit_account and connection_string:
            # adlfs prefers a connection string over account_name: never let the environment's string
            # silently redirect a URL naming one account to another one.
            other = _connection_string_account(str(connection_string))
            if other is not None and other != explicit_account:
                raise InvalidURLError(
                    f"Azure account {explicit_account!r}: the connection string in use (from "
                    f"AZURE_STORAGE_CONNECTION_STRING or storage_options) is for account {other!r}; "
                    f"pass storage_options with credentials for {explicit_account!r}"
                )
        return cast(AbstractFileSystem, adlfs.AzureBlobFileSystem(**options))

    # -- helpers ----------------------------------------------------------------------------------------

    def _split(self, path: str) -> tuple[str, str]:
        container, _, key = path.strip("/").partition("/")
        return container, key

    def _blob_client(self, path: str) -> Any:
        container, key = self._split(path)
        if not container or not key:
            raise InvalidURLError(f"{self.url(path)}: not a blob (expected <container>/<blob name>)")
        return self.fs.service_client.get_blob_client(container, key)

    def _meta(self, path: str, props: Any) -> ObjectMeta:
        etag = normalize_etag(props["etag"]) if props.get("etag") else None
        settings = props.get("content_settings")
        md5 = _md5_hex(settings.get("content_md5")) if settings is not None else None
        if md5 is not None:
            digest: str | None = f"md5:{md5}"
        elif etag is not None:
            digest = f"etag:{etag}"
        else:
            digest = None
        modified = props.get("last_modified")
        return ObjectMeta(
            url=self.url(path),
            size=int(props["size"]),
            digest=digest,
            etag=etag,
            version_id=props.get("version_id") or None,
            last_modified=modified.isoformat() if hasattr(modified, "isoformat") else modified,
        )

    # -- metadata ---------------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectMeta | None:
        from azure.core.exceptions import ResourceNotFoundError

        container, key = self._split(path)
        if not container or not key:
            return None  # a container is not an object
        try:
            props = await self._blob_client(path).get_blob_properties()
        except ResourceNotFoundError:
            return None
        if _is_folder_marker(props):
            return None
        return self._meta(f"{container}/{key}", props)

    async def list_prefix(self, path: str, *, max_objects: int) -> list[ObjectMeta]:
        """Blobs under ``path``, listed by several requests at once where the prefix is large
        (:mod:`refstore.storage.listing`). One List Blobs request per page of up to 5000 blobs; the
        properties come with the listing, so there is no request per blob."""

        def too_many(count: int) -> TooManyObjectsError:
            # A listing stops at the end of the page that crossed the limit: the count is a lower bound.
            return TooManyObjectsError(
                f"{self.url(path)}: at least {count} objects under this prefix, more than "
                f"max_objects={max_objects}; raise max_objects or reference a narrower prefix"
            )

        def listing(source: PageSource, prefix: str) -> Awaitable[list[ObjectMeta]]:
            return list_in_parallel(source, prefix, max_objects=max_objects, too_many=too_many)

        return await self.paged(path, listing)

    async def paged(self, path: str, listing: Callable[[PageSource, str], Awaitable[T]]) -> T:
        from azure.core.exceptions import ResourceNotFoundError

        container, key = self._split(path)
        if not container:
            raise InvalidURLError(
                f"{self.url(path)}: name a container to list (listing an account is not supported)"
            )
        try:
            return await listing(_AzurePages(self, container), key.rstrip("/") + "/" if key else "")
        except ResourceNotFoundError:
            raise ObjectNotFoundError(f"{self.url(path)}: no such container {container!r}") from None

    # -- reading pinned bytes ---------------------------------------------------------------------------

    def _pin_conditions(self, pin: ObjectMeta) -> dict[str, Any]:
        """Request options that read exactly ``pin``.

        With a version id, that version is requested and *no* ETag condition is sent: whether Azure
        evaluates ``If-Match`` on a version read against the version or against the base blob is not
        something Azurite can show (it has no versioning), and the base blob's ETag changes exactly when
        pinning matters. Instead :func:`_check_response` accepts the response only if the server echoes the
        pinned version id back, and otherwise requires the pinned ETag. Azurite ignores version ids and
        echoes none, so there an overwritten blob is still caught by its ETag, never served silently.
        Without a version id the read is ETag-conditional (``If-Match``), a 412 when the blob changed.
        """
        from azure.core import MatchConditions

        if pin.version_id:
            return {"version_id": pin.version_id}
        if pin.etag:
            return {"etag": f'"{pin.etag}"', "match_condition": MatchConditions.IfNotModified}
        return {}

    async def _download(self, pin: ObjectMeta, offset: int | None = None, length: int | None = None) -> Any:
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

        client = self._blob_client(self.path(pin.url))
        try:
            downloader = await client.download_blob(
                offset=offset, length=length, max_concurrency=1, **self._pin_conditions(pin)
            )
        except ResourceModifiedError:
            raise changed(pin, "the blob was modified since it was pinned (ETag no longer matches)") from None
        except ResourceNotFoundError:
            what = f"version {pin.version_id}" if pin.version_id else "the blob"
            raise changed(pin, f"{what} no longer exists") from None
        except HttpResponseError as exc:
            if exc.status_code in (404, 409, 412, 416):  # 416: a range past the end of a shorter blob
                raise changed(pin, f"the pinned blob cannot be read (HTTP {exc.status_code})") from None
            raise
        _check_response(pin, downloader.properties)
        return downloader

    async def fetch(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None = None) -> str:
        # One Get Blob request for blobs up to the SDK's max_single_get_size (32 MiB); larger ones continue
        # with ranged requests that the SDK itself pins to the first response's ETag. An empty blob costs
        # two with the SDK (its ranged first request gets a 416 and it retries without a range), so an
        # empty pin is checked with one conditional HEAD instead.
        checked = not is_unchecked(pin)
        if checked and pin.size == 0:
            await self._check_at_open(pin)
            with BodyFile(dest) as empty:
                return empty.hexdigest()
        downloader = await self._download(pin)
        if checked and downloader.size != pin.size:
            raise changed(pin, f"expected {pin.size} bytes, the blob has {downloader.size}")
        md5 = hashlib.md5() if checked and (pin.digest or "").startswith("md5:") else None
        out = BodyFile(dest)
        try:
            with out:
                async for chunk in downloader.chunks():
                    out.write(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
            if out.size != downloader.size or (checked and out.size != pin.size):
                raise changed(pin, f"expected {pin.size} bytes, received {out.size}")
            if md5 is not None and pin.digest != f"md5:{md5.hexdigest()}":
                raise changed(pin, f"content MD5 is {md5.hexdigest()}, the manifest pinned {pin.digest}")
            return out.hexdigest()
        except BaseException:
            with contextlib.suppress(OSError):
                dest.unlink()
            raise

    def open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        current = sync(self.fs.loop, self._check_at_open, pin)
        return cast(IO[bytes], _PinnedBlobFile(self, current))

    async def _check_at_open(self, pin: ObjectMeta) -> ObjectMeta:
        """One HEAD (conditional like the reads); returns the pin every range read is checked against."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        path = self.path(pin.url)
        try:
            props = await self._blob_client(path).get_blob_properties(**self._pin_conditions(pin))
        except ResourceModifiedError:
            raise changed(pin, "the blob was modified since it was pinned (ETag no longer matches)") from None
        except ResourceNotFoundError:
            raise changed(pin, "the pinned blob no longer exists") from None
        if is_unchecked(pin):
            # A location-only pin reads whatever is there now, but the same bytes throughout the read.
            return replace(self._meta(path, props), digest=None, version_id=None)
        _check_response(pin, props)
        if int(props["size"]) != pin.size:
            raise changed(pin, f"expected {pin.size} bytes, the blob has {props['size']}")
        return pin

    async def _read_range(self, pin: ObjectMeta, start: int, end: int) -> bytes:
        downloader = await self._download(pin, offset=start, length=end - start)
        total = _total_size(downloader.properties)
        if total is not None and total != pin.size:
            raise changed(pin, f"expected {pin.size} bytes, the blob has {total}")
        data = await downloader.readall()
        if len(data) != end - start:
            raise changed(pin, f"a range read of {end - start} bytes returned {len(data)}")
        return cast(bytes, data)

    # -- registry writes --------------------------------------------------------------------------------

    async def put_create_only(self, path: str, data: bytes) -> None:
        # upload_blob(overwrite=False) sends If-None-Match: * (also on the block-list commit of a large
        # upload); Azure and Azurite answer 409 BlobAlreadyExists.
        from azure.core.exceptions import ResourceExistsError

        try:
            await self._blob_client(path).upload_blob(data, overwrite=False)
        except ResourceExistsError:
            raise FileExistsError(f"{self.url(path)}: already exists") from None
        self.fs.invalidate_cache(self.fs._parent(path))

    async def put_atomic(self, path: str, data: bytes) -> None:
        # A Put Blob (or, past 64 MiB, a block-list commit) replaces the blob atomically.
        await self._blob_client(path).upload_blob(data, overwrite=True)
        self.fs.invalidate_cache(self.fs._parent(path))


class _AzurePages:
    """List Blobs pages of one container (a :class:`~refstore.storage.listing.PageSource`). A listing
    cannot start at a key here (``start_after`` is not used: the keys before it come too)."""

    def __init__(self, backend: AzureBackend, container: str) -> None:
        self.backend = backend
        self.container = container

    async def pages(
        self,
        prefix: str,
        *,
        delimiter: bool = False,
        start_after: str | None = None,
        ahead: Callable[[Page], bool] | None = None,  # (pages are asked for one after the other)
    ) -> AsyncGenerator[Page, None]:
        from azure.storage.blob.aio import BlobPrefix

        client = self.backend.fs.service_client.get_container_client(self.container)
        options: dict[str, Any] = {"name_starts_with": prefix or None, "include": ["metadata"]}
        if LIST_PAGE_SIZE is not None:
            options["results_per_page"] = LIST_PAGE_SIZE
        listed = client.walk_blobs(delimiter="/", **options) if delimiter else client.list_blobs(**options)
        pager = listed.by_page()
        async for page in pager:
            entries: list[tuple[str, ObjectMeta]] = []
            prefixes: list[str] = []
            last = None
            async for item in page:
                name = item.name
                if isinstance(item, BlobPrefix):
                    prefixes.append(name)
                    continue
                last = name
                if not _is_folder_marker(item):
                    entries.append((name, self.backend._meta(f"{self.container}/{name}", item)))
            yield Page(entries, last, pager.continuation_token is not None, prefixes)


class _PinnedBlobFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only, seekable, buffered file whose every range read is pinned (see ``_pin_conditions``)."""

    def __init__(self, backend: AzureBackend, pin: ObjectMeta) -> None:
        self._backend = backend
        self._pin = pin
        super().__init__(
            backend.fs,
            backend.path(pin.url),
            mode="rb",
            block_size=CHUNK_SIZE,
            cache_type="readahead",
            size=pin.size,
        )
        self.details = {"name": self.path, "size": pin.size, "type": "file"}

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self._pin.size)
        if start >= end:
            return b""
        return cast(bytes, sync(self.fs.loop, self._backend._read_range, self._pin, start, end))


def _check_response(pin: ObjectMeta, props: Any) -> None:
    """Raise :class:`ObjectChangedError` unless ``props`` (of a HEAD or a GET) is the pinned blob."""
    served_version = props.get("version_id")
    if pin.version_id and served_version == pin.version_id:
        return  # the server confirms it served the pinned version: immutable
    etag = props.get("etag")
    if pin.etag is not None and (etag is None or normalize_etag(etag) != pin.etag):
        now = normalize_etag(etag) if etag else "missing"
        raise changed(pin, f"ETag is {now}, the manifest pinned {pin.etag}")


def _total_size(props: Any) -> int | None:
    match = re.search(r"/(\d+)$", props.get("content_range") or "")
    return int(match.group(1)) if match else None


def _is_folder_marker(props: Any) -> bool:
    """A directory placeholder rather than data: a name ending in ``/`` or directory metadata."""
    name = props.get("name") or ""
    if name.endswith("/"):
        return True
    metadata = props.get("metadata") or {}
    lowered = {str(k).lower(): str(v).lower() for k, v in metadata.items()}
    return lowered.get("hdi_isfolder") == "true" or lowered.get("is_directory") == "true"


def _md5_hex(value: Any) -> str | None:
    """Azure's Content-MD5 as lowercase hex: the SDK gives decoded bytes, a REST caller base64."""
    if not value:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return raw.hex() if len(raw) == 16 else None
    text = str(value).strip()
    if re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return text.lower()
    try:
        hexed = b64_to_hex(text)
    except ValueError:
        return None
    return hexed if len(hexed) == 32 else None


def _connection_string_account(connection_string: str) -> str | None:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "accountname" and value.strip():
            return value.strip()
    return None
