"""S3's data plane on obstore (Rust ``object_store``): the GETs, HEADs and PUTs of pinned objects.

:class:`~refstore.storage.backends.s3.S3Backend` sends ``get_object``, ``head_object`` and ``put_object``
here when obstore can make them (see :meth:`ObstorePlane.serves`), and everything else (listings of object
versions, deletes, the HEAD of one upload part) through s3fs. The answers look like botocore's (a dict
with ``Body``, ``ETag``, ``ContentLength``, ``ContentRange``, ``VersionId``) and failures are raised as
the Python errors s3fs raises, carrying a botocore-like ``response`` (status, error code, message), so
that the backend checks and tells both clients' answers with one code path.

The per-request work (signing, the HTTP exchange, XML) runs in Rust, off the GIL: on a 2-core machine a
cold download of 2,000 small objects cost 3.5-4 ms of CPU per object through aiobotocore.

obstore is used only where it reads ``storage_options`` as s3fs would (:func:`plane_for`); otherwise, or
with ``REFSTORE_S3_CLIENT=s3fs``, s3fs serves everything as before.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import errno
import os
import re
import threading
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from ...core.exceptions import RefstoreError

if TYPE_CHECKING:
    from obstore.store import S3Store

#: Which client serves S3's data plane: ``obstore`` (the default where installed), or ``s3fs``.
CLIENT_VARIABLE = "REFSTORE_S3_CLIENT"
#: Options of ``storage_options`` that say nothing about requests (s3fs's caches and file defaults).
_INERT_OPTIONS = frozenset(
    {
        "skip_instance_cache",
        "use_listings_cache",
        "listings_expiry_time",
        "max_paths",
        "version_aware",
        "default_block_size",
        "default_fill_cache",
        "default_cache_type",
        "cache_regions",
        "max_concurrency",
        "fixed_upload_size",
        "asynchronous",
        "loop",
    }
)
#: The botocore ``config_kwargs`` that have an obstore equivalent.
_CONFIG_KEYS = frozenset({"connect_timeout", "read_timeout", "retries", "s3"})
#: A request's whole lifetime, body included (obstore's default, 30 s, would cut large bodies off);
#: stalls are caught by the read timeout instead.
_REQUEST_TIMEOUT = "3600s"
#: Keys obstore cannot address exactly: its paths have no empty or ``.``/``..`` segments (``a/`` would
#: silently become ``a``), and control characters are refused.
_BAD_KEY = re.compile(r"(^|/)(\.{1,2})?(/|$)|[\x00-\x1f\x7f]")
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_SERVED = {
    "get_object": frozenset({"Bucket", "Key", "VersionId", "IfMatch", "Range"}),
    "head_object": frozenset({"Bucket", "Key", "VersionId", "IfMatch"}),
    "put_object": frozenset({"Bucket", "Key", "Body", "IfNoneMatch"}),
}
#: What errno s3fs gives an S3 answer of each status (anything else of 4xx: EINVAL).
_ERRNOS = {405: errno.EPERM, 409: errno.EBUSY, 412: errno.EINVAL, 416: errno.EINVAL}


#: How long a process that is exiting waits for obstore requests still in flight (see :func:`_settle`).
EXIT_WAIT = 10.0
#: After the last request settled, how long the exit waits for its Rust task to let go of the GIL.
_EXIT_GRACE = 0.2


class _InFlight:
    """The obstore futures not settled yet, so that a process that exits waits for them.

    A tokio task that finishes (or learns it was cancelled) takes the GIL to hand its result over; once
    the interpreter is finalizing, CPython ends such a thread with ``pthread_exit`` and the Rust runtime
    aborts the whole process (SIGABRT after the CLI printed its error: seen with a refused port, where
    several HEADs retry at once and the first failure ends the command). So every obstore awaitable runs
    as a tracked future, and an ``atexit`` hook waits until none is pending, plus a short grace for the
    tasks whose Python side was cancelled first.
    """

    def __init__(self) -> None:
        self.pending: set[asyncio.Future[Any]] = set()
        self.last_settled = 0.0
        self._hooked = False
        self._lock = threading.Lock()

    def track(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        future = asyncio.ensure_future(awaitable)
        with self._lock:
            self.pending.add(future)
            if not self._hooked:
                atexit.register(self.wait)
                self._hooked = True
        future.add_done_callback(self._settled)
        return future

    def _settled(self, future: asyncio.Future[Any]) -> None:
        with self._lock:
            self.pending.discard(future)
            self.last_settled = time.monotonic()
        if not future.cancelled():
            future.exception()  # retrieved: a failure nobody awaited any more is not logged at exit

    def wait(self, timeout: float = EXIT_WAIT) -> None:
        """Block (not on the IO loop) until no obstore request is in flight, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = bool(self.pending)
                last = self.last_settled
            now = time.monotonic()
            if not busy and now >= last + _EXIT_GRACE:
                return
            if now >= deadline:
                return
            time.sleep(0.02)


