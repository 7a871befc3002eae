"""Runs tell the truth: a run whose ``with`` block raised, or whose process ends on an uncaught exception,
is ``failed`` with the exception (credentials removed); a run whose process died is ``crashed`` in
``refstore sync`` and ``refstore runs show``; ``refstore sync`` goes to the registry each run recorded and
reports only the uploads it made. Each test runs with the registry in a local folder and on moto S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from runs_support import FAST, registry_root, run_area, states

import refstore
from refstore import Registry
from refstore.runs.records import RunRecord
from refstore.runs.status import describe, redact
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name

SECRET = "PLANTEDsecret0123456789"


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _record(root: str, run_path: str) -> RunRecord:
    relative = f"runs/{run_path}/run.json"
    return RunRecord.from_bytes(Registry(root).store.read(relative), relative)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)


def test_a_with_block_that_raises_is_a_failed_run(registry_root: str, tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("epoch 1")
    with pytest.raises(ValueError, match="diverged"), refstore.init("proj", sync_interval=FAST) as run:
        run.save("log.txt", policy="end")
        raise ValueError(f"loss diverged at step 7 (https://user:{SECRET}@example.com/x?sig={SECRET})")
    record = _record(registry_root, run.path)
    assert (record.state, run.state) == ("failed", "failed") and record.finished_at is not None
    assert record.error == run.error == "ValueError: loss diverged at step 7 (https://example.com/x)"
    assert states(registry_root, run.path, "log.txt") == [0], "the files are still synced"
    shown = _cli("runs", "show", run.path)
    assert "failed: ValueError: loss diverged" in shown.output and SECRET not in shown.output


def test_a_clean_exit_is_a_finished_run(registry_root: str) -> None:
    with pytest.raises(SystemExit), refstore.init("proj") as run:
        sys.exit(0)
    record = _record(registry_root, run.path)
    assert (record.state, record.error) == ("finished", None)
    assert b'"error"' not in Registry(registry_root).store.read(f"runs/{run.path}/run.json")
    with refstore.init("proj") as other:
        pass
    assert _record(registry_root, other.path).state == "finished" == other.state


def test_an_uncaught_exception_at_exit_is_a_failed_run(
    registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_TOKEN", SECRET)
    code = (
        "import os, sys, refstore\n"
        "sys.excepthook = lambda *exc: print('custom hook', file=sys.stderr)\n"
        "run = refstore.init('proj', id='uncaught')\n"
        "raise RuntimeError('CUDA out of memory; token ' + os.environ['MY_API_TOKEN'])\n"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 1 and "custom hook" in done.stderr
    record = _record(registry_root, "proj/uncaught")
    assert record.state == "failed" and record.error == "RuntimeError: CUDA out of memory; token ***"
    raw = Registry(registry_root).store.read("runs/proj/uncaught/run.json")
    assert SECRET.encode() not in raw


def test_an_error_typed_at_the_prompt_does_not_fail_the_run(registry_root: str, tmp_path: Path) -> None:
    lines = "import refstore\nrun = refstore.init('proj', id='atprompt')\n1 / 0\nprint('still here')\n"
    done = subprocess.run(
        [sys.executable, "-i"], input=lines, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "ZeroDivisionError" in done.stderr and "still here" in done.stdout
    assert _record(registry_root, "proj/atprompt").state == "finished"


def test_a_process_that_died_is_a_crashed_run(registry_root: str, tmp_path: Path, run_area: Path) -> None:
    (tmp_path / "ckpt.pt").write_text("epoch 3")
    code = (
        "import os, signal, refstore\n"
        "run = refstore.init('proj', id='crashed1')\n"
        "run.save('ckpt.pt', policy='end')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert _python(code, tmp_path).returncode == -9
    assert _record(registry_root, "proj/crashed1").state == "running", "nothing could record the death"

    before = _cli("runs", "show", "proj/crashed1")
    assert before.exit_code == 0 and "crashed (its process died; refstore sync records it)" in before.output

    synced = _cli("sync", "--json")
    [result] = json.loads(synced.output)
    assert (result["run_path"], result["state"], result["uploaded"]) == (
        "proj/crashed1",
        "crashed",
        ["ckpt.pt"],
    )
    assert "(run crashed)" in _cli("sync").output
    assert _record(registry_root, "proj/crashed1").state == "crashed"
    assert states(registry_root, "proj/crashed1", "ckpt.pt") == [0]
    after = json.loads(_cli("runs", "show", "--json", "proj/crashed1").output)
    assert (after["state"], after["files"]) == ("crashed", ["ckpt.pt"])

    resumed = refstore.init("proj", id="crashed1", resume=True)
    assert _record(registry_root, "proj/crashed1").state == "running" == resumed.state
    resumed.finish()
    assert _record(registry_root, "proj/crashed1").state == "finished"


def test_sync_goes_to_the_registry_each_run_recorded(
    registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with refstore.init("proj") as run:
        pass
    (run.dir / "late.txt").write_text("written after finish")
    elsewhere = tmp_path / "another-registry"
    monkeypatch.setenv("REFSTORE_ROOT", str(elsewhere))
    synced = _cli("sync", "--json")
    [result] = json.loads(synced.output)
    assert result["uploaded"] == ["late.txt"] and result["registry"] == Registry(registry_root).root
    assert states(registry_root, run.path, "late.txt") == [0]
    assert not elsewhere.exists()


def test_sync_right_after_a_clean_finish_reports_no_uploads(registry_root: str, tmp_path: Path) -> None:
    sources = []
    for policy in ("live", "now", "end"):
        sources.append(tmp_path / f"{policy}.txt")
        sources[-1].write_text(policy)
    with refstore.init("proj", sync_interval=FAST) as run:
        for source in sources:
            run.save(source.name, policy=source.stem)
        (run.dir / "written-in-the-run-dir.txt").write_text("also synced at finish")
    past = time.time() - 60  # as when sync runs a while later: the racy-clean files are hashed again
    for path in [*sources, run.dir / "written-in-the-run-dir.txt"]:
        os.utime(path, (past, past))
    synced = _cli("sync")
    assert synced.exit_code == 0 and f"{run.path}: 0 file(s) uploaded (run finished)" in synced.output
    assert states(registry_root, run.path, "live.txt") == [0]


def test_error_descriptions_hold_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    cases = {
        f"s3://bucket/key?X-Amz-Signature={SECRET}&X-Amz-Credential=AKIAABCDEFGHIJKLMNOP": "s3://bucket/key",
        f"https://bob:{SECRET}@host:8080/path": "https://host:8080/path",
        f"password={SECRET}, retrying": "password=***, retrying",
        f'api_key: "{SECRET}"': "api_key: ***",
        f"Authorization: Bearer {SECRET}": "Authorization: Bearer ***",
        "key id AKIAABCDEFGHIJKLMNOP refused": "key id *** refused",
        f"raw value {SECRET} from the environment": "raw value *** from the environment",
        "plain message, nothing to hide": "plain message, nothing to hide",
    }
    for text, expected in cases.items():
        assert redact(text) == expected
    assert describe(KeyError("x")) == "KeyError: 'x'"
    assert describe(RuntimeError()) == "RuntimeError"
    assert describe(ValueError("a\n  b " + "c" * 1000)).startswith("ValueError: a b ccc")
    assert len(describe(ValueError("c" * 1000))) < 600
