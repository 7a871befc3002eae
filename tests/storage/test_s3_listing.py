"""S3 listing pages parsed by refstore (issue 18, ``refstore.storage.backends.s3_listing``) give exactly what
botocore's parser gives, on moto and Ceph RGW: every field a listing reads, page by page (odd keys, versions,
delete markers, IsLatest, the pagination markers, common prefixes, ListObjectsV2), the records of whole
listings, the same requests, and the same errors. ``REFSTORE_S3_LISTING=botocore`` is the old parser.
"""

from __future__ import annotations

import contextlib
from typing import Any

import botocore.handlers
import botocore.session
import pytest
from fsspec.asyn import sync

import refstore
from refstore.core.loop import run_sync
from refstore.storage.backends import s3 as s3_backend
from refstore.storage.backends import s3_listing
from refstore.storage.locations import clear_backends, resolve

S3_SERVERS = ("moto", "rgw")

#: Keys with the characters URL-encoding and XML have to carry (botocore asks for EncodingType=url).
ODD_KEYS = [
    "data/sp ace.txt",
    "data/100%.txt",
    "data/%2F-looks-escaped",
    "data/a+b.txt",
    "data/ünï/çödé ✓.txt",
    "data/q?x.txt",
    "data/h#1.txt",
    "data/amp&lt;<>\"'.txt",
    "data/tab\tx.txt",
    "data/dir/",  # a folder marker (empty) and an object ending in / (not empty) below
    "data/full/",
    "data/x/y/z.bin",
]
#: Where the server takes it (Ceph RGW does, moto answers 404).
NEWLINE_KEY = "data/new\nline.txt"
_ITEM_FIELDS = ("Key", "VersionId", "IsLatest", "ETag", "Size", "LastModified")


def _fill(fs: Any, bucket: str, versioned: bool) -> int:
    """The objects of ODD_KEYS and data/many/, versions and delete markers; how many objects are current
    (not counting the folder marker)."""
    for i, key in enumerate(ODD_KEYS):
        body = b"" if key == "data/dir/" else b"%d" % i
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body)
    current = len(ODD_KEYS) - 1 + 7
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=NEWLINE_KEY, Body=b"newline")
        current += 1
    except FileNotFoundError:
        pass
    for i in range(7):
        fs.call_s3("put_object", Bucket=bucket, Key=f"data/many/k{i:02d}", Body=b"x" * i)
    if versioned:
        for key in ("data/a+b.txt", "data/many/k03", "data/sp ace.txt"):
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"second version")
        for key in ("data/100%.txt", "data/many/k05", "data/sp ace.txt"):
            fs.call_s3("delete_object", Bucket=bucket, Key=key)  # delete markers
        current -= 3
    return current


async def _call(fs: Any, method: str, raw: bool, **kwargs: Any) -> Any:
    await fs.set_session()
    s3_listing.install(fs._s3)
    if not raw:
        return await fs._call_s3(method, **kwargs)
    with s3_listing.raw():
        return await fs._call_s3(method, **kwargs)


def _botocore_fields(answer: dict[str, Any]) -> dict[str, Any]:
    """The fields listings read from botocore's answer, dates as the ISO strings records hold."""
    out: dict[str, Any] = {}
    for name in ("IsTruncated", "NextKeyMarker", "NextVersionIdMarker", "NextContinuationToken"):
        if name in answer:
            out[name] = answer[name]
    for group in ("Versions", "DeleteMarkers", "Contents"):
        if group in answer:
            out[group] = [
                {
                    k: (v.isoformat() if k == "LastModified" else v)
                    for k, v in item.items()
                    if k in _ITEM_FIELDS
                }
                for item in answer[group]
            ]
    if "CommonPrefixes" in answer:
        out["CommonPrefixes"] = [{"Prefix": p["Prefix"]} for p in answer["CommonPrefixes"]]
    return out


