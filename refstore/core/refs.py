"""Manifest refs: the URL of each object as a manifest records it, and back."""

from __future__ import annotations

import re
from urllib.parse import unquote

from .exceptions import InvalidURLError

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
AZURE_HTTPS = re.compile(r"^https://(?P<account>[a-z0-9]{3,24})\.blob\.core\.windows\.net/(?P<rest>.*)$")
BUCKET_SCHEMES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}

# -- manifest refs ----------------------------------------------------------------------------------------
#
# A backend's URL of an object (``ObjectMeta.url``) is fsspec's: ``s3://bucket/`` and the key verbatim, as
# users write them (``s3://b/100%.txt`` is the key ``100%.txt``). A manifest ref is a URI: in the key part
# of a bucket backend's URL (S3, GCS, Azure, also Azure's https form) the three characters a URI cannot
# hold as themselves are percent-encoded, ``%`` -> ``%25``, ``?`` -> ``%3F``, ``#`` -> ``%23``; nothing else
# changes, so refs of ordinary keys are byte for byte what they always were. Why, and not the key verbatim:
# a verbatim ``s3://b/a?versionId=x`` or ``gs://b/k#123`` is read by s3fs / gcsfs (and any URL parser) as
# another object pinned to a version, and URL parsers cut keys at ``?`` and ``#``; escaped, every key S3,
# GCS and Azure allow round-trips and a ref never names another object. HTTP(S) refs are URLs as the user
# gave them and local ``file://`` refs are paths: neither is touched. Manifests whose refs were written
# before this rule (formats 1 and 2) hold keys verbatim; :mod:`refstore.core.manifest` turns those into
# refs on read (``ref_of``) and back on write, so their digests never change.

_KEY_ESCAPES = str.maketrans({"%": "%25", "?": "%3F", "#": "%23"})


def _key_start(url: str) -> int:
    """Where the object key starts in a bucket backend's URL (after ``scheme://bucket/``); -1 for other
    URLs (HTTP(S), local files) and for a URL that names no key."""
    match = SCHEME.match(url)
    if match is None:
        return -1
    scheme = match[1].lower()
    if scheme in BUCKET_SCHEMES or (scheme == "https" and AZURE_HTTPS.match(url)):
        slash = url.find("/", match.end())
        return slash + 1 if slash >= 0 else -1
    return -1


def ref_of(url: str) -> str:
    """The manifest ref of a backend's object URL: ``%``, ``?`` and ``#`` in a bucket key percent-encoded."""
    if "%" not in url and "?" not in url and "#" not in url:
        return url
    start = _key_start(url)
    return url if start < 0 else url[:start] + url[start:].translate(_KEY_ESCAPES)


def refs_of(urls: list[str]) -> list[str]:
    """:func:`ref_of` of each URL: the URLs themselves when none holds ``%``, ``?`` or ``#`` (one look)."""
    joined = "".join(urls)
    if "%" in joined or "?" in joined or "#" in joined:
        return [ref_of(url) for url in urls]
    return urls


def refs_under(base: str, names: list[str]) -> list[str]:
    """:func:`ref_of` of the URL ``base`` + each of ``names``: the URLs themselves where ``base`` is not in
    a bucket key (local files, HTTP), with no look at them."""
    urls = [base + name for name in names]
    return urls if _key_start(base) < 0 else refs_of(urls)


def url_of_ref(ref: str) -> str:
    """The backend's object URL of a manifest ref (inverse of :func:`ref_of`; any ``%XX`` in a bucket key
    is decoded); :class:`InvalidURLError` for an escape that is not UTF-8."""
    if "%" not in ref:
        return ref
    start = _key_start(ref)
    if start < 0:
        return ref
    try:
        return ref[:start] + unquote(ref[start:], errors="strict")
    except UnicodeDecodeError:
        raise InvalidURLError(f"{ref!r}: a percent-escape in the key is not UTF-8") from None
