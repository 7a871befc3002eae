"""HTTP downloads wait on stalls, not on total time, and retry (issue 14 item 21).

A server on 127.0.0.1 (aiohttp, in a thread) that sends bodies slowly but steadily, stalls once (with and
without an ETag) or stalls every time. Timeouts are lowered for the test: a stall is 0.5 s without a byte,
and the session's total limit (aiohttp's default is 300 s) is set to 0.6 s, less than a steady body takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import refstore
from refstore.storage.backends import _base

DATA = bytes(range(256)) * 256  # 64 KiB
HALF = len(DATA) // 2
CHUNK = 8 * 1024
ETAG = hashlib.md5(DATA).hexdigest()
STALL = 0.5
#: storage_options of each call: a 0.5 s stall timeout; a session total limit that a steady body outlasts.
OPTIONS = {"stall_timeout": STALL, "client_kwargs": {"timeout": aiohttp.ClientTimeout(total=0.6)}}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    if_range: str | None
    if_match: str | None


class SlowServer:
    """``/<mode>/<name>``: ``steady`` (8 KiB every 0.15 s), ``stall-once`` (half, then silence, once),
    ``stall-once-no-etag``, ``stall-always`` (1 KiB, then silence). Later requests honour Range, If-Range
    and If-Match on the ETag, like a real server."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.stalled: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: Any = None
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.closing = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{mode}/{name}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.closing.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def url(self, mode: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/{name}"

    def gets(self, mode: str, name: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path == f"/{mode}/{name}"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode, name = request.match_info["mode"], request.match_info["name"]
        headers = request.headers
        self.seen.append(
            Seen(
                request.method,
                request.path,
                headers.get("Range"),
                headers.get("If-Range"),
                headers.get("If-Match"),
            )
        )
        etag = None if mode.endswith("no-etag") else f'"{ETAG}"'
        common = {"ETag": etag} if etag else {}
        if request.method == "HEAD":
            return web.Response(headers={**common, "Content-Length": str(len(DATA))})
        if headers.get("If-Match") and headers["If-Match"] != etag:
            return web.Response(status=412)
        start, end = 0, len(DATA)
        ranged = headers.get("Range", "").removeprefix("bytes=")
        honoured = bool(ranged) and (not headers.get("If-Range") or headers["If-Range"] == etag)
        if honoured:
            first, _, last = ranged.partition("-")
            start, end = int(first), int(last) + 1 if last else len(DATA)
        response = web.StreamResponse(status=206 if honoured else 200, headers=common)
        if honoured:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(DATA)}"
        response.content_length = end - start
        await response.prepare(request)
        key = f"{mode}/{name}"
        if mode.startswith("stall-once") and key not in self.stalled:
            self.stalled.add(key)
            await response.write(DATA[:HALF])
            await self.closing.wait()  # silence: the client gives up on this request
        elif mode == "stall-always":
            await response.write(DATA[start : start + 1024])
            await self.closing.wait()
        for offset in range(start, end, CHUNK):
            await response.write(DATA[offset : min(offset + CHUNK, end)])
            if mode == "steady":
                await asyncio.sleep(0.15)  # 8 chunks: 1.2 s in all, twice the session's total limit
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def slow() -> Iterator[SlowServer]:
    server = SlowServer()
    server.start()
    yield server
    server.stop()


def _logged(url: str, tmp_path: Path) -> refstore.ArtifactVersion:
    art = refstore.Artifact("web")
    art.add_reference(url, storage_options=OPTIONS)
    return refstore.Registry(tmp_path / "reg").log(art)


def test_a_slow_but_steady_body_is_downloaded_past_the_total_limit(slow: SlowServer, tmp_path: Path) -> None:
    version = _logged(slow.url("steady", "a.bin"), tmp_path)
    started = time.monotonic()
    folder = version.download(tmp_path / "dl", storage_options=OPTIONS)
    assert time.monotonic() - started > 1.0  # longer than the 0.6 s total limit
    assert (folder / "a.bin").read_bytes() == DATA
    assert len(slow.gets("steady", "a.bin")) == 1  # no stall, no retry


def test_a_stall_is_resumed_with_a_range_pinned_to_the_etag(slow: SlowServer, tmp_path: Path) -> None:
    version = _logged(slow.url("stall-once", "b.bin"), tmp_path)
    folder = version.download(tmp_path / "dl", storage_options=OPTIONS)
    assert (folder / "b.bin").read_bytes() == DATA
    first, second = slow.gets("stall-once", "b.bin")
    assert first.range is None
    assert second.range == f"bytes={HALF}-"
    assert second.if_range == second.if_match == f'"{ETAG}"'


def test_a_stall_without_an_etag_starts_over(slow: SlowServer, tmp_path: Path) -> None:
    url = slow.url("stall-once-no-etag", "c.bin")
    art = refstore.Artifact("web")
    art.add_reference(url, storage_options=OPTIONS)  # no ETag: hashed by reading it (a stall, then again)
    version = refstore.Registry(tmp_path / "reg").log(art)
    folder = version.download(tmp_path / "dl", storage_options=OPTIONS, skip_cache=True)
    assert (folder / "c.bin").read_bytes() == DATA
    gets = slow.gets("stall-once-no-etag", "c.bin")
    assert [g.range for g in gets] == [None] * len(gets) and len(gets) == 3  # stalled, again, then download


def test_a_server_that_keeps_stalling_is_storage_unavailable_naming_the_url(
    slow: SlowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_base, "FETCH_BACKOFF", 0.05)
    url = slow.url("stall-always", "d.bin")
    version = _logged(url, tmp_path)
    started = time.monotonic()
    with pytest.raises(refstore.StorageUnavailableError, match=rf"^{url}: no byte for 0.5 s \(stalled"):
        version.download(tmp_path / "dl", storage_options=OPTIONS)
    assert time.monotonic() - started < 10
    assert len(slow.gets("stall-always", "d.bin")) == _base.FETCH_ATTEMPTS
    assert not (tmp_path / "dl" / "d.bin").exists()
    with pytest.raises(refstore.StorageUnavailableError, match=rf"^{url}: no byte for 0.5 s"):
        version.open("d.bin", storage_options=OPTIONS).read()


def test_the_stall_timeout_comes_from_the_environment(
    slow: SlowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_base, "FETCH_BACKOFF", 0.05)
    monkeypatch.setenv("REFSTORE_HTTP_STALL_TIMEOUT", "0.3")
    url = slow.url("stall-always", "e.bin")
    version = _logged(url, tmp_path)
    options = {"client_kwargs": OPTIONS["client_kwargs"]}
    with pytest.raises(refstore.StorageUnavailableError, match=rf"^{url}: no byte for 0.3 s"):
        version.download(tmp_path / "dl", storage_options=options)
    monkeypatch.setenv("REFSTORE_HTTP_STALL_TIMEOUT", "soon")
    with pytest.raises(refstore.InvalidURLError, match="REFSTORE_HTTP_STALL_TIMEOUT: 'soon' is not a number"):
        version.download(tmp_path / "dl2", storage_options=options)
