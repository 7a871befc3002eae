"""Readable command-line output: summaries, trees, tables, and one JSON shape for a version everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import refstore
from refstore.surfaces.cli import main


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def logged(tmp_path: Path) -> refstore.ArtifactVersion:
    data = tmp_path / "data"
    (data / "sub" / "deep").mkdir(parents=True)
    (data / "a.txt").write_text("alpha")
    (data / "sub" / "b.bin").write_bytes(b"\0" * 2048)
    (data / "sub" / "deep" / "c.txt").write_text("c")
    registry = refstore.Registry()
    artifact = refstore.Artifact("ds", description="three files", metadata={"source": "lab", "split": [8, 2]})
    artifact.add_reference(data)
    artifact.add_file(data / "a.txt", name="copies/a.txt")
    version = registry.log(artifact, aliases=["prod"], created_by="proj/trainer")
    registry.record_use("ds:v0", "proj/evaluator")
    return version


def test_show_prints_a_summary_and_a_tree(logged: refstore.ArtifactVersion, tmp_path: Path) -> None:
    lines = _run("show", "ds:prod").splitlines()
    assert lines[0] == "ds:v0  (dataset)" and lines[1] == "  description  three files"
    summary = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:8]}
    assert summary["aliases"] == "latest, prod"
    assert summary["entries"] == "4, 2.0 KiB"
    assert summary["schemes"] == "copy (1), file (3)"
    assert summary["lineage"] == "logged by run proj/trainer; used by proj/evaluator"
    assert lines[8:10] == ["  metadata     source: lab", "               split: [8, 2]"]
    tree = lines[lines.index("ds:v0/") + 1 :]
    source = f"file://{tmp_path}/data"
    assert tree == [
        f"├── a.txt  5 B  {source}/a.txt",
        "├── copies/",
        "│   └── a.txt  5 B  (copy)",
        "└── sub/",
        f"    ├── b.bin  2.0 KiB  {source}/sub/b.bin",
        "    └── deep/",
        f"        └── c.txt  1 B  {source}/sub/deep/c.txt",
    ]


def test_show_limits_a_long_tree(tmp_path: Path) -> None:
    data = tmp_path / "many"
    data.mkdir()
    for i in range(105):
        (data / f"f{i:03d}").write_text(str(i))
    artifact = refstore.Artifact("many")
    artifact.add_reference(data)
    refstore.Registry().log(artifact)
    lines = _run("show", "many").splitlines()
    assert "many:v0/  (the first 100 of 105 entries; --all lists them all)" in lines
    assert lines[-1] == "... 5 more entries (--all lists them)"
    assert len([line for line in lines if line.startswith(("├── f", "└── f"))]) == 100
    everything = _run("show", "many", "--all").splitlines()
    assert "many:v0/" in everything and everything[-1].startswith("└── f104")
    assert len([line for line in everything if line.startswith(("├── f", "└── f"))]) == 105


def test_show_prints_a_long_description_and_no_metadata(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    artifact = refstore.Artifact("plain", description="first line\nsecond line")
    artifact.add_file(tmp_path / "x.txt")
    refstore.Registry().log(artifact)
    lines = _run("show", "plain").splitlines()
    assert lines[1:3] == ["  description  first line", "               second line"]
    assert "  metadata     -" in lines


def test_ls_tables(logged: refstore.ArtifactVersion) -> None:
    artifacts = _run("ls").splitlines()
    assert artifacts[0].split() == ["ARTIFACT", "TYPE", "VERSIONS", "LATEST", "ENTRIES", "SIZE", "UPDATED"]
    assert artifacts[1].split()[:6] == ["ds", "dataset", "1", "ds:v0", "4", "2.0"]
    versions = _run("ls", "ds").splitlines()
    assert versions[0].split() == ["VERSION", "TYPE", "CREATED", "ENTRIES", "SIZE", "ALIASES"]
    assert versions[1].split()[-1] == "latest,prod"


def test_json_renders_a_version_the_same_way_in_every_command(
    logged: refstore.ArtifactVersion, tmp_path: Path
) -> None:
    shapes = {
        "show": json.loads(_run("show", "ds:v0", "--json"))["version"],
        "get": json.loads(_run("get", "ds:v0", str(tmp_path / "out"), "--json"))["version"],
        "alias": json.loads(_run("alias", "ds:v0", "best", "--json"))["version"],
        "verify": json.loads(_run("verify", "ds:v0", "--json"))["version"],
        "diff": json.loads(_run("diff", "ds:v0", "ds:v0", "--json"))["from"],
        "ls": json.loads(_run("ls", "--json"))["artifacts"][0]["latest"],
        "ls NAME": json.loads(_run("ls", "ds", "--json"))["versions"][0],
    }
    expected = shapes.pop("show")
    for command, shape in shapes.items():
        assert shape.keys() == expected.keys(), command
        assert shape["qualified_name"] == "ds:v0" and shape["schemes"] == {"copy": 1, "file": 3}, command


def test_counts_have_thousands_separators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFSTORE_HASH_PROCESSES", "0")
    data = tmp_path / "many"
    data.mkdir()
    for i in range(1088):
        (data / f"{i:04d}").write_text("x")
    artifact = refstore.Artifact("many")
    artifact.add_reference(data)
    refstore.Registry().log(artifact)
    lines = _run("show", "many").splitlines()
    assert "  entries      1,088, 1.1 KiB" in lines and "  schemes      file (1,088)" in lines
    assert "many:v0/  (the first 100 of 1,088 entries; --all lists them all)" in lines
    assert lines[-1] == "... 988 more entries (--all lists them)"
    assert _run("ls").splitlines()[1].split()[4] == "1,088"
    assert _run("ls", "many").splitlines()[1].split()[3] == "1,088"
