"""Keys with every character S3 and GCS allow round-trip through manifests (issue 14 item 10).

Keys holding ``?`` or ``#`` used to be logged and then refused on every read (``InvalidURLError`` naming a
key cut at the ``?``); ``a?versionId=x`` would be read by s3fs as the key ``a`` pinned to version ``x``, and
``k#123`` by gcsfs as ``k`` at generation 123. Refs now escape ``%``, ``?`` and ``#`` in keys
(``refstore.storage.locations.ref_of``), and manifests written before keep reading as they did.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import refstore
from refstore.core.manifest import Manifest, ManifestEntry
from refstore.core.refs import url_of_ref
from refstore.surfaces.cli import main

#: Logical path (the key below data/) -> bytes. "a" sits beside "a?versionId=x", and "k" beside "k#123",
#: so that a key cut at "?" or "#" would read another object's bytes, not fail.
ODD = {
    "a": b"the plain a",
    "a?versionId=x": b"looks like a version pin",
    "k": b"the plain k",
    "k#123": b"looks like a GCS generation",
    "q?x.txt": b"question mark",
    "h#1.txt": b"hash",
    "sp ace.txt": b"space",
    "100%.txt": b"percent",
    "%3F.txt": b"looks escaped already",
    "a+b.txt": b"plus",
    "ünï/çödé ✓.txt": b"unicode",
    "d?/e#/f%25.bin": b"all of them in folders",
}


def _check_version(version: refstore.ArtifactVersion, bucket_url: str, tmp_path: Path) -> None:
    """Download, open and verify every odd key of ``version``, whose refs are URIs."""
    for logical, entry in version.manifest.items():
        assert entry.ref is not None and "?" not in entry.ref and "#" not in entry.ref
        assert url_of_ref(entry.ref) == f"{bucket_url}/data/{logical}"
    assert version.manifest["q?x.txt"].ref == f"{bucket_url}/data/q%3Fx.txt"
    assert version.manifest["100%.txt"].ref == f"{bucket_url}/data/100%25.txt"

    folder = version.download(tmp_path / "dl", skip_cache=True)
    assert {p: (folder / p).read_bytes() for p in ODD} == ODD
    for logical, data in ODD.items():
        with version.open(logical) as handle:
            assert handle.read() == data, logical
    report = version.verify()
    assert report.ok == sorted(ODD) and not report.changed and not report.missing


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_s3_odd_keys_log_download_open_verify(
    s3_fs: Any, s3_bucket: str, s3_unversioned_bucket: str, versioned: bool, tmp_path: Path
) -> None:
    bucket = s3_bucket if versioned else s3_unversioned_bucket
    for logical, data in ODD.items():  # put_object itself: s3fs would read "?versionId=" in a path
        s3_fs.call_s3("put_object", Bucket=bucket, Key=f"data/{logical}", Body=data)
    registry = refstore.Registry(tmp_path / "reg")
    art = refstore.Artifact("odd")
    art.add_reference(f"s3://{bucket}/data")
    registry.log(art)

    version = refstore.Registry(tmp_path / "reg").get("odd:v0")  # the manifest as read back from storage
    _check_version(version, f"s3://{bucket}", tmp_path)

    for logical in ("a?versionId=x", "k#123", "100%.txt"):
        s3_fs.call_s3("put_object", Bucket=bucket, Key=f"data/{logical}", Body=b"overwritten")
    report = version.verify()
    assert report.changed == sorted(["a?versionId=x", "k#123", "100%.txt"])
    if versioned:  # the pinned versions are still there
        assert report.retrievable
        folder = version.download(tmp_path / "again", skip_cache=True)
        assert (folder / "a?versionId=x").read_bytes() == ODD["a?versionId=x"]
        with version.open("k#123") as handle:
            assert handle.read() == ODD["k#123"]
    else:
        assert sorted(report.unretrievable) == report.changed
        with pytest.raises(refstore.ObjectChangedError, match=r"/data/k#123: the object was overwritten"):
            version.open("k#123")


def test_s3_odd_keys_through_the_cli(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    odd = {p: d for p, d in ODD.items() if "?" in p or "#" in p}  # every entry: none can hide behind another
    for logical, data in odd.items():
        s3_fs.call_s3("put_object", Bucket=s3_bucket, Key=f"data/{logical}", Body=data)
    root = str(tmp_path / "reg")
    runner = CliRunner()
    logged = runner.invoke(main, ["--root", root, "log", "odd", f"s3://{s3_bucket}/data"])
    assert logged.exit_code == 0, logged.output
    got = runner.invoke(main, ["--root", root, "get", "odd:v0", str(tmp_path / "dl")])
    assert got.exit_code == 0, got.output
    assert {p: (tmp_path / "dl" / p).read_bytes() for p in odd} == odd
    checked = runner.invoke(main, ["--root", root, "--json", "verify", "odd:v0"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["ok"] == sorted(odd)


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_gcs_odd_keys_log_download_open_verify(
    gcs_server: Any, gcs_bucket: str, gcs_unversioned_bucket: str, versioned: bool, tmp_path: Path
) -> None:
    import gcsfs

    gcs_bucket = gcs_bucket if versioned else gcs_unversioned_bucket
    writer = gcsfs.GCSFileSystem(token="anon", endpoint_url=gcs_server.endpoint_url, skip_instance_cache=True)
    for logical, data in ODD.items():  # not version-aware: "#123" stays in the key
        writer.pipe_file(f"{gcs_bucket}/data/{logical}", data)
    registry = refstore.Registry(tmp_path / "reg")
    art = refstore.Artifact("odd")
    art.add_reference(f"gs://{gcs_bucket}/data")
    registry.log(art)

    version = refstore.Registry(tmp_path / "reg").get("odd:v0")
    _check_version(version, f"gs://{gcs_bucket}", tmp_path)

    writer.pipe_file(f"{gcs_bucket}/data/k#123", b"overwritten")
    report = version.verify()
    assert report.changed == ["k#123"] and report.retrievable == versioned
    if versioned:
        with version.open("k#123") as handle:  # the pinned generation, not the current one
            assert handle.read() == ODD["k#123"]
    else:
        with pytest.raises(
            refstore.ObjectChangedError, match=r"/data/k#123: generation \d+ no longer exists"
        ):
            version.open("k#123")


# -- manifests written before refs were escaped --------------------------------------------------------


def _format2(refs: dict[str, str]) -> bytes:
    """A format-2 manifest as earlier versions wrote it: keys verbatim in refs."""
    rows = [[p, refs[p], 1, "md5:00", None, None] for p in sorted(refs)]
    body = {"bases": [], "entries": rows, "fields": ["path", "ref", "size", "digest", "etag", "version_id"]}
    body["format"] = "refstore.manifest/2"
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_an_old_manifest_keeps_meaning_and_digest() -> None:
    # Before: a "%" in a ref meant itself; "?" and "#" were written but could not be read back.
    old = {
        "pct": "s3://b/x/100%25.txt",
        "q": "s3://b/x/q?v.txt",
        "h": "gs://b/k#12",
        "web": "http://h/a%20b?x=1",
    }
    data = _format2(old)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    manifest = Manifest.from_bytes(data, expected_digest=digest)
    assert {p: e.pin.url for p, e in manifest.items()} == old  # the same objects as before
    assert manifest["pct"].ref == "s3://b/x/100%2525.txt"
    assert manifest["q"].ref == "s3://b/x/q%3Fv.txt"
    assert manifest["web"].ref == old["web"]  # an HTTP URL is never touched
    assert manifest.to_bytes() == data  # written back as read: the digest it is stored under holds
    assert Manifest.from_bytes(data).digest == digest


def test_new_manifests_are_format_2_unless_a_ref_needs_an_escape() -> None:
    plain = Manifest.of([ManifestEntry("a", "s3://b/a", 1, "md5:00")])
    assert b'"format":"refstore.manifest/2"' in plain.to_bytes()
    escaped = Manifest.of([ManifestEntry("a?b", "s3://b/a%3Fb", 1, "md5:00")])
    data = escaped.to_bytes()
    assert b'"format":"refstore.manifest/3"' in data
    again = Manifest.from_bytes(data)
    assert again["a?b"].ref == "s3://b/a%3Fb" and again["a?b"].pin.url == "s3://b/a?b"
    assert again.digest == escaped.digest


def test_a_ref_escape_that_is_not_utf8_is_a_manifest_error() -> None:
    data = Manifest.of([ManifestEntry("a", "s3://b/a%3Fb", 1, "md5:00")]).to_bytes()
    with pytest.raises(refstore.ManifestError, match="not UTF-8"):
        Manifest.from_bytes(data.replace(b"a%3Fb", b"a%FFb"))


def test_azure_odd_keys_log_download_open_verify(azurite: Any, azure_container: str, tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for logical, data in ODD.items():  # the SDK itself: adlfs paths are parsed for versions
        service.get_blob_client(azure_container, f"data/{logical}").upload_blob(data)
    registry = refstore.Registry(tmp_path / "reg")
    art = refstore.Artifact("odd")
    art.add_reference(f"az://{azure_container}/data")
    registry.log(art)
    _check_version(refstore.Registry(tmp_path / "reg").get("odd:v0"), f"az://{azure_container}", tmp_path)
