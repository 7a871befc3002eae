"""From a URL to a backend, an fsspec path and a canonical URL: the only URL parser in refstore."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..core.exceptions import InvalidURLError
from ..core.refs import AZURE_HTTPS as _AZURE_HTTPS
from ..core.refs import BUCKET_SCHEMES as _BUCKET_SCHEMES
from ..core.refs import SCHEME as _SCHEME
from .backends import BACKENDS, Backend, backend_class

#: A scheme with one slash, no colon or no slashes: ``s3:/b/k``, ``s3//b/k``, ``s3:b/k``.
_MISTYPED = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)(?::/(?!/)|//|:(?!/))(?P<rest>.*)$", re.DOTALL)
#: Query parameters that carry credentials (pre-signed S3/GCS URLs, Azure SAS tokens, API keys):
#: refused, so that they never reach a manifest; pass credentials in storage_options instead.
_SECRET_QUERY_KEY = re.compile(
    r"sig|key|auth|googleaccessid|awsaccesskeyid"
    r"|.*(signature|token|secret|password|passwd|credential|api[_-]?key|access[_-]?key).*",
    re.IGNORECASE,
)

_lock = threading.Lock()
_backends: dict[tuple[Any, ...], Backend] = {}


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed URL: the backend that serves it and the fsspec path inside it."""

    backend: Backend
    path: str
    #: The user wrote a trailing ``/``: the URL names a folder, never a single object.
    is_folder: bool = False

    @property
    def url(self) -> str:
        """The canonical URL (no credentials, no trailing slash)."""
        return self.backend.url(self.path)


