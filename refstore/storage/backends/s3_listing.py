"""S3 listing pages parsed by ElementTree's C parser instead of botocore's Python walk of the XML.

botocore spends most of a listing's time turning each page's XML into dicts in Python, about half of it
parsing ``LastModified`` with dateutil (py-spy: 74% of a 20,000-object reference on Ceph RGW). The request
itself stays botocore's: signing, credentials, endpoint and addressing, ``RequestPayer``, retries, and every
answer other than a 200 with a listing in it (errors are told as before). A ``before-parse`` handler, active
only inside :func:`raw` (a context variable, so other calls on the same client are untouched), parses a 200
ListObjectVersions or ListObjectsV2 body into the fields the listing reads, hands it back in the answer
under :data:`RESULT`, and leaves botocore an empty body to parse. A body it cannot read (not XML, another
root, a field it does not know how to convert) is left to botocore, which parses it as it always did.

The fields come out as botocore makes them: ``Key``/``Prefix``/``NextKeyMarker`` URL-decoded with
``unquote_plus`` where the answer says ``EncodingType=url`` (botocore asks for it on every listing and
decodes the same fields), ``IsLatest``/``IsTruncated`` true only for ``"true"``, ``Size`` an ``int``, and
``LastModified`` as the ISO string of botocore's datetime (what the records hold), cut from S3's fixed
format (``2026-01-02T03:04:05.678Z``) and made by botocore's own parser from anything else.
``REFSTORE_S3_CLIENT=s3fs`` or ``REFSTORE_S3_LISTING=botocore`` keeps botocore's parser.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, cast

import botocore.handlers
import botocore.utils

#: Where the parsed page is in the answer botocore returns.
RESULT = "RefstoreListing"
#: ``botocore`` keeps botocore's parser for listings.
LISTING_VARIABLE = "REFSTORE_S3_LISTING"
_OPERATIONS = ("ListObjectVersions", "ListObjectsV2")
_ROOTS = frozenset({"ListVersionsResult", "ListBucketResult"})
_WANTED: ContextVar[bool] = ContextVar("refstore_s3_raw_listing", default=False)
#: S3's ``LastModified``: a valid date and time of day, milliseconds, UTC.
_FIXED = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z"
)
#: botocore's check for an error in a 200 answer, which this module's handler replaces.
_BOTOCORE_200: Callable[..., None] | None = getattr(botocore.handlers, "_handle_200_error", None)
_FIXED_LENGTH = len("2026-01-02T03:04:05.678Z")


def enabled(fs: Any) -> bool:
    """Whether listings through the s3fs filesystem ``fs`` are parsed here: not with
    ``REFSTORE_S3_CLIENT=s3fs`` or ``REFSTORE_S3_LISTING=botocore``, and not where the caller's own
    ``EncodingType`` would change what botocore decodes."""
    if os.environ.get("REFSTORE_S3_CLIENT", "").strip().lower() == "s3fs":
        return False
    if os.environ.get(LISTING_VARIABLE, "").strip().lower() == "botocore":
        return False
    extra = {**(getattr(fs, "s3_additional_kwargs", None) or {}), **(getattr(fs, "req_kw", None) or {})}
    return "EncodingType" not in extra


def install(client: Any) -> None:
    """Put the handler on a botocore client (once: botocore ignores a second registration).

    It takes the place of botocore's ``_handle_200_error`` (which parses every 200 body once more to see
    whether it is an ``<Error>``) and calls it for every answer it does not take: a body it takes is a
    listing, so that check would have found nothing. Where botocore has no such handler, it runs after."""
    events = client.meta.events
    if _BOTOCORE_200 is None:
        for operation in _OPERATIONS:
            events.register(f"before-parse.s3.{operation}", _take_page, unique_id=f"refstore-{operation}")
        return
    events.unregister("before-parse.s3.*", _BOTOCORE_200)
    events.register_first("before-parse.s3.*", _before_parse, unique_id="refstore-listing")


@contextlib.contextmanager
def raw() -> Iterator[None]:
    """Listing answers within are parsed here (see the module's docstring)."""
    token = _WANTED.set(True)
    try:
        yield
    finally:
        _WANTED.reset(token)


def _before_parse(
    operation_model: Any,
    response_dict: dict[str, Any],
    customized_response_dict: dict[str, Any],
    **kwargs: Any,
) -> None:
    if operation_model.name in _OPERATIONS and _take_page(response_dict, customized_response_dict):
        return
    assert _BOTOCORE_200 is not None
    _BOTOCORE_200(operation_model=operation_model, response_dict=response_dict, **kwargs)


def _take_page(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> bool:
    """Parse a 200 listing body inside :func:`raw`, leaving botocore an empty one; whether it did."""
    if not _WANTED.get() or response_dict.get("status_code") != 200:
        return False
    body = response_dict.get("body")
    if not isinstance(body, bytes) or not body:
        return False
    try:
        page = parse(body)
    except (ElementTree.ParseError, ValueError, TypeError):
        return False  # botocore parses it, or tells what is wrong with it, as before
    if page is None:
        return False
    customized_response_dict[RESULT] = page
    response_dict["body"] = b""
    return True


def parse(body: bytes) -> dict[str, Any] | None:
    """A ListObjectVersions or ListObjectsV2 answer as botocore parses the fields listings read
    (``None`` for any other document)."""
    parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(), encoding="utf-8")  # as botocore's
    parser.feed(body)
    root = parser.close()
    tag = root.tag
    namespace = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
    if tag[len(namespace) :] not in _ROOTS:
        return None
    fields = {namespace + name: (name, convert) for name, convert in _FIELDS.items()}
    groups = {namespace + name: group for name, group in _GROUPS.items()}
    scalars = {namespace + name: (name, convert) for name, convert in _SCALARS.items()}
    page: dict[str, Any] = {}
    lists: dict[str, list[dict[str, Any]]] = {}
    field = fields.get
    for node in root:
        group = groups.get(node.tag)
        if group is not None:
            item = {f[0]: f[1](child.text or "") for child in node if (f := field(child.tag)) is not None}
            lists.setdefault(group, []).append(item)
        elif node.tag in scalars:
            name, convert = scalars[node.tag]
            page[name] = convert(node.text or "")
    page.update(lists)
    if page.get("EncodingType") == "url":
        for name in _DECODED:
            if name in page:
                page[name] = url_decoded(page[name])
        for group, name in _DECODED_ITEMS:
            for item in page.get(group, ()):
                if name in item:
                    item[name] = url_decoded(item[name])
    return page


def url_decoded(text: str) -> str:
    """``urllib.parse.unquote_plus(text)`` (what botocore decodes with), without its cost for keys whose
    only escape is ``%2F`` (Ceph RGW escapes every ``/``)."""
    plain = text.replace("%2F", "/")
    if "%" in plain or "+" in plain:
        return urllib.parse.unquote_plus(text)
    return plain


def _text(text: str) -> str:
    return text


def _true(text: str) -> bool:
    return text == "true"


def iso_date(text: str) -> str:
    """``botocore.utils.parse_timestamp(text).isoformat()``, the ``LastModified`` records hold: cut from
    S3's fixed format (``2026-01-02T03:04:05.678Z``), parsed by botocore otherwise."""
    if len(text) == _FIXED_LENGTH and _FIXED.fullmatch(text) and (text[8:10] <= "28" or _real_day(text)):
        if text.endswith(".000Z"):
            return f"{text[:19]}+00:00"
        return f"{text[:23]}000+00:00"
    return cast(str, botocore.utils.parse_timestamp(text).isoformat())


def _real_day(text: str) -> bool:
    try:
        datetime.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


_FIELDS: dict[str, Callable[[str], Any]] = {
    "Key": _text,
    "VersionId": _text,
    "IsLatest": _true,
    "LastModified": iso_date,
    "ETag": _text,
    "Size": int,
    "Prefix": _text,
}
_SCALARS: dict[str, Callable[[str], Any]] = {
    "IsTruncated": _true,
    "NextKeyMarker": _text,
    "NextVersionIdMarker": _text,
    "NextContinuationToken": _text,
    "EncodingType": _text,
}
_GROUPS = {
    "Version": "Versions",
    "DeleteMarker": "DeleteMarkers",
    "Contents": "Contents",
    "CommonPrefixes": "CommonPrefixes",
}
_DECODED = ("NextKeyMarker",)
_DECODED_ITEMS = (
    ("Versions", "Key"),
    ("DeleteMarkers", "Key"),
    ("Contents", "Key"),
    ("CommonPrefixes", "Prefix"),
)
