"""What every benchmark case shares: the test suite's servers, timing, the peers' venv and result rows.

Peers run side by side with refstore on the same data in the same run, interleaved repeat by repeat so
that the noise of a shared machine spreads over all of them; a row keeps every repeat and reports the
median.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests"))  # servers.py: the same servers and request logs as the tests

from servers import S3Server, start_moto  # noqa: E402

PEERS_VENV = BENCH_DIR / ".venv-peers"
#: What the peers' venv holds; wandb stays out of the main interpreter (it pins protobuf/google packages).
PEER_PACKAGES = ("wandb==0.31.0", "boto3")

T = TypeVar("T")


@dataclass
class Row:
    """One tool on one workload: every repeat's seconds (and server-side request count)."""

    case: str
    workload: str
    tool: str
    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    #: Bytes the workload covers (throughput columns), 0 when not meaningful.
    nbytes: int = 0
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def median_requests(self) -> int | None:
        return int(statistics.median(self.requests)) if self.requests else None

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "workload": self.workload,
            "tool": self.tool,
            "seconds": self.seconds,
            "median": self.median,
            "requests": self.requests,
            "nbytes": self.nbytes,
            "note": self.note,
        }


@dataclass
class Target:
    """A BENCHMARKS.md target and what this run measured for it."""

    name: str
    target: str
    measured: str
    met: bool
    why: str = ""


@dataclass
class CaseResult:
    """A case's rows, its checked targets and free text (tables of extra figures, explanations)."""

    title: str
    #: Ratios are taken against the first row of each workload whose tool starts with this.
    base_tool: str = "refstore"
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, workload: str, tool: str, *, nbytes: int = 0, note: str = "") -> Row:
        found = Row(self.title, workload, tool, nbytes=nbytes, note=note)
        self.rows.append(found)
        return found


def settle() -> None:
    """Write back dirty pages before timed work, so no timed step pays for earlier writes.

    (On this VM's ext4 without a journal it also matters for creating files: inodes freed in the last
    60 s, or 300 s while their inode-table block is dirty, are skipped one by one when new ones are
    allocated, so deleting a 10,000-file tree made the next 10,000 creations several times slower.)
    """
    os.sync()


def timed(func: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``func()`` took, and what it returned."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


# -- servers and environment ----------------------------------------------------------------------------


def s3_environment(endpoint: str) -> dict[str, str]:
    """Variables that point refstore, s3fs, boto3 and wandb at the local moto server with dummy keys."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_S3_ENDPOINT_URL": endpoint,
    }


@contextmanager
def moto_server(workdir: Path) -> Iterator[S3Server]:
    """A moto server for the whole run, its endpoint exported for refstore (and inherited by peers)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL", "AWS_PROFILE"):
        os.environ.pop(name, None)
    server = start_moto(workdir)
    os.environ.update(s3_environment(server.endpoint_url))
    try:
        yield server
    finally:
        proc = server.process.proc
        if proc is not None and proc.poll() is not None:  # it died under us: say how
            tail = server.process.log_path.read_text(errors="replace").splitlines()[-15:]
            print(f"moto exited with {proc.returncode}; its log ends:", *tail, sep="\n", file=sys.stderr)
        server.stop()


def raw_s3fs(endpoint: str, **options: Any) -> Any:
    """A fresh s3fs filesystem on the moto server, as a user doing it by hand would make one."""
    import s3fs

    return s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint},
        skip_instance_cache=True,
        **options,
    )


async def close_s3fs(fs: Any) -> None:
    """Close an asynchronous s3fs client made inside ``asyncio.run`` before its loop ends."""
    client = getattr(fs, "_s3", None)
    if client is not None:
        await client.close()


# -- peers: wandb in its own venv -----------------------------------------------------------------------


def peers_python(*, create: bool = True) -> Path | None:
    """The peers' venv interpreter, created (and wandb installed) on first use; None if not wanted/able."""
    python = PEERS_VENV / "bin" / "python"
    if python.exists() and _has_wandb(python):
        return python
    if not create:
        return None
    print(f"creating {PEERS_VENV} with {' '.join(PEER_PACKAGES)} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_PACKAGES],
        check=True,
    )
    return python


def _has_wandb(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import wandb"], capture_output=True)
    return probe.returncode == 0


def peer_version(python: Path | None, package: str) -> str:
    if python is None:
        return "not run"
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def run_peer(python: Path, script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``benchmarks/peers/<script>`` in the peers' venv; it prints one JSON object (its own timing)."""
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    environment["WANDB_DIR"] = environment.get("WANDB_DIR", str(Path(environment.get("TMPDIR", "/tmp"))))
    done = subprocess.run(
        [str(python), str(BENCH_DIR / "peers" / script), *args],
        capture_output=True,
        text=True,
        env=environment,
    )
    if done.returncode != 0:
        raise RuntimeError(f"peer {script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- machine and versions -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """nproc, memory, CPU model, OS and Python of this machine."""
    memory = "unknown"
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions(packages: Sequence[str]) -> dict[str, str]:
    import importlib.metadata

    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def fmt_seconds(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}x"
