"""The conformance suite: the same behaviour on every backend's real server.

Run once per backend: S3 (versioned and unversioned buckets, moto and Ceph RGW), GCS (versioned and
unversioned, fake-gcs-server), Azure (Azurite), HTTP (aiohttp) and local files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sources import Source, make_source

import refstore

#: Ceph RGW (RADOS store): the same S3 tests against a real S3 implementation.
RGW = pytest.param("rgw", marks=pytest.mark.s3_server("rgw"))
RGW_UNVERSIONED = pytest.param("rgw-unversioned", marks=pytest.mark.s3_server("rgw"))
KINDS = ["s3", "s3-unversioned", RGW, RGW_UNVERSIONED, "gcs", "gcs-unversioned", "azure", "http", "local"]
LISTABLE = [k for k in KINDS if k != "http"]
REGISTRY_KINDS = ["s3", RGW, RGW_UNVERSIONED, "gcs", "azure", "local"]


def refstore_url(url: str) -> str:
    """How refstore writes a URL in a manifest: local paths become ``file://`` URLs."""
    return url if "://" in url else f"file://{url}"


@pytest.fixture(params=KINDS)
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    return make_source(request.param, request, tmp_path)


@pytest.fixture(params=LISTABLE)
def listable(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    return make_source(request.param, request, tmp_path)


@pytest.fixture(params=REGISTRY_KINDS)
def registry_source(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    return make_source(request.param, request, tmp_path)


def _populate(source: Source) -> dict[str, bytes]:
    files = {"data/a.txt": b"alpha\n", "data/sub/b.bin": bytes(range(256)) * 40, "data/empty": b""}
    for key, data in files.items():
        source.put(key, data)
    source.put("data2/not-me.txt", b"sibling prefix")
    if source.kind not in ("local", "http"):
        source.put("data/folder/", b"")  # a folder marker
    return {k.removeprefix("data/"): v for k, v in files.items()}


def test_prefix_reference_round_trip(listable: Source, tmp_path: Path) -> None:
    expected = _populate(listable)
    artifact = refstore.Artifact("ds")
    entries = artifact.add_reference(listable.url("data"))
    assert sorted(e.path for e in entries) == sorted(expected)
    for entry in entries:
        assert entry.size == len(expected[entry.path])
        assert entry.ref == refstore_url(listable.url(f"data/{entry.path}"))
        assert ":" in entry.digest
    version = refstore.Registry().log(artifact)
    assert version.qualified_name == "ds:v0"
    target = version.download(tmp_path / "out")
    for path, data in expected.items():
        assert (target / path).read_bytes() == data
    assert not any(p.name.startswith(".") for p in target.rglob("*"))


def test_prefix_with_trailing_slash_and_name_folder(listable: Source) -> None:
    _populate(listable)
    artifact = refstore.Artifact("ds")
    entries = artifact.add_reference(listable.url("data/sub/"), name="nested/here")
    assert [e.path for e in entries] == ["nested/here/b.bin"]


def test_single_object_reference(source: Source, tmp_path: Path) -> None:
    source.put("dir/one.csv", b"a,b\n1,2\n")
    artifact = refstore.Artifact("single")
    (entry,) = artifact.add_reference(source.url("dir/one.csv"))
    assert (entry.path, entry.size) == ("one.csv", 8)
    (renamed,) = refstore.Artifact("other").add_reference(source.url("dir/one.csv"), name="tables/x.csv")
    assert renamed.path == "tables/x.csv"
    version = refstore.Registry().log(artifact)
    assert (version.download(tmp_path / "o") / "one.csv").read_bytes() == b"a,b\n1,2\n"
    with version.open("one.csv") as handle:
        assert handle.read() == b"a,b\n1,2\n"


def test_missing_object_raises_object_not_found(source: Source) -> None:
    source.put("present.txt", b"x")
    with pytest.raises(refstore.ObjectNotFoundError, match=r"absent\.txt"):
        refstore.Artifact("x").add_reference(source.url("absent.txt"))


def test_overwritten_object_gives_old_bytes_or_a_clear_error(source: Source, tmp_path: Path) -> None:
    source.put("d/f.txt", b"original bytes")
    artifact = refstore.Artifact("pinned")
    artifact.add_reference(source.url("d/f.txt"))
    version = refstore.Registry().log(artifact)
    source.put("d/f.txt", b"new and longer bytes")
    if source.keeps_versions:
        assert (version.download(tmp_path / "out") / "f.txt").read_bytes() == b"original bytes"
        assert version.open("f.txt").read() == b"original bytes"
    else:
        with pytest.raises(refstore.ObjectChangedError, match=r"d/f\.txt"):
            version.download(tmp_path / "out")
        assert not (tmp_path / "out" / "f.txt").exists()
        assert not list((tmp_path / "out").glob(".*")) if (tmp_path / "out").exists() else True
        with pytest.raises(refstore.ObjectChangedError, match=r"d/f\.txt"):
            version.open("f.txt").read()


def test_deleted_object(source: Source, tmp_path: Path) -> None:
    source.put("d/gone.txt", b"soon deleted")
    artifact = refstore.Artifact("gone")
    artifact.add_reference(source.url("d/gone.txt"))
    version = refstore.Registry().log(artifact)
    source.delete("d/gone.txt")
    if source.keeps_versions:
        assert (version.download(tmp_path / "out") / "gone.txt").read_bytes() == b"soon deleted"
    else:
        with pytest.raises(refstore.ObjectChangedError, match=r"gone\.txt"):
            version.download(tmp_path / "out")


def test_open_supports_seek_and_ranges(source: Source) -> None:
    data = bytes(range(256)) * 1000
    source.put("big.bin", data)
    artifact = refstore.Artifact("big")
    artifact.add_reference(source.url("big.bin"))
    version = refstore.Registry().log(artifact)
    with version.open("big.bin") as handle:
        handle.seek(len(data) - 8)
        assert handle.read() == data[-8:]
        handle.seek(1000)
        assert handle.read(10) == data[1000:1010]


def test_max_objects_is_an_error_never_a_truncation(listable: Source) -> None:
    for i in range(5):
        listable.put(f"many/{i}.txt", b"x")
    with pytest.raises(refstore.TooManyObjectsError, match=r"max_objects=3"):
        refstore.Artifact("many").add_reference(listable.url("many"), max_objects=3)
    assert len(refstore.Artifact("many").add_reference(listable.url("many"), max_objects=5)) == 5


def test_checksum_false_records_locations_only(listable: Source, tmp_path: Path) -> None:
    listable.put("loose/a.txt", b"first")
    artifact = refstore.Artifact("loose")
    (entry,) = artifact.add_reference(listable.url("loose"), checksum=False)
    assert entry.digest.startswith("ref:") and entry.etag is None and entry.version_id is None
    version = refstore.Registry().log(artifact)
    listable.put("loose/a.txt", b"second, unchecked")
    assert (version.download(tmp_path / "o") / "a.txt").read_bytes() == b"second, unchecked"


def test_verify_reports_drift_from_metadata(listable: Source) -> None:
    for key in ("v/a.txt", "v/b.txt", "v/c.txt"):
        listable.put(key, key.encode())
    artifact = refstore.Artifact("verified")
    artifact.add_reference(listable.url("v"))
    version = refstore.Registry().log(artifact)
    assert version.verify()
    listable.put("v/b.txt", b"changed content")
    listable.delete("v/c.txt")
    report = version.verify()
    assert (report.ok, report.changed, report.missing) == (["a.txt"], ["b.txt"], ["c.txt"])
    assert not report


def test_registry_lives_on_the_backend(registry_source: Source, tmp_path: Path) -> None:
    """Versions, aliases, copies and the content check, read back through a fresh Registry."""
    assert registry_source.registry_url is not None
    local = tmp_path / "files"
    local.mkdir()
    (local / "w.bin").write_bytes(b"weights v0")
    registry = refstore.Registry(registry_source.registry_url)
    first = refstore.Artifact("model", type="model", metadata={"acc": 0.5})
    first.add_file(local / "w.bin")
    v0 = registry.log(first, aliases=["prod"])
    assert registry.log(first).version == 0  # unchanged content: no new version
    (local / "w.bin").write_bytes(b"weights v1")
    second = refstore.Artifact("model", type="model")
    second.add_dir(local, name="ckpt")
    v1 = registry.log(second)

    fresh = refstore.Registry(registry_source.registry_url)
    assert fresh.artifacts() == ["model"]
    assert [v.version for v in fresh.versions("model")] == [0, 1]
    assert fresh.get("model").version == 1 and fresh.get("model:latest") == v1
    assert fresh.get("model:prod") == v0 and fresh.get("model:prod").metadata == {"acc": 0.5}
    assert fresh.get("model:v0").aliases == ["prod"]
    assert fresh.alias("model:v1", "prod").aliases == ["latest", "prod"]
    assert fresh.diff("model:v0", "model:v1").to_json() == {
        "added": ["ckpt/w.bin"],
        "removed": ["w.bin"],
        "modified": [],
    }
    out = fresh.get("model:v0").download(tmp_path / "dl", skip_cache=True)
    assert (out / "w.bin").read_bytes() == b"weights v0"
    with pytest.raises(refstore.ArtifactNotFoundError, match="model:v7"):
        fresh.get("model:v7")
    with pytest.raises(refstore.ArtifactNotFoundError, match="nosuch"):
        fresh.get("model:nosuch")


def test_version_numbers_are_claimed_create_only(registry_source: Source) -> None:
    """A version record that exists is never overwritten: the claim is a create-only write."""
    assert registry_source.registry_url is not None
    registry = refstore.Registry(registry_source.registry_url)
    registry.store.create("probe/x.json", b"1")
    with pytest.raises(FileExistsError):
        registry.store.create("probe/x.json", b"2")
    assert registry.store.read("probe/x.json") == b"1"
