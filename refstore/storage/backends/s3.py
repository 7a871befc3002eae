"""Amazon S3 and S3-compatible servers (MinIO, ...), through s3fs.

Metadata comes from listings only (ListObjectVersions, or ListObjectsV2 where versions are not listable),
never a HEAD per object. Pinned reads are a single GetObject with ``VersionId``, or with ``IfMatch`` on the
recorded ETag where the object has no version.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import errno
import functools
import gzip
import hashlib
import io
import json
import operator
import os
import re
import types
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from fsspec import AbstractFileSystem
from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from ...core.exceptions import (
    IntegrityError,
    InvalidURLError,
    ManifestError,
    ObjectChangedError,
    ObjectNotFoundError,
    RefstoreError,
    StorageAccessError,
    StorageUnavailableError,
    TooManyObjectsError,
)
from ...core.loop import gather_limited
from ...core.meta import KeyVersion, ObjectMeta
from ..listing import Page, PageSource, list_in_parallel
from ._base import (
    CHUNK_SIZE,
    FETCH_ATTEMPTS,
    Backend,
    BodyFile,
    BrokenTransfer,
    DamagedTransfer,
    ProgressHook,
    _maybe_async,
    changed,
    check_received,
    fetch_with_retries,
    is_unchecked,
    normalize_etag,
    short_reason,
)
from ._parts import RANGE_CHUNK, PartsFile

if TYPE_CHECKING:
    from .s3_obstore import ObstorePlane

T = TypeVar("T")
#: Not chosen yet (see ``S3Backend.data_plane``).
_UNSET = object()
#: Endpoint variables in the order they win; s3fs/botocore read the last two but not the first.
ENDPOINT_VARIABLES = ("AWS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_MD5_ETAG_LENGTH = 32
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-([0-9]+)")
#: Objects at least this large are fetched with ranged GETs in parallel (boto3's download_file starts at
#: 8 MiB; below 64 MiB one stream is as fast here and costs one request).
RANGED_THRESHOLD = 64 * 2**20
#: Keys per listing page (MaxKeys); ``None`` leaves the server's own default (1,000 on S3).
LIST_PAGE_SIZE: int | None = None
#: The size of those ranges when they cannot follow the object's own upload parts.
RANGE_SIZE = 8 * 2**20
#: Ranged GETs in flight per object.
RANGE_CONCURRENCY = 8
#: A multipart object's ranges follow its upload parts up to this part size (larger parts are fetched in
#: ranges of :data:`RANGE_SIZE` and their MD5s computed in order).
MAX_PART_RANGE = 64 * 2**20
#: Upload part sizes tried first, in this order, when a multipart ETag leaves several possible (boto3 and
#: the AWS CLI: 8 MiB; S3's minimum 5 MiB; s3fs and s5cmd: 50 MiB; ...).
_COMMON_PART_SIZES = tuple(n * 2**20 for n in (8, 5, 16, 10, 15, 50, 32, 64, 25, 100, 128, 256, 512))
#: Bounded waits and retries: botocore's "standard" mode retries resets, timeouts and 5xx answers with
#: backoff. Each key can be overridden with ``storage_options={"config_kwargs": {...}}``.
DEFAULT_CONFIG: Mapping[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 20,
    "retries": {"mode": "standard", "total_max_attempts": 4},
}
#: s3fs retries a whole call again on top of botocore's retries: once more is enough.
S3FS_RETRIES = 2


@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """What a broken connection, a timeout or a cut-off body raises from s3fs / aiobotocore / aiohttp (and
    obstore's answers, as :mod:`.s3_obstore` raises them). Imported when first needed: a download on
    obstore never loads botocore (0.45 s of CPU)."""
    import aiohttp
    import botocore.exceptions
    import botocore.parsers

    return (
        aiohttp.ClientError,
        TimeoutError,
        ConnectionError,
        botocore.exceptions.HTTPClientError,
        botocore.exceptions.ConnectionError,
        botocore.exceptions.IncompleteReadError,
        botocore.parsers.ResponseParserError,
    )


_SERVER_ERRNOS = (errno.EIO, errno.EBUSY, errno.ETIMEDOUT, getattr(errno, "EREMOTEIO", errno.EIO))
#: Error codes that mean "these credentials may not do this", whatever the HTTP status says.
_REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)


@functools.cache
def _no_credentials() -> tuple[type[BaseException], ...]:
    """What botocore raises, before sending anything, when the credential chain found nothing usable."""
    import botocore.exceptions

    return (
        botocore.exceptions.NoCredentialsError,
        botocore.exceptions.PartialCredentialsError,
        botocore.exceptions.CredentialRetrievalError,
        botocore.exceptions.NoAuthTokenError,
    )


class S3Backend(Backend):
    """S3 through s3fs; the version id is S3's ``VersionId`` (absent in unversioned buckets)."""

    protocols: ClassVar[tuple[str, ...]] = ("s3", "s3a")
    package: ClassVar[str] = "s3fs"
    pages_listings: ClassVar[bool] = True
    credentials_hint: ClassVar[str | None] = (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass "
        "storage_options={'key': ..., 'secret': ...}"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plane: object = _UNSET

    def url(self, path: str) -> str:
        return f"s3://{path}"

    @classmethod
    def filesystem(cls, protocol: str, storage_options: Mapping[str, Any]) -> AbstractFileSystem:
        import s3fs

        fs = s3fs.S3FileSystem(**fs_options(storage_options))
        fs.retries = S3FS_RETRIES
        return fs

    def is_unavailable(self, exc: BaseException) -> bool:
        return _is_unavailable(exc)

    def storage_error(self, exc: BaseException, url: str) -> Exception | None:
        """S3 answers told by their HTTP status and error code (the botocore response behind s3fs's
        exception), never by their message, which some servers leave empty (Ceph RGW)."""
        if isinstance(exc, (ObjectChangedError, StorageAccessError, StorageUnavailableError)):
            return None
        if isinstance(exc, _no_credentials()):
            return self.access_error(url, f"no AWS credentials were found ({type(exc).__name__})")
        answer = _answer(exc)
        if answer is not None:
            status, code, _ = answer
            if status == 403 or code in _REFUSED_CODES:
                return self.access_error(url, f"S3 refused the request ({_describe(answer)})")
            if code == "NoSuchBucket":
                bucket = _split(self.path(url))[0]
                status_code = _describe((status, code, ""))
                return ObjectNotFoundError(f"s3://{bucket}: no such bucket ({status_code}, for {url})")
        if _is_unavailable(exc):
            return StorageUnavailableError(f"{url}: S3 did not answer after retries ({_reason(exc)})")
        if answer is not None and isinstance(exc, OSError) and _unnamed(exc, url):
            # the same kind of error, saying where and what the server answered (Ceph RGW sends empty
            # messages, which s3fs would print as "None")
            message = f"{url}: S3 answered {_describe(answer)}"
            return type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
        return None

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        """One S3 call, retried by botocore and s3fs; what still fails is told by :meth:`storage_error`:
        a network or server failure that outlasts the retries is :class:`~refstore.StorageUnavailableError`
        naming ``url``, refused credentials :class:`~refstore.StorageAccessError`."""
        try:
            plane = self.data_plane
            if plane is not None and plane.serves(method, kwargs):
                return await plane.call(method, **kwargs)
            return await self.fs._call_s3(method, **kwargs)
        except Exception as exc:
            self.reraise(exc, url)

    @property
    def data_plane(self) -> ObstorePlane | None:
        """obstore for the GETs, HEADs and PUTs it can make (``None``: s3fs makes every request), chosen
        once per backend by :func:`~refstore.storage.backends.s3_obstore.plane_for`."""
        if self._plane is _UNSET:
            from .s3_obstore import plane_for

            # the options the filesystem is (or would be) made with: obstore serving alone never builds
            # the s3fs filesystem, nor imports botocore
            made = self._fs or types.SimpleNamespace(storage_options=fs_options(self.options))
            self._plane = plane_for(made)
        return cast("ObstorePlane | None", self._plane)

    async def put_create_only(self, path: str, data: bytes) -> str | None:
        """``If-None-Match: *``; a refusal is :class:`FileExistsError` by its status (412) or code
        (``PreconditionFailed``), also from servers whose 412 names no condition (Ceph RGW). Returns the
        ``VersionId`` written (``None`` in a bucket that keeps no versions)."""
        try:
            bucket, key = _split(path)
            kwargs = {"Bucket": bucket, "Key": key, "Body": data, "IfNoneMatch": "*"}
            plane = self.data_plane
            if plane is not None and plane.serves("put_object", kwargs):
                try:
                    answer = await plane.call("put_object", **kwargs)
                except ConnectionError:  # no answer: it may have landed. obstore never sends a create-only
                    # PUT twice; botocore does, and so does this, once: a refusal then may be this write's
                    # own (the registry compares the bytes: Registry._written_by_us)
                    answer = await plane.call("put_object", **kwargs)
                self.fs.invalidate_cache(path)
            else:
                answer = await _maybe_async(self.fs, "pipe_file", path, data, mode="create")
            return _version(answer.get("VersionId")) if isinstance(answer, Mapping) else None
        except OSError as exc:
            refusal = _answer(exc)
            if isinstance(exc, FileExistsError) or (
                refusal is not None and (refusal[0] == 412 or refusal[1] == "PreconditionFailed")
            ):
                raise FileExistsError(f"{self.url(path)} already exists") from exc
            raise

    # -- metadata ---------------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectMeta | None:
        bucket, key = _split(path)
        if not key:
            return None
        try:
            head = await self._call("head_object", self.url(path), Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        if key.endswith("/") and head["ContentLength"] == 0:
            return None
        etag = normalize_etag(head["ETag"])
        return ObjectMeta(
            url=self.url(path),
            size=int(head["ContentLength"]),
            digest=f"etag:{etag}",
            etag=etag,
            version_id=_version(head.get("VersionId")),
            last_modified=head["LastModified"].isoformat() if head.get("LastModified") else None,
        )

    async def list_prefix(self, path: str, *, max_objects: int) -> list[ObjectMeta]:
        """Current objects under ``path``, listed by several requests at once where the prefix is large
        (:mod:`refstore.storage.listing`): ListObjectVersions, or ListObjectsV2 where that is refused or
        the bucket has never kept versions."""

        def too_many(count: int) -> TooManyObjectsError:
            return TooManyObjectsError(
                f"{self.url(path)}: more than max_objects={max_objects} objects "
                f"({count} listed so far); raise max_objects or reference a narrower prefix"
            )

        def listing(source: PageSource, prefix: str) -> Awaitable[list[ObjectMeta]]:
            return list_in_parallel(source, prefix, max_objects=max_objects, too_many=too_many)

        return await self.paged(path, listing)

    async def paged(self, path: str, listing: Callable[[PageSource, str], Awaitable[T]]) -> T:
        bucket, key = _split(path)
        source = _S3Pages(self, bucket)
        found = await listing(source, f"{key}/" if key else "")
        if source.mode == "versions" and source.items == 0:
            # Some S3-compatible servers answer ?versions with a plain listing that has no "Versions":
            # an empty answer is double-checked with ListObjectsV2 rather than trusted.
            found = await listing(_S3Pages(self, bucket, "v2"), f"{key}/" if key else "")
        return found

    def _meta(self, bucket: str, item: Mapping[str, Any]) -> ObjectMeta:
        etag = normalize_etag(item["ETag"])
        modified = item.get("LastModified")
        return ObjectMeta(
            url=f"s3://{bucket}/{item['Key']}",
            size=int(item["Size"]),
            digest=f"etag:{etag}",
            etag=etag,
            version_id=_version(item.get("VersionId")),
            last_modified=modified if modified is None or isinstance(modified, str) else modified.isoformat(),
        )

    async def inventory_listing(self, path: str, inventory: str, *, max_objects: int) -> list[ObjectMeta]:
        """The objects under ``path`` from the S3 Inventory report whose ``manifest.json`` is at the S3 path
        ``inventory``, read instead of listing (see :func:`_read_inventory`)."""
        return await _read_inventory(self, path, inventory, max_objects=max_objects)

    # -- pinned reads -----------------------------------------------------------------------------------

    async def fetch(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None = None) -> str:
        """One GET of the pinned version, or from :data:`RANGED_THRESHOLD` bytes on, ranged GETs in
        parallel; a body that breaks off or arrives damaged is fetched again."""
        if pin.size >= RANGED_THRESHOLD:
            unmatched: set[str] = set()
            fetch_ranged = functools.partial(self._fetch_ranged, pin, dest, unmatched=unmatched)
            return await fetch_with_retries(fetch_ranged, pin, progress)
        return await fetch_with_retries(lambda hook: self._fetch_once(pin, dest, hook), pin, progress)

    async def _fetch_ranged(
        self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None, *, unmatched: set[str]
    ) -> str:
        """:data:`RANGE_CONCURRENCY` ranged GETs at a time, each pinned like a whole GET (``VersionId``, else
        ``If-Match``), written at their offsets and hashed as they arrive, off the event loop
        (:class:`~refstore.storage.backends._parts.PartsFile`). A multipart object's ranges follow its
        upload parts at their likely size (:func:`_likely_part_size`), so that its ETag (the MD5 of the
        parts' MD5s) is checked too, as a single PUT's MD5 ETag is; when the parts hash to another ETag,
        a HEAD of part 1 tells their real size where the server says it (the bytes are hashed again at
        that size, not fetched again). Where it does not (Ceph RGW), the object is fetched again: bytes
        that differ from the first ones were damaged on the way; the same bytes twice are taken as parts of
        an unusual size, checked by size and ETag header only (``unmatched``: the xxh3_128 of earlier
        attempts' bytes)."""
        part_size = _likely_part_size(pin)
        md5 = "parts" if part_size is not None else ("whole" if _is_md5(pin.etag) else None)
        range_size = part_size if part_size is not None and part_size <= MAX_PART_RANGE else RANGE_SIZE
        with PartsFile(dest, pin.size, range_size, md5, part_size) as out:

            async def fetch_part(index: int) -> None:
                sink = out.range(index)
                start, end = sink.start, sink.end
                response = await self._get_pinned(pin, Range=f"bytes={start}-{end - 1}")
                total = str(response.get("ContentRange", "")).rpartition("/")[2]
                if total != str(pin.size):
                    response["Body"].close()
                    raise DamagedTransfer(f"a range answered for {total or 'no'} total bytes, not {pin.size}")
                received, body = start, response["Body"]
                try:
                    while chunk := await body.read(RANGE_CHUNK):
                        await sink.write(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                except _network_errors() as exc:
                    raise BrokenTransfer(f"bytes {start}-{end - 1} broke off ({_reason(exc)})") from exc
                finally:
                    body.close()
                if received < end:
                    raise BrokenTransfer(f"bytes {start}-{end - 1} broke off after {received - start} bytes")
                if received > end:
                    raise DamagedTransfer(f"bytes {start}-{end - 1}: {received - start} bytes arrived")
                etag = normalize_etag(response.get("ETag") or "") or None
                if etag is not None and pin.etag is not None and etag != pin.etag and not is_unchecked(pin):
                    raise DamagedTransfer(f"a range came with ETag {etag}, not {pin.etag}")
                await sink.done()

            await gather_limited([fetch_part(i) for i in range(out.ranges)], RANGE_CONCURRENCY)
            content, md5s = await out.digests()
            if md5 == "parts" and _composite_md5(md5s) != pin.etag:
                real = await self._upload_part_size(pin)
                if real is not None and real != part_size:  # another part size than the likely one
                    md5s = await asyncio.to_thread(out.md5_of_parts, real)
                if real is not None and _composite_md5(md5s) != pin.etag:
                    raise DamagedTransfer("the parts received do not hash to the pinned multipart ETag")
                if real is None and content not in unmatched:
                    unmatched.add(content)
                    raise DamagedTransfer(
                        "the parts received do not hash to the pinned multipart ETag at their likely size, "
                        "and the server does not say their size"
                    )
        if md5 == "whole" and md5s[0] != pin.etag:
            raise DamagedTransfer(f"the bytes received hash to md5 {md5s[0]}, not the pinned ETag")
        return content

    async def _upload_part_size(self, pin: ObjectMeta) -> int | None:
        """The size of a multipart object's parts when they are uniform (``None`` otherwise, or when the
        server does not say): a HEAD of part 1 gives its length and the number of parts."""
        match = _MULTIPART_ETAG.fullmatch(pin.etag or "")
        if match is None:
            return None
        bucket, key = _split(self.path(pin.url))
        # No If-Match here (moto compares it with the part's ETag): a changed object fails the pinned GETs.
        version = {"VersionId": pin.version_id} if pin.version_id is not None else {}
        try:
            head = await self._call("head_object", pin.url, Bucket=bucket, Key=key, PartNumber=1, **version)
        except (FileNotFoundError, PermissionError, OSError):
            return None  # the GETs say what is wrong, if anything
        size, count = int(head.get("ContentLength") or 0), int(match[1])
        if head.get("PartsCount") != count or size <= 0 or -(-pin.size // size) != count:
            return None
        return size

    async def _fetch_once(self, pin: ObjectMeta, dest: Path, progress: ProgressHook | None) -> str:
        response = await self._get_pinned(pin)
        md5 = hashlib.md5() if _is_md5(pin.etag) else None
        body = response["Body"]
        out = BodyFile(dest)
        try:
            with out:
                while chunk := await body.read(CHUNK_SIZE):
                    out.write(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except _network_errors() as exc:
            raise BrokenTransfer(f"the body broke off after {out.size} bytes ({_reason(exc)})") from exc
        except _flexible_checksum_error() as exc:  # S3's own checksum of the response
            raise DamagedTransfer(f"the bytes received fail their checksum ({_reason(exc)})") from exc
        finally:
            body.close()
        try:
            check_received(pin, out.size, response.get("ETag"))
        except ObjectChangedError as exc:
            raise DamagedTransfer(str(exc).removeprefix(f"{pin.url}: ")) from None
        if md5 is not None and md5.hexdigest() != pin.etag:
            raise DamagedTransfer(f"the bytes received hash to md5 {md5.hexdigest()}, not the pinned ETag")
        return out.hexdigest()

    async def _get_pinned(self, pin: ObjectMeta, **extra: Any) -> Any:
        bucket, key = _split(self.path(pin.url))
        try:
            return await self._call("get_object", pin.url, Bucket=bucket, Key=key, **_pinned(pin), **extra)
        except (StorageAccessError, StorageUnavailableError):
            raise
        except (FileNotFoundError, PermissionError) as exc:
            raise changed(pin, _why_gone(pin)) from exc
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EPERM):  # PreconditionFailed, a delete-marker version
                raise changed(pin, _why_gone(pin)) from exc
            raise

    def open_pinned(self, pin: ObjectMeta) -> IO[bytes]:
        """A HEAD of the pinned version, then range reads pinned to it (``VersionId``, else ``If-Match`` on
        the pinned ETag, or on the one seen at open for a pin without one: a registry copy, named by its
        content hash and checked by size). A pinned object gone or changed is :class:`ObjectChangedError`.
        The requests name bucket and key themselves: s3fs's own files would read a key such as
        ``a?versionId=x`` as the key ``a`` at version ``x``."""
        head = sync(self.fs.loop, self._head_pinned, pin)
        etag = normalize_etag(head.get("ETag") or "") or None
        if head.get("ContentLength") != pin.size or (etag is not None and pin.etag not in (None, etag)):
            raise changed(pin, _why_gone(pin))
        reads = pin if pin.version_id is not None or pin.etag is not None else replace(pin, etag=etag)
        return cast(IO[bytes], _PinnedS3File(self, reads))

    async def _head_pinned(self, pin: ObjectMeta) -> Mapping[str, Any]:
        bucket, key = _split(self.path(pin.url))
        version = {"VersionId": pin.version_id} if pin.version_id is not None else {}
        try:
            head: Mapping[str, Any] = await self._call(
                "head_object", pin.url, Bucket=bucket, Key=key, **version
            )
        except (StorageAccessError, StorageUnavailableError):
            raise  # refused credentials or no answer, not a changed object
        except OSError as exc:  # missing, a delete marker (405), a version id the server does not know
            raise changed(pin, _why_gone(pin)) from exc
        return head

    async def _read_range(self, pin: ObjectMeta, start: int, end: int) -> bytes:
        """``[start, end)`` of the pinned object; a body that breaks off is asked for again."""
        bucket, key = _split(self.path(pin.url))
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                response = await self._call(
                    "get_object",
                    pin.url,
                    Bucket=bucket,
                    Key=key,
                    Range=f"bytes={start}-{end - 1}",
                    **_pinned(pin),
                )
            except (StorageAccessError, StorageUnavailableError):
                raise
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno in (errno.EINVAL, errno.EPERM):
                    raise changed(pin, _why_gone(pin)) from exc  # gone, or 412: If-Match failed
                raise
            body = response["Body"]
            try:
                data: bytes = await body.read()
            except _network_errors() as exc:
                if attempt == FETCH_ATTEMPTS:
                    raise StorageUnavailableError(
                        f"{pin.url}: a range read broke off {FETCH_ATTEMPTS} times ({_reason(exc)})"
                    ) from exc
                continue
            finally:
                body.close()
            if len(data) != end - start:
                raise changed(pin, f"a range read of {end - start} bytes returned {len(data)}")
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    # -- create-only writes on servers that ignore them (refstore.storage.claims) -----------------------

    probe_create_only: ClassVar[bool] = True

    async def put_version(self, path: str, data: bytes) -> str | None:
        bucket, key = _split(path)
        answer = await self._call("put_object", self.url(path), Bucket=bucket, Key=key, Body=data)
        self.fs.invalidate_cache(path)
        return _version(answer.get("VersionId"))

    async def key_versions(self, path: str) -> list[KeyVersion]:
        """ListObjectVersions of the key alone; S3 lists each key's versions newest first."""
        bucket, key = _split(path)
        versions: list[dict[str, Any]] = []
        markers: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        while True:
            page = await self._call("list_object_versions", self.url(path), **kwargs)
            versions += [v for v in page.get("Versions", ()) if v.get("Key") == key]
            markers += [m for m in page.get("DeleteMarkers", ()) if m.get("Key") == key]
            if not page.get("IsTruncated") or page.get("NextKeyMarker", key) != key:
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker", "")
        # The listing's own order ranks versions; botocore parses delete markers into a list of their own,
        # so they are put back among the versions by time (a marker is newer than a version of its time).
        found: list[KeyVersion] = []
        for version in versions:
            while markers and markers[0]["LastModified"] >= version["LastModified"]:
                found.append(KeyVersion(str(markers.pop(0)["VersionId"]), deleted=True))
            found.append(KeyVersion(str(version["VersionId"])))
        found += [KeyVersion(str(m["VersionId"]), deleted=True) for m in markers]
        return found[::-1]

    async def read_version(self, path: str, version_id: str) -> bytes:
        return await self._read(path, VersionId=version_id)

    async def _read(self, path: str, **options: Any) -> bytes:
        """The whole body of one GetObject of ``path``."""
        bucket, key = _split(path)
        answer = await self._call("get_object", self.url(path), Bucket=bucket, Key=key, **options)
        body = answer["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    async def delete_version(self, path: str, version_id: str) -> None:
        bucket, key = _split(path)
        await self._call("delete_object", self.url(path), Bucket=bucket, Key=key, VersionId=version_id)
        self.fs.invalidate_cache(path)


# -- S3 Inventory ---------------------------------------------------------------------------------------

#: The inventory fields read, by their CSV name (``fileSchema``) and their Parquet/ORC column name.
_INVENTORY_FIELDS = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "ETag": "e_tag",
    "LastModifiedDate": "last_modified_date",
}


async def _read_inventory(
    backend: S3Backend, path: str, manifest: str, *, max_objects: int
) -> list[ObjectMeta]:
    """The current objects under the folder ``path``, and the one object it names if any, as the
    S3 Inventory report whose ``manifest.json`` is at ``manifest`` lists them: its rows of the latest
    versions that are not delete markers (every row, in a report of current versions only). The manifest
    is checked against ``manifest.checksum`` beside it when there is one, each data file against its
    MD5 in the manifest; keys in CSV reports are URL-encoded (a space as ``+``)."""
    bucket, key = _split(path)
    where = backend.url(manifest)
    raw = await _read_bytes(backend, manifest)
    checksum = await _read_if_there(backend, manifest.rpartition("/")[0] + "/manifest.checksum")
    if checksum is not None and checksum.decode(errors="replace").strip() != hashlib.md5(raw).hexdigest():
        raise IntegrityError(f"{where}: does not match its manifest.checksum (changed or cut short)")
    try:
        report = json.loads(raw)
        source, file_format = report["sourceBucket"], str(report["fileFormat"]).lower()
        destination = str(report["destinationBucket"]).rpartition(":")[2]
        files = [(str(f["key"]), f.get("MD5checksum")) for f in report["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{where}: not an S3 Inventory manifest.json ({short_reason(exc)})") from exc
    if source != bucket:
        raise InvalidURLError(f"{where}: an inventory of bucket {source!r}, not of s3://{bucket}")
    schema = [n.strip() for n in str(report.get("fileSchema", "")).split(",")] if file_format == "csv" else []
    prefix = f"{key}/" if key else ""
    chosen: dict[str, tuple[Any, ObjectMeta]] = {}
    for name, md5 in files:
        data = await _read_bytes(backend, f"{destination}/{name}")
        if md5 and hashlib.md5(data).hexdigest() != md5:
            raise IntegrityError(f"s3://{destination}/{name}: does not match its MD5 in {where}")
        for row in _inventory_rows(data, file_format, schema, f"s3://{destination}/{name}"):
            record = _inventory_record(bucket, row, prefix, key, where)
            if record is None:
                continue
            known = chosen.get(record[1].url)
            if known is None or (record[0] or "") > (known[0] or ""):  # the later of two current rows
                chosen[record[1].url] = record
                if len(chosen) > max_objects:
                    raise TooManyObjectsError(
                        f"{backend.url(path)}: more than max_objects={max_objects} objects in the inventory "
                        f"{where}; raise max_objects or reference a narrower prefix"
                    )
    return sorted((meta for _, meta in chosen.values()), key=operator.attrgetter("url"))


async def _read_bytes(backend: S3Backend, path: str) -> bytes:
    found = await _read_if_there(backend, path)
    if found is None:
        raise ObjectNotFoundError(f"{backend.url(path)}: no such inventory file")
    return found


async def _read_if_there(backend: S3Backend, path: str) -> bytes | None:
    try:
        return await backend._read(path)
    except FileNotFoundError:
        return None


def _inventory_rows(data: bytes, file_format: str, schema: list[str], where: str) -> Iterator[dict[str, Any]]:
    """The rows of one inventory data file, by their CSV field names."""
    if file_format == "csv":
        try:
            text = gzip.decompress(data).decode("utf-8") if data[:2] == b"\x1f\x8b" else data.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: not a gzip CSV inventory file ({short_reason(exc)})") from exc
        for values in csv.reader(io.StringIO(text)):
            row = dict(zip(schema, values, strict=False))
            row["Key"] = urllib.parse.unquote_plus(row.get("Key", ""))
            yield row
        return
    if file_format not in ("parquet", "orc"):
        raise ManifestError(
            f"{where}: inventory format {file_format!r} is not read (CSV, Parquet and ORC are)"
        )
    try:
        import pyarrow as pa
        import pyarrow.orc
        import pyarrow.parquet
    except ImportError:
        raise ManifestError(
            f"{where}: reading a {file_format} inventory needs pyarrow (pip install pyarrow)"
        ) from None
    reader = pyarrow.parquet.read_table if file_format == "parquet" else pyarrow.orc.read_table
    try:
        table = reader(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"{where}: not a {file_format} inventory file ({short_reason(exc)})") from exc
    columns = {
        field: table.column(column).to_pylist()
        for field, column in _INVENTORY_FIELDS.items()
        if column in table.column_names
    }
    for i in range(table.num_rows):
        yield {field: values[i] for field, values in columns.items()}


def _inventory_record(
    bucket: str, row: dict[str, Any], prefix: str, key: str, where: str
) -> tuple[Any, ObjectMeta] | None:
    """``(last modified, record)`` of a row of a current object under ``prefix`` (or at ``key``)."""
    name = str(row.get("Key") or "")
    if not (name.startswith(prefix) or name == key) or row.get("Bucket", bucket) != bucket:
        return None
    if ("IsLatest" in row and not _true(row["IsLatest"])) or _true(row.get("IsDeleteMarker")):
        return None
    if row.get("ETag") in (None, "") or row.get("Size") in (None, ""):
        raise ManifestError(f"{where}: the inventory has no ETag or Size for {name!r}; include both fields")
    size = int(row["Size"])
    if name.endswith("/") and size == 0:
        return None  # a folder marker
    etag = normalize_etag(str(row["ETag"]))
    version = _version(row.get("VersionId") or None)
    meta = ObjectMeta(
        url=f"s3://{bucket}/{name}", size=size, digest=f"etag:{etag}", etag=etag, version_id=version
    )
    return row.get("LastModifiedDate"), meta


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class _S3Pages:
    """Listing pages of one bucket (a :class:`~refstore.storage.listing.PageSource`): ListObjectVersions,
    its current versions only, until the bucket turns out to have never kept versions (asked once, when a
    listing needs a second page) or the server refuses it; ListObjectsV2 from then on, for every stream
    (in such a bucket both list the same records)."""

    def __init__(self, backend: S3Backend, bucket: str, mode: str = "versions") -> None:
        self.backend = backend
        self.bucket = bucket
        self.mode = mode
        #: Objects, versions and delete markers listed, in every mode.
        self.items = 0
        self._probe: asyncio.Future[None] | None = None
        #: Pages parsed by :mod:`.s3_listing` (decided at the first request).
        self._fast: bool | None = None

    async def pages(
        self,
        prefix: str,
        *,
        delimiter: bool = False,
        start_after: str | None = None,
        ahead: Callable[[Page], bool] | None = None,
    ) -> AsyncGenerator[Page, None]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if LIST_PAGE_SIZE is not None:
            kwargs["MaxKeys"] = LIST_PAGE_SIZE
        if delimiter:
            kwargs["Delimiter"] = "/"
        url = self.backend.url(f"{self.bucket}/{prefix}")
        after, marker, version_marker, token = start_after, None, None, None

        def ask(mode: str) -> Awaitable[Mapping[str, Any]]:
            if mode == "versions":
                markers = {"KeyMarker": marker or after} if marker or after else {}
                if version_marker:
                    markers["VersionIdMarker"] = version_marker
                return self._list("list_object_versions", url, **kwargs, **markers)
            position = {"ContinuationToken": token} if token else {"StartAfter": after} if after else {}
            return self._list("list_objects_v2", url, **kwargs, **position)

        #: the next page, asked for before the consumer took this one (the mode it was asked in)
        early: tuple[str, asyncio.Future[Mapping[str, Any]]] | None = None
        try:
            while True:
                if self._probe is not None:
                    await asyncio.shield(self._probe)
                mode = self.mode
                call: Awaitable[Mapping[str, Any]]
                if early is not None and early[0] == mode:
                    call = early[1]
                else:
                    _dropped(early)
                    call = ask(mode)
                early = None
                if mode == "versions":
                    try:
                        answer = await call
                    except OSError as exc:
                        if not _versions_refused(exc):
                            raise
                        self.mode = "v2"  # ListObjectsV2 from here, after the last key listed
                        after = marker or after
                        continue
                    page = self._versions_page(answer)
                    marker, version_marker = _next_key_marker(answer), answer.get("NextVersionIdMarker")
                else:
                    answer = await call
                    page = self._current_page(answer)
                    token = answer.get("NextContinuationToken")
                if page.more and mode == "versions" and self._probe is None:
                    # asked before the page is handed out, so that the streams it starts wait for the answer
                    self._probe = asyncio.ensure_future(self._unversioned_to_v2())
                known = self._probe is None or self._probe.done()  # (the mode of the next page)
                if page.more and known and self.mode == mode and ahead is not None and ahead(page):
                    early = (mode, asyncio.ensure_future(ask(mode)))  # sent while this one is taken
                    await asyncio.sleep(0)  # (it runs up to its first wait: the request is on its way)
                yield page
                if not page.more:
                    return
                if self._probe is not None:
                    await asyncio.shield(self._probe)
                if mode == "versions" and self.mode == "v2":
                    after = page.last_key  # go on with ListObjectsV2 after the last key listed
        finally:
            _dropped(early)

    async def _list(self, method: str, url: str, **kwargs: Any) -> Mapping[str, Any]:
        """One listing request; its page parsed by :mod:`.s3_listing` where that is enabled (the request
        and whatever is not a listing stay botocore's)."""
        from . import s3_listing

        fs = self.backend.fs
        if self._fast is None:
            self._fast = s3_listing.enabled(fs) and not fs.cache_regions
        if not self._fast:
            return cast("Mapping[str, Any]", await self.backend._call(method, url, **kwargs))
        with contextlib.suppress(Exception):  # a session that cannot be made fails in _call, as before
            await fs.set_session()
        if fs._s3 is not None:
            s3_listing.install(fs._s3)
        with s3_listing.raw():
            answer = await self.backend._call(method, url, **kwargs)
        return cast("Mapping[str, Any]", answer.get(s3_listing.RESULT, answer))

    def _versions_page(self, answer: Mapping[str, Any]) -> Page:
        versions = list(answer.get("Versions") or [])
        deleted = list(answer.get("DeleteMarkers") or [])
        self.items += len(versions) + len(deleted)
        entries = [
            (item["Key"], self.backend._meta(self.bucket, item))
            for item in versions
            if item.get("IsLatest") and not _folder_marker(item)
        ]
        more = bool(answer.get("IsTruncated"))
        keys = [item["Key"] for item in (versions[-1:] + deleted[-1:])] if not more else []
        last = _next_key_marker(answer) if more else max(keys, default=None)
        return Page(entries, last, more, _prefixes(answer))

    def _current_page(self, answer: Mapping[str, Any]) -> Page:
        contents = list(answer.get("Contents") or [])
        self.items += len(contents)
        entries = [(i["Key"], self.backend._meta(self.bucket, i)) for i in contents if not _folder_marker(i)]
        last = contents[-1]["Key"] if contents else None
        return Page(entries, last, bool(answer.get("IsTruncated")), _prefixes(answer))

    async def _unversioned_to_v2(self) -> None:
        """ListObjectsV2 from now on if the bucket has never kept versions (GetBucketVersioning tells no
        status); where the question is refused, ListObjectVersions goes on."""
        try:
            answer = await self.backend._call(
                "get_bucket_versioning", self.backend.url(self.bucket), Bucket=self.bucket
            )
        except (OSError, RefstoreError):
            return
        if not answer.get("Status"):
            self.mode = "v2"


def _dropped(early: tuple[str, asyncio.Future[Mapping[str, Any]]] | None) -> None:
    """Cancel a page asked for early that is not wanted after all (its answer, or error, dropped)."""
    if early is None:
        return
    future = early[1]
    if future.done():
        if not future.cancelled():
            future.exception()  # (retrieved: not reported as never retrieved)
    else:
        future.cancel()


def _next_key_marker(answer: Mapping[str, Any]) -> str | None:
    """A version listing's ``NextKeyMarker`` as the server meant it. Ceph RGW sends it without URL-encoding
    although the listing asked for ``EncodingType=url``, and botocore decodes it anyway (``a+b.txt``
    comes back as ``a b.txt``, and the next page lists ``a+b.txt`` again). The keys of the page are
    encoded, so decoded right: when the marker is the decoding of the last key or prefix the page
    listed, and not that key itself, that key is the marker. A server that encodes it is unaffected."""
    marker = answer.get("NextKeyMarker")
    items = [*(answer.get("Versions") or []), *(answer.get("DeleteMarkers") or [])]
    listed: list[str] = [item["Key"] for item in items]
    listed += [p["Prefix"] for p in answer.get("CommonPrefixes") or []]
    last = max(listed, default=None)
    if (
        isinstance(marker, str)
        and last is not None
        and marker != last
        and urllib.parse.unquote_plus(last) == marker
    ):
        return last
    return marker if isinstance(marker, str) else None


def _folder_marker(item: Mapping[str, Any]) -> bool:
    return str(item["Key"]).endswith("/") and int(item["Size"]) == 0


def _prefixes(answer: Mapping[str, Any]) -> list[str]:
    return [str(p["Prefix"]) for p in answer.get("CommonPrefixes", ()) if p.get("Prefix")]


class _PinnedS3File(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only, seekable, buffered file whose every range read is one GET pinned like the open: a
    pinned object that moved on is :class:`ObjectChangedError` (also where s3fs would raise its own
    ``FileExpired``, or a ``TypeError`` on Ceph RGW's 412 without a message).

    A read fetches at most ``CHUNK_SIZE`` (4 MiB) beyond what it asks for, as on GCS, Azure and HTTP, or
    less where ``storage_options`` set a smaller ``default_block_size``: s3fs's own 50 MiB made each
    random read (a Parquet row group, a preview) cost 50 MiB more than it asked for."""

    def __init__(self, backend: S3Backend, pin: ObjectMeta) -> None:
        self._backend = backend
        self.pin = pin
        fs = backend.fs
        ahead = min(fs.default_block_size, CHUNK_SIZE)
        super().__init__(fs, pin.url, mode="rb", block_size=ahead, cache_type="readahead", size=pin.size)
        self.details = {"name": pin.url, "size": pin.size, "type": "file", "ETag": pin.etag}

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        return cast(bytes, sync(self.fs.loop, self._backend._read_range, self.pin, start, end))


def fs_options(storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the ``s3fs.S3FileSystem`` made from ``storage_options`` (what its
    ``storage_options`` are then): the endpoint and region variables, refstore's botocore defaults."""
    options = dict(storage_options)
    client_kwargs = dict(options.pop("client_kwargs", None) or {})
    endpoint = options.pop("endpoint_url", None) or client_kwargs.get("endpoint_url")
    endpoint = endpoint or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION")
    if region and "region_name" not in client_kwargs and region != "us-east-1":
        client_kwargs["region_name"] = region
    config = copy.deepcopy({**DEFAULT_CONFIG, **dict(options.pop("config_kwargs", None) or {})})
    return {"client_kwargs": client_kwargs, "config_kwargs": config, "skip_instance_cache": True, **options}


def _flexible_checksum_error() -> type[BaseException]:
    import botocore.exceptions

    error: type[BaseException] = botocore.exceptions.FlexibleChecksumError
    return error


def _is_unavailable(exc: BaseException) -> bool:
    """A broken connection, a timeout or a server error (5xx) that outlasted the retries."""
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError)):
        return False
    return isinstance(exc, _network_errors()) or (isinstance(exc, OSError) and exc.errno in _SERVER_ERRNOS)


def _answer(exc: BaseException) -> tuple[int | None, str, str] | None:
    """(HTTP status, error code, message) of the S3 answer behind ``exc``: the botocore ``ClientError``
    itself, or the one s3fs translated (its ``__cause__``, or ``__context__`` where s3fs sets no cause)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        response = getattr(seen, "response", None)
        if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
            error = response["Error"]
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = error.get("Message")
            return (
                int(status) if status is not None else None,
                str(error.get("Code") or ""),
                "" if message in (None, "None") else " ".join(str(message).split())[:200],
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _unnamed(exc: OSError, url: str) -> bool:
    """An error of Python's own types (as s3fs makes them) that does not name ``url``."""
    return type(exc).__module__ == "builtins" and url not in str(exc)


def _describe(answer: tuple[int | None, str, str]) -> str:
    """``HTTP 403 AccessDenied: message`` (the message left out when the server sent none)."""
    status, code, message = answer
    code = "" if code == str(status) else code  # botocore's code for an answer without a body
    text = " ".join(part for part in (f"HTTP {status}" if status else "", code) if part) or "an error"
    return f"{text}: {message}" if message and message != code else text


def _versions_refused(exc: OSError) -> bool:
    """ListObjectVersions denied or not implemented (list current objects instead), not a failure."""
    if isinstance(exc, (FileNotFoundError, TimeoutError, ConnectionError)):
        return False
    return isinstance(exc, PermissionError) or exc.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES, None)


def _reason(exc: BaseException) -> str:
    """A short description of a failure, for a message."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _split(path: str) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    return bucket, key


def _version(value: str | None) -> str | None:
    """S3 says ``"null"`` in listings and ``None`` in HEADs for objects of unversioned buckets."""
    return None if value in (None, "", "null") else value


def _pinned(pin: ObjectMeta) -> dict[str, str]:
    if pin.version_id is not None:
        return {"VersionId": pin.version_id}
    if pin.etag is not None:
        return {"IfMatch": f'"{pin.etag}"'}
    return {}


def _is_md5(etag: str | None) -> bool:
    return etag is not None and len(etag) == _MD5_ETAG_LENGTH and all(c in "0123456789abcdef" for c in etag)


def _likely_part_size(pin: ObjectMeta) -> int | None:
    """The likeliest size of a multipart object's upload parts, if all but the last had one size (``None``
    for an ETag that is no multipart ETag, or parts that cannot be uniform): the ETag gives the number of
    parts ``n``, so the size ``p`` satisfies ``p * (n - 1) < size <= p * n``; among those sizes, a common
    one (:data:`_COMMON_PART_SIZES`), else a whole number of MiB, else the smallest. Checked by the ETag
    itself once the parts are hashed (a wrong guess costs a HEAD and a second hashing, no download)."""
    match = _MULTIPART_ETAG.fullmatch(pin.etag or "")
    if match is None or pin.size <= 0 or int(match[1]) < 1:
        return None
    count = int(match[1])
    if count == 1:
        return pin.size
    low, high = -(-pin.size // count), (pin.size - 1) // (count - 1)
    if low > high:
        return None
    common = [p for p in _COMMON_PART_SIZES if low <= p <= high]
    if common:
        return common[0]
    mib = -(-low // 2**20) * 2**20
    return mib if mib <= high else low


def _composite_md5(md5s: list[str]) -> str:
    """A multipart ETag from the MD5 hex of each part: the MD5 of their digests, ``-`` the count."""
    composite = hashlib.md5(b"".join(bytes.fromhex(h) for h in md5s), usedforsecurity=False)
    return f"{composite.hexdigest()}-{len(md5s)}"


def _why_gone(pin: ObjectMeta) -> str:
    if pin.version_id is not None:
        return f"pinned version {pin.version_id} no longer exists"
    return f"the object was overwritten or deleted and its bucket keeps no versions (pinned ETag {pin.etag})"
