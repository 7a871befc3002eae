"""Lineage: the artifacts a run used and logged (``created_by``, ``used_by()``, ``refstore show``)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from runs_support import registry_root, run_area

import refstore
from refstore import Artifact, Registry
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _artifact(name: str, path: Path, text: str) -> Artifact:
    path.write_text(text)
    artifact = Artifact(name, type="dataset" if name == "mnist" else "model")
    artifact.add_file(path)
    return artifact


def test_runs_record_what_they_used_and_logged(registry_root: str, tmp_path: Path) -> None:
    registry = Registry(registry_root)
    dataset = registry.log(_artifact("mnist", tmp_path / "train.csv", "1,2,3"))
    assert dataset.created_by is None and dataset.used_by() == []
    with refstore.init("proj") as run:
        used = run.use_artifact("mnist:latest")
        model = run.log_artifact(_artifact("model", tmp_path / "model.bin", "w"), aliases=["best"])
    with refstore.init("proj") as other:
        other.use_artifact(dataset)
    assert used == dataset
    assert registry.get("mnist:v0").used_by() == sorted([run.path, other.path])
    assert registry.get("model:best").created_by == run.path == model.created_by

    runner = CliRunner()
    assert run.path in runner.invoke(main, ["show", "model:best"], catch_exceptions=False).output
    shown = runner.invoke(main, ["show", "mnist"], catch_exceptions=False).output
    assert run.path in shown and other.path in shown
    data = json.loads(runner.invoke(main, ["show", "mnist", "--json"], catch_exceptions=False).output)
    assert sorted(data.get("version", data)["used_by"]) == sorted([run.path, other.path])
