"""Faults between refstore and S3: resets, 5xx answers, stalls, cut-off and altered bodies.

A fault-injecting proxy (``faultproxy.py``) sits between refstore and the S3 server (moto, and Ceph RGW).
Transient faults are retried with backoff and the result is exactly what the server holds; persistent
faults end in a clear ``RefstoreError`` naming the object within a bounded time; damaged bytes never reach
the destination or the cache.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from faultproxy import FaultProxy

import refstore
from refstore.storage.backends.s3 import S3Backend

S3_SERVERS = ("moto", "rgw")

#: Short timeouts so that a stall costs half a second; 3 attempts per request.
FAST = {"connect_timeout": 1, "read_timeout": 0.5, "retries": {"mode": "standard", "total_max_attempts": 3}}
#: For faults that never stop: 2 attempts per request. The read timeout stays well under the 3 s stalls
#: but over the pauses of a busy RGW: at 0.3 s a healthy object beside the faulted one timed out twice
#: in CI and ended the download first.
GIVE_UP = {
    "connect_timeout": 1,
    "read_timeout": 1.0,
    "retries": {"mode": "standard", "total_max_attempts": 2},
}
#: No fault scenario may take longer than this to succeed or fail.
BOUND_SECONDS = 30
#: Two different faults in a row, every mode covered.
FAULT_PAIRS = [("reset", "500"), ("503", "truncate"), ("stall", "short"), ("stall-body", "corrupt")]


@pytest.fixture(autouse=True)
def _short_refetch_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-object refetches pause 0.05 s instead of 0.25 s (doubling each time): same logic, less wait."""
    monkeypatch.setattr("refstore.storage.backends._base.FETCH_BACKOFF", 0.05)


@pytest.fixture
def proxy(s3_endpoint: Any) -> Iterator[FaultProxy]:
    running = FaultProxy(s3_endpoint.endpoint_url).start()
    yield running
    running.stop()


@pytest.fixture
def objects(s3_fs: Any, s3_bucket: str) -> dict[str, bytes]:
    """Three objects of ~200 KB (single-part uploads: their ETag is their MD5) under ``data/``."""
    data = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(3)}
    s3_fs.pipe({f"{s3_bucket}/data/{k}": v for k, v in data.items()})
    s3_fs.invalidate_cache()
    return data


def _through(proxy: FaultProxy, config: dict[str, Any] = FAST) -> dict[str, Any]:
    return {"endpoint_url": proxy.url, "config_kwargs": copy.deepcopy(config)}


def _logged(bucket: str, tmp_path: Path) -> refstore.ArtifactVersion:
    """The objects referenced directly (no proxy) and logged into a local registry."""
    artifact = refstore.Artifact("data")
    artifact.add_reference(f"s3://{bucket}/data")
    return refstore.Registry(tmp_path / "registry").log(artifact)


def _cache_contents(tmp_path: Path) -> set[str]:
    """Names of the cached blobs, each checked to hash to its name."""
    blobs = tmp_path / "refstore-cache" / "blobs"
    names = set()
    for blob in blobs.rglob("*") if blobs.exists() else ():
        if blob.is_file():
            assert xxhash.xxh3_128_hexdigest(blob.read_bytes()) == blob.name, blob
            names.add(blob.name)
    return names


@pytest.mark.parametrize("modes", FAULT_PAIRS, ids="+".join)
def test_listing_is_retried_through_transient_faults(
    modes: tuple[str, str], proxy: FaultProxy, objects: dict[str, bytes], s3_bucket: str
) -> None:
    direct = refstore.Artifact("direct")
    direct.add_reference(f"s3://{s3_bucket}/data")
    for mode in modes:
        proxy.inject(mode, times=1, match="?versions")
    started = time.monotonic()
    faulty = refstore.Artifact("faulty")
    faulty.add_reference(f"s3://{s3_bucket}/data", storage_options=_through(proxy))
    assert time.monotonic() - started < BOUND_SECONDS
    assert [m for m, _ in proxy.faulted] == list(modes)
    assert faulty.manifest.to_bytes() == direct.manifest.to_bytes()


@pytest.mark.parametrize("mode", ["reset", "503", "stall"])
def test_listing_that_keeps_failing_raises_storage_unavailable(
    mode: str, proxy: FaultProxy, objects: dict[str, bytes], s3_bucket: str
) -> None:
    proxy.inject(mode, times=1000, match="GET /", stall=3)
    started = time.monotonic()
    with pytest.raises(refstore.StorageUnavailableError, match=f"s3://{s3_bucket}/data"):
        refstore.Artifact("a").add_reference(
            f"s3://{s3_bucket}/data", storage_options=_through(proxy, GIVE_UP)
        )
    assert time.monotonic() - started < BOUND_SECONDS


