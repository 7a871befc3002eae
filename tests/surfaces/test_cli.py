"""The command line: commands, --json, one-line errors with a non-zero exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from refstore.surfaces.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_log_ls_show_get_diff_alias(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one")
    assert _ok(runner, "log", "ds", str(data), "--copy", "--alias", "first").startswith("ds:v0 sha256:")
    (data / "a.txt").write_text("two")
    logged = json.loads(_ok(runner, "log", "ds", str(data), "--copy", "--json"))
    assert logged["version"]["qualified_name"] == "ds:v1" and logged["version"]["aliases"] == ["latest"]
    (artifact,) = json.loads(_ok(runner, "ls", "--json"))["artifacts"]
    assert (artifact["name"], artifact["versions"]) == ("ds", 2)
    assert artifact["latest"] == logged["version"]  # one shape for a version, whatever the command
    listing = json.loads(_ok(runner, "ls", "ds", "--json"))["versions"]
    assert [v["qualified_name"] for v in listing] == ["ds:v0", "ds:v1"]
    shown = json.loads(_ok(runner, "show", "ds:first", "--json"))
    assert shown["version"]["entry_count"] == 1 and shown["entries"][0]["path"] == "a.txt"
    assert shown["version"].keys() == logged["version"].keys()
    assert "ds:v0" in _ok(runner, "show", "ds:v0")
    assert json.loads(_ok(runner, "diff", "ds:v0", "ds:v1", "--json"))["modified"] == ["a.txt"]
    out = _ok(runner, "get", "ds:first", str(tmp_path / "dl"))
    assert (Path(out.strip()) / "a.txt").read_text() == "one"
    assert "ds:prod -> ds:v1" in _ok(runner, "alias", "ds:latest", "prod")


def test_references_and_verify_exit_status(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "ref"
    data.mkdir()
    (data / "x.bin").write_bytes(b"x")
    _ok(runner, "log", "refs", str(data))
    assert "1 ok" in _ok(runner, "verify", "refs")
    (data / "x.bin").write_bytes(b"changed")
    result = runner.invoke(main, ["verify", "refs", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["changed"] == ["x.bin"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["get", "nope:v3"], "nope:v3"),
        (["alias", "nope", "latest"], "reserved"),
        (["log", "bad name", "."], "bad name"),
        (["--root", "ftpx://h/r", "ls"], "ftpx://"),
        (["log", "ds", "s3://"], "s3://"),
    ],
)
def test_errors_are_one_line_without_traceback(runner: CliRunner, args: list[str], needle: str) -> None:
    _ok(runner, "init")  # a registry that exists: these errors are about what is asked of it
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refstore: error:") and needle in lines[0]


def test_python_dash_m_and_console_script(tmp_path: Path) -> None:
    for command in ([sys.executable, "-m", "refstore"], [str(Path(sys.executable).parent / "refstore")]):
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, cwd=tmp_path, check=False
        )
        assert result.returncode == 0 and "refstore" in result.stdout
        subprocess.run([*command, "init"], capture_output=True, cwd=tmp_path, check=True)
        failed = subprocess.run(
            [*command, "get", "x:v9"], capture_output=True, text=True, cwd=tmp_path, check=False
        )
        assert failed.returncode == 1 and "Traceback" not in failed.stderr and "x:v9" in failed.stderr


def test_demo_brings_the_old_bytes_back(tmp_path: Path) -> None:
    """The README's main command: log a local folder, change a file, log v1, download v0."""
    env = {k: v for k, v in os.environ.items() if k != "REFSTORE_ROOT"}  # the embedded default
    result = subprocess.run(
        [sys.executable, "-m", "refstore.surfaces.demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "OK: the old bytes came back" in result.stdout
    assert (tmp_path / "demo" / ".refstore" / "artifacts" / "pets" / "versions" / "1.json").is_file()
