"""Worker processes for many small files: same digests as hashing inline, errors that come back whole, a
dead child that fails its tasks instead of hanging, and children that never outlive their caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import refstore
from refstore.storage import workers
from refstore.storage.hashing import PROCESS_MIN_FILES, hash_batch, hash_file, stat_and_hash
from refstore.storage.workers import ProcessExecutor

N_FILES = PROCESS_MIN_FILES + 1000


@pytest.fixture(autouse=True)
def _every_reference_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about hashing: a tree referenced again is hashed again, not taken from the stat
    cache (issue 16), so that the second reference goes to the workers too."""
    monkeypatch.setenv("REFSTORE_STAT_CACHE", "0")


def _tree(root: Path, count: int) -> Path:
    for i in range(count):
        folder = root / f"d{i // 700:02d}" / ("deep" if i % 3 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(f"small file {i}\n".encode() * (1 + i % 5))
    return root


def _worker_pids() -> list[int]:
    shared = workers._shared
    assert shared is not None, "the reference did not go to worker processes"
    return [w._process.pid for w in shared._workers]


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except FileNotFoundError:
            return True
        if state == "Z":  # exited, not yet reaped by its parent
            return True
        time.sleep(0.05)
    return False


def test_many_small_files_hash_the_same_on_worker_processes_as_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _tree(tmp_path / "source", N_FILES)
    spread = refstore.Artifact("w").add_reference(source, max_objects=N_FILES)
    assert len(_worker_pids()) == (os.cpu_count() or 1)

    monkeypatch.setenv(workers.ENV_SWITCH, "0")
    inline = refstore.Artifact("w").add_reference(source, max_objects=N_FILES)
    assert spread == inline
    assert [e.path for e in spread] == sorted(e.path for e in spread)
    for entry in spread[::997]:
        assert entry.digest == hash_file(source / entry.path)
        assert entry.size == (source / entry.path).stat().st_size


def test_a_batch_opens_files_by_name_in_their_folder_and_errors_name_the_whole_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("x", "y"):
        (tmp_path / "a" / name).write_bytes(name.encode())
    here = Path.cwd()
    os.chdir(tmp_path / "a")
    try:
        paths = [str(tmp_path / "a" / "x"), "y", str(tmp_path / "a" / "y")]  # a relative name in between
        found = hash_batch(paths)
    finally:
        os.chdir(here)
    assert found.digests == [stat_and_hash(str(tmp_path / "a" / n)).digest for n in ("x", "y", "y")]
    assert found.sizes == [1, 1, 1]

    missing = str(tmp_path / "a" / "gone")
    with pytest.raises(FileNotFoundError) as caught:
        hash_batch([str(tmp_path / "a" / "x"), missing])
    assert caught.value.filename == missing


def test_a_task_error_comes_back_from_the_child_with_its_type_and_path(tmp_path: Path) -> None:
    pool = ProcessExecutor(1)
    try:
        missing = str(tmp_path / "gone.bin")
        with pytest.raises(FileNotFoundError) as caught:
            pool.submit(hash_batch, [missing]).result(timeout=30)
        assert caught.value.filename == missing
        assert pool.submit(sum, [1, 2]).result(timeout=30) == 3, "the child lives on after a task error"
    finally:
        pool.shutdown()


def test_a_child_that_dies_fails_its_task_and_every_later_one_with_a_clear_error() -> None:
    pool = ProcessExecutor(2)
    try:
        dying = pool.submit(os._exit, 7)
        with pytest.raises(refstore.RefstoreError, match=r"worker process \d+ died \(exit code 7\)"):
            dying.result(timeout=30)
        assert pool.failure is not None
        with pytest.raises(refstore.RefstoreError, match="died"):
            pool.submit(sum, [1]).result(timeout=30)
    finally:
        pool.shutdown()


def test_a_broken_shared_pool_is_replaced(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source", N_FILES)
    refstore.Artifact("w").add_reference(source, max_objects=N_FILES)
    shared = workers.shared_executor()
    assert shared is not None
    with pytest.raises(refstore.RefstoreError):
        shared.submit(os._exit, 1).result(timeout=30)

    again = refstore.Artifact("w").add_reference(source, max_objects=N_FILES)
    assert workers._shared is not shared and len(again) == N_FILES


_UNGUARDED = """
import sys
import refstore
entries = refstore.Artifact("x").add_reference(sys.argv[1], max_objects=10**6)
print("ran", len(entries), *[w._process.pid for w in refstore.storage.workers._shared._workers], flush=True)
"""


def test_an_unguarded_script_runs_once_and_its_workers_end_with_it(tmp_path: Path) -> None:
    """No ``if __name__ == "__main__":`` guard: children must not import the caller's main module."""
    source = _tree(tmp_path / "source", N_FILES)
    script = tmp_path / "snapshot.py"
    script.write_text(textwrap.dedent(_UNGUARDED))
    done = subprocess.run(
        [sys.executable, str(script), str(source)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ran {N_FILES} "), done.stdout
    pids = [int(p) for p in lines[0].split()[2:]]
    assert pids and all(_gone(pid) for pid in pids), "a worker outlived its caller"


_KILLED = """
import sys, time
import refstore
refstore.Artifact("x").add_reference(sys.argv[1], max_objects=10**6)
print(*[w._process.pid for w in refstore.storage.workers._shared._workers], flush=True)
time.sleep(600)
"""


def test_workers_of_a_killed_caller_exit(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source", N_FILES)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED), str(source)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert pids and all(_gone(pid) for pid in pids), "a worker outlived its killed caller"


def test_children_that_cannot_start_leave_hashing_on_this_thread_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with an embedded interpreter whose ``sys.executable`` is not a Python that imports refstore."""
    source = _tree(tmp_path / "source", N_FILES)
    monkeypatch.setattr(workers, "_shared", None)
    monkeypatch.setattr(workers, "_unusable", False)
    monkeypatch.setattr(workers, "_BOOT", "import sys; sys.exit(3)")
    with pytest.warns(RuntimeWarning, match="worker processes could not start.*exit code 3"):
        entries = refstore.Artifact("w").add_reference(source, max_objects=N_FILES)
    assert workers._shared is None and workers._unusable
    assert len(entries) == N_FILES and entries[0].digest == hash_file(source / entries[0].path)

    again = refstore.Artifact("w").add_reference(source, max_objects=N_FILES)  # no second try, no warning
    assert again == entries
