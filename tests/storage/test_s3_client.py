"""Which client serves S3's data plane: obstore by default, s3fs on request or where obstore cannot keep
the meaning of ``storage_options``; either way the same pinned bytes, checks and errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import xxhash

import refstore
from refstore.core.meta import ObjectMeta
from refstore.storage.backends.s3 import S3Backend
from refstore.storage.backends.s3_obstore import ObstorePlane
from refstore.storage.locations import clear_backends, resolve

#: The tests of obstore's requests run on both S3 servers; the choice of client needs only one.
both_servers = pytest.mark.parametrize("s3_endpoint", ["moto", "rgw"], indirect=True)


@pytest.fixture(autouse=True)
def _default_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default choice, whatever the shell (or the suite's s3fs pass) set."""
    monkeypatch.delenv("REFSTORE_S3_CLIENT", raising=False)


def _backend(url: str, **options: Any) -> S3Backend:
    clear_backends()
    backend = resolve(url, options).backend
    assert isinstance(backend, S3Backend)
    return backend


def _pin(fs: Any, path: str) -> ObjectMeta:
    info = fs.info(path)
    return ObjectMeta(
        url=f"s3://{path}",
        size=info["size"],
        digest="etag:" + info["ETag"].strip('"'),
        etag=info["ETag"].strip('"'),
        version_id=info.get("VersionId"),
    )


@both_servers
def test_obstore_fetches_pinned_versions_and_ranges(
    s3_endpoint: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_fs.pipe_file(f"{s3_bucket}/k.bin", b"first bytes")
    pin = _pin(s3_fs, f"{s3_bucket}/k.bin")
    s3_fs.pipe_file(f"{s3_bucket}/k.bin", b"second, longer bytes")
    backend = _backend(f"s3://{s3_bucket}/k.bin")
    assert isinstance(backend.data_plane, ObstorePlane)
    digest = asyncio.run(backend.fetch(pin, tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"first bytes"
    assert digest == xxhash.xxh3_128_hexdigest(b"first bytes")
    with backend.open_pinned(pin) as f:
        f.seek(6)
        assert f.read(3) == b"byt"
    assert asyncio.run(backend.stat(f"{s3_bucket}/k.bin")).size == len(b"second, longer bytes")  # type: ignore[union-attr]


@both_servers
def test_obstore_create_only_put_refused_once_written(s3_endpoint: Any, s3_unversioned_bucket: str) -> None:
    backend = _backend(f"s3://{s3_unversioned_bucket}/x")
    assert backend.data_plane is not None
    asyncio.run(backend.put_create_only(f"{s3_unversioned_bucket}/claim", b"one"))
    with pytest.raises(FileExistsError, match="already exists"):
        asyncio.run(backend.put_create_only(f"{s3_unversioned_bucket}/claim", b"two"))


def test_s3fs_selected_by_environment(
    s3_endpoint: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_S3_CLIENT", "s3fs")
    s3_fs.pipe_file(f"{s3_bucket}/k.bin", b"bytes")
    backend = _backend(f"s3://{s3_bucket}/k.bin")
    assert backend.data_plane is None
    asyncio.run(backend.fetch(_pin(s3_fs, f"{s3_bucket}/k.bin"), tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"bytes"


def test_unknown_client_is_one_clear_error(
    s3_endpoint: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_S3_CLIENT", "boto")
    with pytest.raises(refstore.RefstoreError, match="REFSTORE_S3_CLIENT='boto': expected obstore or s3fs"):
        _ = _backend(f"s3://{s3_bucket}/k").data_plane


def test_options_obstore_cannot_keep_fall_back_to_s3fs(
    s3_endpoint: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sse = {"s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}
    assert _backend(f"s3://{s3_bucket}/k", **sse).data_plane is None
    monkeypatch.setenv("REFSTORE_S3_CLIENT", "obstore")
    with pytest.raises(refstore.RefstoreError, match="s3_additional_kwargs"):
        _ = _backend(f"s3://{s3_bucket}/k", **sse).data_plane


def test_profile_credentials_stay_with_botocore(
    s3_endpoint: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert _backend(f"s3://{s3_bucket}/k").data_plane is None


@pytest.mark.s3_server("rgw")
def test_storage_options_credentials_reach_obstore(
    s3_endpoint: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RGW checks signatures: the keys in storage_options are the ones obstore signs with, and a refused
    request is StorageAccessError naming the object."""
    s3_fs.pipe_file(f"{s3_bucket}/k.bin", b"bytes")
    pin = _pin(s3_fs, f"{s3_bucket}/k.bin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    good = _backend(f"s3://{s3_bucket}/k.bin", key=s3_endpoint.access_key, secret=s3_endpoint.secret_key)
    assert good.data_plane is not None
    asyncio.run(good.fetch(pin, tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"bytes"
    bad = _backend(f"s3://{s3_bucket}/k.bin")
    assert bad.data_plane is not None
    with pytest.raises(refstore.StorageAccessError, match=f"s3://{s3_bucket}/k.bin"):
        asyncio.run(bad.fetch(pin, tmp_path / "out2"))
