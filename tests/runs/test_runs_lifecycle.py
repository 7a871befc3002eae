"""Runs that can be found and cleaned (issue 15): ``refstore runs ls``, every synced state in ``runs show``,
``restore(..., state=N)`` / ``refstore restore --state N``, readable and settable run names, ``runs rm``.

Every test runs twice: with the registry in a local folder and in a bucket on the moto S3 server.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from runs_support import FAST, registry_root, run_area, states, wait_until

import refstore
from refstore import LocalChangesError, Registry, RunError
from refstore.runs.run import read_record
from refstore.snapshots.gc import collect_garbage
from refstore.snapshots.intents import listing
from refstore.storage.download import blob_path
from refstore.storage.hashing import hash_bytes
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def _live_run(registry_root: str, tmp_path: Path, texts: list[str], project: str = "proj") -> refstore.Run:
    """A finished run whose live file ``ckpt.pt`` was synced once with each of ``texts``, in order."""
    checkpoint = tmp_path / "ckpt.pt"
    with refstore.init(project, sync_interval=FAST) as run:
        for number, text in enumerate(texts):
            (tmp_path / "ckpt.tmp").write_text(text)
            os.replace(tmp_path / "ckpt.tmp", checkpoint)  # never seen half-written by the live sync
            if number == 0:
                run.save(str(checkpoint))
            wait_until(
                lambda n=number: len(states(registry_root, run.path, "ckpt.pt")) == n + 1, what="a state"
            )
    return run


def test_runs_ls_lists_every_run_with_its_name_state_start_duration_and_files(
    registry_root: str, tmp_path: Path
) -> None:
    first = _live_run(registry_root, tmp_path, ["a", "b"])
    with pytest.raises(ValueError), refstore.init("proj") as failed:
        raise ValueError("diverged")
    other = refstore.init("other", name="baseline")
    result = _cli("runs", "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"registry {Registry(registry_root).root}"
    assert lines[1].split() == ["RUN", "NAME", "STATE", "STARTED", "DURATION", "FILES"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[2], r[-1]) for r in rows] == [  # oldest first
        (first.path, first.name, "finished", "1"),
        (failed.path, failed.name, "failed", "0"),
        (other.path, "baseline", "running", "0"),
    ]
    assert all(re.fullmatch(r"\d+s|\d+m \d\ds|\d+h \d\dm", r[-2]) for r in rows)

    data = json.loads(_cli("runs", "ls", "proj", "--json").output)
    assert [d["path"] for d in data] == [first.path, failed.path]
    assert data[0]["files"] == 1 and data[0]["registry"] == Registry(registry_root).root
    assert data[0]["duration_seconds"] >= 0 and data[1]["error"] == "ValueError: diverged"
    missing = _cli("runs", "ls", "nosuch")
    assert missing.exit_code == 1 and "no runs of project 'nosuch'" in missing.output
    other.finish()


def test_runs_show_lists_every_synced_state_of_each_file_and_the_lineage(
    registry_root: str, tmp_path: Path
) -> None:
    registry = Registry(registry_root)
    (tmp_path / "train.csv").write_text("1,2")
    dataset = refstore.Artifact("mnist")
    dataset.add_file(tmp_path / "train.csv")
    registry.log(dataset)
    with refstore.init("proj", sync_interval=FAST) as run:
        run.use_artifact("mnist:latest")
        checkpoint = tmp_path / "ckpt.pt"
        for number, text in enumerate(["epoch 0", "epoch 1!", "epoch 2!!"]):
            (tmp_path / "ckpt.tmp").write_text(text)
            os.replace(tmp_path / "ckpt.tmp", checkpoint)
            if number == 0:
                run.save(str(checkpoint))
            wait_until(
                lambda n=number: len(states(registry_root, run.path, "ckpt.pt")) == n + 1, what="a state"
            )
        model = refstore.Artifact("model", type="model")
        model.add_file(checkpoint)
        run.log_artifact(model)

    data = json.loads(_cli("runs", "show", run.path, "--json").output)
    assert data["files"] == ["ckpt.pt"]
    shown = data["states"]["ckpt.pt"]
    assert [(s["state"], s["size"], s["policy"]) for s in shown] == [
        (0, 7, "live"),
        (1, 8, "live"),
        (2, 9, "live"),
    ]
    assert [s["digest"] for s in shown] == [
        hash_bytes(t.encode()) for t in ("epoch 0", "epoch 1!", "epoch 2!!")
    ]
    assert (data["used"], data["logged"]) == (["mnist:v0"], ["model:v0"])
    text = _cli("runs", "show", run.path).output
    assert "files    1 synced, 3 states" in text and "  ckpt.pt" in text
    assert re.search(r"state 1 +8 B  \S+  live", text)
    assert "used     mnist:v0" in text and "logged   model:v0" in text


def test_restore_an_earlier_state_of_a_live_file(registry_root: str, tmp_path: Path) -> None:
    run = _live_run(registry_root, tmp_path, ["epoch 0", "epoch 1", "epoch 2"])
    out = tmp_path / "out"
    assert refstore.restore("ckpt.pt", run.path, root=out, state=0).read() == b"epoch 0"
    assert refstore.restore("ckpt.pt", run.path, root=out, state=0).read() == b"epoch 0"  # holds it already
    with pytest.raises(LocalChangesError, match="state 1"):
        refstore.restore("ckpt.pt", run.path, root=out, state=1)  # other bytes: never handed out as state 1
    assert refstore.restore("ckpt.pt", run.path, root=out, state=1, replace=True).read() == b"epoch 1"
    assert refstore.restore("ckpt.pt", run.path, root=out, replace=True).read() == b"epoch 2"  # the newest
    with pytest.raises(RunError, match=r"no state 3 of 'ckpt.pt': its states are 0-2"):
        refstore.restore("ckpt.pt", run.path, root=tmp_path / "none", state=3)

    result = _cli("restore", run.path, "ckpt.pt", "--state", "0", "--dest", str(tmp_path / "cli"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "ckpt.pt").read_text() == "epoch 0"
    assert _cli("restore", run.path, "ckpt.pt", "--state", "-1").exit_code == 2
    refused = _cli("restore", run.path, "ckpt.pt", "--state", "2", "--dest", str(tmp_path / "cli"))
    assert refused.exit_code == 1 and "refstore: error:" in refused.output and "--replace" in refused.output


def test_runs_get_readable_names_that_can_be_changed(registry_root: str, tmp_path: Path) -> None:
    first, second = refstore.init("proj"), refstore.init("proj")
    assert re.fullmatch(r"[a-z]+-[a-z]+-1", first.name) and re.fullmatch(r"[a-z]+-[a-z]+-2", second.name)
    second.finish()
    first.name = "lr 1e-3, wider"
    assert first.name == "lr 1e-3, wider"
    registry = Registry(registry_root)
    assert read_record(registry, first.path).name == "lr 1e-3, wider"  # written to the registry at once
    for bad in ("", " padded", "a\nb", "x" * 129):
        with pytest.raises(RunError, match="run name"):
            first.name = bad
    first.finish()
    assert read_record(registry, first.path).name == "lr 1e-3, wider"  # kept when the run finishes
    with pytest.raises(RunError, match="finished"):
        first.name = "too late"
    with pytest.raises(RunError, match="run name"):
        refstore.init("proj", name="bad\tname")
    resumed = refstore.init("proj", id=first.id, resume=True)
    assert resumed.name == "lr 1e-3, wider"
    resumed.finish()


def test_runs_rm_asks_deletes_the_run_and_gc_frees_only_its_own_bytes(
    registry_root: str, tmp_path: Path
) -> None:
    registry = Registry(registry_root)
    run = _live_run(registry_root, tmp_path, ["only the run had this", "shared with an artifact"])
    model = refstore.Artifact("model", type="model")
    model.add_file(tmp_path / "ckpt.pt")  # the run's newest state: the same bytes
    registry.log(model)
    own, shared = (blob_path(hash_bytes(t)) for t in (b"only the run had this", b"shared with an artifact"))
    assert collect_garbage(registry, yes=True).blobs == []  # the run's states are references

    asked = _cli("runs", "rm", run.path, input="n\n")
    assert asked.exit_code == 0 and "nothing deleted" in asked.output
    assert read_record(registry, run.path).name == run.name
    deleted = _cli("runs", "rm", run.path, "-y")
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted run {run.path} ({run.name}): 1 file(s), 2 state(s)" in deleted.output
    assert "refstore gc --yes" in deleted.output
    with pytest.raises(RunError, match="no run"):
        read_record(registry, run.path)
    assert _cli("runs", "ls", "--json").output.strip() == "[]"
    assert [p for p in listing(registry.store, ["runs"])] == []

    report = collect_garbage(registry, yes=True)
    assert report.blobs == [own] and report.size == len(b"only the run had this")
    assert not registry.store.exists(own) and registry.store.exists(shared)
    registry.get("model:v0").download(tmp_path / "model", skip_cache=True)
    assert _cli("runs", "rm", run.path, "-y").exit_code == 1  # gone: an error naming it


def test_runs_rm_refuses_a_running_run_unless_forced(registry_root: str, tmp_path: Path) -> None:
    run = refstore.init("proj")
    refused = _cli("runs", "rm", run.path, "-y")
    assert refused.exit_code == 1 and "is running" in refused.output and "--force" in refused.output
    read_record(Registry(registry_root), run.path)
    forced = _cli("runs", "rm", run.path, "-y", "--force")
    assert forced.exit_code == 0 and "is kept" in forced.output  # its directory on this machine stays
    with pytest.raises(RunError):
        read_record(Registry(registry_root), run.path)
