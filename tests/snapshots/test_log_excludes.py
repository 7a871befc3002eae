"""Snapshotting a folder never takes refstore's own files (registry, download cache, run area), and
``exclude`` globs leave out what the user names: on local folders (references and copies, the walk skips
them) and on S3 prefixes of the moto server (filtered from the listing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import refstore
from refstore.surfaces.cli import main


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def _ok(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder, the current folder, holding the default registry, the download cache and a run
    area with a run directory in it; ``$REFSTORE_ROOT`` unset."""
    proj = tmp_path / "proj"
    _write(proj, {"train.py": "print('hi')\n", "data/a.csv": "1\n", "data/b.csv": "2\n"})
    monkeypatch.delenv("REFSTORE_ROOT")
    monkeypatch.setenv("REFSTORE_CACHE_DIR", str(proj / "cache-dir"))
    monkeypatch.chdir(proj)
    return proj


def test_logging_the_project_folder_twice_gives_the_same_version(project: Path, tmp_path: Path) -> None:
    with refstore.init(project="p") as run:  # a real run directory in ./refstore-runs
        (run.dir / "out.txt").write_text("run output")
        run.save(str(run.dir / "out.txt"))
    for copy in ([], ["--copy"]):
        name = "copied" if copy else "self"
        first = json.loads(_ok("log", name, ".", *copy, "--json"))
        _ok("get", f"{name}:v0", str(tmp_path / f"out-{name}"))  # fills the cache inside the project
        second = json.loads(_ok("log", name, ".", *copy, "--json"))
        assert (first["created"], second["created"]) == (True, False)
        assert second["version"]["qualified_name"] == f"{name}:v0"
        shown = json.loads(_ok("show", f"{name}:v0", "--json"))
        assert sorted(e["path"] for e in shown["entries"]) == ["data/a.csv", "data/b.csv", "train.py"]
    assert (project / ".refstore").is_dir() and (project / "refstore-runs").is_dir()
    assert any((project / "cache-dir").rglob("*")), "the download went through the cache in the project"


