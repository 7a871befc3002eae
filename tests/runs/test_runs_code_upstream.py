"""Code state that restores on another clone (issue 15): the upstream commit (the newest commit of HEAD's
history the remote holds) and ``upstream.patch`` from it to the working tree, so that a run on a commit
that was never pushed restores on a fresh clone of the remote; small untracked files travel in the patches."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from runs_support import registry_root, run_area

import refstore
from refstore import RunError
from refstore.runs import code_state
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    result = subprocess.run([*command, *args], cwd=repo, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _tree(repo: Path) -> dict[str, bytes]:
    """Every file of the working tree but .git, by path."""
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with one pushed commit on main: the team's remote."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    (seed / "train.py").write_text("lr = 0.1\n")
    (seed / ".gitignore").write_text("*.ckpt\n")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "first")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return bare


def _clone(remote: Path, where: Path) -> Path:
    git(where.parent, "clone", "-q", str(remote), str(where))
    return where


def test_a_run_on_an_unpushed_commit_restores_on_a_fresh_clone(
    registry_root: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _clone(remote, tmp_path / "code")
    pushed = git(work, "rev-parse", "HEAD")
    (work / "train.py").write_text("lr = 0.05  # committed, never pushed\n")
    (work / "model.bin").write_bytes(bytes(range(256)) * 4)  # binary, committed, never pushed
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "local only")
    (work / "train.py").write_text("lr = 0.01  # not even committed\n")
    (work / "notes.txt").write_text("untracked, small: travels with the run\n")
    (work / "big.ckpt").write_bytes(b"ignored: never in a patch")
    monkeypatch.chdir(work)
    with refstore.init("proj") as run:
        assert run.code is not None
        assert (run.code.commit, run.code.upstream) == (git(work, "rev-parse", "HEAD"), pushed)
        assert run.code.patch and run.code.upstream_patch and run.code.untracked == 1
    expected = _tree(work)
    del expected["big.ckpt"]

    fresh = _clone(remote, tmp_path / "fresh")
    monkeypatch.chdir(fresh)
    restored = CliRunner().invoke(main, ["restore", run.path], catch_exceptions=False)
    assert restored.exit_code == 0, restored.output
    assert git(fresh, "rev-parse", "--abbrev-ref", "HEAD") == f"refstore/{run.path}"
    assert git(fresh, "rev-parse", "HEAD") == pushed  # the unpushed commit's changes are uncommitted here
    assert _tree(fresh) == expected

    again = CliRunner().invoke(main, ["restore", run.path])  # never over uncommitted work
    assert again.exit_code == 1 and "uncommitted changes" in again.output
    assert _tree(fresh) == expected

    other = _clone(remote, tmp_path / "other")
    (other / "train.py").write_text("my own edit\n")
    monkeypatch.chdir(other)
    refused = CliRunner().invoke(main, ["restore", run.path])
    assert refused.exit_code == 1 and "uncommitted changes" in refused.output
    assert (other / "train.py").read_text() == "my own edit\n"
    assert git(other, "branch", "--list", "refstore/*") == ""


def _unpushed(remote: Path, where: Path) -> Path:
    """A clone of ``remote`` with one commit that is never pushed."""
    work = _clone(remote, where)
    (work / "train.py").write_text("lr = 0.05\n")
    git(work, "commit", "-q", "-am", "local only")
    return work


def test_in_the_original_clone_the_run_restores_at_its_own_commit(
    registry_root: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _unpushed(remote, tmp_path / "code")
    local = git(work, "rev-parse", "HEAD")
    (work / "train.py").write_text("lr = 0.01\n")
    monkeypatch.chdir(work)
    with refstore.init("proj") as run:
        pass
    git(work, "checkout", "-q", "--", ".")
    assert refstore.runs.restore_code(run.path) == f"refstore/{run.path}"
    assert git(work, "rev-parse", "HEAD") == local
    assert (work / "train.py").read_text() == "lr = 0.01\n"


def test_a_branch_without_upstream_uses_the_newest_commit_a_remote_holds(
    registry_root: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "seed"
    (seed / "train.py").write_text("lr = 0.2\n")
    git(seed, "commit", "-q", "-am", "second, pushed")
    git(seed, "push", "-q", "origin", "HEAD:main")
    second = git(seed, "rev-parse", "HEAD")
    work = _clone(remote, tmp_path / "code")
    git(work, "checkout", "-q", "--no-track", "-b", "experiment", "origin/main")
    (work / "extra.py").write_text("x = 1\n")
    git(work, "add", "extra.py")
    git(work, "commit", "-q", "-m", "on a branch no remote has")
    monkeypatch.chdir(work)
    with refstore.init("proj") as run:
        assert run.code is not None and run.code.branch == "experiment"
        assert run.code.upstream == second and run.code.upstream_patch and not run.code.patch

    fresh = _clone(remote, tmp_path / "fresh")
    assert refstore.runs.restore_code(run.path, cwd=fresh) == f"refstore/{run.path}"
    assert (fresh / "extra.py").read_text() == "x = 1\n"
    assert git(fresh, "rev-parse", "HEAD") == second


def test_a_pushed_commit_needs_no_upstream_patch(
    registry_root: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _clone(remote, tmp_path / "code")
    (work / "train.py").write_text("changed, not committed\n")
    monkeypatch.chdir(work)
    with refstore.init("proj") as run:
        assert run.code is not None
        assert run.code.upstream == run.code.commit and run.code.patch and not run.code.upstream_patch
    assert not (run.dir / code_state.UPSTREAM_PATCH_NAME).exists()


def test_untracked_files_over_the_limit_are_left_out_and_named(
    registry_root: str,
    remote: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = _clone(remote, tmp_path / "code")
    (work / "small.txt").write_text("in the patch\n")
    (work / "large.bin").write_bytes(b"\0" * (code_state.UNTRACKED_FILE_LIMIT + 1))
    (work / "odd [*] name.txt").write_text("a pathspec-looking name, taken literally\n")
    monkeypatch.chdir(work)
    with caplog.at_level(logging.WARNING, logger="refstore.runs"), refstore.init("proj") as run:
        assert run.code is not None
        assert (run.code.untracked, run.code.untracked_left_out) == (2, 1)
    assert "1 untracked file(s) left out" in caplog.text and "large.bin" in caplog.text
    patch = (run.dir / code_state.PATCH_NAME).read_bytes()
    assert b"small.txt" in patch and b"odd [*] name.txt" in patch and b"large.bin" not in patch
    assert git(work, "ls-files") == ".gitignore\ntrain.py"  # the index is the user's: never touched

    fresh = _clone(remote, tmp_path / "fresh")
    refstore.runs.restore_code(run.path, cwd=fresh)
    assert (fresh / "small.txt").read_text() == "in the patch\n"
    assert not (fresh / "large.bin").exists()


def test_restore_names_both_commits_when_neither_is_there(
    registry_root: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(_unpushed(remote, tmp_path / "code"))
    with refstore.init("proj") as run:
        assert run.code is not None and run.code.upstream is not None
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    git(unrelated, "init", "-q")
    (unrelated / "x").write_text("x")
    git(unrelated, "add", "x")
    git(unrelated, "commit", "-q", "-m", "x")
    with pytest.raises(RunError, match=f"nor is its upstream commit {run.code.upstream}"):
        refstore.runs.restore_code(run.path, cwd=unrelated)


def test_restore_from_a_subfolder_applies_the_whole_patch(
    registry_root: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``git apply`` run in a subfolder skips the paths outside it without a word: restore applies the
    patch from the repository's top wherever it is called."""
    work = _unpushed(remote, tmp_path / "code")
    (work / "pkg").mkdir()
    (work / "pkg" / "model.py").write_text("depth = 3\n")
    git(work, "add", "pkg")
    git(work, "commit", "-q", "-m", "a package")
    (work / "train.py").write_text("lr = 0.01  # at the top, not committed\n")
    monkeypatch.chdir(work / "pkg")
    with refstore.init("proj") as run:
        pass
    git(work, "checkout", "-q", "--", ".")
    refstore.runs.restore_code(run.path, cwd=work / "pkg")
    assert (work / "train.py").read_text() == "lr = 0.01  # at the top, not committed\n"
