"""HTTPBackend against a real aiohttp server on 127.0.0.1 (a background thread); nothing is mocked.

The server is ``web.static`` over a temporary folder: it sends strong ETags (``"<mtime_ns>-<size>"`` in
hex), Last-Modified, honours Range, and answers ``If-Match`` with 412 when the ETag differs. A few extra
routes stand in for servers that behave otherwise (weak ETags, no ``If-Match`` support, errors). Requests
are recorded server side by a middleware.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import fsspec.asyn
import pytest
from aiohttp import web

from refstore.core.exceptions import InvalidURLError, ObjectChangedError, StorageUnavailableError
from refstore.storage.backends import ObjectMeta, backend_class
from refstore.storage.backends.http import HTTPBackend

# -- the server --------------------------------------------------------------------------------------


@dataclass
class Dynamic:
    """An object served by a hand-written route, to imitate other servers."""

    data: bytes
    etag: str | None  # the header value, quotes and W/ included
    honour_if_match: bool = True
    #: GETs answered 503 Service Unavailable before the object is served (HEADs are always answered).
    busy: int = 0


@dataclass
class Server:
    base: str
    root: Path
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    dynamic: dict[str, Dynamic] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def write(self, name: str, data: bytes) -> None:
        """Write a served file, making sure its ETag (mtime_ns and size) changes."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_bytes(data)
        if path.stat().st_mtime_ns == before:
            os.utime(path, ns=(before + 1000, before + 1000))

    def requests_since(self, mark: int) -> list[tuple[str, str, dict[str, str]]]:
        return self.log[mark:]


def _dynamic_handler(server: Server) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "error500":
            raise web.HTTPInternalServerError()
        if name == "forbidden":
            raise web.HTTPForbidden()
        obj = server.dynamic.get(name)
        if obj is None:
            raise web.HTTPNotFound()
        if obj.busy and request.method == "GET":
            obj.busy -= 1
            raise web.HTTPServiceUnavailable()
        headers = {"Accept-Ranges": "bytes"}
        if obj.etag:
            headers["ETag"] = obj.etag
        if_match = request.headers.get("If-Match")
        # RFC 9110: If-Match uses the strong comparison, a weak ETag never matches
        strong_match = obj.etag is not None and not obj.etag.startswith("W/") and if_match == obj.etag
        if if_match is not None and obj.honour_if_match and not strong_match:
            raise web.HTTPPreconditionFailed(headers=headers)
        body = obj.data
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("Range", ""))
        if match:
            start, end = int(match[1]), min(int(match[2]), len(obj.data) - 1)
            body = obj.data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(obj.data)}"
            status = 206
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers)

    return handle


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("http-root")
    loop = asyncio.new_event_loop()
    state = Server(base="", root=root)

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        state.log.append((request.method, request.path_qs, dict(request.headers)))
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[record])
    app.router.add_route("*", "/dyn/{name}", _dynamic_handler(state))
    app.router.add_static("/files", root)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    state.base = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def backend(server: Server) -> HTTPBackend:
    return HTTPBackend(HTTPBackend.filesystem("http", {}), "http")


def run(func: Any, *args: Any, **kwargs: Any) -> Any:
    return fsspec.asyn.sync(fsspec.asyn.get_loop(), func, *args, **kwargs)


def _pin(backend: HTTPBackend, url: str) -> ObjectMeta:
    meta = run(backend.stat, url)
    assert meta is not None
    return meta  # type: ignore[no-any-return]


# -- URLs --------------------------------------------------------------------------------------------


def test_registered_for_http_schemes() -> None:
    assert backend_class("http") is HTTPBackend
    assert backend_class("https") is HTTPBackend
    assert HTTPBackend.package == "aiohttp"


def test_the_path_is_the_url(backend: HTTPBackend) -> None:
    for url in ("http://example.org/a/b.csv", "https://example.org/x?y=1"):
        assert backend.path(url) == url
        assert backend.url(url) == url
    https = HTTPBackend(backend.fs, "https")
    assert https.url("http://example.org/a") == "http://example.org/a"  # http stays http


# -- stat --------------------------------------------------------------------------------------------


def test_stat_is_one_head(backend: HTTPBackend, server: Server) -> None:
    server.write("a.txt", b"hello")
    st = (server.root / "a.txt").stat()
    mark = len(server.log)
    meta = run(backend.stat, server.url("files/a.txt"))
    assert [m for m, _, _ in server.requests_since(mark)] == ["HEAD"]
    assert meta.url == server.url("files/a.txt")
    assert meta.size == 5
    assert meta.etag == f"{st.st_mtime_ns:x}-{st.st_size:x}"  # aiohttp's ETag, quotes removed
    assert meta.digest == f"etag:{meta.etag}"
    assert meta.version_id is None
    expected = parsedate_to_datetime(_last_modified(server, "files/a.txt"))
    assert datetime.fromisoformat(meta.last_modified) == expected


