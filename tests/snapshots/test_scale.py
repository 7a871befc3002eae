"""Scale-out and interruption: work spread over a Dask cluster gives the same digests as the default path,
and Ctrl-C stops long work without leaving partial files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import refstore
from refstore.core import chunks
from refstore.core.manifest import Manifest, new_entry
from refstore.storage.hashing import PROCESS_MIN_FILES, hash_file

#: Past PROCESS_MIN_FILES (4,096: the default path hashes on worker processes, in batches of 1,024) and
#: many hash batches (64 files) and download batches (256 files); 10,000 crossed nothing more.
N_FILES = 5_000


def _tree(root: Path, count: int) -> Path:
    for i in range(count):
        folder = root / f"d{i // 500:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(f"file {i}\n".encode() * (1 + i % 7))
    return root


@pytest.fixture(scope="module")
def dask_executor(s3_server: Any) -> Iterator[Executor]:
    """Workers are processes that inherit the environment: start S3 first, so they see its endpoint."""
    from dask_support import local_cluster

    with local_cluster(processes=True) as executor:
        yield executor


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hash_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_5000_file_reference_and_download_through_dask_match_the_default(
    tmp_path: Path, dask_executor: Executor
) -> None:
    assert N_FILES > PROCESS_MIN_FILES  # the default path goes to worker processes
    source = _tree(tmp_path / "source", N_FILES)
    default = refstore.Artifact("scale").add_reference(source, max_objects=N_FILES)
    spread = refstore.Artifact("scale").add_reference(source, max_objects=N_FILES, executor=dask_executor)
    assert len(spread) == N_FILES and spread == default

    artifact = refstore.Artifact("scale")
    artifact.add_reference(source, max_objects=N_FILES, executor=dask_executor)
    version = refstore.Registry().log(artifact)
    through_dask = version.download(tmp_path / "dask", executor=dask_executor)
    plain = version.download(tmp_path / "plain", skip_cache=True)
    expected = _digests(source)
    assert _digests(through_dask) == expected == _digests(plain)
    assert {e.path: e.digest for e in version.manifest.values()} == expected


def test_an_s3_download_through_dask_sends_one_get_per_object(
    tmp_path: Path, s3_server: Any, s3_fs: Any, s3_bucket: str, dask_executor: Executor
) -> None:
    s3_fs.pipe({f"{s3_bucket}/data/o{i:03d}.bin": os.urandom(2048) for i in range(120)})
    artifact = refstore.Artifact("remote")
    artifact.add_reference(f"s3://{s3_bucket}/data")
    version = refstore.Registry().log(artifact)
    mark = s3_server.mark()
    folder = version.download(tmp_path / "out", executor=dask_executor)
    requests = s3_server.requests_since(mark)
    assert len(requests) == 120 and all(r.startswith("GET ") and "versionId=" in r for r in requests)
    assert _digests(folder) == {
        f"o{i:03d}.bin": refstore.storage.hashing.hash_bytes(s3_fs.cat(f"{s3_bucket}/data/o{i:03d}.bin"))
        for i in range(120)
    }


def test_a_listing_and_chunks_made_by_worker_processes_match_the_driver_s(
    s3_fs: Any, s3_bucket: str, dask_executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task and result crosses a process boundary here (pickled), unlike on the threads cluster of
    tests/storage/test_spread_listing.py and tests/snapshots/test_chunks_on_workers.py."""
    s3_fs.pipe({f"{s3_bucket}/data/p{i}/o{j:02d}": b"%d %d" % (i, j) for i in range(6) for j in range(5)})
    url = f"s3://{s3_bucket}/data"
    spread = refstore.Artifact("s").add_reference(url, executor=dask_executor)
    assert len(spread) == 30 and spread == refstore.Artifact("s").add_reference(url)

    monkeypatch.setattr(chunks, "SEGMENT_ENTRIES", 5_000)  # the driver's; the workers cut with the defaults
    rows = [
        (f"d{i // 700:03d}/f{i:06d}", f"s3://b/d{i // 700:03d}/f{i:06d}", i % 977, f"{i:032x}")
        for i in range(25_000)
    ]
    manifest = Manifest.of(new_entry(p, r, n, f"etag:{e}", e, None) for p, r, n, e in rows)
    here, there = chunks.chunked(manifest), chunks.chunked(manifest, dask_executor)
    assert isinstance(here, chunks.PendingManifest) and isinstance(there, chunks.PendingManifest)
    assert (there.digest, there.pending) == (here.digest, here.pending)


def test_hashing_on_a_process_pool_matches_threads(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source", 300)
    (source / "big.bin").write_bytes(os.urandom(9 * 2**20))  # streamed in blocks, not one read
    with ProcessPoolExecutor(2) as pool:
        spread = refstore.Artifact("p").add_dir(source, executor=pool)
    assert spread == refstore.Artifact("p").add_dir(source)
    assert {e.path: e.digest for e in spread} == _digests(source)


# -- Ctrl-C ---------------------------------------------------------------------------------------------

_DOWNLOAD = """
import sys, refstore
refstore.Registry(sys.argv[1]).get("big").download(sys.argv[2])
"""


def _interrupt(script: str, args: list[str], started: Any, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``script``, wait until ``started()``, then press Ctrl-C (SIGINT) on it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # as on a terminal: a test run started in the background inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler at all
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    return proc


def test_ctrl_c_stops_a_download_leaving_only_complete_files(
    tmp_path: Path, s3_server: Any, s3_fs: Any, s3_bucket: str
) -> None:
    blobs = {f"{s3_bucket}/big/o{i:04d}.bin": os.urandom(32 * 1024) for i in range(800)}
    s3_fs.pipe(blobs)
    artifact = refstore.Artifact("big")
    artifact.add_reference(f"s3://{s3_bucket}/big")
    refstore.Registry(tmp_path / "reg").log(artifact)
    dest = tmp_path / "out"
    env = {**os.environ, "REFSTORE_PROGRESS": "0"}

    proc = _interrupt(
        _DOWNLOAD, [str(tmp_path / "reg"), str(dest)], lambda: dest.exists() and any(dest.iterdir()), env
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    written = sorted(dest.iterdir())
    assert 0 < len(written) < 800, "interrupted mid-way"
    for path in written:
        assert not path.name.startswith("."), f"a staging file was left: {path.name}"
        assert path.read_bytes() == blobs[f"{s3_bucket}/big/{path.name}"], f"partial file {path.name}"

    again = refstore.Registry(tmp_path / "reg").get("big").download(dest)  # running it again finishes
    assert len(list(again.iterdir())) == 800


_REFERENCE = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
import refstore

class Slow(ThreadPoolExecutor):  # 0.2 s per batch of files: long work, deterministically
    def submit(self, fn, /, *args, **kwargs):
        return super().submit(lambda: (time.sleep(0.2), fn(*args, **kwargs))[1])

open(sys.argv[2], "w").close()
refstore.Artifact("x").add_reference(sys.argv[1], executor=Slow(1))
print("finished", flush=True)
"""


def test_ctrl_c_stops_hashing_a_large_tree_promptly(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source", 2000)  # about 30 batches: 6 s of work
    stamp = tmp_path / "started"
    env = {**os.environ, "REFSTORE_PROGRESS": "0"}
    proc = _interrupt(_REFERENCE, [str(source), str(stamp)], stamp.exists, env)
    interrupted = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err and "finished" not in out
    assert time.monotonic() - interrupted < 3, "the batches not started yet were cancelled"
