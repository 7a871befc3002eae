"""The registry is found like git finds its repository: ``--root`` / ``$REFSTORE_ROOT``, else the nearest
``.refstore`` in the current folder or its parents; ``refstore init`` makes one; reading a registry that
does not exist is a one-line error naming it, never an empty listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import unique_name

import refstore
from refstore.surfaces.cli import main


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``proj/`` with data and a subfolder, no registry anywhere above it, ``$REFSTORE_ROOT`` unset."""
    monkeypatch.delenv("REFSTORE_ROOT")
    proj = tmp_path / "proj"
    (proj / "sub" / "deeper").mkdir(parents=True)
    (proj / "data").mkdir()
    (proj / "data" / "a.csv").write_text("a,b\n1,2\n")
    found = [p for p in tmp_path.parents if (p / ".refstore").is_dir()]
    assert not found, f"a .refstore above the test folder would be found: {found}"
    return proj


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _ok(*args: str) -> str:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def _fails_naming(what: str, *args: str) -> None:
    result = _run(*args)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith("refstore: error: ") and what in result.output, result.output


def test_commands_in_a_subfolder_use_the_nearest_registry(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    assert _ok("init").strip() == f"created registry file://{project}/.refstore"
    assert "already exists" in _ok("init")
    monkeypatch.chdir(project / "sub" / "deeper")
    assert _ok("log", "ds", "../../data").startswith("ds:v0 ")
    assert not (project / "sub" / ".refstore").exists() and not (project / "sub/deeper/.refstore").exists()
    assert [a["name"] for a in json.loads(_ok("ls", "--json"))["artifacts"]] == ["ds"]
    assert refstore.Registry().root == f"file://{project}/.refstore"  # Python finds it the same way
    assert refstore.Registry().get("ds:v0").manifest.keys() == {"a.csv"}
    monkeypatch.setenv("REFSTORE_ROOT", str(project / "elsewhere"))  # the variable wins over the search
    assert refstore.Registry().root == f"file://{project}/elsewhere"
    _fails_naming(f"{project}/elsewhere", "ls")


def test_a_registry_made_in_the_folder_itself_is_found_there_and_below(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``refstore init .`` makes the current folder a registry: the commands run there (and in its
    subfolders) use it, as they would a ``.refstore`` folder."""
    monkeypatch.chdir(project)
    assert _ok("init", ".").strip() == f"created registry file://{project}"
    assert _ok("ls").strip() == "(no artifacts)"
    monkeypatch.chdir(project / "sub")
    assert _ok("log", "ds", "../data").startswith("ds:v0 ")
    assert not (project / "sub" / ".refstore").exists()
    assert refstore.Registry().root == f"file://{project}"
    (project / ".refstore").mkdir()  # a .refstore folder in a folder wins over the folder itself
    assert refstore.Registry().root == f"file://{project}/.refstore"


def test_log_makes_the_default_registry_here_when_none_is_found(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "sub")
    _ok("log", "ds", "../data")
    assert (project / "sub" / ".refstore" / ".refstore-registry").is_file()
    assert "ds:v0" in _ok("show", "ds")


def test_reading_a_registry_that_does_not_exist_fails_naming_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "sub")
    reads = [["ls"], ["ls", "ds"], ["show", "ds"], ["get", "ds", "out"], ["verify", "ds"]]
    reads += [["diff", "ds:v0", "ds:v1"], ["alias", "ds:v0", "prod"], ["gc"]]
    for command in reads:
        _fails_naming("no .refstore in", *command)  # none in the folder or its parents
        _fails_naming("/typo", "--root", "/typo", *command)
        _fails_naming("/typo", *command, "--root", "/typo")
    assert not list(project.rglob(".refstore")) and not Path("/typo").exists()


def test_a_missing_bucket_is_named_and_init_makes_a_bucket_registry(
    project: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: str
) -> None:
    monkeypatch.chdir(project)
    missing = unique_name("nobucket")
    for command in (["ls"], ["show", "ds"], ["verify", "ds"]):
        _fails_naming(missing, "--root", f"s3://{missing}/reg", *command)
    root = f"s3://{s3_bucket}/reg"
    _fails_naming(root, "--root", root, "ls")  # the bucket is there, the registry is not
    assert json.loads(_ok("init", root, "--json")) == {"root": root, "created": True}
    assert _ok("--root", root, "ls").strip() == "(no artifacts)"
    assert refstore.Registry(root).exists() and not refstore.Registry(f"s3://{s3_bucket}/other").exists()


def test_registries_made_before_markers_are_still_found(tmp_path: Path) -> None:
    """A registry that older versions wrote (folders, no marker) exists for the reading commands."""
    registry = refstore.Registry(tmp_path / "old")
    (tmp_path / "a.txt").write_text("a")
    artifact = refstore.Artifact("ds")
    artifact.add_file(tmp_path / "a.txt")
    registry.log(artifact)
    (tmp_path / "old" / ".refstore-registry").unlink()
    assert refstore.Registry(tmp_path / "old").exists()
    assert "ds" in _ok("--root", str(tmp_path / "old"), "ls")


@pytest.mark.parametrize(("scheme", "server"), [("gs", "gcs_server"), ("az", "azurite")])
def test_a_missing_bucket_or_container_is_named_on_gcs_and_azure(
    scheme: str, server: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(server)  # points the default credential chain at the server
    missing = unique_name("nobucket")
    for command in (["ls"], ["show", "ds"], ["get", "ds", "out"]):
        _fails_naming(missing, "--root", f"{scheme}://{missing}/reg", *command)