@pytest.mark.parametrize("modes", FAULT_PAIRS, ids="+".join)
def test_download_is_retried_through_transient_faults(
    modes: tuple[str, str], proxy: FaultProxy, objects: dict[str, bytes], s3_bucket: str, tmp_path: Path
) -> None:
    version = _logged(s3_bucket, tmp_path)
    for mode in modes:
        proxy.inject(mode, times=1, match=f"GET /{s3_bucket}/data/f1.bin")
    started = time.monotonic()
    target = version.download(tmp_path / "out", storage_options=_through(proxy))
    assert time.monotonic() - started < BOUND_SECONDS
    assert [m for m, _ in proxy.faulted] == list(modes)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == objects
    assert _cache_contents(tmp_path) == {xxhash.xxh3_128_hexdigest(b) for b in objects.values()}


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("reset", refstore.StorageUnavailableError),  # every mode, forever
        ("500", refstore.StorageUnavailableError),
        ("503", refstore.StorageUnavailableError),
        ("stall", refstore.StorageUnavailableError),
        ("truncate", refstore.StorageUnavailableError),
        ("stall-body", refstore.StorageUnavailableError),
        ("short", refstore.ObjectChangedError),
        ("corrupt", refstore.ObjectChangedError),
    ],
)
def test_download_that_keeps_failing_never_accepts_bad_bytes(
    mode: str,
    error: type[Exception],
    proxy: FaultProxy,
    objects: dict[str, bytes],
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    version = _logged(s3_bucket, tmp_path)
    proxy.inject(mode, times=1000, match=f"GET /{s3_bucket}/data/f1.bin", stall=3)
    started = time.monotonic()
    with pytest.raises(error, match=f"s3://{s3_bucket}/data/f1.bin"):
        version.download(tmp_path / "out", storage_options=_through(proxy, GIVE_UP))
    assert time.monotonic() - started < BOUND_SECONDS
    present = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert "f1.bin" not in present
    assert all(objects[name] == data for name, data in present.items())  # complete, correct files only
    assert xxhash.xxh3_128_hexdigest(objects["f1.bin"]) not in _cache_contents(tmp_path)
    assert not list((tmp_path / "refstore-cache" / "tmp").iterdir())


def test_registry_in_s3_works_through_transient_faults(
    proxy: FaultProxy, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    options = _through(proxy)
    registry = refstore.Registry(f"s3://{s3_bucket}/registry", storage_options=options)
    (tmp_path / "f.txt").write_bytes(b"registry bytes")
    artifact = refstore.Artifact("copies")
    artifact.add_file(tmp_path / "f.txt")
    for mode in ("503", "reset", "500"):
        proxy.inject(mode, times=1)
    logged = registry.log(artifact, aliases=["prod"])
    proxy.inject("truncate", times=1, match="GET /")
    again = refstore.Registry(f"s3://{s3_bucket}/registry", storage_options=options).get("copies:prod")
    assert again == logged
    target = again.download(tmp_path / "out", storage_options=options)
    assert (target / "f.txt").read_bytes() == b"registry bytes"
    assert len(proxy.faulted) == 4


def test_a_version_whose_write_answer_was_lost_is_logged_once(
    proxy: FaultProxy, s3_bucket: str, tmp_path: Path
) -> None:
    """The PUT of a version record reaches the server but its answer is lost: the client sends it again
    and the server refuses the copy (or, in a versioned bucket where RGW ignores create-only writes, the
    copy is not the key's oldest version). The log knows the record as its own: one version, created, and
    the next log takes the next number (before: "unchanged", or with another writer in between, a second
    number for the same log)."""
    registry = refstore.Registry(f"s3://{s3_bucket}/registry", storage_options=_through(proxy))
    logged = []
    for i in range(2):
        (tmp_path / "f.txt").write_bytes(f"content {i}".encode())
        artifact = refstore.Artifact("claims")
        artifact.add_file(tmp_path / "f.txt")
        if i == 0:
            proxy.inject(
                "lost-answer", times=1, match=f"PUT /{s3_bucket}/registry/artifacts/claims/versions/0"
            )
        logged.append(registry.log(artifact))
    assert [(v.version, v.created) for v in logged] == [(0, True), (1, True)]
    assert [name for name, _ in proxy.faulted] == ["lost-answer"]
    assert [v.version for v in registry.versions("claims")] == [0, 1]


@pytest.mark.parametrize("mode", ["reset", "truncate", "503"])
def test_registry_in_s3_that_keeps_failing_raises_storage_unavailable(
    mode: str, proxy: FaultProxy, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_bytes(b"x")
    artifact = refstore.Artifact("copies")
    artifact.add_file(tmp_path / "f.txt")
    refstore.Registry(f"s3://{s3_bucket}/registry").log(artifact)
    proxy.inject(mode, times=1000)
    started = time.monotonic()
    with pytest.raises(refstore.StorageUnavailableError, match=f"s3://{s3_bucket}/registry/"):
        refstore.Registry(f"s3://{s3_bucket}/registry", storage_options=_through(proxy, GIVE_UP)).get(
            "copies"
        )
    assert time.monotonic() - started < BOUND_SECONDS


def test_s3_defaults_bound_every_wait_and_can_be_overridden() -> None:
    fs = S3Backend.filesystem("s3", {})
    assert fs.config_kwargs["connect_timeout"] > 0 and fs.config_kwargs["read_timeout"] > 0
    assert fs.config_kwargs["retries"]["total_max_attempts"] <= 5
    custom = S3Backend.filesystem("s3", {"config_kwargs": {"read_timeout": 3}})
    assert custom.config_kwargs["read_timeout"] == 3
    assert custom.config_kwargs["connect_timeout"] == fs.config_kwargs["connect_timeout"]