_IN_FLIGHT = _InFlight()


async def _settle(awaitable: Awaitable[Any]) -> Any:
    """``await awaitable`` (an obstore future), tracked until its Rust task has handed it over."""
    return await _IN_FLIGHT.track(awaitable)


class ClientChoiceError(RefstoreError):
    """``REFSTORE_S3_CLIENT`` names no client, or asks for obstore where it cannot serve."""


def plane_for(fs: Any) -> ObstorePlane | None:
    """The obstore data plane for the s3fs filesystem ``fs`` (built from the same ``storage_options``),
    or ``None`` when s3fs serves everything: ``REFSTORE_S3_CLIENT=s3fs``, obstore not installed, or
    options whose meaning obstore cannot keep (see :func:`unmapped`)."""
    wanted = os.environ.get(CLIENT_VARIABLE, "").strip().lower() or "auto"
    if wanted not in ("auto", "obstore", "s3fs"):
        raise ClientChoiceError(f"{CLIENT_VARIABLE}={wanted!r}: expected obstore or s3fs")
    if wanted == "s3fs":
        return None
    try:
        import obstore  # noqa: F401
    except ImportError:
        if wanted == "obstore":
            raise ClientChoiceError(
                f"{CLIENT_VARIABLE}=obstore, but obstore is not installed: pip install 'refstore[s3]'"
            ) from None
        return None
    why = unmapped(fs)
    if why is not None:
        if wanted == "obstore":
            raise ClientChoiceError(f"{CLIENT_VARIABLE}=obstore cannot serve these S3 settings: {why}")
        return None
    return ObstorePlane(fs)


def unmapped(fs: Any) -> str | None:
    """Why obstore cannot make the requests s3fs would make with ``fs``'s options, or ``None``.

    Mapped: ``key``/``secret``/``token``, ``anon``, ``requester_pays``, ``client_kwargs`` ``endpoint_url``,
    ``region_name``, ``verify=False`` and the AWS key arguments, ``config_kwargs`` timeouts, retries and
    ``s3.addressing_style``. Not mapped (s3fs serves): ``profile``, ``session``, ``s3_additional_kwargs``
    (server-side encryption, ...), ``use_ssl``, other botocore settings, and credentials that only
    botocore's chain finds (shared credentials or config files, ``AWS_PROFILE``, SSO, the EC2 instance
    metadata service)."""
    options = dict(fs.storage_options)
    client = dict(options.pop("client_kwargs", None) or {})
    config = dict(options.pop("config_kwargs", None) or {})
    known = {"key", "secret", "token", "anon", "requester_pays", "endpoint_url"} | _INERT_OPTIONS
    extra = sorted(k for k, v in options.items() if k not in known and v not in (None, False, {}))
    extra += sorted(
        f"client_kwargs.{k}"
        for k in client
        if k not in ("endpoint_url", "region_name", "verify")
        and not k.startswith(("aws_access_key_id", "aws_secret_access_key", "aws_session_token"))
    )
    if client.get("verify") not in (None, True, False):
        extra.append("client_kwargs.verify (a certificate bundle)")
    extra += sorted(f"config_kwargs.{k}" for k in config if k not in _CONFIG_KEYS)
    if set(config.get("s3") or {}) - {"addressing_style"}:
        extra.append("config_kwargs.s3")
    if extra:
        return ", ".join(extra)
    if _credentials(options, client) is None and not options.get("anon") and not _env_credentials():
        return "credentials only botocore's chain finds (profile, config files, SSO or instance metadata)"
    return None


