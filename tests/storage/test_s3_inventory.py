"""References from S3 Inventory reports (issue 16): ``add_reference(..., inventory=manifest.json)`` reads the
report instead of listing the bucket.

The reports are written here in AWS's layout (``destination-prefix/source-bucket/config-ID/...``: a
``manifest.json`` with ``files[]`` and ``fileSchema``, its ``manifest.checksum``, gzip CSV with URL-encoded
keys, or Parquet / ORC written with pyarrow), from the bucket's own ListObjectVersions, as S3 makes them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.orc
import pyarrow.parquet
import pytest

import refstore
from refstore.core.exceptions import IntegrityError, InvalidURLError

CSV_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary "
    "version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; "
    "optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); optional binary "
    "storage_class (UTF8);}"
)


def _rows(fs: Any, bucket: str) -> list[dict[str, Any]]:
    """One row per object version and delete marker of the bucket, as an inventory of all versions."""
    answer = fs.call_s3("list_object_versions", Bucket=bucket)
    rows = [
        {
            "Bucket": bucket,
            "Key": v["Key"],
            "VersionId": v["VersionId"],
            "IsLatest": v["IsLatest"],
            "IsDeleteMarker": False,
            "Size": v["Size"],
            "LastModifiedDate": v["LastModified"],
            "ETag": v["ETag"].strip('"'),
            "StorageClass": "STANDARD",
        }
        for v in answer.get("Versions", [])
    ]
    rows += [
        {
            "Bucket": bucket,
            "Key": m["Key"],
            "VersionId": m["VersionId"],
            "IsLatest": m["IsLatest"],
            "IsDeleteMarker": True,
            "Size": None,
            "LastModifiedDate": m["LastModified"],
            "ETag": None,
            "StorageClass": None,
        }
        for m in answer.get("DeleteMarkers", [])
    ]
    return rows


def _csv_file(rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for row in rows:
        values = dict(row, Key=urllib.parse.quote_plus(row["Key"], safe="/"))
        values["LastModifiedDate"] = row["LastModifiedDate"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
        for flag in ("IsLatest", "IsDeleteMarker"):
            values[flag] = str(row[flag]).lower()
        writer.writerow(
            ["" if values[f] is None else values[f] for f in (n.strip() for n in CSV_SCHEMA.split(","))]
        )
    return gzip.compress(text.getvalue().encode())


def _columnar_file(rows: list[dict[str, Any]], file_format: str) -> bytes:
    names = {"Bucket": "bucket", "Key": "key", "VersionId": "version_id", "IsLatest": "is_latest"}
    names |= {"IsDeleteMarker": "is_delete_marker", "Size": "size", "LastModifiedDate": "last_modified_date"}
    names |= {"ETag": "e_tag", "StorageClass": "storage_class"}
    types = {"size": pa.int64(), "last_modified_date": pa.timestamp("ms")}
    table = pa.table(
        {
            column: pa.array([row[field] for row in rows], type=types.get(column))
            for field, column in names.items()
        }
    )
    out = io.BytesIO()
    (pyarrow.parquet.write_table if file_format == "Parquet" else pyarrow.orc.write_table)(table, out)
    return out.getvalue()


def _publish(fs: Any, source: str, rows: list[dict[str, Any]], file_format: str = "CSV") -> str:
    """Write an inventory report of ``rows`` (in two data files) the way S3 does; its manifest's URL."""
    destination = f"{source}-inventory"
    if not fs.exists(destination):
        fs.mkdir(destination)
    base = f"inv/{source}/all-versions"
    files = []
    for part in (rows[::2], rows[1::2]):
        if file_format == "CSV":
            data, suffix = _csv_file(part), "csv.gz"
        else:
            data, suffix = _columnar_file(part, file_format), file_format.lower()
        key = f"{base}/data/{uuid.uuid4()}.{suffix}"
        fs.pipe(f"{destination}/{key}", data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{destination}",
        "version": "2016-11-30",
        "creationTimestamp": "1798761600000",
        "fileFormat": file_format,
        "fileSchema": CSV_SCHEMA if file_format == "CSV" else PARQUET_SCHEMA,
        "files": files,
    }
    raw = json.dumps(manifest, indent=2).encode()
    folder = f"{destination}/{base}/2026-12-01T00-00Z"
    fs.pipe(f"{folder}/manifest.json", raw)
    fs.pipe(f"{folder}/manifest.checksum", hashlib.md5(raw).hexdigest().encode())
    fs.invalidate_cache()
    return f"s3://{folder}/manifest.json"