def _last_modified(server: Server, name: str) -> str:
    import urllib.request

    request = urllib.request.Request(server.url(name), method="HEAD")
    with urllib.request.urlopen(request) as response:
        return str(response.headers["Last-Modified"])


def test_stat_without_etag(backend: HTTPBackend, server: Server) -> None:
    server.dynamic["noetag"] = Dynamic(b"abc", etag=None)
    meta = run(backend.stat, server.url("dyn/noetag"))
    assert meta.size == 3 and meta.etag is None and meta.digest is None


def test_stat_of_missing_and_failing_urls(backend: HTTPBackend, server: Server) -> None:
    assert run(backend.stat, server.url("files/missing")) is None
    assert run(backend.stat, server.url("dyn/missing")) is None
    # a server error is an error, not a missing object (fsspec's info() says FileNotFoundError for both)
    with pytest.raises(OSError, match="500") as info:
        run(backend.stat, server.url("dyn/error500"))
    assert not isinstance(info.value, FileNotFoundError)
    with pytest.raises(PermissionError, match="403"):
        run(backend.stat, server.url("dyn/forbidden"))


def test_list_prefix_is_refused(backend: HTTPBackend, server: Server) -> None:
    with pytest.raises(InvalidURLError, match="single objects"):
        run(backend.list_prefix, server.url("files"), max_objects=10)


# -- fetch -------------------------------------------------------------------------------------------


def test_fetch_is_one_conditional_get(backend: HTTPBackend, server: Server, tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)
    server.write("f.bin", data)
    pin = _pin(backend, server.url("files/f.bin"))
    seen: list[int] = []
    mark = len(server.log)
    run(backend.fetch, pin, tmp_path / "out", seen.append)
    assert (tmp_path / "out").read_bytes() == data
    assert sum(seen) == len(data)
    ((method, _, headers),) = server.requests_since(mark)
    assert method == "GET" and headers["If-Match"] == f'"{pin.etag}"'


