"""``verify``: ok / changed / missing from metadata alone, by listings where cheaper, counted server-side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import refstore
from refstore.surfaces.cli import main


def _log_prefix(
    fs: Any, bucket: str, files: dict[str, bytes], root: str | None = None
) -> refstore.ArtifactVersion:
    fs.pipe({f"{bucket}/v/{k}": v for k, v in files.items()})
    fs.invalidate_cache()
    artifact = refstore.Artifact("checked")
    artifact.add_reference(f"s3://{bucket}/v")
    return refstore.Registry(root).log(artifact)


def _object_requests(requests: list[str], bucket: str) -> list[str]:
    """Requests that touch single objects (HEAD or GET of a key), as opposed to bucket listings."""
    return [r for r in requests if r.split(" ", 1)[1].startswith(f"/{bucket}/") and not r.startswith("PUT")]


def test_s3_drift_and_a_missing_object_from_one_listing(s3_server: Any, s3_fs: Any, s3_bucket: str) -> None:
    files = {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c", "sub/d.txt": b"d"}
    version = _log_prefix(s3_fs, s3_bucket, files)
    mark = s3_server.mark()
    assert version.verify().ok == sorted(files)
    requests = s3_server.requests_since(mark)
    assert len(requests) == 1 and "versions" in requests[0], requests  # one ListObjectVersions, nested too
    s3_fs.pipe(f"{s3_bucket}/v/b.txt", b"changed")
    s3_fs.rm_file(f"{s3_bucket}/v/c.txt")
    mark = s3_server.mark()
    report = version.verify()
    assert (report.ok, report.changed, report.missing) == (["a.txt", "sub/d.txt"], ["b.txt"], ["c.txt"])
    assert not report
    assert report.retrievable and report.unretrievable == []  # the bucket keeps the pinned versions
    probes = _object_requests(s3_server.requests_since(mark), s3_bucket)
    pinned = {p: version.manifest[p].version_id for p in ("b.txt", "c.txt")}
    assert sorted(probes) == [f"HEAD /{s3_bucket}/v/{p}?versionId={v}" for p, v in sorted(pinned.items())]


def test_s3_a_few_entries_in_a_crowded_folder_are_stat_ed(s3_server: Any, s3_fs: Any, s3_bucket: str) -> None:
    """Listing 300 objects to check 2 is not cheaper: the listing is abandoned for one HEAD per entry."""
    s3_fs.pipe({f"{s3_bucket}/crowd/f{i:03d}": b"x" for i in range(300)})
    s3_fs.invalidate_cache()
    artifact = refstore.Artifact("two")
    artifact.add_reference(f"s3://{s3_bucket}/crowd/f001")
    artifact.add_reference(f"s3://{s3_bucket}/crowd/f002")
    version = refstore.Registry().log(artifact)
    s3_fs.pipe(f"{s3_bucket}/crowd/f002", b"yy")
    mark = s3_server.mark()
    report = version.verify()
    assert (report.ok, report.changed, report.missing) == (["f001"], ["f002"], [])
    heads = [r for r in s3_server.requests_since(mark) if r.startswith("HEAD ")]
    probe = f"HEAD /{s3_bucket}/crowd/f002?versionId={version.manifest['f002'].version_id}"
    assert sorted(heads) == [f"HEAD /{s3_bucket}/crowd/f001", f"HEAD /{s3_bucket}/crowd/f002", probe]


def test_copies_in_an_s3_registry(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    """Copies pinned by xxh3_128 are checked by size against the blob store's metadata, never read."""
    (tmp_path / "w.bin").write_bytes(b"weights")
    (tmp_path / "x.bin").write_bytes(b"extra")
    registry = refstore.Registry(f"s3://{s3_bucket}/registry")
    artifact = refstore.Artifact("model", type="model")
    artifact.add_file(tmp_path / "w.bin")
    artifact.add_file(tmp_path / "x.bin")
    version = registry.log(artifact)
    assert version.verify().ok == ["w.bin", "x.bin"]
    blob = version.manifest["x.bin"].digest.split(":", 1)[1]
    s3_fs.rm_file(f"{s3_bucket}/registry/blobs/{blob[:2]}/{blob}")
    assert version.verify().missing == ["x.bin"]


def test_http_entries_are_checked_with_one_head_each(http_server: Any) -> None:
    for name in ("a.txt", "b.txt"):
        (http_server.root / name).write_bytes(name.encode())
    artifact = refstore.Artifact("site")
    for name in ("a.txt", "b.txt"):
        artifact.add_reference(http_server.url(name))
    version = refstore.Registry().log(artifact)
    (http_server.root / "b.txt").unlink()
    mark = http_server.mark()
    report = version.verify()
    assert (report.ok, report.missing) == (["a.txt"], ["b.txt"])
    assert report.unretrievable == ["b.txt"]  # no versions on HTTP: what is gone is gone, no probe needed
    assert sorted(r.split(" ", 1)[0] for r in http_server.requests_since(mark)) == ["HEAD", "HEAD"]


def test_cli_exit_status_and_json(s3_fs: Any, s3_unversioned_bucket: str) -> None:
    _log_prefix(s3_fs, s3_unversioned_bucket, {"a.txt": b"a", "b.txt": b"b"})
    runner = CliRunner()
    clean = runner.invoke(main, ["verify", "checked:v0"])
    assert clean.exit_code == 0 and "2 ok, 0 changed, 0 missing" in clean.output
    s3_fs.rm_file(f"{s3_unversioned_bucket}/v/a.txt")
    drifted = runner.invoke(main, ["verify", "checked:v0", "--json"])
    assert drifted.exit_code == 1
    data = json.loads(drifted.output)
    assert (data["ok"], data["changed"], data["missing"]) == (["b.txt"], [], ["a.txt"])
    assert (data["retrievable"], data["unretrievable"]) == (False, ["a.txt"])
    assert data["version"]["qualified_name"] == "checked:v0"