def _ours(page: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in page.items() if k != "EncodingType"}


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
@pytest.mark.parametrize("delimiter", [False, True], ids=["flat", "delimiter"])
def test_every_page_parses_as_botocore_parses_it(
    s3_fs: Any, s3_bucket: str, s3_unversioned_bucket: str, versioned: bool, delimiter: bool
) -> None:
    bucket = s3_bucket if versioned else s3_unversioned_bucket
    current = _fill(s3_fs, bucket, versioned)
    for method in ("list_object_versions", "list_objects_v2"):
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": "data/", "MaxKeys": 1}
        if delimiter:
            kwargs["Delimiter"] = "/"
        pages, seen = 0, {"Versions": 0, "DeleteMarkers": 0, "Contents": 0, "CommonPrefixes": 0}
        while pages < 200:
            expected = _botocore_fields(sync(s3_fs.loop, _call, s3_fs, method, False, **kwargs))
            answer = sync(s3_fs.loop, _call, s3_fs, method, True, **kwargs)
            assert s3_listing.RESULT in answer, answer
            assert not {"Versions", "DeleteMarkers", "Contents", "CommonPrefixes"} & set(answer)  # botocore's
            assert _ours(answer[s3_listing.RESULT]) == expected, (method, kwargs)
            pages += 1
            for group in seen:
                seen[group] += len(expected.get(group, ()))
            if not expected.get("IsTruncated"):
                break
            if method == "list_object_versions":
                # from the one key listed (Ceph RGW's NextKeyMarker is not URL-encoded, but botocore
                # decodes it: a page ending at "a+b.txt" would go on from "a b.txt")
                last = max(
                    [
                        (i["Key"], i["VersionId"])
                        for g in ("Versions", "DeleteMarkers")
                        for i in expected.get(g, ())
                    ]
                    + [(p["Prefix"], "") for p in expected.get("CommonPrefixes", ())]
                )
                kwargs["KeyMarker"] = last[0]
                kwargs.pop("VersionIdMarker", None)
                if last[1]:
                    kwargs["VersionIdMarker"] = last[1]
            else:
                kwargs["ContinuationToken"] = expected["NextContinuationToken"]
        assert 3 <= pages < 200
        if method == "list_object_versions" and versioned and not delimiter:
            assert seen["Versions"] == current + 1 + 3 + 3  # the folder marker, 3 overwritten, 3 deleted
            assert seen["DeleteMarkers"] == 3
        if delimiter:
            assert seen["CommonPrefixes"] >= 4