def test_fetch_after_overwrite_raises_changed(backend: HTTPBackend, server: Server, tmp_path: Path) -> None:
    server.write("f", b"old")
    pin = _pin(backend, server.url("files/f"))
    server.write("f", b"newer")
    with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
        run(backend.fetch, pin, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fetch_after_delete_raises_changed(backend: HTTPBackend, server: Server, tmp_path: Path) -> None:
    server.write("gone", b"old")
    pin = _pin(backend, server.url("files/gone"))
    (server.root / "gone").unlink()
    with pytest.raises(ObjectChangedError, match="gone"):
        run(backend.fetch, pin, tmp_path / "out")


def test_fetch_with_a_weak_etag(backend: HTTPBackend, server: Server, tmp_path: Path) -> None:
    # If-Match never matches a weak ETag: one 412, then an unconditional GET checked by its ETag.
    server.dynamic["weak"] = Dynamic(b"weak bytes", etag='W/"v1"')
    pin = _pin(backend, server.url("dyn/weak"))
    assert pin.etag == "v1"
    mark = len(server.log)
    run(backend.fetch, pin, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"weak bytes"
    assert [("If-Match" in h) for _, _, h in server.requests_since(mark)] == [True, False]
    server.dynamic["weak"] = Dynamic(b"other bytes", etag='W/"v2"')
    with pytest.raises(ObjectChangedError, match="ETag is v2"):
        run(backend.fetch, pin, tmp_path / "out2")


def test_fetch_from_a_server_ignoring_if_match(backend: HTTPBackend, server: Server, tmp_path: Path) -> None:
    server.dynamic["lax"] = Dynamic(b"one", etag='"e1"', honour_if_match=False)
    pin = _pin(backend, server.url("dyn/lax"))
    run(backend.fetch, pin, tmp_path / "out")
    server.dynamic["lax"] = Dynamic(b"two", etag='"e2"', honour_if_match=False)
    with pytest.raises(ObjectChangedError, match="ETag is e2"):
        run(backend.fetch, pin, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    # same ETag but other bytes: the byte count still catches a size change
    server.dynamic["lax"] = Dynamic(b"three", etag='"e1"', honour_if_match=False)
    with pytest.raises(ObjectChangedError, match="bytes"):
        run(backend.fetch, pin, tmp_path / "out3")


def test_fetch_unchecked_pin_reads_what_is_there(
    backend: HTTPBackend, server: Server, tmp_path: Path
) -> None:
    server.write("u", b"whatever is there")
    pin = ObjectMeta(url=server.url("files/u"), size=0, digest="ref:" + hashlib.sha256(b"u").hexdigest())
    run(backend.fetch, pin, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"whatever is there"
    with backend.open_pinned(pin) as handle:
        assert handle.read() == b"whatever is there"


# -- open_pinned -------------------------------------------------------------------------------------


def test_open_pinned_seeks_with_conditional_range_reads(backend: HTTPBackend, server: Server) -> None:
    data = bytes(range(256)) * 40
    server.write("r.bin", data)
    pin = _pin(backend, server.url("files/r.bin"))
    mark = len(server.log)
    with backend.open_pinned(pin) as handle:
        assert handle.seekable() and not handle.writable()
        handle.seek(1000)
        assert handle.read(10) == data[1000:1010]
        assert handle.tell() == 1010
        handle.seek(-5, os.SEEK_END)
        assert handle.read() == data[-5:]
        handle.seek(0)
        assert handle.read() == data
    requests = server.requests_since(mark)
    assert requests[0][0] == "HEAD"
    gets = [h for m, _, h in requests if m == "GET"]
    assert gets and all(h["If-Match"] == f'"{pin.etag}"' and h["Range"].startswith("bytes=") for h in gets)


def test_open_pinned_after_overwrite_raises_changed(backend: HTTPBackend, server: Server) -> None:
    server.write("o", b"old")
    pin = _pin(backend, server.url("files/o"))
    server.write("o", b"new!")
    with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
        backend.open_pinned(pin)


def test_open_pinned_notices_a_change_mid_read(backend: HTTPBackend, server: Server) -> None:
    data = os.urandom(9 * 2**20)  # more than one 4 MiB block
    server.write("big", data)
    pin = _pin(backend, server.url("files/big"))
    with backend.open_pinned(pin) as handle:
        assert handle.read(10) == data[:10]
        server.write("big", b"replaced")
        handle.seek(8 * 2**20)
        with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
            handle.read(10)


def test_open_pinned_with_a_weak_etag(backend: HTTPBackend, server: Server) -> None:
    server.dynamic["weak-open"] = Dynamic(b"0123456789", etag='W/"w"')
    pin = _pin(backend, server.url("dyn/weak-open"))
    with backend.open_pinned(pin) as handle:
        handle.seek(3)
        assert handle.read(4) == b"3456"


# -- writes ------------------------------------------------------------------------------------------


def test_http_is_read_only(backend: HTTPBackend, server: Server, tmp_path: Path) -> None:
    url = server.url("files/registry/x.json")
    with pytest.raises(InvalidURLError, match="read-only"):
        run(backend.put_create_only, url, b"x")
    with pytest.raises(InvalidURLError, match="read-only"):
        run(backend.put_atomic, url, b"x")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InvalidURLError, match="read-only"):
        run(backend.upload, tmp_path / "f", url)
    assert not (server.root / "registry").exists()


def test_fetch_retries_a_server_that_answers_try_again(
    backend: HTTPBackend, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("refstore.storage.backends._base.FETCH_BACKOFF", 0.01)
    server.dynamic["busy.bin"] = Dynamic(b"busy bytes", '"b1"')
    pin = _pin(backend, server.url("dyn/busy.bin"))
    server.dynamic["busy.bin"].busy = 2
    mark = len(server.log)
    run(backend.fetch, pin, tmp_path / "busy.bin")
    assert (tmp_path / "busy.bin").read_bytes() == b"busy bytes"
    assert [m for m, _, _ in server.requests_since(mark)] == ["GET", "GET", "GET"]


def test_fetch_gives_up_on_a_server_that_keeps_answering_try_again(
    backend: HTTPBackend, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("refstore.storage.backends._base.FETCH_BACKOFF", 0.01)
    server.dynamic["down.bin"] = Dynamic(b"never", '"d1"')
    pin = _pin(backend, server.url("dyn/down.bin"))
    server.dynamic["down.bin"].busy = 1000
    with pytest.raises(StorageUnavailableError) as caught:
        run(backend.fetch, pin, tmp_path / "down.bin")
    message = str(caught.value)
    assert message.startswith(server.url("dyn/down.bin")) and "HTTP 503" in message and "\n" not in message
    assert not (tmp_path / "down.bin").exists()