def test_a_registry_under_any_name_is_left_out(project: Path, tmp_path: Path) -> None:
    """The registry a process opened is left out; a later process, logging elsewhere with no settings that
    name it, knows it by its marker file."""
    command = [sys.executable, "-m", "refstore", "--root", "registries/main", "log", "ds", "."]
    outputs = []
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0].startswith("ds:v0 ") and "(created)" in outputs[0]
    assert outputs[1].startswith("ds:v0 ") and "unchanged" in outputs[1]
    other = [sys.executable, "-m", "refstore", "--root", str(tmp_path / "elsewhere"), "log", "ds", "."]
    done = subprocess.run(other, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for root in ("registries/main", tmp_path / "elsewhere"):
        assert sorted(refstore.Registry(root).get("ds").manifest) == ["data/a.csv", "data/b.csv", "train.py"]
    in_process = refstore.Registry(project / "data" / "reg")  # opened in this process: left out at once
    artifact = refstore.Artifact("x")
    artifact.add_file(project / "train.py")
    in_process.log(artifact)
    data = refstore.Artifact("data")
    data.add_reference(project / "data")
    assert sorted(data.manifest) == ["a.csv", "b.csv"]


def test_naming_one_of_refstores_folders_directly_still_snapshots_it(project: Path) -> None:
    with refstore.init(project="p") as run:
        (run.dir / "model.bin").write_bytes(b"weights")
        run.save(str(run.dir / "model.bin"))
    artifact = refstore.Artifact("run-files")
    artifact.add_reference(run.dir)  # the run directory itself: its files, not its .refstore-run state
    assert "model.bin" in artifact.manifest
    assert not any(p.startswith(".refstore-run/") for p in artifact.manifest), sorted(artifact.manifest)
    _write(project, {"nested/.refstore/keep.txt": "x", "nested/other.txt": "y"})
    inner = refstore.Artifact("inner")
    inner.add_dir(project / "nested" / ".refstore")
    assert sorted(inner.manifest) == ["keep.txt"]


@pytest.mark.parametrize("how", ["reference", "copy"])
def test_exclude_globs_on_a_local_folder(tmp_path: Path, how: str) -> None:
    _write(
        tmp_path / "src",
        {
            "keep.txt": "k",
            "a.tmp": "t",
            "sub/b.tmp": "t",
            "raw/x.csv": "c",
            "raw/deep/y.csv": "c",
            "other/raw/z.csv": "c",
            "cache/big.bin": "b",
            "sub/cache/nested.bin": "b",
            "cachefile": "f",
            "__pycache__/m.pyc": "p",
        },
    )
    globs = ["*.tmp", "raw/*.csv", "cache/", "__pycache__"]
    artifact = refstore.Artifact("ds")
    if how == "reference":
        artifact.add_reference(tmp_path / "src", exclude=globs)
    else:
        artifact.add_dir(tmp_path / "src", exclude=globs)
    # raw/*.csv is anchored (it has a /) and * stays in one segment; cache/ takes folders only, at any depth
    assert sorted(artifact.manifest) == ["cachefile", "keep.txt", "other/raw/z.csv", "raw/deep/y.csv"]
    named = refstore.Artifact("named")
    named.add_reference(tmp_path / "src", "data", exclude=["data/raw/**", "*.tmp", "other", "cache*"])
    assert sorted(named.manifest) == ["data/__pycache__/m.pyc", "data/keep.txt"]
    one = refstore.Artifact("one")
    one.add_reference(tmp_path / "src", exclude="*.csv")  # a single glob as a string
    assert "raw/x.csv" not in one.manifest and "keep.txt" in one.manifest


def test_excluded_files_are_not_walked_or_counted(tmp_path: Path) -> None:
    _write(tmp_path / "src", {f"junk/{i}.bin": "x" for i in range(50)} | {"a.txt": "a", "b.txt": "b"})
    artifact = refstore.Artifact("ds")
    artifact.add_reference(tmp_path / "src", max_objects=2, exclude=["junk"])
    assert sorted(artifact.manifest) == ["a.txt", "b.txt"]
    with pytest.raises(refstore.TooManyObjectsError):
        refstore.Artifact("ds").add_reference(tmp_path / "src", max_objects=2)
    with pytest.raises(refstore.ObjectNotFoundError, match="no objects"):
        refstore.Artifact("ds").add_reference(tmp_path / "src", exclude=["*"])
    with pytest.raises(refstore.InvalidURLError, match="exclude glob"):
        refstore.Artifact("ds").add_reference(tmp_path / "src", exclude=[""])


def test_exclude_and_refstore_folders_on_an_s3_prefix(s3_fs: Any, s3_bucket: str) -> None:
    s3_fs.pipe(
        {
            f"{s3_bucket}/p/keep.csv": b"k",
            f"{s3_bucket}/p/x.tmp": b"t",
            f"{s3_bucket}/p/logs/1.log": b"l",
            f"{s3_bucket}/p/team-registry/.refstore-registry": b"{}",
            f"{s3_bucket}/p/team-registry/manifests/ab/cd.json": b"{}",
            f"{s3_bucket}/p/runs/run-1/.refstore-run/state.json": b"{}",
            f"{s3_bucket}/p/runs/run-1/out.txt": b"o",
        }
    )
    artifact = refstore.Artifact("ds")
    artifact.add_reference(f"s3://{s3_bucket}/p", exclude=["*.tmp", "logs/"])
    assert sorted(artifact.manifest) == ["keep.csv"]


def test_log_command_exclude_is_repeatable(tmp_path: Path) -> None:
    _write(tmp_path / "src", {"a.txt": "a", "b.tmp": "b", "c.log": "c"})
    for copy in ([], ["--copy"]):
        out = json.loads(
            _ok(
                "log",
                f"ds{len(copy)}",
                str(tmp_path / "src"),
                *copy,
                "--exclude",
                "*.tmp",
                "--exclude=*.log",
                "--json",
            )
        )
        shown = json.loads(_ok("show", out["version"]["qualified_name"], "--json"))
        assert [e["path"] for e in shown["entries"]] == ["a.txt"]
