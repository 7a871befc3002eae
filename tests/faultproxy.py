"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, in front of a real server (the moto S3 server).

Clients talk to :attr:`FaultProxy.url` as if it were the server. Every request is forwarded unchanged
unless a fault armed with :meth:`FaultProxy.inject` matches it (a substring of ``"METHOD target"``);
each fault applies to a bounded number of requests, then the proxy is transparent again. Modes:

- ``reset``: the connection is reset (RST) once the request has arrived, no answer;
- ``500`` / ``503``: an S3-style XML error answer, the request never reaches the server;
- ``stall``: no answer for ``stall`` seconds (bounded), then the connection is closed;
- ``truncate``: the server's answer with its real ``Content-Length`` but only half the body, then close;
- ``stall-body``: headers and half the body, then silence for ``stall`` seconds, then close;
- ``short``: half the body with ``Content-Length`` rewritten to match (a complete but short answer);
- ``corrupt``: the whole body, one byte flipped (same length);
- ``lost-answer``: the request reaches the server, then the connection is reset with no answer (a write
  that landed although its client saw it fail).

``short`` and ``corrupt`` also drop the server's ``x-amz-checksum-*`` headers, so that the client library
cannot catch the damage itself: what is caught is caught by refstore's own size and MD5 checks.

:attr:`FaultProxy.requests` lists every request seen and :attr:`FaultProxy.faulted` those a fault hit.
The proxy runs its own asyncio loop in a daemon thread; :meth:`stop` closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

HOST = "127.0.0.1"
MODES = ("reset", "500", "503", "stall", "truncate", "stall-body", "short", "corrupt", "lost-answer")
_NO_BODY_STATUSES = (204, 304)


@dataclass
class Fault:
    mode: str
    times: int
    match: str
    stall: float


@dataclass
class Message:
    """A request or response: the start line, the header lines as sent, and the body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def encode(self, body: bytes | None = None, *, length: int | None = None) -> bytes:
        """The message with ``body`` (default its own) and ``Content-Length`` ``length`` if given."""
        lines = [self.start]
        for key, value in self.headers:
            if length is not None and key.lower() == "content-length":
                value = str(length)
            lines.append(f"{key}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + (self.body if body is None else body)


class FaultProxy:
    """A proxy to ``upstream`` (``http://host:port``) that injects faults on demand."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or HOST, parts.port or 80)
        self.requests: list[str] = []
        self.faulted: list[tuple[str, str]] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self.port = 0
        #: Request headers removed before forwarding (lower case), e.g. ``{"if-none-match"}`` to play a
        #: server that ignores create-only writes (moto checks no signatures).
        self.drop_request_headers: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def inject(self, mode: str, *, times: int = 1, match: str = "", stall: float = 5.0) -> None:
        """Apply ``mode`` to the next ``times`` requests whose ``"METHOD target"`` contains ``match``."""
        assert mode in MODES, mode
        with self._lock:
            self._faults.append(Fault(mode, times, match, stall))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, request_line: str) -> Fault | None:
        with self._lock:
            self.requests.append(request_line)
            for fault in self._faults:
                if fault.times > 0 and fault.match in request_line:
                    fault.times -= 1
                    self.faulted.append((fault.mode, request_line))
                    return fault
        return None

    # -- serving ----------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                request = await _read_request(reader, writer)
                if request is None:
                    return
                method, target = request.start.split(" ")[:2]
                fault = self._take_fault(f"{method} {target}")
                if fault is not None and fault.mode in ("reset", "500", "503", "stall"):
                    if not await _answer_without_server(fault, writer):
                        return
                    continue
                if self.drop_request_headers:
                    request.headers = [
                        h for h in request.headers if h[0].lower() not in self.drop_request_headers
                    ]
                upstream = upstream or await asyncio.open_connection(*self.upstream)
                upstream[1].write(request.encode())
                await upstream[1].drain()
                response = await _read_response(upstream[0], method)
                if response.header("Connection") == "close":
                    _close(upstream[1])
                    upstream = None
                if not await _relay(response, fault, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            if upstream is not None:
                _close(upstream[1])
            _close(writer)


async def _answer_without_server(fault: Fault, writer: asyncio.StreamWriter) -> bool:
    """Answer a request the server never sees; False when the connection is gone."""
    if fault.mode == "reset":
        _reset(writer)
        return False
    if fault.mode == "stall":
        await asyncio.sleep(fault.stall)
        return False
    code = "InternalError" if fault.mode == "500" else "ServiceUnavailable"
    reason = "Internal Server Error" if fault.mode == "500" else "Service Unavailable"
    body = f"<Error><Code>{code}</Code><Message>injected by faultproxy</Message></Error>".encode()
    head = f"HTTP/1.1 {fault.mode} {reason}\r\nContent-Type: application/xml\r\n"
    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    return True


async def _relay(response: Message, fault: Fault | None, writer: asyncio.StreamWriter) -> bool:
    """Send the server's answer, damaged as ``fault`` says; False when the connection must close."""
    if fault is not None and fault.mode == "lost-answer":
        _reset(writer)
        return False
    body = response.body
    half = body[: len(body) // 2]
    if fault is not None and fault.mode in ("short", "corrupt"):
        response.headers = [(k, v) for k, v in response.headers if not k.lower().startswith("x-amz-checksum")]
    if fault is None or not body:
        writer.write(response.encode())
    elif fault.mode == "corrupt":
        writer.write(response.encode(body[:-1] + bytes([body[-1] ^ 0xFF])))
    elif fault.mode == "short":
        writer.write(response.encode(half, length=len(half)))
    else:  # truncate, stall-body: the real Content-Length, half the bytes
        writer.write(response.encode(half))
        await writer.drain()
        if fault.mode == "stall-body":
            await asyncio.sleep(fault.stall)
        return False
    await writer.drain()
    return response.header("Connection") != "close"


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Message | None:
    try:
        start, headers = await _read_head(reader)
    except asyncio.IncompleteReadError:
        return None
    message = Message(start, headers, b"")
    if (message.header("Expect") or "").lower() == "100-continue":
        message.headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    message.body = await _read_body(reader, message, has_body=True)
    return message


async def _read_response(reader: asyncio.StreamReader, method: str) -> Message:
    start, headers = await _read_head(reader)
    message = Message(start, headers, b"")
    status = int(start.split(" ")[1])
    has_body = method != "HEAD" and status not in _NO_BODY_STATUSES and status >= 200
    message.body = await _read_body(reader, message, has_body=has_body)
    return message


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")[:-2]
    headers = []
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.append((key.strip(), value.strip()))
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, message: Message, *, has_body: bool) -> bytes:
    if not has_body:
        return b""
    if (message.header("Transfer-Encoding") or "").lower() == "chunked":
        data = await _read_chunked(reader)
        message.headers = [(k, v) for k, v in message.headers if k.lower() != "transfer-encoding"]
        message.headers.append(("Content-Length", str(len(data))))
        return data
    length = message.header("Content-Length")
    if length is not None:
        return await reader.readexactly(int(length))
    if message.start.startswith("HTTP/"):
        return await reader.read()  # a response delimited by the end of the connection
    return b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(data)
        data += await reader.readexactly(size)
        await reader.readexactly(2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(writer)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
