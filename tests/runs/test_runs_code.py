"""Code state: commit, branch and remote recorded, ``diff.patch`` saved, and both restored in a git repo."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from runs_support import registry_root, run_area

import refstore
from refstore import Registry, RunError
from refstore.runs.code_state import redact_url
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    result = subprocess.run([*command, *args], cwd=repo, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit on ``main``, a remote with a password in it, and the cwd inside."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 0.1\n")
    (repo / "weights.bin").write_bytes(bytes(range(256)))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", "https://alice:s3cret-token@git.example.com/team/model.git")
    monkeypatch.chdir(repo)
    return repo


def _all_registry_bytes(root: str) -> bytes:
    store = Registry(root).store
    fs = store.backend.fs
    fs.invalidate_cache()
    return b"".join(fs.cat_file(path) for path in fs.find(store.base))


def test_code_state_is_recorded_and_restored_on_a_branch(registry_root: str, repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("lr = 0.01  # not committed\n")
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))))
    with refstore.init("proj") as run:
        assert run.code is not None
        assert (run.code.commit, run.code.branch, run.code.patch) == (commit, "main", True)
        assert run.code.remote == "https://git.example.com/team/model.git"
        assert b"lr = 0.01" in (run.dir / "diff.patch").read_bytes()
    assert b"s3cret" not in _all_registry_bytes(registry_root)

    git(repo, "checkout", "-q", "--", ".")
    (repo / "later.py").write_text("x = 1\n")
    git(repo, "add", "later.py")
    git(repo, "commit", "-q", "-m", "later")
    result = CliRunner().invoke(main, ["restore", run.path], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"refstore/{run.path}" in result.output
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == f"refstore/{run.path}"
    assert git(repo, "rev-parse", "HEAD") == commit
    assert (repo / "train.py").read_text() == "lr = 0.01  # not committed\n"
    assert (repo / "weights.bin").read_bytes() == bytes(reversed(range(256)))
    assert not (repo / "later.py").exists()

    again = CliRunner().invoke(main, ["restore", run.path])
    assert again.exit_code == 1 and "uncommitted changes" in again.output


def test_restore_names_what_blocks_it(registry_root: str, repo: Path, tmp_path: Path) -> None:
    with refstore.init("proj") as clean_run:
        assert clean_run.code is not None and not clean_run.code.patch
    assert not (clean_run.dir / "diff.patch").exists()
    branch = refstore.runs.restore_code(clean_run.path)
    assert branch == f"refstore/{clean_run.path}"
    with pytest.raises(RunError, match="already exists"):
        refstore.runs.restore_code(clean_run.path)

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    with pytest.raises(RunError, match="not inside a git repository"):
        refstore.runs.restore_code(clean_run.path, cwd=outside)
    other = tmp_path / "other-repo"
    other.mkdir()
    git(other, "init", "-q")
    (other / "x").write_text("x")
    git(other, "add", "x")
    git(other, "commit", "-q", "-m", "unrelated")
    with pytest.raises(RunError, match=f"commit {clean_run.code.commit} is not in the repository"):
        refstore.runs.restore_code(clean_run.path, cwd=other)


def test_outside_a_repository_no_code_state(registry_root: str, tmp_path: Path) -> None:
    with refstore.init("proj") as run:
        assert run.code is None
    with pytest.raises(RunError, match="no code state"):
        refstore.runs.restore_code(run.path)


def test_an_ignored_patch_is_not_saved(
    registry_root: str, repo: Path, run_area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_IGNORE_GLOBS", "*.patch")
    (repo / "train.py").write_text("changed\n")
    with refstore.init("proj") as run:
        assert run.code is not None and not run.code.patch
    assert not (run.dir / "diff.patch").exists()


def test_restore_files_from_the_command_line(registry_root: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "b.txt").write_text("B")
    with refstore.init("proj") as run:
        run.save("*.txt", policy="end")
    dest = tmp_path / "restored"
    result = CliRunner().invoke(main, ["restore", run.path, "a.txt", "b.txt", "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(dest / "a.txt"), str(dest / "b.txt")]
    assert (dest / "b.txt").read_text() == "B"
    missing = CliRunner().invoke(main, ["restore", run.path, "c.txt"])
    assert missing.exit_code == 1 and "c.txt" in missing.output


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://user:pw@host.example/r.git", "https://host.example/r.git"),
        ("https://token@host.example:8443/r.git", "https://host.example:8443/r.git"),
        ("https://host.example/r.git", "https://host.example/r.git"),
        ("git@github.com:team/r.git", "git@github.com:team/r.git"),
        ("user:pw@host.example:team/r.git", "host.example:team/r.git"),
        ("https://gitlab.example/r.git?private_token=glpat-SECRET", "https://gitlab.example/r.git"),
        ("https://host.example/r.git#access_token=SECRET", "https://host.example/r.git"),
        ("https://host.example/r.git?a=1&x-oauth-basic=SECRET#f", "https://host.example/r.git"),
        ("https://host.example/r.git;token=SECRET", "https://host.example/r.git"),
        ("https://oauth2:SECRET@[::1]:8443/Team/r.git?SECRET", "https://[::1]:8443/Team/r.git"),
        ("ssh://git@signal.example:2222/r.git", "ssh://signal.example:2222/r.git"),
        ("git@host.example:team/r.git?SECRET", "git@host.example:team/r.git"),
    ],
)
def test_remote_urls_lose_their_credentials(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_no_part_of_a_remote_url_with_credentials_is_recorded(
    registry_root: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 item 14: a token in the user info, the query or the fragment of the remote is recorded
    nowhere: not in run.json (registry and run directory), not in the run directory's state, not in any
    byte of the registry; a record an older version wrote with a token is shown without it."""
    monkeypatch.setenv("DEPLOY_TOKEN", "envSECRETvalue")
    remote = "https://oauth2:userSECRET@git.example.com/team/model.git/envSECRETvalue?private_token=qSECRET#fSECRET"
    git(repo, "remote", "set-url", "origin", remote)
    (repo / "train.py").write_text("lr = 0.2\n")
    with refstore.init("proj") as run:
        assert run.code is not None
        assert run.code.remote == "https://git.example.com/team/model.git/***"
    recorded = _all_registry_bytes(registry_root)
    assert b"git.example.com/team/model.git" in recorded
    for secret in (b"userSECRET", b"qSECRET", b"fSECRET", b"envSECRETvalue", b"private_token"):
        assert secret not in recorded
        for path in run.dir.rglob("*"):
            assert path.is_dir() or secret not in path.read_bytes(), path

    from refstore.runs.records import RunRecord

    store = Registry(registry_root).store
    record = RunRecord.from_bytes(store.read(f"runs/{run.path}/run.json"), "run.json")
    assert record.code is not None
    old = replace(record, code=replace(record.code, remote=remote))  # as older versions recorded it
    store.replace(f"runs/{run.path}/run.json", old.to_bytes())
    shown = CliRunner().invoke(main, ["runs", "show", "--json", run.path], catch_exceptions=False)
    assert shown.exit_code == 0 and "SECRET" not in shown.output