def _source(fs: Any, bucket: str) -> None:
    """Current objects, an overwritten one, a deleted one, a folder marker, odd keys, another prefix."""
    fs.pipe(
        {
            f"{bucket}/data/a.txt": b"old a",
            f"{bucket}/data/gone.txt": b"deleted later",
            f"{bucket}/data/sub/b.bin": b"b" * 100,
            f"{bucket}/data/with space+plus&%.txt": b"odd",
            f"{bucket}/data-2/not-under.txt": b"x",
            f"{bucket}/other/x": b"x",
        }
    )
    fs.pipe(f"{bucket}/data/a.txt", b"new a")
    fs.rm(f"{bucket}/data/gone.txt")
    fs.call_s3("put_object", Bucket=bucket, Key="data/dir/", Body=b"")
    fs.invalidate_cache()


@pytest.mark.parametrize("file_format", ["CSV", "Parquet", "ORC"])
def test_a_reference_from_an_inventory_lists_nothing_and_matches_a_listing(
    s3_server: Any, s3_fs: Any, s3_bucket: str, file_format: str
) -> None:
    _source(s3_fs, s3_bucket)
    manifest = _publish(s3_fs, s3_bucket, _rows(s3_fs, s3_bucket), file_format)
    listed = refstore.Artifact("l").add_reference(f"s3://{s3_bucket}/data")
    mark = s3_server.mark()
    entries = refstore.Artifact("i").add_reference(f"s3://{s3_bucket}/data", inventory=manifest)
    requests = s3_server.requests_since(mark)
    assert entries == listed
    assert sorted(e.path for e in entries) == ["a.txt", "sub/b.bin", "with space+plus&%.txt"]
    assert all(e.version_id for e in entries)
    assert not [r for r in requests if r.split()[1].startswith(f"/{s3_bucket}?")]  # no listing of the bucket
    assert len(requests) == 4  # manifest.json, manifest.checksum, two data files


def test_objects_changed_after_the_report_are_pinned_as_it_saw_them(
    s3_fs: Any, s3_bucket: str, s3_unversioned_bucket: str, tmp_path: Path
) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    s3_fs.pipe(
        {f"{s3_bucket}/data/a.txt": b"as reported", f"{s3_unversioned_bucket}/data/a.txt": b"as reported"}
    )
    versioned = _publish(s3_fs, s3_bucket, _rows(s3_fs, s3_bucket))
    plain = _publish(s3_fs, s3_unversioned_bucket, _rows(s3_fs, s3_unversioned_bucket))
    for bucket in (s3_bucket, s3_unversioned_bucket):
        s3_fs.pipe(f"{bucket}/data/a.txt", b"changed after the report")
        s3_fs.pipe(f"{bucket}/data/new.txt", b"added after the report")
    s3_fs.invalidate_cache()
    art = refstore.Artifact("v")
    art.add_reference(f"s3://{s3_bucket}/data", inventory=versioned)
    version = registry.log(art)
    assert sorted(version.manifest) == ["a.txt"]  # the report's objects only
    assert (version.download(tmp_path / "v") / "a.txt").read_bytes() == b"as reported"  # its pinned version
    art = refstore.Artifact("u")
    art.add_reference(f"s3://{s3_unversioned_bucket}/data", inventory=plain)
    with pytest.raises(refstore.ObjectChangedError, match=r"a\.txt"):  # no old version to pin: refused
        registry.log(art).download(tmp_path / "u")


def test_a_damaged_or_foreign_report_is_refused(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    s3_fs.pipe(f"{s3_bucket}/data/a.txt", b"a")
    manifest = _publish(s3_fs, s3_bucket, _rows(s3_fs, s3_bucket))
    report = json.loads(s3_fs.cat(manifest))
    data_file = f"{report['destinationBucket'].rpartition(':')[2]}/{report['files'][0]['key']}"
    original = s3_fs.cat(data_file)
    s3_fs.pipe(data_file, original[:-3])
    with pytest.raises(IntegrityError, match="does not match its MD5"):
        refstore.Artifact("d").add_reference(f"s3://{s3_bucket}/data", inventory=manifest)
    s3_fs.pipe(data_file, original)
    s3_fs.pipe(manifest, s3_fs.cat(manifest).replace(b"2016-11-30", b"2016-11-31"))
    with pytest.raises(IntegrityError, match=r"manifest\.checksum"):
        refstore.Artifact("d").add_reference(f"s3://{s3_bucket}/data", inventory=manifest)
    other = _publish(s3_fs, s3_bucket, _rows(s3_fs, s3_bucket))
    s3_fs.mkdir(f"{s3_bucket}-other")
    with pytest.raises(InvalidURLError, match="an inventory of bucket"):
        refstore.Artifact("d").add_reference(f"s3://{s3_bucket}-other/data", inventory=other)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidURLError, match="S3 references only"):
        refstore.Artifact("d").add_reference(tmp_path, inventory=other)
