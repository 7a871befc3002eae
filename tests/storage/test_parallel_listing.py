"""Parallel listings (issue 16): a large prefix is listed by several streams at once, with exactly the
records of one sequential listing, and about one request per page of objects.

Pages are made small here (10 keys) so that a few hundred objects are many pages; the requests are counted
on the servers (moto and Ceph RGW for S3, fake-gcs-server, Azurite), and the records compared with one
sequential listing made by the storage's own client, page after page.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

import refstore
from refstore.core.loop import run_sync
from refstore.core.meta import ObjectMeta
from refstore.storage import listing
from refstore.storage.backends import azure as azure_backend
from refstore.storage.backends import gcs as gcs_backend
from refstore.storage.backends import s3 as s3_backend
from refstore.storage.listing import Page, list_in_parallel
from refstore.storage.locations import clear_backends, resolve

S3_SERVERS = ("moto", "rgw")
PAGE = 10


def _layout() -> dict[str, bytes]:
    """Objects under ``data/``: 12 small sub-prefixes, one large one with sub-prefixes of its own, objects of
    the folder itself whose names sort among the sub-prefixes, odd characters."""
    objects = {f"data/p{i:02d}/obj-{j:02d}.bin": b"%d-%d" % (i, j) for i in range(12) for j in range(6)}
    objects.update({f"data/big/s{i}/x{j:02d}": b"big %d %d" % (i, j) for i in range(4) for j in range(10)})
    objects.update({f"data/big/top-{j}": b"top %d" % j for j in range(3)})
    objects.update(
        {
            "data/a.txt": b"a",
            "data/p05": b"an object named like a sub-prefix",
            "data/p05-x/y.txt": b"sorts between p05 and p05/",
            "data/p07/ü b.txt": b"unicode",
            "data/zz.txt": b"last",
        }
    )
    return objects


def _sequential_s3(fs: Any, bucket: str, prefix: str) -> tuple[list[tuple[Any, ...]], int]:
    """Current objects under ``prefix`` from one ListObjectVersions pass, PAGE keys a page; and its pages."""
    found, pages = [], 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE}
    while True:
        answer = fs.call_s3("list_object_versions", **kwargs)
        pages += 1
        for item in answer.get("Versions", []):
            if item["IsLatest"] and not (item["Key"].endswith("/") and item["Size"] == 0):
                version = None if item["VersionId"] == "null" else item["VersionId"]
                found.append((f"s3://{bucket}/{item['Key']}", item["Size"], item["ETag"].strip('"'), version))
        if not answer.get("IsTruncated"):
            return found, pages
        kwargs.update(KeyMarker=answer["NextKeyMarker"], VersionIdMarker=answer["NextVersionIdMarker"])


def _records(listed: list[Any]) -> list[tuple[Any, ...]]:
    return [(m.url, m.size, m.etag, m.version_id) for m in listed]


def _list(url: str) -> list[Any]:
    clear_backends()
    location = resolve(url)
    return run_sync(location.backend.list_prefix, location.path, max_objects=10_000)


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_backend, "LIST_PAGE_SIZE", PAGE)
    monkeypatch.setattr(gcs_backend, "LIST_PAGE_SIZE", PAGE)
    monkeypatch.setattr(azure_backend, "LIST_PAGE_SIZE", PAGE)


def test_s3_parallel_listing_is_exact_and_about_one_request_per_page(
    s3_endpoint: Any, s3_fs: Any, s3_bucket: str, small_pages: None
) -> None:
    objects = _layout()
    s3_fs.pipe({f"{s3_bucket}/{key}": data for key, data in objects.items()})
    s3_fs.pipe({f"{s3_bucket}/data/p03/obj-01.bin": b"overwritten", f"{s3_bucket}/data/p04/gone": b"x"})
    s3_fs.rm(f"{s3_bucket}/data/p04/gone")  # a delete marker: not listed
    s3_fs.call_s3("put_object", Bucket=s3_bucket, Key="data/p09/", Body=b"")  # a folder marker: not listed
    s3_fs.call_s3("put_object", Bucket=s3_bucket, Key="data/p10/", Body=b"data")  # an object ending in /
    expected, pages = _sequential_s3(s3_fs, s3_bucket, "data/")
    assert len(expected) == len(objects) + 1

    mark = s3_endpoint.mark()
    listed = _list(f"s3://{s3_bucket}/data")
    requests = s3_endpoint.requests_since(mark)
    assert _records(listed) == expected  # the same records, in the same order
    assert all(m.version_id for m in listed)
    named = [r for r in requests if "delimiter=" in r]
    assert named, requests  # it split the prefix
    # one request per page of versions, plus the delimiter listings and the last page of each stream
    assert len(requests) <= pages + 2 * len(named) + 16, (len(requests), pages, requests)


def test_s3_bucket_without_versions_goes_on_with_list_objects_v2(
    s3_endpoint: Any, s3_fs: Any, s3_unversioned_bucket: str, small_pages: None
) -> None:
    bucket = s3_unversioned_bucket
    s3_fs.pipe({f"{bucket}/{key}": data for key, data in _layout().items()})
    expected, pages = _sequential_s3(s3_fs, bucket, "data/")
    mark = s3_endpoint.mark()
    listed = _list(f"s3://{bucket}/data")
    requests = s3_endpoint.requests_since(mark)
    assert _records(listed) == expected
    assert all(m.version_id is None for m in listed)
    versions = [r for r in requests if "versions" in r.split("?", 1)[-1].split("&")]
    assert len(versions) == 1, requests  # the first page; then GetBucketVersioning said "never versioned"
    assert sum("versioning" in r for r in requests) == 1
    assert len(requests) <= pages + 24, (len(requests), pages)


def test_a_small_prefix_is_still_one_request(s3_server: Any, s3_fs: Any, s3_bucket: str) -> None:
    s3_fs.pipe({f"{s3_bucket}/few/d{i}/k": b"x" for i in range(5)})
    mark = s3_server.mark()
    assert len(_list(f"s3://{s3_bucket}/few")) == 5
    assert len(s3_server.requests_since(mark)) == 1


def test_max_objects_still_stops_a_parallel_listing(
    s3_server: Any, s3_fs: Any, s3_bucket: str, small_pages: None
) -> None:
    s3_fs.pipe({f"{s3_bucket}/{key}": data for key, data in _layout().items()})
    with pytest.raises(refstore.TooManyObjectsError, match="max_objects=100"):
        refstore.Artifact("a").add_reference(f"s3://{s3_bucket}/data", max_objects=100)


@pytest.mark.parametrize("scheme", ["gs", "az"])
def test_gcs_and_azure_parallel_listings_match_a_sequential_one(
    scheme: str, request: pytest.FixtureRequest, small_pages: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = request.getfixturevalue("gcs_server" if scheme == "gs" else "azurite")
    fs = request.getfixturevalue("gcs_fs" if scheme == "gs" else "azure_fs")
    bucket = request.getfixturevalue("gcs_bucket" if scheme == "gs" else "azure_container")
    objects = _layout()
    fs.pipe({f"{bucket}/{key}": data for key, data in objects.items()})
    mark = server.mark()
    listed = _list(f"{scheme}://{bucket}/data")
    requests = server.requests_since(mark)
    monkeypatch.setenv("REFSTORE_LIST_CONCURRENCY", "1")
    one = _list(f"{scheme}://{bucket}/data")  # one stream: a sequential listing
    assert [(m.url, m.size, m.digest, m.etag, m.version_id) for m in listed] == [
        (m.url, m.size, m.digest, m.etag, m.version_id) for m in one
    ]
    assert sorted(m.url for m in listed) == sorted(f"{scheme}://{bucket}/{k}" for k in objects)
    assert any("delimiter" in r for r in requests), requests
    assert len(requests) <= math.ceil(len(objects) / PAGE) + 40, len(requests)


# -- the splitting itself, over every shape of tree ---------------------------------------------------------


class _MemoryPages:
    """A sorted key list served page by page like an object store (folder markers listed, not taken),
    yielding to the event loop a random number of times per page so that streams interleave."""

    def __init__(self, keys: list[str], page: int, starts: bool, pauses: list[int]) -> None:
        self.keys, self.page, self.starts, self.pauses = sorted(set(keys)), page, starts, pauses
        self.requests = 0
        self.early = 0  # requests for a next page made before the consumer took the page before it
        self.delimited = 0  # delimiter listings

    async def pages(
        self,
        prefix: str,
        *,
        delimiter: bool = False,
        start_after: str | None = None,
        ahead: Callable[[Page], bool] | None = None,
    ) -> AsyncGenerator[Page, None]:
        """Pages asked for early as S3's are: the next page's request is counted when ``ahead`` says it
        will be wanted, whether the consumer then takes it or stops."""
        self.delimited += delimiter
        under = [
            k
            for k in self.keys
            if k.startswith(prefix) and (not self.starts or not start_after or k > start_after)
        ]
        items: list[tuple[str, bool]] = []  # (key or common prefix, is a prefix)
        for key in under:
            cut = key.find("/", len(prefix)) if delimiter else -1
            if cut < 0:
                items.append((key, False))
            elif not items or items[-1] != (key[: cut + 1], True):
                items.append((key[: cut + 1], True))
        asked = False  # the next page's request counted already (asked for early)
        for start in range(0, max(len(items), 1), self.page):
            self.requests += not asked
            for _ in range(self.pauses[self.requests % len(self.pauses)]):
                await asyncio.sleep(0)
            chunk = items[start : start + self.page]
            keys = [k for k, is_prefix in chunk if not is_prefix]
            entries = [(k, ObjectMeta(f"mem://{k}", 0)) for k in keys if not k.endswith("/")]
            more = start + self.page < len(items)
            page = Page(entries, keys[-1] if keys else None, more, [k for k, p in chunk if p])
            asked = more and ahead is not None and ahead(page)
            self.requests += asked
            self.early += asked
            yield page


def _random_case(rng: random.Random) -> tuple[list[str], int, bool, list[int], int, bool]:
    """Keys of names that sort around ``/`` (``-`` and ``.`` before it; empty names make ``a//b``), a page
    size, whether the storage starts at a key, pauses, streams, and whether splits are made wherever they
    can be (the thresholds that keep them worth their requests are off)."""
    names = ["a", "b", "ab", "a-", "a.", "-", ""]
    keys = [
        "root/" + "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))
        for _ in range(rng.randint(5, 60))
    ]
    pauses = [rng.randint(0, 3) for _ in range(5)]
    return keys, rng.randint(1, 6), rng.random() < 0.5, pauses, rng.randint(1, 8), rng.random() < 0.8


def test_every_key_is_listed_exactly_once_whatever_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 random trees, page sizes, numbers of streams and interleavings (seeded: a failure names its
    case), against the keys themselves."""
    rng = random.Random(16)
    splits = early = 0
    for case in range(2000):
        keys, page, starts, pauses, streams, eager = _random_case(rng)
        keys += ["rootless", "root"]
        source = _MemoryPages(keys, page, starts, pauses)
        monkeypatch.setattr(listing, "KEYS_PER_SUBPREFIX", 1 if eager else 10)
        monkeypatch.setattr(listing, "PAGES_PER_STREAM", 0.01 if eager else 2)
        found = asyncio.run(
            list_in_parallel(source, "root/", max_objects=10**6, too_many=RuntimeError, streams=streams)
        )
        expected = sorted({k for k in keys if k.startswith("root/") and not k.endswith("/")})
        assert [m.url for m in found] == [f"mem://{k}" for k in expected], (case, sorted(set(keys)))
        splits += source.delimited > 0
        early += source.early > 0
    assert splits > 1000  # most cases were split
    assert early > 1000  # and most asked for pages early


def test_one_stream_asks_for_each_page_early_and_once() -> None:
    """A stream that reads to the end asks for its next page while it takes one, and never asks twice."""
    keys = [f"root/k{i:03d}" for i in range(95)]
    source = _MemoryPages(keys, 10, True, [1])
    found = asyncio.run(
        list_in_parallel(source, "root/", max_objects=10**6, too_many=RuntimeError, streams=1)
    )
    assert [m.url for m in found] == [f"mem://{k}" for k in keys]
    assert (source.requests, source.early) == (10, 9)