def test_restore_refuses_to_overwrite_ignored_or_untracked_files(registry_root: str, repo: Path) -> None:
    """Issue 14 item 13: the run's commit tracked ``settings.local`` (later untracked and ignored) and its
    patch adds ``notes.md``; restoring over a local ``settings.local`` or ``notes.md`` is refused, naming
    them, with the repository untouched."""
    (repo / "settings.local").write_text("committed then\n")
    git(repo, "add", "settings.local")
    git(repo, "commit", "-q", "-m", "with settings")
    (repo / "notes.md").write_text("staged, in the run's diff.patch\n")
    git(repo, "add", "notes.md")
    with refstore.init("proj") as run:
        assert run.code is not None and run.code.patch
    git(repo, "rm", "-q", "--cached", "notes.md")
    (repo / "notes.md").unlink()
    git(repo, "rm", "-q", "--cached", "settings.local")
    (repo / ".gitignore").write_text("settings.local\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "settings are local now")
    (repo / "settings.local").write_text("my local secrets, in no commit\n")
    head = git(repo, "rev-parse", "HEAD")

    refused = CliRunner().invoke(main, ["restore", run.path])
    assert refused.exit_code == 1, refused.output
    assert "would overwrite 1 untracked or ignored file(s): settings.local;" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert (repo / "settings.local").read_text() == "my local secrets, in no commit\n"
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "branch", "--list", "refstore/*") == ""

    (repo / "notes.md").write_text("my untracked notes\n")
    refused = CliRunner().invoke(main, ["restore", run.path])
    assert (
        refused.exit_code == 1
        and "2 untracked or ignored file(s): notes.md, settings.local" in refused.output
    )
    assert (repo / "notes.md").read_text() == "my untracked notes\n"

    (repo / "settings.local").unlink()
    (repo / "notes.md").unlink()
    restored = CliRunner().invoke(main, ["restore", run.path], catch_exceptions=False)
    assert restored.exit_code == 0, restored.output
    assert (repo / "settings.local").read_text() == "committed then\n"
    assert (repo / "notes.md").read_text() == "staged, in the run's diff.patch\n"
