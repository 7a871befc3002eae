"""The lifecycle commands (issue 15): ``rm``, ``alias --delete``, ``retain``, ``edit``, and ``log``/``ls``/
``show`` with descriptions, metadata, tags and TTLs; on a local registry and on one in a moto (S3) bucket."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import refstore
from refstore.surfaces.cli import main


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return f"s3://{request.getfixturevalue('s3_bucket')}/registry"


def _run(root: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--root", root, *args], input=input)


def _ok(root: str, *args: str, input: str | None = None) -> str:
    result = _run(root, *args, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def _log_versions(root: str, tmp_path: Path, count: int, *extra: str) -> None:
    source = tmp_path / "data.txt"
    for i in range(count):
        source.write_text(f"content {i} {extra}")
        _ok(root, "log", "ds", str(source), "--copy", *extra)


def test_rm_asks_refuses_aliased_versions_and_rm_all_removes_the_artifact(root: str, tmp_path: Path) -> None:
    _log_versions(root, tmp_path, 3)
    _ok(root, "alias", "ds:v1", "prod")
    declined = _run(root, "rm", "ds:v2", input="n\n")
    assert declined.exit_code == 1 and "Delete ds:v2?" in declined.output
    assert refstore.Registry(root).get("ds").version == 2  # nothing deleted
    assert "deleted  ds:v2" in _ok(root, "rm", "ds:v2", input="y\n")
    assert refstore.Registry(root).get("ds").version == 1
    refused = _run(root, "rm", "ds:v1", "-y")
    assert refused.exit_code == 1
    assert refused.output.strip().startswith("refstore: error: ds:v1: prod points at it")
    out = json.loads(_ok(root, "rm", "ds:prod", "--force", "-y", "--json"))
    assert [(d["qualified_name"], d["aliases_removed"]) for d in out["deleted"]] == [("ds:v1", ["prod"])]
    gone = _run(root, "get", "ds:v1", str(tmp_path / "out"))
    assert gone.exit_code == 1 and "ds:v1 was deleted" in gone.output
    no_version = _run(root, "rm", "ds", "-y")
    assert no_version.exit_code == 2 and "--all" in no_version.output
    assert "deleted  ds:v0" in _ok(root, "rm", "ds", "--all", "-y")
    assert "(no artifacts)" in _ok(root, "ls")
    _log_versions(root, tmp_path, 1)
    assert json.loads(_ok(root, "ls", "ds", "--json"))["versions"][0]["version"] == 3  # never reused


def test_alias_delete_and_retain(root: str, tmp_path: Path) -> None:
    _log_versions(root, tmp_path, 5)
    _ok(root, "alias", "ds:v0", "prod")
    assert "removed ds:prod (it pointed at ds:v0)" in _ok(root, "alias", "--delete", "ds", "prod")
    assert _run(root, "alias", "--delete", "ds", "prod").exit_code == 1
    _ok(root, "alias", "ds:v1", "best")
    dry = _ok(root, "retain", "ds", "--keep-last", "2", "--dry-run")
    assert [line.split()[2] for line in dry.splitlines() if line.startswith("would delete")] == [
        "ds:v0",
        "ds:v2",
    ]
    assert len(refstore.Registry(root).versions("ds")) == 5
    out = _ok(root, "retain", "ds", "--keep-last", "2", "-y")
    assert out.index("delete  ds:v0") < out.index("deleted  ds:v0")  # printed before deleting
    assert [v.version for v in refstore.Registry(root).versions("ds")] == [1, 3, 4]
    assert _run(root, "retain", "ds").exit_code == 2  # a policy is required


def test_log_edit_show_and_ls_with_metadata_and_tags(root: str, tmp_path: Path) -> None:
    _log_versions(
        root, tmp_path, 1, "--description", "raw", "--set", "lr=0.1", "--tag", "raw", "--ttl", "30d"
    )
    _log_versions(root, tmp_path, 1, "--set", "split=test")
    shown = _ok(root, "show", "ds:v0").splitlines()
    header = shown[1 : shown.index("")]
    fields = {line.split()[0]: line.split(None, 1)[1] for line in header if not line.startswith("   ")}
    assert fields["tags"] == "raw" and fields["ttl"].startswith("30 days (gc deletes it after")
    assert fields["edited"] == "-"
    out = _ok(
        root, "edit", "ds:v0", "--description", "clean", "--set", "epochs=3", "--unset", "lr", "--tag", "best"
    )
    assert "  description  clean" in out and "epochs: 3" in out
    _ok(root, "edit", "ds:v0", "--untag", "raw", "--ttl", "none")
    version = json.loads(_ok(root, "show", "ds:v0", "--json"))
    assert (version["version"]["tags"], version["version"]["ttl_seconds"]) == (["best"], None)
    assert version["version"]["metadata"] == {"epochs": 3}
    assert [h["edits"] for h in version["history"]] == [1, 2] and "@" in version["history"][0]["by"]
    assert version["version"]["edited"]["edits"] == 2
    assert _run(root, "edit", "ds:v0").exit_code == 2  # nothing to change
    listed = _ok(root, "ls", "--tag", "best").splitlines()
    assert listed[0].split()[-1] == "TAGS" and [line.split()[0] for line in listed[1:]] == ["ds:v0"]
    assert [
        v["qualified_name"] for v in json.loads(_ok(root, "ls", "--meta", "split=test", "--json"))["versions"]
    ] == ["ds:v1"]
    assert "(no versions)" in _ok(root, "ls", "--type", "model")


@pytest.mark.parametrize("command", ["rm", "retain", "edit"])
def test_lifecycle_commands_have_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "--json" in result.output and "--root" in result.output


def test_gc_reports_and_deletes_versions_whose_ttl_passed(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    registry = refstore.Registry(root)
    for i, ttl in enumerate([timedelta(0), timedelta(0), None]):
        (tmp_path / "f.txt").write_text(str(i))
        artifact = refstore.Artifact("ds", ttl=ttl)
        artifact.add_file(tmp_path / "f.txt")
        registry.log(artifact, aliases=["prod"] if i == 1 else ())
    dry = _ok(root, "gc")
    assert "would delete  ds:v0  (its TTL has passed)" in dry
    assert "kept  ds:v1  (its TTL has passed, but aliases point at it)" in dry
    assert [v.version for v in registry.versions("ds")] == [0, 1, 2]
    assert "deleted  ds:v0  (its TTL has passed)" in _ok(root, "gc", "-y")
    assert [v.version for v in registry.versions("ds")] == [1, 2]


def test_runs_show_lists_a_used_version_that_was_deleted_as_deleted(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    _log_versions(root, tmp_path, 2)
    with refstore.init(project="p", dir=tmp_path / "runs", registry=root) as run:
        run.use_artifact("ds:v0")
        run.use_artifact("ds:v1")
    _ok(root, "rm", "ds:v0", "-y")
    lines = _ok(root, "runs", "show", run.path).splitlines()
    assert "used     ds:v0 (deleted), ds:v1" in lines
    shown = json.loads(_ok(root, "runs", "show", run.path, "--json"))
    assert (shown["used"], shown["deleted"]) == (["ds:v0", "ds:v1"], ["ds:v0"])
