"""Code state: the git commit, branch and remote a run started from, and its uncommitted changes.

``capture`` records them at ``init`` (the patch is ``git diff HEAD --binary``: tracked files only);
``restore_code`` puts them back: a branch at the commit, with the patch applied on top.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.exceptions import RunError
from .status import redact_environment

PATCH_NAME = "diff.patch"
_GIT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class CodeState:
    """Where the code of a run came from; ``patch`` tells whether ``diff.patch`` was saved with the run."""

    commit: str
    branch: str | None = None
    remote: str | None = None
    patch: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "branch": self.branch, "remote": self.remote, "patch": self.patch}

    @classmethod
    def from_json(cls, data: Any) -> CodeState:
        if not isinstance(data, dict) or not isinstance(data.get("commit"), str):
            raise RunError(f"malformed code state {data!r}")
        remote = data.get("remote")
        remote = redact_url(remote) if isinstance(remote, str) else None  # records of older versions too
        return cls(data["commit"], data.get("branch"), remote, bool(data.get("patch")))


def capture(cwd: Path) -> tuple[CodeState, bytes] | None:
    """The code state of the git repository around ``cwd`` and its diff, or ``None`` outside one."""
    commit = _git_text(["rev-parse", "--verify", "-q", "HEAD"], cwd)
    if not commit:
        return None  # not a repository, no commit yet, or no git at all
    branch = _git_text(["symbolic-ref", "--short", "-q", "HEAD"], cwd) or None
    remote = _remote_url(cwd)
    diff = _git(["diff", "HEAD", "--binary"], cwd)
    patch = diff.stdout if diff.returncode == 0 else b""
    return CodeState(commit, branch, remote, bool(patch)), patch


def _remote_url(cwd: Path) -> str | None:
    names = (_git_text(["remote"], cwd) or "").split()
    if not names:
        return None
    name = "origin" if "origin" in names else names[0]
    url = _git_text(["remote", "get-url", name], cwd)
    return redact_url(url) if url else None


def redact_url(url: str) -> str:
    """A remote URL that names the repository and nothing more.

    Credentials hide in every part of a URL: ``user:token@`` (or a token alone as the user name),
    ``?private_token=...``, a fragment, a ``;token=...`` path parameter. Naming the repository needs none of
    them, so the user information, the query, the fragment and path parameters are dropped whole (not
    filtered by name: a token under an unexpected name must not survive), and the value of any
    secret-looking environment variable left in the path is replaced by ``***``. An scp-like
    ``user:password@host:path`` loses ``user:password@`` (and anything after ``?`` or ``#``);
    ``git@host:path`` is kept.
    """
    if "://" not in url:
        url = re.sub(r"^[^@/]*:[^@/]*@", "", url).partition("?")[0].partition("#")[0]
    else:
        parts = urlsplit(url)
        path = re.sub(r";[^/]*", "", parts.path)
        url = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], path, "", ""))
    return redact_environment(url)


def restore_code(state: CodeState, run_path: str, patch: Path | None, cwd: Path) -> str:
    """Create branch ``refstore/<run_path>`` at the run's commit in ``cwd``'s repository, apply ``patch``.

    Refuses (:class:`RunError`, repository untouched) outside a repository, when the commit is missing,
    when tracked files have uncommitted changes, or when the branch exists. Returns the branch name.
    """
    branch = f"refstore/{run_path}"
    _check_repository(state, branch, cwd)
    _check_overwrites(state, patch, cwd)
    _git_checked(["checkout", "-q", "-b", branch, state.commit], cwd, f"cannot create branch {branch}")
    if patch is not None:
        _git_checked(
            ["apply", "--binary", "--whitespace=nowarn", str(patch)],
            cwd,
            f"branch {branch} was created at {state.commit[:12]}, but {PATCH_NAME} does not apply",
        )
    return branch


def _check_repository(state: CodeState, branch: str, cwd: Path) -> None:
    if not _git_text(["rev-parse", "--show-toplevel"], cwd):
        raise RunError(f"{cwd}: not inside a git repository")
    if _git(["cat-file", "-e", f"{state.commit}^{{commit}}"], cwd).returncode != 0:
        where = f" (fetch it from {state.remote})" if state.remote else ""
        raise RunError(f"commit {state.commit} is not in the repository at {cwd}{where}")
    if _git_text(["status", "--porcelain", "--untracked-files=no"], cwd):
        raise RunError(f"{cwd}: tracked files have uncommitted changes; commit or stash them first")
    if _git(["rev-parse", "--verify", "-q", f"refs/heads/{branch}"], cwd).returncode == 0:
        raise RunError(f"branch {branch} already exists in {cwd}")


def _check_overwrites(state: CodeState, patch: Path | None, cwd: Path) -> None:
    """Refuse when the checkout or the patch would write over a file git does not track here.

    ``git checkout`` replaces an *ignored* file that the target commit tracks without a word (and refuses
    an untracked one only after parsing its message would be needed), and ``git apply`` creates the files a
    patch adds: either would destroy local work no commit holds (a ``.env``, a local config). So every path
    the commit or the patch writes that is not in the index must not exist, nor may a file stand where such
    a path needs a folder; the first few are named.
    """
    top = Path(_git_text(["rev-parse", "--show-toplevel"], cwd) or cwd)
    wanted = set(_git_paths(["ls-tree", "--full-tree", "-r", "-z", "--name-only", state.commit], top))
    if patch is not None:
        wanted |= _patch_paths(patch, top)
    tracked = set(_git_paths(["ls-files", "-z"], top))
    blocking = set()
    for path in wanted - tracked:
        if os.path.lexists(top / path):
            blocking.add(path)
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in tracked and (os.path.islink(top / folder) or (top / folder).is_file()):
                blocking.add(folder)
    if blocking:
        names = sorted(blocking)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise RunError(
            f"{top}: restoring the code would overwrite {len(names)} untracked or ignored file(s): {shown}; "
            "move them away first"
        )


def _git_paths(args: list[str], cwd: Path) -> list[str]:
    result = _git(args, cwd)
    if result.returncode != 0:
        message = " ".join(result.stderr.decode(errors="replace").split())
        raise RunError(f"git {args[0]} failed in {cwd}: {message}")
    return [p for p in result.stdout.decode(errors="surrogateescape").split("\0") if p]


def _patch_paths(patch: Path, top: Path) -> set[str]:
    """Every path ``patch`` touches (``git apply --numstat -z``: a rename names both paths)."""
    found = set()
    for record in _git_paths(["apply", "--numstat", "-z", str(patch)], top):
        path = record.split("\t", 2)[-1]
        if path:
            found.add(path)
    return found


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(args, 127, b"", str(exc).encode())


def _git_text(args: list[str], cwd: Path) -> str | None:
    result = _git(args, cwd)
    return result.stdout.decode(errors="replace").strip() if result.returncode == 0 else None


def _git_checked(args: list[str], cwd: Path, what: str) -> None:
    result = _git(args, cwd)
    if result.returncode != 0:
        message = " ".join(result.stderr.decode(errors="replace").split())
        raise RunError(f"{what}: {message}")
