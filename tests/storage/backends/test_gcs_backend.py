"""GCSBackend against a real fake-gcs-server (memory backend) on 127.0.0.1; nothing is mocked.

Test objects are written with gcsfs itself (the backend's own client), never through refstore.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import fsspec.asyn
import pytest

from refstore.core.exceptions import ObjectChangedError, TooManyObjectsError
from refstore.storage.backends.gcs import GCSBackend


class RequestCounter:
    """Counts the HTTP requests a filesystem's aiohttp session sends (client side, real requests)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._on_start)

    async def _on_start(self, session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        self.requests.append((params.method, str(params.url)))

    def reset(self) -> None:
        self.requests.clear()


@pytest.fixture(scope="module")
def counter() -> RequestCounter:
    return RequestCounter()


@pytest.fixture(scope="module")
def backend(gcs_server: Any, counter: RequestCounter) -> GCSBackend:
    """A backend on the session's fake-gcs-server (tests/conftest.py), its requests counted."""
    fs = GCSBackend.filesystem("gs", {"session_kwargs": {"trace_configs": [counter.trace]}})
    return GCSBackend(fs, "gs")


def run(func: Any, *args: Any, **kwargs: Any) -> Any:
    return fsspec.asyn.sync(fsspec.asyn.get_loop(), func, *args, **kwargs)


def _new_bucket(backend: GCSBackend, versioned: bool) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    backend.fs.mkdir(name, enable_versioning=versioned)
    return name


@pytest.fixture
def bucket(backend: GCSBackend) -> str:
    """A fresh bucket without object versioning."""
    return _new_bucket(backend, versioned=False)


@pytest.fixture
def vbucket(backend: GCSBackend) -> str:
    """A fresh bucket with object versioning."""
    return _new_bucket(backend, versioned=True)


def put(backend: GCSBackend, path: str, data: bytes, **kwargs: Any) -> str:
    """Write with gcsfs; return the new generation."""
    backend.fs.pipe_file(path, data, **kwargs)
    backend.fs.invalidate_cache()
    if path.endswith("/"):
        return ""  # info() of a folder marker describes the folder
    return str(backend.fs.info(path)["generation"])


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


# -- filesystem --------------------------------------------------------------------------------------


def test_filesystem_targets_the_emulator_anonymously(gcs_server: Any) -> None:
    import gcsfs.core

    fs = GCSBackend.filesystem("gs", {})
    assert type(fs) is gcsfs.core.GCSFileSystem  # not the experimental zonal/HNS subclass
    assert fs.credentials.token == "anon"
    assert fs._location == gcs_server.endpoint_url
    assert os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    assert os.environ["NO_GCE_CHECK"] == "true"
    backend = GCSBackend(fs, "gs")
    assert backend.url("b/k/x.bin") == "gs://b/k/x.bin"
    assert backend.path("gs://b/k/x.bin") == "b/k/x.bin"
    assert backend.path("gcs://b/k/x.bin") == "b/k/x.bin"


# -- stat ----------------------------------------------------------------------------------------------


def test_stat_object(backend: GCSBackend, bucket: str) -> None:
    data = b"hello gcs"
    generation = put(backend, f"{bucket}/data/a.txt", data)
    meta = run(backend.stat, f"{bucket}/data/a.txt")
    assert meta is not None
    assert meta.url == f"gs://{bucket}/data/a.txt"
    assert meta.size == len(data)
    assert meta.digest == md5(data)
    assert meta.version_id == generation
    assert meta.etag and '"' not in meta.etag
    assert meta.etag == backend.fs.info(f"{bucket}/data/a.txt")["etag"].strip('"')
    assert meta.last_modified is not None
    assert datetime.fromisoformat(meta.last_modified).utcoffset() is not None


def test_stat_missing_directory_marker_bucket(backend: GCSBackend, bucket: str) -> None:
    put(backend, f"{bucket}/data/a.txt", b"x")
    put(backend, f"{bucket}/marked/", b"")
    put(backend, f"{bucket}/empty", b"")
    assert run(backend.stat, f"{bucket}/nope") is None
    assert run(backend.stat, f"{bucket}/data") is None  # a prefix, not an object
    assert run(backend.stat, f"{bucket}/data/") is None
    assert run(backend.stat, f"{bucket}/marked/") is None  # a folder marker is not data
    assert run(backend.stat, f"{bucket}/marked") is None
    assert run(backend.stat, bucket) is None
    empty = run(backend.stat, f"{bucket}/empty")
    assert empty is not None and empty.size == 0 and empty.digest == md5(b"")


def test_stat_key_that_looks_like_a_generation(backend: GCSBackend, bucket: str, tmp_path: Path) -> None:
    # gcsfs would read "#123" as a generation on a version-aware filesystem; GCS allows it in names.
    put(backend, f"{bucket}/odd#123", b"odd")
    meta = run(backend.stat, f"{bucket}/odd#123")
    assert meta is not None and meta.size == 3 and meta.url == f"gs://{bucket}/odd#123"
    listed = run(backend.list_prefix, bucket, max_objects=10)
    assert [m.url for m in listed] == [f"gs://{bucket}/odd#123"]
    run(backend.fetch, meta, tmp_path / "odd")
    assert (tmp_path / "odd").read_bytes() == b"odd"
    with backend.open_pinned(meta) as f:
        assert f.read() == b"odd"


# -- listing -------------------------------------------------------------------------------------------


@pytest.fixture
def tree(backend: GCSBackend, bucket: str) -> str:
    for key, data in {
        "data/": b"",  # folder marker
        "data/a.txt": b"a",
        "data/empty.bin": b"",  # zero-byte object: data
        "data/sub/": b"",  # nested folder marker
        "data/sub/b.txt": b"bb",
        "data/sub/deeper/c.txt": b"ccc",
        "data2/x.txt": b"not under data/",
        "datax": b"not under data/ either",
        "top.txt": b"top",
    }.items():
        put(backend, f"{bucket}/{key}", data)
    return bucket


def _keys(metas: list[Any], bucket: str) -> list[str]:
    prefix = f"gs://{bucket}/"
    return sorted(m.url[len(prefix) :] for m in metas)


def test_list_prefix_boundaries(backend: GCSBackend, tree: str, counter: RequestCounter) -> None:
    bucket = tree
    expected = ["data/a.txt", "data/empty.bin", "data/sub/b.txt", "data/sub/deeper/c.txt"]
    counter.reset()
    metas = run(backend.list_prefix, f"{bucket}/data", max_objects=100)
    assert len(counter.requests) == 1  # one listing page, no per-object requests
    assert _keys(metas, bucket) == expected
    assert _keys(run(backend.list_prefix, f"{bucket}/data/", max_objects=100), bucket) == expected
    assert _keys(run(backend.list_prefix, f"{bucket}/data/sub", max_objects=100), bucket) == [
        "data/sub/b.txt",
        "data/sub/deeper/c.txt",
    ]
    assert _keys(run(backend.list_prefix, bucket, max_objects=100), bucket) == [
        *expected,
        "data2/x.txt",
        "datax",
        "top.txt",
    ]
    assert run(backend.list_prefix, f"{bucket}/nothing", max_objects=100) == []
    assert run(backend.list_prefix, f"{bucket}/top.txt", max_objects=100) == []  # an object, not a folder


def test_list_prefix_metadata_matches_stat(backend: GCSBackend, tree: str) -> None:
    bucket = tree
    listed = {m.url: m for m in run(backend.list_prefix, f"{bucket}/data", max_objects=100)}
    for url, meta in listed.items():
        assert meta == run(backend.stat, backend.path(url))
        assert meta.version_id and meta.digest and meta.digest.startswith("md5:")
    assert listed[f"gs://{bucket}/data/empty.bin"].size == 0
    assert listed[f"gs://{bucket}/data/sub/deeper/c.txt"].digest == md5(b"ccc")


def test_list_prefix_max_objects(backend: GCSBackend, tree: str) -> None:
    bucket = tree
    assert len(run(backend.list_prefix, f"{bucket}/data", max_objects=4)) == 4  # exactly at the limit
    with pytest.raises(TooManyObjectsError) as excinfo:
        run(backend.list_prefix, f"{bucket}/data", max_objects=3)
    message = str(excinfo.value)
    assert f"gs://{bucket}/data/" in message
    assert "max_objects=3" in message and "at 4" in message


def test_list_prefix_pages_and_stops_early(backend: GCSBackend, bucket: str, counter: RequestCounter) -> None:
    n = 2_050  # three pages of at most 1000
    backend.fs.pipe({f"{bucket}/many/{i:05d}": b"%d" % i for i in range(n)})
    counter.reset()
    metas = run(backend.list_prefix, f"{bucket}/many", max_objects=10_000)
    assert len(metas) == n and len({m.url for m in metas}) == n
    assert len(counter.requests) == 3
    counter.reset()
    with pytest.raises(TooManyObjectsError, match="at 1001"):
        run(backend.list_prefix, f"{bucket}/many", max_objects=1000)
    assert len(counter.requests) == 2  # stopped on the page that went over, did not list the rest


# -- fetch ---------------------------------------------------------------------------------------------


def test_fetch_old_generation_after_overwrite(
    backend: GCSBackend, vbucket: str, tmp_path: Path, counter: RequestCounter
) -> None:
    path = f"{vbucket}/model.bin"
    old, new = os.urandom(300_000), b"the new bytes"
    put(backend, path, old)
    pin_old = run(backend.stat, path)
    put(backend, path, new)
    pin_new = run(backend.stat, path)
    assert pin_old.version_id != pin_new.version_id

    dest = tmp_path / "old.part"
    seen: list[int] = []
    counter.reset()
    run(backend.fetch, pin_old, dest, seen.append)
    assert len(counter.requests) == 1  # one GET of the pinned generation
    method, url = counter.requests[0]
    assert method == "GET" and f"generation={pin_old.version_id}" in url
    assert dest.read_bytes() == old
    assert sum(seen) == len(old)

    run(backend.fetch, pin_new, tmp_path / "new.part")
    assert (tmp_path / "new.part").read_bytes() == new

    # The live object deleted: its noncurrent generations are still there in a versioned bucket.
    backend.fs.rm(path)
    run(backend.fetch, pin_old, tmp_path / "again.part")
    assert (tmp_path / "again.part").read_bytes() == old


def test_fetch_zero_bytes(backend: GCSBackend, bucket: str, tmp_path: Path) -> None:
    put(backend, f"{bucket}/empty", b"")
    pin = run(backend.stat, f"{bucket}/empty")
    run(backend.fetch, pin, tmp_path / "e")
    assert (tmp_path / "e").read_bytes() == b""


def test_fetch_overwritten_in_unversioned_bucket(backend: GCSBackend, bucket: str, tmp_path: Path) -> None:
    path = f"{bucket}/data/a.txt"
    put(backend, path, b"version one")
    pin = run(backend.stat, path)
    put(backend, path, b"version two")
    dest = tmp_path / "a.part"
    with pytest.raises(ObjectChangedError) as excinfo:
        run(backend.fetch, pin, dest)
    assert pin.url in str(excinfo.value) and pin.version_id in str(excinfo.value)
    assert not dest.exists()

    backend.fs.rm(path)
    with pytest.raises(ObjectChangedError, match=pin.url):
        run(backend.fetch, pin, dest)


def test_fetch_checks_size_and_digest(backend: GCSBackend, bucket: str, tmp_path: Path) -> None:
    path = f"{bucket}/f.bin"
    put(backend, path, b"0123456789")
    pin = run(backend.stat, path)
    dest = tmp_path / "f.part"
    with pytest.raises(ObjectChangedError, match="md5"):
        run(backend.fetch, dataclasses.replace(pin, digest="md5:" + "0" * 32), dest)
    assert not dest.exists()
    with pytest.raises(ObjectChangedError, match="bytes"):
        run(backend.fetch, dataclasses.replace(pin, size=11), dest)
    # crc32c-only pins (composite objects have no md5) are checked too
    crc = "crc32c:" + base64.b64decode(backend.fs.info(path)["crc32c"]).hex()
    run(backend.fetch, dataclasses.replace(pin, digest=crc), dest)
    assert dest.read_bytes() == b"0123456789"
    with pytest.raises(ObjectChangedError, match="crc32c"):
        run(backend.fetch, dataclasses.replace(pin, digest="crc32c:00000000"), dest)


def test_fetch_unversioned_pin_reads_current_and_verifies(
    backend: GCSBackend, bucket: str, tmp_path: Path
) -> None:
    path = f"{bucket}/u.txt"
    put(backend, path, b"same")
    pin = dataclasses.replace(run(backend.stat, path), version_id=None)
    put(backend, path, b"same")  # rewritten, same bytes: still fine
    run(backend.fetch, pin, tmp_path / "u")
    assert (tmp_path / "u").read_bytes() == b"same"
    put(backend, path, b"diff")  # same size, other bytes
    with pytest.raises(ObjectChangedError, match=pin.url):
        run(backend.fetch, pin, tmp_path / "u2")
    backend.fs.rm(path)
    with pytest.raises(ObjectChangedError, match="no longer exists"):
        run(backend.fetch, pin, tmp_path / "u3")


def test_fetch_gzip_encoded_object_gives_stored_bytes(
    backend: GCSBackend, bucket: str, tmp_path: Path
) -> None:
    stored = gzip.compress(b"some text " * 1000)
    path = f"{bucket}/t.txt.gz"
    put(backend, path, stored, fixed_key_metadata={"content_encoding": "gzip"})
    pin = run(backend.stat, path)
    assert pin.size == len(stored)
    run(backend.fetch, pin, tmp_path / "t")
    assert (tmp_path / "t").read_bytes() == stored
    with backend.open_pinned(pin) as f:
        assert f.read() == stored


# -- open_pinned ---------------------------------------------------------------------------------------


def test_open_pinned_streams_ranges_of_old_generation(
    backend: GCSBackend, vbucket: str, counter: RequestCounter
) -> None:
    path = f"{vbucket}/big.bin"
    old = os.urandom(9 * 2**20 + 123)  # more than two 4 MiB blocks
    put(backend, path, old)
    pin = run(backend.stat, path)
    put(backend, path, b"overwritten")

    counter.reset()
    with backend.open_pinned(pin) as f:
        assert f.seekable() and f.readable()
        assert f.seek(0, 2) == len(old)
        f.seek(5_000_000)
        assert f.read(100) == old[5_000_000:5_000_100]
        f.seek(-10, 2)
        assert f.read() == old[-10:]
        assert f.read() == b""
        f.seek(0)
        assert f.read(3) == old[:3]
    ranged = [url for method, url in counter.requests if "alt=media" in url]
    assert ranged and all(f"generation={pin.version_id}" in url for url in ranged)
    assert len(counter.requests) <= 4  # one metadata check + a few ranged GETs, never the whole object

    with backend.open_pinned(pin) as f:
        assert f.read() == old


def test_open_pinned_gone_generation(backend: GCSBackend, bucket: str) -> None:
    path = f"{bucket}/x"
    put(backend, path, b"first")
    pin = run(backend.stat, path)
    put(backend, path, b"second")
    with pytest.raises(ObjectChangedError, match=pin.url):
        backend.open_pinned(pin)
    # an unversioned pin opens the current object only while it still matches
    with pytest.raises(ObjectChangedError, match="bytes"):
        backend.open_pinned(dataclasses.replace(pin, version_id=None))
    put(backend, path, b"first")
    with backend.open_pinned(dataclasses.replace(pin, version_id=None)) as f:
        assert f.read() == b"first"


# -- writes --------------------------------------------------------------------------------------------


def test_put_create_only(backend: GCSBackend, bucket: str) -> None:
    path = f"{bucket}/registry/artifacts/x/versions/0.json"
    run(backend.put_create_only, path, b"winner")
    with pytest.raises(FileExistsError, match=f"gs://{path}"):
        run(backend.put_create_only, path, b"loser")
    assert backend.fs.cat_file(path) == b"winner"
    run(backend.put_atomic, path, b"replaced")
    assert backend.fs.cat_file(path) == b"replaced"


def test_upload(backend: GCSBackend, bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "blob"
    local.write_bytes(b"blob bytes")
    run(backend.upload, local, f"{bucket}/blobs/ab/cdef")
    assert backend.fs.cat_file(f"{bucket}/blobs/ab/cdef") == b"blob bytes"
