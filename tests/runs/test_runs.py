"""Runs: init, save policies, base_path, remembered patterns, ignore globs, restore, resume, exit.

Every test runs twice: with the registry in a local folder and in a bucket on the moto S3 server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runs_support import FAST, registry_root, run_area, states, wait_until

import refstore
from refstore import Registry, RunError
from refstore.runs.files import RunFiles

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _replace(path: Path, text: str) -> None:
    """Write ``path`` by rename, as a checkpoint should be: the live sync never sees it half-written."""
    _write(path.with_name(path.name + ".tmp"), text)
    os.replace(path.with_name(path.name + ".tmp"), path)


def _python(code: str, cwd: Path) -> str:
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_init_makes_a_run_directory_record_and_current_run(registry_root: str, run_area: Path) -> None:
    assert refstore.run is None
    with refstore.init("proj", config={"lr": 0.1}, sync_interval=FAST) as run:
        assert refstore.run is run
        assert re.fullmatch(r"[a-z0-9]{8}", run.id)
        assert re.fullmatch(r"[a-z]+-[a-z]+-\d+", run.name)
        assert run.project == "proj" and run.path == f"proj/{run.id}"
        assert run.dir.parent == run_area
        assert re.fullmatch(rf"run-\d{{8}}_\d{{6}}-{run.id}", run.dir.name) and run.dir.is_dir()
        assert Registry(registry_root).store.exists(f"runs/proj/{run.id}/run.json")
    assert refstore.run is None and run.finished
    again = refstore.init("proj", id="named-run", name="my-name")
    assert (again.id, again.name, refstore.run) == ("named-run", "my-name", again)
    refstore.finish()
    assert refstore.run is None


def test_default_run_directory_is_under_the_working_directory(
    registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REFSTORE_DIR")
    with refstore.init() as run:
        assert run.project == "default"
        assert run.dir.parent == tmp_path / "refstore-runs"
    with refstore.init(dir=tmp_path / "elsewhere") as run:
        assert run.dir.parent == tmp_path / "elsewhere" / "refstore-runs"


def test_policy_now_uploads_once(registry_root: str, tmp_path: Path) -> None:
    source = _write(tmp_path / "metrics.json", "first")
    run = refstore.init("proj", sync_interval=FAST)
    assert run.save("metrics.json", policy="now") == ["metrics.json"]
    assert os.path.samefile(run.dir / "metrics.json", source)
    wait_until(lambda: states(registry_root, run.path, "metrics.json") == [0], what="the upload")
    _write(source, "second, never uploaded")
    run.finish()
    assert states(registry_root, run.path, "metrics.json") == [0]
    assert refstore.restore("metrics.json", run.path, root=tmp_path / "out").read() == b"first"


def test_policy_live_keeps_every_state_restore_gives_the_newest(registry_root: str, tmp_path: Path) -> None:
    checkpoint = _write(tmp_path / "ckpt.pt", "epoch 0")
    run = refstore.init("proj", sync_interval=FAST)
    run.save("ckpt.pt")  # policy="live" is the default
    for epoch in (1, 2):
        wait_until(lambda e=epoch: len(states(registry_root, run.path, "ckpt.pt")) == e, what="a state")
        _replace(checkpoint, f"epoch {epoch}")  # in place, a pause mid-write can be taken as a state
    wait_until(lambda: len(states(registry_root, run.path, "ckpt.pt")) == 3, what="state 3")
    files = RunFiles(Registry(registry_root).store, run.path)
    assert [files.state("ckpt.pt", n).size for n in (0, 1, 2)] == [7, 7, 7]
    run.finish()
    assert states(registry_root, run.path, "ckpt.pt") == [0, 1, 2]  # nothing changed since: no new state
    assert refstore.restore("ckpt.pt", run.path, root=tmp_path / "out").read() == b"epoch 2"


def test_policy_end_uploads_at_finish(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "final.txt", "done")
    run = refstore.init("proj", sync_interval=FAST)
    run.save("final.txt", policy="end")
    with pytest.raises(RunError, match=r"final\.txt"):
        refstore.restore("final.txt", root=tmp_path / "early")
    run.finish()
    assert refstore.restore("final.txt", run.path, root=tmp_path / "out").read() == b"done"


def test_base_path_keeps_the_folders_below_it(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "results" / "eval" / "a.txt", "a")
    _write(tmp_path / "results" / "eval" / "deep" / "b.txt", "b")
    _write(tmp_path / "results" / "train" / "c.txt", "c")
    with refstore.init("proj") as run:
        assert run.save("./results/eval/*", base_path="./results", policy="now") == ["eval/a.txt"]
        assert run.save("results/**/*.txt", base_path="results", policy="end") == [
            "eval/a.txt",
            "eval/deep/b.txt",
            "train/c.txt",
        ]
        assert run.save("results/train/*.txt", policy="end") == ["c.txt"]  # no base_path: the basename
        with pytest.raises(RunError, match="base_path"):
            run.save("results/train/*.txt", base_path="results/eval")
        _write(tmp_path / "results" / "train" / "a.txt", "another a")
        with pytest.raises(RunError, match=r"both be saved as a\.txt"):
            run.save("results/*/a.txt")
    out = tmp_path / "out"
    for name in ("eval/a.txt", "eval/deep/b.txt", "train/c.txt", "c.txt"):
        assert refstore.restore(name, run.path, root=out).read() == name[-5].encode()
    assert (run.dir / "eval" / "deep" / "b.txt").is_symlink()


def test_patterns_are_remembered_for_the_run_directory(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "ckpt" / "epoch-0.pt", "0")
    run = refstore.init("proj", sync_interval=FAST)
    run.save("ckpt/*.pt")
    _write(run.dir / "epoch-1.pt", "1")  # written into the run directory later: synced live
    wait_until(lambda: states(registry_root, run.path, "epoch-1.pt") == [0], what="the new file")
    _write(run.dir / "epoch-1.pt", "1 again")
    wait_until(lambda: states(registry_root, run.path, "epoch-1.pt") == [0, 1], what="its change")
    _write(tmp_path / "ckpt" / "epoch-2.pt", "2")  # created later outside the run directory: not picked up
    _write(run.dir / "notes.md", "n")  # matches no pattern: uploaded at finish
    run.finish()
    assert states(registry_root, run.path, "notes.md") == [0]
    with pytest.raises(RunError, match=r"epoch-2\.pt"):
        refstore.restore("epoch-2.pt", run.path, root=tmp_path / "out")


def test_a_pattern_takes_its_own_policy(registry_root: str, tmp_path: Path) -> None:
    run = refstore.init("proj", sync_interval=FAST)
    run.save("*.log", policy="now")
    run.save("*.bin", policy="end")
    _write(run.dir / "train.log", "once")
    _write(run.dir / "big.bin", "at the end")
    wait_until(lambda: states(registry_root, run.path, "train.log") == [0], what="the now file")
    _write(run.dir / "train.log", "changed, not re-uploaded")
    assert states(registry_root, run.path, "big.bin") == []
    run.finish()
    assert states(registry_root, run.path, "train.log") == [0]
    assert states(registry_root, run.path, "big.bin") == [0]


def test_ignore_globs_from_the_environment_and_the_settings_file(
    registry_root: str, tmp_path: Path, run_area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_IGNORE_GLOBS", "*.log, tmp/*")
    _write(run_area / "settings", "[default]\nignore_globs = *.patch,secret*\n")
    for name in ("keep.txt", "debug.log", "changes.patch", "secret.key"):
        _write(tmp_path / "out" / name, name)
    run = refstore.init("proj", sync_interval=FAST)
    assert run.save("out/*", policy="now") == ["keep.txt"]
    _write(run.dir / "tmp" / "scratch.txt", "x")
    _write(run.dir / "late.log", "x")
    run.finish()
    assert RunFiles(Registry(registry_root).store, run.path).names() == ["keep.txt"]
    for name in ("debug.log", "changes.patch", "secret.key", "tmp/scratch.txt", "late.log"):
        with pytest.raises(RunError):
            refstore.restore(name, run.path, root=tmp_path / "restored")


def test_restore_from_a_fresh_process(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "model.bin", "weights")
    with refstore.init("proj") as run:
        run.save("model.bin", policy="end")
    code = (
        "import refstore\n"
        f"f = refstore.restore('model.bin', run_path={run.path!r})\n"
        "print(f.name); print(f.read().decode())\n"
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    name, text = _python(code, fresh).splitlines()
    assert (name, text) == (str(fresh / "model.bin"), "weights")


def test_an_existing_local_file_is_returned_unless_replace(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "model.txt", "synced")
    with refstore.init("proj") as run:
        run.save("model.txt", policy="end")
    local = _write(tmp_path / "out" / "model.txt", "local edit")
    with refstore.restore("model.txt", run.path, root=tmp_path / "out") as handle:
        assert handle.name == str(local) and handle.read() == b"local edit"
    with refstore.restore("model.txt", run.path, root=tmp_path / "out", replace=True) as handle:
        assert handle.read() == b"synced"
    assert local.read_text() == "synced"


def test_resume_continues_the_run(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "from the first process")
    with refstore.init("proj", id="resume01", config={"lr": 1}) as first:
        first.save("a.txt", policy="now")
    with pytest.raises(RunError, match="resume=True"):
        refstore.init("proj", id="resume01")
    second = refstore.init("proj", id="resume01", resume=True, config={"epochs": 3})
    assert (second.dir, second.name, second.config) == (first.dir, first.name, {"lr": 1, "epochs": 3})
    (second.dir / "a.txt").unlink()
    with refstore.restore("a.txt") as handle:  # the current (resumed) run, into its directory
        assert handle.name == str(second.dir / "a.txt") and handle.read() == b"from the first process"
    second.finish()
    assert states(registry_root, second.path, "a.txt") == [0]  # the restored file is not uploaded again
    third = refstore.init("proj", id="resume01", resume=True, dir=tmp_path / "other-machine")
    assert third.dir != first.dir
    assert refstore.restore("a.txt").read() == b"from the first process"
    third.finish()
    fresh = refstore.init("proj", id="resume02", resume=True)  # nothing to resume: a new run
    assert fresh.path == "proj/resume02"


def test_misuse_is_run_error(registry_root: str, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no current run"):
        refstore.save("*.txt")
    with pytest.raises(RunError, match="no current run"):
        refstore.restore("a.txt")
    with pytest.raises(RunError, match="proj/nosuchrun"):
        refstore.restore("a.txt", "proj/nosuchrun")
    with pytest.raises(RunError, match="project/run_id"):
        refstore.restore("a.txt", "no-slash")
    run = refstore.init("proj")
    with pytest.raises(RunError, match="policy"):
        run.save("*", policy="sometimes")
    run.finish()
    run.finish()  # a second finish does nothing
    with pytest.raises(RunError, match=r"missing\.txt"):
        refstore.restore("missing.txt", run.path, root=tmp_path)
    with pytest.raises(RunError, match="finished"):
        run.save("*")
    refstore.finish()  # no current run: nothing to do


def test_module_level_save_and_finish_act_on_the_current_run(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "x.txt", "x")
    run = refstore.init("proj")
    assert refstore.save("x.txt", policy="end") == ["x.txt"]
    refstore.finish()
    assert run.finished and states(registry_root, run.path, "x.txt") == [0]


def test_a_forgotten_run_is_finished_at_exit(registry_root: str, tmp_path: Path) -> None:
    _write(tmp_path / "late.txt", "saved at exit")
    code = (
        "import refstore\n"
        "run = refstore.init('proj', id='forgotten')\n"
        "run.save('late.txt', policy='end')\n"
        "print(run.path)\n"
    )
    assert _python(code, tmp_path).strip() == "proj/forgotten"
    assert refstore.restore("late.txt", "proj/forgotten", root=tmp_path / "out").read() == b"saved at exit"
    record = Registry(registry_root).store.read("runs/proj/forgotten/run.json")
    assert b'"state":"finished"' in record


def test_the_readme_training_loop_restores_the_best_checkpoint(registry_root: str, tmp_path: Path) -> None:
    with refstore.init("mnist-cnn", sync_interval=FAST) as run:
        assert run.save(run.dir / "*.pt") == []
        best = float("inf")
        for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.3, 0.4]):
            _write(run.dir / "last.pt", f"epoch {epoch}")
            if loss < best:
                best = loss
                _write(run.dir / "best.pt", f"epoch {epoch}, loss {loss}")
    with refstore.restore("best.pt", run_path=run.path, root=tmp_path / "restored") as handle:
        assert handle.read() == b"epoch 3, loss 0.3"
    assert refstore.restore("last.pt", run.path, root=tmp_path / "restored").read() == b"epoch 4"


def test_a_forked_child_leaves_the_run_to_its_parent(registry_root: str, tmp_path: Path) -> None:
    import multiprocessing

    run = refstore.init("proj", sync_interval=FAST)
    child = multiprocessing.get_context("fork").Process(target=lambda: None)
    child.start()
    child.join()
    assert child.exitcode == 0
    assert refstore.run is run and not run.finished
    assert b'"state":"running"' in Registry(registry_root).store.read(f"runs/{run.path}/run.json")
    run.finish()


def test_a_change_that_keeps_size_and_mtime_is_still_synced(registry_root: str, tmp_path: Path) -> None:
    source = _write(tmp_path / "same.txt", "aaaa")
    run = refstore.init("proj", sync_interval=FAST)
    run.save("same.txt")
    wait_until(lambda: states(registry_root, run.path, "same.txt") == [0], what="the first state")
    before = source.stat()
    _write(source, "bbbb")  # as on a filesystem with coarse mtimes: same size, same mtime
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    run.finish()
    assert refstore.restore("same.txt", run.path, root=tmp_path / "out").read() == b"bbbb"