def _listing(url: str, monkeypatch: pytest.MonkeyPatch, parser: str) -> list[Any]:
    monkeypatch.delenv("REFSTORE_S3_CLIENT", raising=False)  # s3fs as the client keeps botocore's parser
    monkeypatch.setenv(s3_listing.LISTING_VARIABLE, parser)
    clear_backends()
    location = resolve(url)
    return run_sync(location.backend.list_prefix, location.path, max_objects=10_000)


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_listings_give_the_same_records_and_requests_both_ways(
    s3_endpoint: Any,
    s3_fs: Any,
    s3_bucket: str,
    s3_unversioned_bucket: str,
    versioned: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3_bucket if versioned else s3_unversioned_bucket
    current = _fill(s3_fs, bucket, versioned)
    for i in range(12):  # sub-prefixes of several keys each: the listing is split into streams
        s3_fs.pipe({f"{bucket}/data/s{i:02d}/f{j}": b"%d" % j for j in range(4)})
    monkeypatch.setattr(s3_backend, "LIST_PAGE_SIZE", 4)
    parsed: list[int] = []
    real_parse = s3_listing.parse

    def counted(body: bytes) -> Any:
        page = real_parse(body)
        parsed.append(page is not None)
        return page

    monkeypatch.setattr(s3_listing, "parse", counted)
    fast = _listing(f"s3://{bucket}/data", monkeypatch, "")  # split into streams
    assert parsed and all(parsed)  # every page was parsed by s3_listing
    parsed.clear()
    slow = _listing(f"s3://{bucket}/data", monkeypatch, "botocore")
    assert not parsed
    assert fast == slow  # every field of every record, in the same order
    # no key twice: Ceph RGW sends NextKeyMarker not URL-encoded and botocore decodes it, so a page that
    # ends at "a+b.txt" went on from "a b.txt" and listed it again (s3._next_key_marker)
    assert len(fast) == len({m.url for m in fast}) == current + 48
    assert all(m.last_modified for m in fast)

    # one stream (the splits of parallel streams follow timing): the very same requests
    monkeypatch.setenv("REFSTORE_LIST_CONCURRENCY", "1")
    requests = []
    for parser in ("", "botocore"):
        mark = s3_endpoint.mark()
        assert _listing(f"s3://{bucket}/data", monkeypatch, parser) == slow
        requests.append(s3_endpoint.requests_since(mark))
    assert requests[0] == requests[1] and len(requests[0]) > 10


def test_s3fs_client_keeps_botocores_parser(
    s3_endpoint: Any, s3_fs: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(s3_fs, s3_bucket, True)
    monkeypatch.setenv("REFSTORE_S3_CLIENT", "s3fs")

    def refused(body: bytes) -> Any:
        raise AssertionError("parsed by s3_listing")

    monkeypatch.setattr(s3_listing, "parse", refused)
    clear_backends()
    location = resolve(f"s3://{s3_bucket}/data")
    assert run_sync(location.backend.list_prefix, location.path, max_objects=100)


def test_errors_are_told_as_before(s3_endpoint: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    told = []
    for parser in ("", "botocore"):
        with pytest.raises(refstore.RefstoreError) as caught:
            _listing("s3://no-such-bucket-for-listing/data", monkeypatch, parser)
        told.append((type(caught.value), str(caught.value)))
    assert told[0] == told[1]
    assert "no such bucket" in told[0][1]


def test_a_200_error_body_is_still_botocores_500() -> None:
    """The handler replaces botocore's check for an ``<Error>`` in a 200 answer: what it does not take as a
    listing still gets that check (a 500, retried), inside a listing call and out."""
    client = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    s3_listing.install(client)
    s3_listing.install(client)
    model = client.meta.service_model.operation_model("ListObjectVersions")

    def before_parse(body: bytes, raw: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        response = {"status_code": 200, "body": body, "headers": {}}
        custom: dict[str, Any] = {}
        with s3_listing.raw() if raw else contextlib.nullcontext():
            client.meta.events.emit(
                "before-parse.s3.ListObjectVersions",
                operation_model=model,
                response_dict=response,
                customized_response_dict=custom,
            )
        return response, custom

    for raw in (False, True):
        for body in (b"<Error><Code>InternalError</Code></Error>", b"<ListVersionsResult><IsTrunc"):
            response, custom = before_parse(body, raw)
            assert response["status_code"] == 500 and response["body"] == body and not custom
    listing = b'<ListVersionsResult xmlns="x"><IsTruncated>false</IsTruncated></ListVersionsResult>'
    response, custom = before_parse(listing, True)
    assert response == {"status_code": 200, "body": b"", "headers": {}}
    assert custom == {s3_listing.RESULT: {"IsTruncated": False}}
    response, custom = before_parse(listing, False)  # outside a listing call: botocore parses it
    assert response["body"] == listing and not custom
    handlers = list(client.meta.events._emitter._handlers.prefix_search("before-parse.s3.ListObjectVersions"))
    assert botocore.handlers._handle_200_error not in handlers
    assert handlers.count(s3_listing._before_parse) == 1


def test_dates_and_keys_convert_as_botocore_converts_them() -> None:
    import urllib.parse

    import botocore.utils

    for text in (
        "2026-12-02T04:33:38.441Z",
        "2026-12-02T04:33:38.000Z",
        "2024-02-29T23:59:59.999Z",
        "2026-12-02T04:33:38Z",
        "2026-12-02T04:33:38.123456Z",
        "Wed, 02 Dec 2026 04:33:38 GMT",
    ):
        assert s3_listing.iso_date(text) == botocore.utils.parse_timestamp(text).isoformat(), text
    with pytest.raises(ValueError):
        s3_listing.iso_date("2026-02-30T00:00:00.000Z")
    for key in ("p%2Ff.bin", "a%2fb", "a+b", "a%2Bb", "%E2%9C%93%2F", "plain", "100%", "%2F%2"):
        assert s3_listing.url_decoded(key) == urllib.parse.unquote_plus(key), key
