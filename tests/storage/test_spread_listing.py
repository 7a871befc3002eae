"""Listings on a Dask cluster (issue 16): with ``executor=``, the sub-prefixes of an S3 / GCS / Azure prefix
are listed by tasks on the workers, and the reference is exactly the one made without an executor."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import pytest
from dask_support import OnWorkers

import refstore
from refstore.storage import spread_listing
from refstore.storage.backends import azure as azure_backend
from refstore.storage.backends import gcs as gcs_backend
from refstore.storage.backends import s3 as s3_backend
from refstore.storage.locations import clear_backends

PAGE = 10


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_backend, "LIST_PAGE_SIZE", PAGE)
    monkeypatch.setattr(gcs_backend, "LIST_PAGE_SIZE", PAGE)
    monkeypatch.setattr(azure_backend, "LIST_PAGE_SIZE", PAGE)


def _layout(top: str) -> dict[str, bytes]:
    """14 sub-prefixes of ``top`` (one large, with sub-prefixes of its own), objects of the folder itself
    whose names sort among them, odd characters."""
    objects = {f"{top}/p{i:02d}/obj-{j:02d}.bin": b"%d-%d" % (i, j) for i in range(12) for j in range(6)}
    objects.update({f"{top}/big/s{i}/x{j:02d}": b"big %d %d" % (i, j) for i in range(4) for j in range(12)})
    objects.update(
        {
            f"{top}/a.txt": b"a",
            f"{top}/p05": b"an object named like a sub-prefix",
            f"{top}/p05-x/y.txt": b"sorts between p05 and p05/",
            f"{top}/p05.y": b"sorts between p05 and p05/ too",
            f"{top}/p07/\u00fc b.txt": b"unicode",
            f"{top}/zz.txt": b"last",
        }
    )
    return objects


def _reference(url: str, executor: Executor | None) -> list[refstore.ManifestEntry]:
    clear_backends()  # each listing from a fresh backend
    return refstore.Artifact("a").add_reference(url, max_objects=10_000, executor=executor)


@pytest.mark.parametrize("tasks", [64, 4])
def test_an_s3_listing_on_dask_workers_is_the_listing_without_them(
    tasks: int,
    s3_endpoint: Any,
    s3_fs: Any,
    s3_bucket: str,
    small_pages: None,
    on_workers: OnWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 tasks: one sub-prefix each; 4 tasks: runs of sub-prefixes. The large sub-prefix is listed by
    several streams on its worker; requests stay near one per page of objects."""
    monkeypatch.setattr(spread_listing, "TASKS", tasks)
    objects = _layout("root/data")  # root/ holds data/ only: the driver goes down to it
    s3_fs.pipe({f"{s3_bucket}/{key}": data for key, data in objects.items()})
    s3_fs.pipe(
        {f"{s3_bucket}/root/data/p03/obj-01.bin": b"overwritten", f"{s3_bucket}/root/data/p04/g": b"x"}
    )
    s3_fs.rm(f"{s3_bucket}/root/data/p04/g")  # a delete marker: not listed
    s3_fs.call_s3("put_object", Bucket=s3_bucket, Key="root/data/p09/", Body=b"")  # a folder marker

    alone = _reference(f"s3://{s3_bucket}/root", None)
    mark = s3_endpoint.mark()
    spread = _reference(f"s3://{s3_bucket}/root", on_workers)
    requests = s3_endpoint.requests_since(mark)

    assert spread == alone  # the same entries (refs, ETags, version ids), in the same order
    assert len(spread) == len(objects) and all(e.version_id for e in spread)
    assert [name for name, _ in on_workers.ran] == ["list_run"] * min(tasks, 14)
    assert len({worker for _, worker in on_workers.ran}) >= 1
    pages = -(-len(objects) // PAGE)  # at most one request more per sub-prefix and per delimiter listing
    assert len(requests) <= pages + 2 * 14 + 10, (len(requests), pages)


def test_an_s3_bucket_without_versions_is_listed_on_workers_too(
    s3_fs: Any, s3_unversioned_bucket: str, small_pages: None, on_workers: OnWorkers
) -> None:
    bucket = s3_unversioned_bucket
    s3_fs.pipe({f"{bucket}/{key}": data for key, data in _layout("data").items()})
    alone = _reference(f"s3://{bucket}/data", None)
    assert _reference(f"s3://{bucket}/data", on_workers) == alone
    assert on_workers.ran and all(e.version_id is None for e in alone)


def test_max_objects_stops_a_listing_on_workers(
    s3_fs: Any, s3_bucket: str, small_pages: None, on_workers: OnWorkers
) -> None:
    s3_fs.pipe({f"{s3_bucket}/{key}": data for key, data in _layout("data").items()})
    with pytest.raises(refstore.TooManyObjectsError, match="max_objects=100"):
        refstore.Artifact("a").add_reference(f"s3://{s3_bucket}/data", max_objects=100, executor=on_workers)


@pytest.mark.parametrize("scheme", ["gs", "az"])
def test_gcs_and_azure_listings_on_dask_workers_are_the_listings_without_them(
    scheme: str,
    request: pytest.FixtureRequest,
    small_pages: None,
    on_workers: OnWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spread_listing, "TASKS", 4)  # runs of sub-prefixes, and the large one alone
    fs = request.getfixturevalue("gcs_fs" if scheme == "gs" else "azure_fs")
    bucket = request.getfixturevalue("gcs_bucket" if scheme == "gs" else "azure_container")
    objects = _layout("data")
    fs.pipe({f"{bucket}/{key}": data for key, data in objects.items()})
    alone = _reference(f"{scheme}://{bucket}/data", None)
    assert _reference(f"{scheme}://{bucket}/data", on_workers) == alone
    assert len(alone) == len(objects) and len(on_workers.ran) == 4
