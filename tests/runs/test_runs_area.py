"""The run area never shadows the package: runs live in ``./refstore-runs/`` (a name Python cannot import),
its settings file with them; run directories made under the old ``./refstore/`` are still found by
``refstore sync``, resume and ``restore``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result
from runs_support import registry_root, run_area, states

import refstore
from refstore.core.places import AREA_NAME
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name

TRAIN = """\
import refstore

with refstore.init("mnist-cnn") as run:
    open("metrics.txt", "w").write("loss 0.1")
    run.save("metrics.txt", policy="now")
    print(run.dir)
"""


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_two_runs_from_the_same_folder_in_fresh_interpreters(registry_root: str, tmp_path: Path) -> None:
    """The README's flow with the project installed editable: the second ``python train.py`` used to import
    ``./refstore/`` (the run area) instead of the package."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    env = {k: v for k, v in os.environ.items() if k not in ("REFSTORE_DIR", "PYTHONPATH")}
    run_dirs = []
    for attempt in (1, 2):
        done = subprocess.run(
            [sys.executable, "train.py"], cwd=project, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"run {attempt}: {done.stderr}"
        run_dirs.append(Path(done.stdout.strip()))
    assert [d.parent for d in run_dirs] == [project / "refstore-runs"] * 2
    assert not (project / "refstore").exists()
    for run_dir in run_dirs:
        run_id = run_dir.name.rsplit("-", 1)[1]
        assert states(registry_root, f"mnist-cnn/{run_id}", "metrics.txt") == [0]


def _move_to_legacy_area(run_dir: Path) -> Path:
    """Where an older refstore made the run directory: ``<dir>/refstore/``."""
    legacy = run_dir.parent.parent / "refstore" / run_dir.name
    legacy.parent.mkdir(exist_ok=True)
    shutil.move(run_dir, legacy)
    return legacy


def test_run_directories_in_the_old_area_are_still_found(registry_root: str, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"w0")
    with refstore.init("proj", id="oldrun01") as run:
        run.save("weights.bin", policy="now")
    legacy = _move_to_legacy_area(run.dir)
    (legacy / "notes.txt").write_text("written after the run, never synced")

    synced = _cli("sync")
    assert synced.exit_code == 0 and "proj/oldrun01: 1 file(s) uploaded" in synced.output, synced.output
    assert states(registry_root, run.path, "notes.txt") == [0]
    restored = refstore.restore("notes.txt", run.path, root=tmp_path / "out")
    assert restored.read() == b"written after the run, never synced"

    resumed = refstore.init("proj", id="oldrun01", resume=True)
    assert resumed.dir == legacy
    with refstore.restore("weights.bin") as handle:  # the current (resumed) run's directory
        assert Path(handle.name) == legacy / "weights.bin" and handle.read() == b"w0"
    resumed.finish()

    cleaned = _cli("sync", "--clean", "--yes")
    assert f"deleted {legacy.name}" in cleaned.output, cleaned.output
    assert not legacy.parent.exists(), "the emptied old area (it shadows the package) is removed"


def test_the_settings_file_lives_in_the_run_area_the_old_one_still_counts(
    registry_root: str, tmp_path: Path, run_area: Path
) -> None:
    for name in ("keep.txt", "debug.log", "scratch.tmp"):
        (tmp_path / name).write_text(name)
    old_settings = run_area.parent / "refstore" / "settings"
    old_settings.parent.mkdir(parents=True)
    old_settings.write_text("ignore_globs = *.log\n")
    with refstore.init("proj") as old:
        assert sorted(old.save("*.*", policy="now")) == ["keep.txt", "scratch.tmp"]
    (run_area / "settings").write_text("ignore_globs = *.tmp\n")  # the new file wins over the old one
    with refstore.init("proj") as new:
        assert sorted(new.save("*.*", policy="now")) == ["debug.log", "keep.txt"]


def test_the_run_area_name_is_no_python_identifier() -> None:
    """Whatever the install (editable or not), ``import refstore`` can never find the run area."""
    assert not AREA_NAME.isidentifier()


def test_snapshots_and_downloads_leave_the_old_run_area_alone(registry_root: str, tmp_path: Path) -> None:
    """A folder snapshot leaves out an old ``./refstore/`` run area (its run directories and its settings
    file), and a download with clean=True neither lists nor removes it; a ``refstore`` folder of source
    code is snapshotted as any other folder."""
    project = tmp_path / "project"
    with refstore.init("proj", dir=project) as run:
        pass
    legacy = _move_to_legacy_area(run.dir)
    (legacy.parent / "settings").write_text("ignore_globs = *.tmp\n")
    (project / "data.txt").write_text("data")
    (project / "src" / "refstore").mkdir(parents=True)
    (project / "src" / "refstore" / "__init__.py").write_text("# a package named refstore\n")

    artifact = refstore.Artifact("snap", type="dataset")
    artifact.add_dir(project)
    version = refstore.Registry(registry_root).log(artifact)
    assert sorted(version.manifest) == ["data.txt", "src/refstore/__init__.py"]
    reference = refstore.Artifact("ref", type="dataset")
    reference.add_reference(project.as_uri())
    assert sorted(refstore.Registry(registry_root).log(reference).manifest) == sorted(version.manifest)

    shutil.rmtree(project / "src")
    downloaded = version.download(project, clean=True)
    assert downloaded.extra == () and downloaded.removed == ()
    assert (legacy.parent / "settings").is_file() and (legacy / ".refstore-run").is_dir()
