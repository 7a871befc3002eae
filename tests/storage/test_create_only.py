"""Create-only writes that cannot lie (issue 13), on moto, on Ceph RGW and on a server that ignores them.

Ceph RGW ignores ``If-None-Match: *`` in versioned buckets; its 412 in unversioned ones names no condition.
Each registry is probed once (``storage.json``) and then either trusts create-only writes, claims keys by
their oldest object version, or refuses to write. "A server that ignores create-only writes" is also played
by moto behind a proxy that drops the ``If-None-Match`` header (moto checks no signatures).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from servers import RGWServer

import refstore
from refstore.snapshots.gc import LOCK, collect_garbage
from refstore.storage.claims import MARKER
from refstore.storage.store import Store

S3_SERVERS = ("moto", "rgw")


@pytest.fixture(params=["versioned", "unversioned"])
def bucket(request: pytest.FixtureRequest, s3_endpoint: Any) -> str:
    return str(
        request.getfixturevalue("s3_bucket" if request.param == "versioned" else "s3_unversioned_bucket")
    )


def _expected_mode(s3_endpoint: Any, s3_fs: Any, bucket: str) -> str:
    versioned = s3_fs.call_s3("get_bucket_versioning", Bucket=bucket).get("Status") == "Enabled"
    return "oldest-version" if isinstance(s3_endpoint, RGWServer) and versioned else "refused"


def _versions(s3_fs: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    listing = s3_fs.call_s3("list_object_versions", Bucket=bucket, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


def test_the_probe_is_kept_in_the_registry(s3_endpoint: Any, s3_fs: Any, bucket: str) -> None:
    store = Store(f"s3://{bucket}/registry", None)
    store.create("first.json", b"1")
    marker = json.loads(s3_fs.cat_file(f"{bucket}/registry/{MARKER}"))
    assert marker["create_only"] == _expected_mode(s3_endpoint, s3_fs, bucket)
    s3_fs.invalidate_cache()
    assert not s3_fs.find(f"{bucket}/registry/probes"), "the probe key is left behind"
    assert not s3_fs.call_s3("list_object_versions", Bucket=bucket, Prefix="registry/probes").get("Versions")


def test_a_second_create_is_refused_and_the_first_bytes_stay(s3_fs: Any, bucket: str) -> None:
    """On RGW's versioned buckets the second PUT is stored anyway; the writer still gets FileExistsError,
    its version is removed, and readers read the first."""
    first, second = Store(f"s3://{bucket}/registry", None), Store(f"s3://{bucket}/registry", None)
    first.create("versions/0.json", b"first writer")
    with pytest.raises(FileExistsError, match=f"s3://{bucket}/registry/versions/0.json"):
        second.create("versions/0.json", b"second writer")
    assert first.read_created("versions/0.json") == second.read_created("versions/0.json") == b"first writer"
    assert s3_fs.cat_file(f"{bucket}/registry/versions/0.json") == b"first writer"
    assert len(_versions(s3_fs, bucket, "registry/versions/0.json")) == 1


def test_concurrent_creates_of_one_key_have_one_winner(s3_fs: Any, bucket: str) -> None:
    stores = [Store(f"s3://{bucket}/registry", None) for _ in range(8)]
    stores[0].create("warm.json", b"probe done")  # the race is about the key, not about the probe
    outcomes: dict[int, str] = {}
    go = threading.Barrier(len(stores))

    def claim(i: int) -> None:
        go.wait()
        try:
            stores[i].create("gc.lock", f"writer {i}".encode())
            outcomes[i] = "won"
        except FileExistsError:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == len(stores) and len(winners) == 1, outcomes
    assert stores[3].read_created("gc.lock") == f"writer {winners[0]}".encode()


def test_sequential_registries_share_one_bucket(tmp_path: Path, bucket: str) -> None:
    """Finding 2: a second writer's refused create-only write (RGW's 412 names no condition) is not an
    ``OSError(EINVAL)``; two logs of the same file into one registry both work."""
    source = tmp_path / "f.txt"
    source.write_text("same content")
    root = f"s3://{bucket}/registry"
    for name in ("first", "second", "first"):
        artifact = refstore.Artifact(name)
        artifact.add_file(source)
        refstore.Registry(root).log(artifact)
    assert [v.version for v in refstore.Registry(root).versions("first")] == [0]
    assert refstore.Registry(root).get("second").open("f.txt").read() == b"same content"


def test_gc_respects_a_planted_lock(tmp_path: Path, s3_fs: Any, bucket: str) -> None:
    """Finding 1: on RGW's versioned buckets a gc's create-only gc.lock used to overwrite a running gc's."""
    root = f"s3://{bucket}/registry"
    artifact = refstore.Artifact("data")
    (tmp_path / "f.txt").write_text("x")
    artifact.add_file(tmp_path / "f.txt")
    registry = refstore.Registry(root)
    registry.log(artifact)
    planted = json.dumps({"created_at": "2999-01-01T00:00:00+00:00", "host": "other", "pid": 1}).encode()
    registry.store.create(LOCK, planted)
    with pytest.raises(refstore.ConflictError, match="another gc is running"):
        collect_garbage(refstore.Registry(root), yes=True)
    assert refstore.Registry(root).store.read_created(LOCK) == planted


