"""Runs that are still alive are never cleaned (issue 14 item 11).

``refstore sync --clean`` deletes a run directory only when every process that opened it is provably gone:
each process keeps a lease in the run directory, refreshed by a thread of its own. The processes here are
real: a run "on another host" of a shared file system is a process whose host name says so (its pid means
nothing here), a resumed run is a second process on the same directory. The two scenario tests run with the
registry in a local folder and on moto S3."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from runs_support import registry_root, run_area, wait_until

import refstore
from refstore import Registry, RunError
from refstore.runs import lease
from refstore.runs.clean import delete, survey
from refstore.runs.local import INTERNAL_DIR, LocalState, find_run_dir
from refstore.runs.records import RunRecord
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name

OTHER_HOST = "gpu-node-7.cluster.example"
TWO_DAYS = 2 * 24 * 3600

#: A run that saves a.txt (policy now), says "ready" once it is synced, and runs until its stdin closes.
_RUN = """
import socket, sys, time
if sys.argv[1]:
    socket.gethostname = lambda: sys.argv[1]  # this process runs "on another host"
import refstore
from refstore.runs.local import LocalState
run = refstore.init("proj", id=sys.argv[2], resume=True, sync_interval=0.02)
run.save("a.txt", policy="now")
while "a.txt" not in LocalState.load(run.dir).synced:
    time.sleep(0.02)
