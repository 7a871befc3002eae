"""Shell completion: click's ``_REFSTORE_COMPLETE`` protocol, completing artifact names from the registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import refstore


def _complete(words: str, *, shell: str = "bash", env: dict[str, str] | None = None) -> list[str]:
    """What the shell would offer after ``words`` (the last word is the one being completed)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    variables = {**os.environ, **(env or {}), "_REFSTORE_COMPLETE": f"{shell}_complete"}
    variables |= {"COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = subprocess.run(
        [sys.executable, "-m", "refstore"], capture_output=True, text=True, env=variables, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shell == "zsh":
        lines = result.stdout.strip("\n").splitlines()  # type, value, help: three lines an item
        return [value for kind, value, _ in zip(lines[::3], lines[1::3], lines[2::3], strict=True)]
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


@pytest.fixture
def registry(tmp_path: Path) -> str:
    (tmp_path / "f.txt").write_text("x")
    root = str(tmp_path / "reg")
    for name in ("mnist", "models", "sales"):
        artifact = refstore.Artifact(name)
        artifact.add_file(tmp_path / "f.txt")
        refstore.Registry(root).log(artifact, aliases=["prod"] if name == "mnist" else [])
    return root


def test_artifact_names_complete_for_ref_and_name_arguments(registry: str) -> None:
    assert _complete(f"refstore --root {registry} show ") == ["mnist", "models", "sales"]
    assert _complete(f"refstore --root {registry} get m") == ["mnist", "models"]
    assert _complete(f"refstore show --root {registry} s") == ["sales"]
    assert _complete(f"refstore diff --root {registry} mnist mo") == ["models"]
    for command in ("ls", "verify", "alias", "log"):
        assert _complete(f"refstore {command} --root {registry} sa") == ["sales"], command
    assert _complete("refstore show mn", env={"REFSTORE_ROOT": registry}) == ["mnist"]
    # versions and aliases after NAME: (zsh and fish keep the colon in the word)
    assert _complete(f"refstore --root {registry} show mnist:", shell="zsh") == [
        "mnist:v0",
        "mnist:latest",
        "mnist:prod",
    ]


@pytest.mark.parametrize(
    "root", ["{tmp}/no-such-registry", "ftpx://host/r", "s3:/one-slash", "{tmp}/file.txt"]
)
def test_completion_offers_nothing_and_prints_nothing_when_the_registry_is_unusable(
    tmp_path: Path, root: str
) -> None:
    (tmp_path / "file.txt").write_text("not a registry")
    words = f"refstore --root {root.format(tmp=tmp_path)} show "
    assert _complete(words) == []
    assert _complete(words + "x:", shell="zsh") == []


def test_the_bash_script_the_readme_shows() -> None:
    env = {**os.environ, "_REFSTORE_COMPLETE": "bash_source"}
    script = subprocess.run(
        [sys.executable, "-m", "refstore"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert (
        "_refstore_completion()" in script and "complete -o nosort -F _refstore_completion refstore" in script
    )
