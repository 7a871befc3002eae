"""The ``refstore://NAME:VERSION/path`` filesystem: fsspec calls, pinned bytes, pandas, PyArrow and Dask."""

from __future__ import annotations

import contextlib
import io
import json
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

import refstore
from refstore.surfaces.fs import RefstoreFileSystem

#: Tests on S3 run against moto and Ceph RGW (see conftest.s3_endpoint).
S3_SERVERS = ("moto", "rgw")

SALES_V0 = pd.DataFrame({"region": ["eu", "eu", "us"], "units": [3, 5, 7]})
SALES_LATER = pd.DataFrame({"region": ["apac"], "units": [99]})


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relpath, data in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def local_version(tmp_path: Path) -> refstore.ArtifactVersion:
    """``ds:v0`` referencing a local folder, in the default registry ($REFSTORE_ROOT)."""
    source = tmp_path / "src"
    _write_tree(source, {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(200)), "sub/deep/c.txt": b"c"})
    artifact = refstore.Artifact("ds")
    artifact.add_reference(source)
    return refstore.Registry().log(artifact, aliases=["prod"])


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture
def sales(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> str:
    """``sales:v0`` over an S3 prefix (CSV + hive-partitioned Parquet), whose source then moved on.

    Returns the registry root, which lives away from $REFSTORE_ROOT so that ``root=`` is what finds it.
    """
    base = f"{s3_bucket}/sales"
    for region, part in SALES_V0.groupby("region"):
        s3_fs.pipe(f"{base}/table/region={region}/part-0.parquet", _parquet_bytes(part[["units"]]))
    s3_fs.pipe(f"{base}/raw/sales.csv", SALES_V0.to_csv(index=False).encode())
    root = str(tmp_path / "team-registry")
    artifact = refstore.Artifact("sales")
    artifact.add_reference(f"s3://{base}")
    refstore.Registry(root).log(artifact)
    s3_fs.pipe(f"{base}/raw/sales.csv", SALES_LATER.to_csv(index=False).encode())
    s3_fs.pipe(f"{base}/table/region=eu/part-0.parquet", _parquet_bytes(SALES_LATER[["units"]]))
    s3_fs.invalidate_cache()
    return root


def test_registered_through_the_fsspec_entry_point() -> None:
    (spec,) = [e for e in entry_points(group="fsspec.specs") if e.name == "refstore"]
    assert spec.value == "refstore.surfaces.fs:RefstoreFileSystem"
    assert fsspec.get_filesystem_class("refstore") is RefstoreFileSystem


def test_ls_info_find_and_cat(local_version: refstore.ArtifactVersion) -> None:
    fs = fsspec.filesystem("refstore")
    assert fs.ls("refstore://ds:v0", detail=False) == ["ds:v0/a.txt", "ds:v0/sub"]
    assert fs.ls("ds:v0/sub/", detail=False) == ["ds:v0/sub/b.bin", "ds:v0/sub/deep"]
    info = fs.info("refstore://ds:v0/sub/b.bin")
    pinned = local_version.manifest["sub/b.bin"].digest
    assert (info["type"], info["size"], info["digest"]) == ("file", 200, pinned)
    assert fs.info("ds:v0/sub/deep")["type"] == "directory"
    assert fs.find("ds:v0") == ["ds:v0/a.txt", "ds:v0/sub/b.bin", "ds:v0/sub/deep/c.txt"]
    assert fs.glob("ds:v0/**/*.txt") == ["ds:v0/a.txt", "ds:v0/sub/deep/c.txt"]
    assert fs.cat("refstore://ds:v0/a.txt") == b"alpha\n"
    assert fs.cat_file("ds:v0/sub/b.bin", start=-8) == bytes(range(192, 200))
    assert fs.cat_file("ds:v0/sub/b.bin", start=10, end=13) == bytes([10, 11, 12])
    assert fs.isdir("ds:v0/sub") and fs.isfile("ds:v0/a.txt") and not fs.exists("ds:v0/nope")
    with fs.open("ds:prod/a.txt", "r") as text:
        assert text.read() == "alpha\n"
    assert fs.cat("refstore://ds/a.txt") == fs.cat("refstore://ds:latest/a.txt") == b"alpha\n"


def test_errors_name_the_path(local_version: refstore.ArtifactVersion) -> None:
    fs = fsspec.filesystem("refstore")
    with pytest.raises(FileNotFoundError, match=r"ds:v0/missing\.txt"):
        fs.info("ds:v0/missing.txt")
    with pytest.raises(FileNotFoundError):
        fs.cat("refstore://ds:v0/sub/nope")
    with pytest.raises(refstore.ArtifactNotFoundError, match="ds:v9"):
        fs.ls("ds:v9")
    with pytest.raises(PermissionError, match="read-only"):
        fs.open("ds:v0/a.txt", "wb")
    with pytest.raises(ValueError, match="NAME:VERSION"):
        fs.ls("refstore://")


def test_serves_the_pinned_bytes_after_the_source_moved_on(sales: str) -> None:
    fs = fsspec.filesystem("refstore", root=sales)
    assert fs.cat("sales:v0/raw/sales.csv") == SALES_V0.to_csv(index=False).encode()
    assert fs.cat("sales:v0/raw/sales.csv") != SALES_LATER.to_csv(index=False).encode()


def test_pandas_read_csv_and_read_parquet(sales: str) -> None:
    options = {"root": sales}
    frame = pd.read_csv("refstore://sales:v0/raw/sales.csv", storage_options=options)
    pd.testing.assert_frame_equal(frame, SALES_V0)
    part = pd.read_parquet("refstore://sales:v0/table/region=eu/part-0.parquet", storage_options=options)
    assert part["units"].tolist() == [3, 5]


def test_pyarrow_dataset_through_fsspec(sales: str) -> None:
    import pyarrow.dataset as ds

    fs = RefstoreFileSystem(root=sales)
    dataset = ds.dataset("sales:v0/table", filesystem=fs, format="parquet", partitioning="hive")
    table = dataset.to_table().sort_by([("region", "ascending"), ("units", "ascending")])
    assert table.column("units").to_pylist() == [3, 5, 7]
    assert [str(r) for r in table.column("region").to_pylist()] == ["eu", "eu", "us"]


def test_dask_dataframe(sales: str) -> None:
    import dask.dataframe as dd

    options = {"root": sales}
    csv = dd.read_csv("refstore://sales:v0/raw/*.csv", storage_options=options).compute()
    assert csv.to_dict("list") == SALES_V0.to_dict("list")
    table = dd.read_parquet("refstore://sales:v0/table", storage_options=options).compute()
    assert sorted(table["units"].tolist()) == [3, 5, 7]


def test_range_read_of_a_20_mb_pinned_object_transfers_only_the_tail(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """The last 8 bytes through refstore:// are one ranged GET, as moto records it (Range header, 206)."""
    data = bytes(range(256)) * (20 * 2**20 // 256)
    s3_fs.pipe(f"{s3_bucket}/big/blob.bin", data)
    artifact = refstore.Artifact("big")
    artifact.add_reference(f"s3://{s3_bucket}/big/blob.bin")
    refstore.Registry().log(artifact)
    s3_fs.pipe(f"{s3_bucket}/big/blob.bin", b"moved on")  # the pin is an older version now
    fs = fsspec.filesystem("refstore")
    with _recording(s3_server) as recorded:
        mark = s3_server.mark()
        with fs.open("refstore://big:v0/blob.bin") as handle:
            handle.seek(-8, io.SEEK_END)
            tail = handle.read(8)
        logged = [r for r in s3_server.entries_since(mark) if "/big/blob.bin" in r.target]
    assert tail == data[-8:]
    gets = [r for r in recorded if r["method"] == "GET" and "/big/blob.bin" in r["url"]]
    assert [g["headers"].get("Range") for g in gets] == [f"bytes={len(data) - 8}-{len(data) - 1}"]
    assert all("versionId=" in g["url"] for g in gets)
    assert [r.status for r in logged if r.method == "GET"] == [206]  # partial content, never a 200


@contextlib.contextmanager
def _recording(server: Any) -> Iterator[list[dict[str, Any]]]:
    """moto's request recorder: every request with its headers, as the server received it."""
    recorded: list[dict[str, Any]] = []
    _recorder(server, "reset-recording")
    _recorder(server, "start-recording")
    try:
        yield recorded
    finally:
        _recorder(server, "stop-recording")
        lines = _recorder(server, "download-recording").splitlines()
        recorded += [json.loads(line) for line in lines if line]
        _recorder(server, "reset-recording")


def _recorder(server: Any, action: str) -> str:
    method = "GET" if action.startswith("download") else "POST"
    request = urllib.request.Request(f"{server.endpoint_url}/moto-api/recorder/{action}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_duckdb_reads_through_the_registered_filesystem(sales: str) -> None:
    import duckdb

    connection = duckdb.connect()
    connection.register_filesystem(fsspec.filesystem("refstore", root=sales))
    query = "SELECT sum(units) FROM read_parquet('refstore://sales:v0/table/*/*.parquet')"
    assert connection.sql(query).fetchall() == [(15,)]


def test_parquet_metadata_of_a_pinned_object_reads_only_its_footer(
    s3_server: Any, s3_fs: Any, s3_bucket: str
) -> None:
    """pyarrow reads a Parquet footer through refstore:// with ranged GETs of at most 64 KiB in all."""
    import numpy as np
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"x": np.random.default_rng(0).integers(0, 2**62, size=2_000_000)})
    data = _parquet_bytes(frame)
    s3_fs.pipe(f"{s3_bucket}/wide/part-0.parquet", data)
    artifact = refstore.Artifact("wide")
    artifact.add_reference(f"s3://{s3_bucket}/wide")
    refstore.Registry().log(artifact)
    with _recording(s3_server) as recorded, fsspec.open("refstore://wide:v0/part-0.parquet") as handle:
        assert pq.read_metadata(handle).num_rows == 2_000_000
    ranges = [r["headers"].get("Range") for r in recorded if r["method"] == "GET" and "/wide/" in r["url"]]
    assert ranges and all(r is not None for r in ranges), ranges
    transferred = sum(_range_length(r) for r in ranges)
    assert len(data) > 10 * 2**20 and transferred <= 64 * 2**10, (len(data), ranges)  # pyarrow's footer read


def _range_length(header: str) -> int:
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(last) - int(first) + 1


def test_open_and_refstore_read_copies_in_an_s3_registry(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    """Finding 4: copies (add_file) stored in an S3 registry are pinned by content hash, not ETag; opening
    one used to fail as 'overwritten (pinned ETag None)'."""
    (tmp_path / "a.txt").write_bytes(b"copied bytes\n" * 1000)
    artifact = refstore.Artifact("copies")
    artifact.add_file(tmp_path / "a.txt")
    root = f"s3://{s3_bucket}/registry"
    version = refstore.Registry(root).log(artifact)
    with version.open("a.txt") as handle:
        handle.seek(13)
        assert handle.read(13) == b"copied bytes\n"
    with fsspec.open("refstore://copies:v0/a.txt", root=root) as handle:
        assert handle.read() == b"copied bytes\n" * 1000


def test_an_open_handle_over_an_overwritten_unversioned_object(
    s3_fs: Any, s3_unversioned_bucket: str, tmp_path: Path
) -> None:
    """Finding 5: a read after the object was overwritten is ObjectChangedError (RGW's 412 has no message,
    which made s3fs raise TypeError), not other bytes."""
    data = bytes(range(256)) * (4 * 2**20 // 256)
    s3_fs.pipe(f"{s3_unversioned_bucket}/big.bin", data)
    artifact = refstore.Artifact("big")
    artifact.add_reference(f"s3://{s3_unversioned_bucket}/big.bin")
    version = refstore.Registry(tmp_path / "registry").log(artifact)
    with version.open("big.bin", storage_options={"default_block_size": 2**20}) as handle:
        assert handle.read(10) == data[:10]
        s3_fs.pipe(f"{s3_unversioned_bucket}/big.bin", data[::-1])
        handle.seek(len(data) - 10)
        with pytest.raises(refstore.ObjectChangedError, match=f"s3://{s3_unversioned_bucket}/big.bin"):
            handle.read(10)