def _credentials(options: Mapping[str, Any], client: Mapping[str, Any]) -> dict[str, str] | None:
    key = options.get("key") or client.get("aws_access_key_id")
    secret = options.get("secret") or client.get("aws_secret_access_key")
    token = options.get("token") or client.get("aws_session_token")
    if not key or not secret:
        return None
    found = {"access_key_id": str(key), "secret_access_key": str(secret)}
    if token:
        found["session_token"] = str(token)
    return found


def _env_credentials() -> bool:
    """Credentials that botocore and obstore both read from the environment, before any profile."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return not env.get("AWS_PROFILE")  # botocore: explicit keys win over a profile; keep it simple
    return bool(env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN")) or bool(
        env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    )


def _seconds(value: Any, default: float) -> str:
    return f"{float(value if value is not None else default)}s"


class ObstorePlane:
    """One obstore ``S3Store`` per bucket, configured from one s3fs filesystem's options."""

    def __init__(self, fs: Any) -> None:
        options = dict(fs.storage_options)
        client = dict(options.get("client_kwargs") or {})
        config = dict(options.get("config_kwargs") or {})
        endpoint = (
            client.get("endpoint_url") or options.get("endpoint_url") or getattr(fs, "endpoint_url", None)
        )
        region = (
            client.get("region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        settings: dict[str, Any] = {"region": region}
        if endpoint:
            settings["endpoint"] = str(endpoint)
        if (config.get("s3") or {}).get("addressing_style") == "virtual":
            settings["virtual_hosted_style_request"] = True
        credentials = _credentials(options, client)
        if credentials is not None:
            settings.update(credentials)
        elif options.get("anon"):
            settings["skip_signature"] = True
        if options.get("requester_pays"):
            settings["request_payer"] = True
        self._settings = settings
        self._client_options: dict[str, Any] = {
            "allow_http": str(endpoint or "").startswith("http://"),
            "connect_timeout": _seconds(config.get("connect_timeout"), 60),
            "read_timeout": _seconds(config.get("read_timeout"), 60),
            "timeout": _REQUEST_TIMEOUT,
        }
        if client.get("verify") is False:
            self._client_options["allow_invalid_certificates"] = True
        retries = dict(config.get("retries") or {})
        attempts = retries.get("total_max_attempts") or retries.get("max_attempts", 4) + 1
        self._retry = {
            "max_retries": max(0, int(attempts) - 1),
            "backoff": {
                "init_backoff": datetime.timedelta(milliseconds=100),
                "max_backoff": datetime.timedelta(seconds=5),
                "base": 2,
            },
            "retry_timeout": datetime.timedelta(seconds=120),
        }
        self._stores: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    def store(self, bucket: str) -> S3Store:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                from obstore.store import S3Store

                store = S3Store(
                    bucket,
                    config=self._settings,  # type: ignore[arg-type]
                    client_options=self._client_options,  # type: ignore[arg-type]
                    retry_config=self._retry,  # type: ignore[arg-type]
                )
                self._stores[bucket] = store
        return store

    @staticmethod
    def serves(method: str, kwargs: Mapping[str, Any]) -> bool:
        """Whether obstore makes this botocore call exactly: its parameters and its key."""
        served = _SERVED.get(method)
        if served is None or not set(kwargs) <= served:
            return False
        if kwargs.get("IfNoneMatch") not in (None, "*"):
            return False
        key = str(kwargs.get("Key") or "")
        return bool(key) and _BAD_KEY.search(key) is None

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """The botocore call ``method(**kwargs)`` made with obstore; failures raised as s3fs raises them."""
        import obstore

        store = self.store(kwargs["Bucket"])
        key = kwargs["Key"]
        try:
            if method == "put_object":
                create = kwargs.get("IfNoneMatch") == "*"
                put = await _settle(
                    obstore.put_async(store, key, kwargs["Body"], mode="create" if create else None)
                )
                return {"ETag": put.get("e_tag"), "VersionId": put.get("version")}
            options: dict[str, Any] = {}
            if kwargs.get("VersionId") is not None:
                options["version"] = kwargs["VersionId"]
            if kwargs.get("IfMatch") is not None:
                options["if_match"] = kwargs["IfMatch"]
            if method == "head_object":
                options["head"] = True
            elif kwargs.get("Range"):
                start, _, end = str(kwargs["Range"]).removeprefix("bytes=").partition("-")
                options["range"] = (int(start), int(end) + 1)
            result = await _settle(obstore.get_async(store, key, options=options))  # type: ignore[arg-type]
        except Exception as exc:
            raise as_s3fs_error(exc) from exc
        meta = result.meta
        answer: dict[str, Any] = {
            "ContentLength": int(meta["size"]),
            "ETag": meta.get("e_tag"),
            "VersionId": meta.get("version"),
            "LastModified": meta.get("last_modified"),
        }
        if method == "get_object":
            first, stop = result.range
            answer["ContentLength"] = stop - first
            answer["Body"] = _Body(result, stop - first)
            if "range" in options:
                answer["ContentRange"] = f"bytes {first}-{stop - 1}/{meta['size']}"
        return answer


class _Body:
    """A response body read as aiobotocore's: ``await read(n)`` gives the next chunk (``b""`` at its end),
    ``await read()`` the rest; a body that breaks off raises :class:`ConnectionError`."""

    def __init__(self, result: Any, length: int) -> None:
        self._result = result
        self._length = length
        self._stream: Any = None
        self._done = False

    async def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        try:
            if n < 0 or (self._stream is None and self._length <= n):
                self._done = True
                return bytes(await _settle(self._result.bytes_async()))
            if self._stream is None:
                self._stream = self._result.stream(min_chunk_size=n)
            try:
                chunk: bytes = await _settle(self._stream.__anext__())
            except StopAsyncIteration:
                self._done = True
                return b""
            return chunk
        except Exception as exc:
            raise as_s3fs_error(exc) from exc

    def close(self) -> None:
        self._done = True
        self._stream = None


def as_s3fs_error(exc: BaseException) -> BaseException:
    """An obstore failure as s3fs would raise it: :class:`FileNotFoundError` (404),
    :class:`PermissionError` (401, 403), :class:`FileExistsError` (a refused create-only PUT),
    :class:`ConnectionError` (no answer, or a body that broke off), ``OSError`` with s3fs's errno for other
    answers (5xx: ``EIO``); each with a botocore-like ``response`` (status, code, message) where the
    server answered."""
    if isinstance(exc, (ValueError, TypeError)) or not type(exc).__module__.startswith(
        ("obstore", "builtins")
    ):
        return exc
    text = str(exc)
    status_match = _STATUS.search(text)
    status = int(status_match[1]) if status_match else None
    code_match, message_match = _CODE.search(text), _MESSAGE.search(text)
    first_line = text.split("\n", 1)[0][:300]
    name = type(exc).__name__
    told: OSError
    if name == "AlreadyExistsError":
        told = FileExistsError(errno.EEXIST, first_line)
    elif status is None and name == "PreconditionError":
        told = OSError(errno.EINVAL, first_line)
    elif status is None and isinstance(exc, FileNotFoundError):
        told = FileNotFoundError(errno.ENOENT, first_line)
    elif status is None:
        return ConnectionError(f"{name}: {first_line}")
    elif status == 404:
        told = FileNotFoundError(errno.ENOENT, first_line)
    elif status in (401, 403):
        told = PermissionError(errno.EACCES, first_line)
    elif status >= 500:
        told = OSError(errno.EIO, first_line)
    else:
        told = OSError(_ERRNOS.get(status, errno.EINVAL), first_line)
    if status is not None:
        told.response = {  # type: ignore[attr-defined]
            "Error": {
                "Code": code_match[1] if code_match else str(status),
                "Message": message_match[1] if message_match else "",
            },
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
    return told