print("ready", flush=True)
sys.stdin.read()
run.finish()
"""


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _record(root: str, run_path: str) -> RunRecord:
    return RunRecord.from_bytes(Registry(root).store.read(f"runs/{run_path}/run.json"), run_path)


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Any]:
    """``start_run(run_id, host="")`` starts :data:`_RUN` in a process of its own; all are ended after."""
    (tmp_path / "a.txt").write_text("synced while the run goes on")
    started: list[subprocess.Popen[str]] = []

    def start(run_id: str, host: str = "") -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", _RUN, host, run_id],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def _leases(run_dir: Path) -> list[Path]:
    return sorted((run_dir / INTERNAL_DIR / lease.LEASES).glob("*.json"))


def test_a_run_alive_on_another_host_is_kept_until_its_lease_expires(
    registry_root: str, run_area: Path, start_run: Any
) -> None:
    remote = start_run("remote1", OTHER_HOST)
    run_dir = find_run_dir(run_area, "remote1")
    assert run_dir is not None and LocalState.load(run_dir).host == OTHER_HOST

    clean = _cli("sync", "--clean", "--yes")
    assert clean.exit_code == 0 and run_dir.is_dir(), clean.output
    assert f"still running: in use by pid {remote.pid} on {OTHER_HOST} (lease refreshed" in clean.output
    assert "remote1: still running, skipped" in _cli("sync").output

    remote.kill()  # it died over there; from here nothing proves it
    remote.wait()
    assert run_dir.is_dir() and "freed 0 B in 0" in _cli("sync", "--clean", "--yes").output
    assert "state    running\n" in _cli("runs", "show", "proj/remote1").output  # not known to be dead

    [held] = _leases(run_dir)
    past = time.time() - TWO_DAYS  # a day without a refresh: the lease is dead
    os.utime(held, (past, past))
    clean = _cli("sync", "--clean", "--yes", "--json")
    assert json.loads(clean.output)["deleted"] == [str(run_dir)], clean.output
    assert not run_dir.exists()
    assert _record(registry_root, "proj/remote1").state == "crashed"


def test_a_run_resumed_by_a_second_process_is_kept_while_the_first_runs(
    registry_root: str, run_area: Path, start_run: Any
) -> None:
    first = start_run("twice1")
    second = refstore.init("proj", id="twice1", resume=True)
    assert second.dir == find_run_dir(run_area, "twice1")
    assert len(_leases(second.dir)) == 2
    second.finish()  # the second process is done; the first runs on
    assert len(_leases(second.dir)) == 1

    clean = _cli("sync", "--clean", "--yes")
    assert second.dir.is_dir(), clean.output
    assert f"still running: in use by pid {first.pid} on {socket.gethostname()}" in clean.output

    assert first.stdin is not None
    first.stdin.close()  # the first process finishes its run and exits
    assert first.wait(timeout=60) == 0
    assert _leases(second.dir) == []
    clean = _cli("sync", "--clean", "--yes")
    assert "deleted" in clean.output and not second.dir.exists(), clean.output


def test_the_lease_is_refreshed_and_rewritten_by_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_ROOT", str(tmp_path / "registry"))
    monkeypatch.setattr(lease, "REFRESH", 0.05)
    run = refstore.init("proj")
    [held] = _leases(run.dir)
    body = json.loads(held.read_bytes())
    assert (body["host"], body["pid"]) == (socket.gethostname(), os.getpid())
    past = time.time() - TWO_DAYS
    os.utime(held, (past, past))
    wait_until(lambda: held.stat().st_mtime > time.time() - 60, what="a refresh")
    held.unlink()
    wait_until(held.exists, what="the lease written again")
    run.finish()
    assert _leases(run.dir) == []


def test_a_dead_local_process_or_a_reused_pid_is_no_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_ROOT", str(tmp_path / "registry"))
    with refstore.init("proj") as run:
        pass
    state = LocalState.load(run.dir)
    here = lease.Holder.this_process()
    folder = run.dir / INTERNAL_DIR / lease.LEASES
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    reused = {**here.identity, "pid": os.getppid(), "started": 1}  # alive, but started at another time
    for name, body in (("gone", {**here.identity, "pid": int(gone.stdout)}), ("reused", reused)):
        (folder / f"{name}.json").write_text(json.dumps(body))
    assert lease.live_leases(run.dir, state) == []
    (folder / "parent.json").write_text(json.dumps({**here.identity, "pid": os.getppid(), "started": None}))
    assert [str(live.holder) for live in lease.live_leases(run.dir, state)] == [
        f"pid {os.getppid()} on {here.host}"
    ]


def test_a_process_that_opens_the_run_while_it_is_cleaned_keeps_it(
    tmp_path: Path, run_area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_ROOT", str(tmp_path / "registry"))
    with refstore.init("proj") as run:
        pass
    [status] = survey(run_area)
    assert status.clean
    body = {**lease.Holder.this_process().identity, "host": OTHER_HOST}  # opened after the survey
    (run.dir / INTERNAL_DIR / lease.LEASES / "late.json").write_text(json.dumps(body))
    assert delete(status) is False
    assert run.dir.is_dir() and not list(run_area.glob(".refstore-deleting-*"))


def test_an_older_run_directory_on_another_host_is_kept_until_its_state_is_old(
    tmp_path: Path, run_area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_ROOT", str(tmp_path / "registry"))
    with refstore.init("proj") as run:
        pass
    (run.dir / INTERNAL_DIR / lease.LEASES).rmdir()  # as a version without leases left it
    state = LocalState.load(run.dir)
    state.host, state.status = OTHER_HOST, "running"
    state.save(run.dir)
    assert "still running" in _cli("sync", "--clean", "--yes").output and run.dir.is_dir()
    past = time.time() - TWO_DAYS
    os.utime(run.dir / INTERNAL_DIR / "state.json", (past, past))
    assert "deleted" in _cli("sync", "--clean", "--yes").output and not run.dir.exists()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_run_directory_that_cannot_be_deleted_is_one_error_naming_it(
    tmp_path: Path, run_area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_ROOT", str(tmp_path / "registry"))
    with refstore.init("proj") as run:
        pass
    stuck = run.dir / "stuck.txt"
    stuck.write_text("immutable")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable files")
    try:
        [status] = survey(run_area)
        with pytest.raises(RunError, match=r"\.refstore-deleting-run-.*could not delete all of it"):
            delete(status)
    finally:
        for path in run_area.glob(".refstore-deleting-*/stuck.txt"):
            subprocess.run(["chattr", "-i", str(path)], check=True)
