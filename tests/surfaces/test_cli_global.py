"""Global options (--root, --json, -y/--yes, --debug) before or after the command; `refstore --version`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import refstore
from refstore.surfaces.cli import main


def _cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _ok(*args: str) -> str:
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def two_registries(tmp_path: Path) -> tuple[str, str]:
    """Registry ``a`` holds artifact ``in-a``, registry ``b`` holds ``in-b``; $REFSTORE_ROOT is neither."""
    (tmp_path / "f.txt").write_text("x")
    roots = str(tmp_path / "a"), str(tmp_path / "b")
    for root, name in zip(roots, ["in-a", "in-b"], strict=True):
        artifact = refstore.Artifact(name, description="described", metadata={"k": 1})
        artifact.add_file(tmp_path / "f.txt")
        refstore.Registry(root).log(artifact)
    return roots


def test_root_and_json_before_or_after_the_command(two_registries: tuple[str, str]) -> None:
    a, b = two_registries
    after, before = _ok("ls", "--root", a), _ok("--root", a, "ls")
    assert after == before and after.splitlines()[1].startswith("in-a ")
    listings = [
        _ok("ls", "--root", a, "--json"),
        _ok("ls", "--json", "--root", a),
        _ok("--json", "ls", "--root", a),
        _ok("--root", a, "--json", "ls"),
        _ok("--json", "--root", a, "ls", "--json"),
    ]
    assert all(listing == listings[0] for listing in listings)
    assert [x["name"] for x in json.loads(listings[0])["artifacts"]] == ["in-a"]
    shown = json.loads(_ok("show", "--json", "in-a", "--root", a))
    assert shown["version"]["qualified_name"] == "in-a:v0"
    assert json.loads(_ok("--json", "--root", a, "show", "in-a")) == shown
    # the value after the command wins over the one before it, and both over $REFSTORE_ROOT
    assert json.loads(_ok("--root", a, "ls", "--root", b, "--json"))["artifacts"][0]["name"] == "in-b"
    assert "in-a:v0" in _ok("--root", b, "show", "in-a", "--root", a)


@pytest.mark.parametrize(
    "command", ["ls", "show in-a", "get in-a out", "diff in-a in-a", "verify in-a", "gc"]
)
def test_every_command_takes_every_global_option_after_its_name(
    two_registries: tuple[str, str], command: str
) -> None:
    a, _ = two_registries
    result = _cli(*command.split(), "--root", a, "--json", "-y", "--debug")
    assert result.exit_code == 0, result.output
    json.loads(result.output)


def _orphan_blob(root: str) -> Path:
    orphan = Path(root) / "blobs" / "ff" / "0123456789abcdef"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"nothing references this")
    return orphan


@pytest.mark.parametrize("args", [["-y", "gc"], ["gc", "-y"], ["--yes", "gc"], ["gc", "--yes"]])
def test_yes_before_or_after_gc_deletes(two_registries: tuple[str, str], args: list[str]) -> None:
    a, _ = two_registries
    orphan = _orphan_blob(a)
    assert "would delete  blobs/ff/0123456789abcdef" in _ok("--root", a, "gc")
    assert orphan.exists()
    assert "deleted  blobs/ff/0123456789abcdef" in _ok("--root", a, *args)
    assert not orphan.exists()


@pytest.mark.parametrize(
    "args", [["-y", "sync", "--clean"], ["sync", "--clean", "-y"], ["sync", "-y", "--clean"]]
)
def test_yes_anywhere_answers_the_sync_clean_question(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "a.txt").write_text("a")
    with refstore.init("proj", id="synced01") as run:
        run.save("a.txt", policy="now")
    declined = _cli("sync", "--clean", input="n\n")
    assert "Delete 1 synced run directory" in declined.output and run.dir.exists()
    accepted = _cli(*args)  # no input: a question would abort
    assert accepted.exit_code == 0, accepted.output
    assert "Delete 1 synced" not in accepted.output and not run.dir.exists()


def test_version_in_a_new_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refstore", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == f"refstore, version {refstore.__version__}"


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_and_group_has_the_global_options() -> None:
    commands = dict(_commands(main))
    assert {"log", "ls", "show", "get", "diff", "alias", "verify", "gc", "sync", "restore"} <= commands.keys()
    for name, command in [("", main), *commands.items()]:
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert {"--root", "--json", "-y", "--yes", "--debug"} <= options, f"refstore {name}"


def test_json_before_a_nested_command(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    with refstore.init("proj", id="nested01") as run:
        run.save("a.txt", policy="now")
    shown = [
        _ok(*args) for args in (["runs", "show", run.path, "--json"], ["runs", "--json", "show", run.path])
    ]
    assert shown[0] == shown[1] and json.loads(shown[0])
    assert shown[0] == _ok("--json", "runs", "show", run.path)
