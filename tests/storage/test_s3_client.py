"""Which client serves S3's data plane: obstore by default, s3fs on request or where obstore cannot keep
the meaning of ``storage_options``; either way the same pinned bytes, checks and errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
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


def test_a_client_chosen_later_is_not_hidden_by_a_cached_backend(
    s3_endpoint: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend made before ``REFSTORE_S3_CLIENT`` changed is not reused after (nothing cleared): the
    suite's s3fs pass had run test_s3_ranged and later modules on obstore, cached by this module."""
    assert isinstance(_backend(f"s3://{s3_bucket}/k").data_plane, ObstorePlane)
    monkeypatch.setenv("REFSTORE_S3_CLIENT", "s3fs")
    assert resolve(f"s3://{s3_bucket}/k", {}).backend.data_plane is None
    monkeypatch.delenv("REFSTORE_S3_CLIENT")
    assert isinstance(resolve(f"s3://{s3_bucket}/k", {}).backend.data_plane, ObstorePlane)


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


_EXIT_SCRIPT = """
import asyncio, sys, time
from fsspec.asyn import get_loop
from refstore.storage.locations import resolve
plane = resolve("s3://b/k", {"config_kwargs": {"retries": {"max_attempts": 0}}}).backend.data_plane
assert plane is not None
for i in range(120):
    asyncio.run_coroutine_threadsafe(plane.call("head_object", Bucket="b", Key=f"k{i}"), get_loop())
time.sleep(0.1)
sys.exit(3)
"""


def test_process_exits_cleanly_with_obstore_requests_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that ends while obstore requests are answered (the CLI after its first error) exits
    with its own code: the answers no longer reach a finalizing interpreter (SIGABRT before)."""
    from aiohttp import web

    async def slow_not_found(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.path.rsplit("k", 1)[1]) * 0.004)  # answers spread over 0.5 s
        return web.Response(status=404)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", slow_not_found)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    env = {
        **os.environ,
        "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("REFSTORE_S3_CLIENT", None)
    try:
        for _ in range(6):
            done = subprocess.run(
                [sys.executable, "-c", _EXIT_SCRIPT], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 3, done.stderr[-2000:]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
