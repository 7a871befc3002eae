"""``verify`` tells whether the version can still be downloaded (issue 12, item 6), and ``verify(root=DIR)``
checks a downloaded folder with no request (item 2), on real servers with their request logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import refstore
from refstore.surfaces.cli import main

#: Tests that do not count requests run on moto and on Ceph RGW.
S3_SERVERS = ("moto", "rgw")
FILES = {"a.csv": b"a,1\n", "b.csv": b"b,2\n", "c.csv": b"c,3\n"}


def _log(fs: Any, bucket: str, name: str = "s3sales") -> refstore.ArtifactVersion:
    fs.pipe({f"{bucket}/d/{path}": data for path, data in FILES.items()})
    fs.invalidate_cache()
    artifact = refstore.Artifact(name)
    artifact.add_reference(f"s3://{bucket}/d")
    return refstore.Registry().log(artifact)


def _drift(fs: Any, bucket: str) -> None:
    """The source moves on: one object overwritten, one deleted."""
    fs.pipe_file(f"{bucket}/d/b.csv", b"b,2\nb,3\n")
    fs.rm_file(f"{bucket}/d/c.csv")
    fs.invalidate_cache()


def _verify(*args: str) -> Any:
    return CliRunner().invoke(main, ["verify", *args])


# -- against the source -----------------------------------------------------------------------------------


def test_a_versioned_bucket_that_moved_on_still_serves_the_version(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _log(s3_fs, s3_bucket)
    _drift(s3_fs, s3_bucket)
    mark = s3_server.mark()
    report = version.verify()
    assert (report.ok, report.changed, report.missing) == (["a.csv"], ["b.csv"], ["c.csv"])
    assert not report and report.retrievable and report.unretrievable == []
    assert not [r for r in s3_server.requests_since(mark) if r.startswith("GET /") and "/d/" in r], "no body"
    result = _verify("s3sales:v0")
    assert result.exit_code == 0, result.output
    assert "changed  b.csv" in result.output and "can still be downloaded" in result.output
    strict = _verify("s3sales:v0", "--strict", "--json")
    assert strict.exit_code == 1 and json.loads(strict.output)["retrievable"] is True
    got = version.download(tmp_path / "dir")  # what verify promised
    assert {p: (got / p).read_bytes() for p in FILES} == FILES


def test_an_unversioned_bucket_that_moved_on_lost_the_version(
    s3_fs: Any, s3_unversioned_bucket: str, tmp_path: Path
) -> None:
    version = _log(s3_fs, s3_unversioned_bucket)
    _drift(s3_fs, s3_unversioned_bucket)
    report = version.verify()
    assert (report.changed, report.missing) == (["b.csv"], ["c.csv"])
    assert not report.retrievable and report.unretrievable == ["b.csv", "c.csv"]
    result = _verify("s3sales:v0")
    assert result.exit_code == 1
    assert "missing  c.csv (gone)" in result.output and "2 can no longer be downloaded" in result.output
    with pytest.raises(refstore.ObjectChangedError):
        version.download(tmp_path / "dir")


def test_same_bytes_under_another_version_id_are_not_the_pinned_version(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """The pinned version deleted for good and the same bytes uploaded again: the object looks unchanged,
    but a download (which asks for the pinned version id) fails, and verify says so."""
    version = _log(s3_fs, s3_bucket)
    pinned = version.manifest["a.csv"].version_id
    s3_fs.call_s3("delete_object", Bucket=s3_bucket, Key="d/a.csv", VersionId=pinned)
    s3_fs.pipe_file(f"{s3_bucket}/d/a.csv", FILES["a.csv"])
    report = version.verify()
    assert report.ok == sorted(FILES) and report  # nothing drifted, by the metadata
    assert report.unretrievable == ["a.csv"] and not report.retrievable
    assert _verify("s3sales:v0").exit_code == 1
    with pytest.raises(refstore.ObjectChangedError):
        version.download(tmp_path / "dir", skip_cache=True)


@pytest.mark.parametrize("versioned", [True, False])
def test_gcs_generations(versioned: bool, gcs_fs: Any, tmp_path: Path) -> None:
    from conftest import unique_name

    bucket = unique_name("gcs-")
    gcs_fs.mkdir(bucket, enable_versioning=versioned)
    gcs_fs.pipe({f"{bucket}/d/{path}": data for path, data in FILES.items()})
    gcs_fs.invalidate_cache()
    artifact = refstore.Artifact("gsales")
    artifact.add_reference(f"gs://{bucket}/d")
    version = refstore.Registry().log(artifact)
    _drift(gcs_fs, bucket)
    report = version.verify()
    assert (report.changed, report.missing) == (["b.csv"], ["c.csv"])
    assert report.retrievable is versioned
    assert report.unretrievable == ([] if versioned else ["b.csv", "c.csv"])


# -- a downloaded folder, with no request -------------------------------------------------------------------


def test_verify_a_folder_with_no_request_to_the_source(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _log(s3_fs, s3_bucket)
    dest = version.download(tmp_path / "dir")
    mark = s3_server.mark()
    assert version.verify(dest).ok == sorted(FILES)
    (dest / "a.csv").write_bytes(b"a,9\n")  # same size, other bytes
    (dest / "b.csv").unlink()
    (dest / "notes.txt").write_text("mine")
    report = version.verify(root=dest)
    assert (report.ok, report.changed, report.missing) == (["c.csv"], ["a.csv"], ["b.csv"])
    assert report.extra == ["notes.txt"] and report.unverified == [] and not report
    result = _verify("s3sales:v0", "--local", str(dest))
    assert result.exit_code == 1 and "extra    notes.txt" in result.output
    assert s3_server.requests_since(mark) == []


def test_verify_local_exit_status_with_only_extra_files(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    version = _log(s3_fs, s3_bucket)
    dest = version.download(tmp_path / "dir")
    (dest / "notes.txt").write_text("mine")
    assert _verify("s3sales:v0", "--local", str(dest)).exit_code == 0
    assert _verify("s3sales:v0", "--local", str(dest), "--strict").exit_code == 1
    data = json.loads(_verify("s3sales:v0", "--local", str(dest), "--json").output)
    assert (data["ok"], data["extra"]) == (sorted(FILES), ["notes.txt"])


def test_verify_local_cannot_check_multipart_bytes_it_never_fetched(
    s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = 5 * 2**20
    with s3_fs.open(f"{s3_bucket}/m/model.bin", "wb", block_size=part) as handle:
        handle.write(b"w" * (part + 3))
    s3_fs.invalidate_cache()
    artifact = refstore.Artifact("model")
    artifact.add_reference(f"s3://{s3_bucket}/m")
    version = refstore.Registry().log(artifact)
    dest = tmp_path / "dir"
    dest.mkdir()
    (dest / "model.bin").write_bytes(b"w" * (part + 3))  # not downloaded here: bytes of unknown hash
    report = version.verify(dest)
    assert (report.ok, report.unverified) == ([], ["model.bin"]) and report
    version.download(tmp_path / "elsewhere")  # this machine fetched the pin once: now it knows
    assert version.verify(dest).ok == ["model.bin"]


def test_verify_local_reports_links_and_a_missing_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    artifact = refstore.Artifact("linked")
    artifact.add_reference(source)
    version = refstore.Registry().log(artifact)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.txt").symlink_to(source / "a.txt")  # the right bytes, through a link: not a download
    assert version.verify(dest).changed == ["a.txt"]
    with pytest.raises(refstore.ObjectNotFoundError, match="nowhere"):
        version.verify(tmp_path / "nowhere")