def resolve(url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Location:
    """Parse ``url`` (any supported URL, ``file://`` URL or local path, ``~`` expanded) into a Location."""
    text = os.fspath(url)
    _reject_malformed(text)
    azure = _AZURE_HTTPS.match(text)
    match = _SCHEME.match(text)
    scheme = "az" if azure else match[1].lower() if match else "file"
    options = options_for(scheme, storage_options)
    if azure:
        if "?" in azure["rest"] or "#" in azure["rest"]:
            raise InvalidURLError(
                f"{_redact(text)}: a query (such as a SAS token) is refused in an Azure URL; "
                "pass credentials in storage_options (sas_token=...) or AZURE_STORAGE_SAS_TOKEN"
            )
        options.setdefault("account_name", azure["account"])
        prefix = f"https://{azure['account']}.blob.core.windows.net/"
        return _location("az", azure["rest"], options, url_prefix=prefix)
    if not match:
        return _local(text, options)
    rest = text[match.end() :]
    if scheme == "file":
        return _local(rest, options)
    if scheme not in BACKENDS:
        backend_class(scheme)  # raises UnsupportedSchemeError with the list of known schemes
    if scheme in ("http", "https"):
        return _http(text, scheme, options)
    return _bucket(text, scheme, rest, options)


def options_for(scheme: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options for one scheme: ``storage_options`` itself, or its entry for ``scheme`` when it is keyed
    by scheme (``{"s3": {...}, "https": {...}}``), for work that spans several backends."""
    options = dict(storage_options or {})
    if options and all(k in BACKENDS and isinstance(v, Mapping) for k, v in options.items()):
        if scheme not in BACKENDS:
            return {}
        twins = {k for k, (target, _) in BACKENDS.items() if target == BACKENDS[scheme][0]}
        return dict(next((options[k] for k in (scheme, *sorted(twins)) if k in options), {}))
    return options


def _reject_malformed(text: str) -> None:
    if not text or not text.strip():
        raise InvalidURLError("empty URL")
    if "\x00" in text:
        raise InvalidURLError(f"{_redact(text)!r}: a URL cannot contain NUL")
    if "://" in text and not _SCHEME.match(text):
        raise InvalidURLError(f"{_redact(text)}: malformed URL scheme")
    typo = None if "://" in text else _MISTYPED.match(text)
    if typo and typo["scheme"].lower() in BACKENDS:  # never a local path named "s3:"
        scheme, rest = typo["scheme"].lower(), typo["rest"].lstrip("/")
        root = "/" if scheme == "file" else ""
        meant = f"{scheme}://{root}{rest}" if rest else f"{scheme}://{root or '<bucket>/<key>'}"
        raise InvalidURLError(f"{_redact(text)}: a malformed {scheme}:// URL; did you mean {meant}?")


def _local(path: str, options: dict[str, Any]) -> Location:
    full = os.path.abspath(os.path.expanduser(path))
    posix = full.replace(os.sep, "/")
    return _location("file", posix.rstrip("/") or "/", options, is_folder=path.endswith(("/", os.sep)))


def _http(text: str, scheme: str, options: dict[str, Any]) -> Location:
    try:
        parts = urlsplit(text)
        hostname, _ = parts.hostname, parts.port
    except ValueError:
        raise InvalidURLError(f"{_redact(text)}: cannot be parsed as a URL") from None
    if not hostname:
        raise InvalidURLError(f"{_redact(text)}: no host in the URL")
    if parts.username or parts.password:
        raise InvalidURLError(
            f"{_redact(text)}: credentials in the URL are refused; pass them in storage_options"
        )
    if any(_SECRET_QUERY_KEY.fullmatch(key) for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise InvalidURLError(
            f"{_redact(text)}: a signed URL or a credential in the query string is refused (it would be "
            "recorded in the manifest); pass credentials in storage_options, e.g. headers={...}"
        )
    return _location(scheme, text, options, is_folder=parts.path.endswith("/"))


def _bucket(text: str, scheme: str, rest: str, options: dict[str, Any]) -> Location:
    if "@" in rest.split("/", 1)[0] and scheme not in ("abfs", "abfss"):
        raise InvalidURLError(f"{_redact(text)}: credentials in the URL are refused")
    if "?" in rest or "#" in rest:
        raise InvalidURLError(f"{_redact(text)}: a {scheme}:// URL takes no query or fragment")
    bucket, _, key = rest.partition("/")
    if scheme in ("abfs", "abfss") and "@" in bucket:  # abfs://container@account.dfs.core.windows.net/path
        bucket, _, host = bucket.partition("@")
        options.setdefault("account_name", host.split(".", 1)[0])
    if not bucket or (scheme in _BUCKET_SCHEMES and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", bucket)):
        raise InvalidURLError(f"{_redact(text)}: missing or invalid bucket name")
    if "//" in key:
        raise InvalidURLError(f"{_redact(text)}: empty path segment")
    path = f"{bucket}/{key}".rstrip("/")
    return _location(scheme, path, options, is_folder=text.endswith("/"))


def _location(
    scheme: str,
    path: str,
    options: dict[str, Any],
    *,
    is_folder: bool = False,
    url_prefix: str | None = None,
) -> Location:
    return Location(backend_for(scheme, options, url_prefix=url_prefix), path, is_folder)


def backend_for(scheme: str, options: Mapping[str, Any], *, url_prefix: str | None = None) -> Backend:
    """One backend (and so one fsspec filesystem, one connection pool) per scheme and options."""
    cls = backend_class(scheme)
    key = (cls, scheme, url_prefix, _freeze(options), _environment())
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = cls(lambda: cls.filesystem(scheme, options), scheme, url_prefix, options=options)
            _backends[key] = backend
    return backend


def _environment() -> tuple[tuple[str, str], ...]:
    """The variables backends read when they build a filesystem or choose a client: a change means a new
    backend (``REFSTORE_S3_CLIENT`` set after a first S3 request used to be ignored by the cached one)."""
    prefixes = ("AWS_", "FSSPEC_", "STORAGE_EMULATOR", "AZURE_", "GOOGLE_", "REFSTORE_S3_CLIENT")
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes)))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _redact(text: str) -> str:
    """A URL without user:password, query string or fragment, fit for a message (never raises)."""
    scheme, sep, rest = text.partition("://")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else text


def clear_backends() -> None:
    """Forget cached backends (tests, or after changing environment variables)."""
    with _lock:
        _backends.clear()