# -- a server that ignores If-None-Match -----------------------------------------------------------------


@pytest.fixture
def ignoring(s3_server: Any) -> Iterator[FaultProxy]:
    """moto behind a proxy that drops If-None-Match: create-only writes are accepted like any PUT."""
    proxy = FaultProxy(s3_server.endpoint_url).start()
    proxy.drop_request_headers = {"if-none-match"}
    yield proxy
    proxy.stop()


def test_without_versions_the_first_write_is_refused_with_what_to_do(
    ignoring: FaultProxy, s3_fs: Any, s3_unversioned_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_unversioned_bucket}/registry"
    (tmp_path / "f.txt").write_text("x")
    artifact = refstore.Artifact("data")
    artifact.add_file(tmp_path / "f.txt")
    registry = refstore.Registry(root, storage_options={"endpoint_url": ignoring.url})
    with pytest.raises(
        refstore.RefstoreError, match=r"If-None-Match.*enable versioning on the bucket"
    ) as info:
        registry.log(artifact)
    assert root in str(info.value)
    s3_fs.invalidate_cache()
    assert not s3_fs.find(f"{s3_unversioned_bucket}/registry/artifacts"), "a version was written"
    assert not s3_fs.exists(f"{s3_unversioned_bucket}/registry/{MARKER}"), "the refusal is kept"


def test_with_versions_claims_hold_where_if_none_match_is_ignored(
    ignoring: FaultProxy, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    options = {"endpoint_url": ignoring.url}
    root = f"s3://{s3_bucket}/registry"
    stores = [Store(root, options) for _ in range(2)]
    stores[0].create("versions/0.json", b"first")
    with pytest.raises(FileExistsError):
        stores[1].create("versions/0.json", b"second")
    assert stores[1].read_created("versions/0.json") == b"first"
    assert json.loads(s3_fs.cat_file(f"{s3_bucket}/registry/{MARKER}"))["create_only"] == "oldest-version"
    assert any(request.startswith("PUT") for request in ignoring.requests)


def test_versioning_turned_on_after_the_probe(
    s3_endpoint: Any, s3_fs: Any, s3_unversioned_bucket: str
) -> None:
    """The probe ran on an unversioned bucket (RGW honours create-only writes there); then versioning was
    turned on (RGW now ignores them). The next create-only write notices the version it made, probes again
    and settles as a claim: the key's first bytes stay, the second writer gets FileExistsError."""
    bucket, root = s3_unversioned_bucket, f"s3://{s3_unversioned_bucket}/registry"
    Store(root, None).create("versions/0.json", b"before versioning")
    assert json.loads(s3_fs.cat_file(f"{bucket}/registry/{MARKER}"))["versions"] is False
    s3_fs.call_s3("put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    later = Store(root, None)
    with pytest.raises(FileExistsError, match=f"{root}/versions/0.json"):
        later.create("versions/0.json", b"after versioning")
    assert later.read_created("versions/0.json") == b"before versioning"
    assert Store(root, None).read_created("versions/0.json") == b"before versioning"
    s3_fs.invalidate_cache()
    assert s3_fs.cat_file(f"{bucket}/registry/versions/0.json") == b"before versioning"
    marker = json.loads(s3_fs.cat_file(f"{bucket}/registry/{MARKER}"))
    if isinstance(s3_endpoint, RGWServer):  # probed again
        assert (marker["create_only"], marker["versions"]) == ("oldest-version", True)
    else:  # moto refused the write as before: nothing to notice
        assert marker["create_only"] == "refused"
