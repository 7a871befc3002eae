"""Code state: the git commit, branch and remote a run started from, the newest commit of its history that
the remote holds, and patches from both to the working tree.

``capture`` records them at ``init``:

- ``diff.patch``: ``git diff HEAD --binary``, from the commit to the working tree;
- ``upstream.patch``, when HEAD is not on the remote: from the *upstream* commit (the newest commit of
  HEAD's history that the remote holds, as its remote-tracking refs here know it: at least as new as the
  merge-base with the branch's remote-tracking branch; another remote's when the recorded one shares no
  history) to the working tree, so that unpushed commits and uncommitted changes travel together, as W&B's
  upstream diff does.

Both hold changes to tracked files, and untracked files that are not ignored when they are small: each at
most :data:`UNTRACKED_FILE_LIMIT`, together at most :data:`UNTRACKED_TOTAL_LIMIT` (the others are counted in
``untracked_left_out`` and named in a warning). The patches are made against a copy of the index with the
untracked files added as intent-to-add: the repository's own index and objects are not touched.

``restore_code`` puts them back: a branch at the commit with ``diff.patch`` applied where the repository has
the commit; else (a fresh clone of the remote) a branch at the upstream commit with ``upstream.patch``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.exceptions import RunError
from ..core.sizes import human_size
from .status import redact_environment

PATCH_NAME = "diff.patch"
UPSTREAM_PATCH_NAME = "upstream.patch"
#: Untracked (not ignored) files go into the patches when each is at most this big ...
UNTRACKED_FILE_LIMIT = 2**20
#: ... and until they add up to this much; the rest are left out (counted, and named in a warning).
UNTRACKED_TOTAL_LIMIT = 10 * 2**20
_GIT_TIMEOUT = 30.0
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: How git must write a patch whatever the user's configuration says (``git apply`` reads it back).
_DIFF = [
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "diff.relative=false",
    "diff",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
]
_log = logging.getLogger("refstore.runs")


@dataclass(frozen=True, slots=True)
class CodeState:
    """Where the code of a run came from. ``patch``: ``diff.patch`` was saved (commit -> working tree);
    ``upstream``: the newest commit of HEAD's history that the remote holds (``commit`` itself when it was
    pushed; ``None`` without a remote or shared history); ``upstream_patch``: ``upstream.patch`` was saved
    (upstream -> working tree); ``untracked``: untracked files in the patches; ``untracked_left_out``: those
    too big to be."""

    commit: str
    branch: str | None = None
    remote: str | None = None
    patch: bool = False
    upstream: str | None = None
    upstream_patch: bool = False
    untracked: int = 0
    untracked_left_out: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "branch": self.branch,
            "remote": self.remote,
            "patch": self.patch,
            "upstream": self.upstream,
            "upstream_patch": self.upstream_patch,
            "untracked": self.untracked,
            "untracked_left_out": self.untracked_left_out,
        }

    @classmethod
    def from_json(cls, data: Any) -> CodeState:
        if not isinstance(data, dict) or not isinstance(data.get("commit"), str):
            raise RunError(f"malformed code state {data!r}")
        remote = data.get("remote")
        remote = redact_url(remote) if isinstance(remote, str) else None  # records of older versions too
        upstream = data.get("upstream")
        return cls(
            data["commit"],
            data.get("branch"),
            remote,
            bool(data.get("patch")),
            upstream if isinstance(upstream, str) and _SHA.fullmatch(upstream) else None,
            bool(data.get("upstream_patch")),
            _count(data.get("untracked")),
            _count(data.get("untracked_left_out")),
        )

    def patch_names(self) -> list[str]:
        """The patch files saved with the run."""
        return [
            n for n, saved in ((PATCH_NAME, self.patch), (UPSTREAM_PATCH_NAME, self.upstream_patch)) if saved
        ]


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def capture(cwd: Path) -> tuple[CodeState, dict[str, bytes]] | None:
    """The code state of the git repository around ``cwd`` and its patches by file name (only those with
    changes), or ``None`` outside one."""
    commit = _git_text(["rev-parse", "--verify", "-q", "HEAD"], cwd)
    top = _git_text(["rev-parse", "--show-toplevel"], cwd)
    if not commit or not top:
        return None  # not a repository, no commit yet, or no git at all
    root = Path(top)
    branch = _git_text(["symbolic-ref", "--short", "-q", "HEAD"], root) or None
    name = _remote_name(root)
    remote_url = _git_text(["remote", "get-url", name], root) if name else None
    upstream = _upstream(root, name)
    patches = {}
    with _untracked_added(root) as (env, included, left_out):
        bases = [(PATCH_NAME, "HEAD")] + (
            [(UPSTREAM_PATCH_NAME, upstream)] if upstream not in (None, commit) else []
        )
        for file_name, base in bases:
            diff = _git([*_DIFF, base, "--"], root, env)
            if diff.returncode == 0 and diff.stdout:
                patches[file_name] = diff.stdout
    state = CodeState(
        commit,
        branch,
        redact_url(remote_url) if remote_url else None,
        PATCH_NAME in patches,
        upstream,
        UPSTREAM_PATCH_NAME in patches,
        included if patches else 0,
        len(left_out),
    )
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        _log.warning(
            "%d untracked file(s) left out of the run's code patches (over %s each, or past %s in all): %s",
            len(left_out),
            human_size(UNTRACKED_FILE_LIMIT),
            human_size(UNTRACKED_TOTAL_LIMIT),
            shown,
        )
    return state, patches


def _remote_name(top: Path) -> str | None:
    names = (_git_text(["remote"], top) or "").split()
    if not names:
        return None
    return "origin" if "origin" in names else names[0]


def _upstream(top: Path, name: str | None) -> str | None:
    """The newest commit of HEAD's history held by the remote ``name`` (else by any remote), as the
    remote-tracking refs say; ``None`` when no remote shares any history with HEAD."""
    patterns = ([f"--remotes={name}"] if name else []) + ["--remotes"]
    for pattern in patterns:
        refs = "refs/remotes/" + (pattern.partition("=")[2] + "/" if "=" in pattern else "")
        if not _git_text(["for-each-ref", "--count=1", "--format=%(objectname)", refs], top):
            continue
        listed = _git_text(["rev-list", "--boundary", "HEAD", "--not", pattern], top)
        if listed is None:
            continue
        if not listed:
            return _git_text(["rev-parse", "HEAD"], top)  # HEAD is on the remote
        boundary = [line[1:] for line in listed.split() if line.startswith("-")]
        if boundary:
            return _newest(top, boundary)
    return None


def _newest(top: Path, commits: list[str]) -> str:
    """Of ``commits``, one that none of the others descends from, the newest by commit time."""
    independent = (_git_text(["merge-base", "--independent", *commits], top) or "").split() or commits
    if len(independent) == 1:
        return independent[0]
    dated = _git_text(["log", "--no-walk", "--format=%ct %H", *independent], top) or ""
    stamped = sorted(
        (int(t), c) for t, _, c in (line.partition(" ") for line in dated.splitlines()) if t.isdigit()
    )
    return stamped[-1][1] if stamped else independent[0]


@contextlib.contextmanager
def _untracked_added(top: Path) -> Iterator[tuple[dict[str, str] | None, int, list[str]]]:
    """An environment whose ``GIT_INDEX_FILE`` is a copy of the index with the small untracked files added
    as intent-to-add (``None`` when there are none), how many, and the untracked files left out."""
    listed = _git(["ls-files", "--others", "--exclude-standard", "-z"], top)
    names = (
        [p for p in listed.stdout.decode(errors="surrogateescape").split("\0") if p]
        if listed.returncode == 0
        else []
    )
    chosen, left_out, total = [], [], 0
    for name in names:
        try:
            info = os.lstat(top / name)
        except OSError:
            continue
        size = info.st_size
        small = stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)  # not a nested repository
        if not small or size > UNTRACKED_FILE_LIMIT or total + size > UNTRACKED_TOTAL_LIMIT:
            left_out.append(name)
        else:
            chosen.append(name)
            total += size
    if not chosen:
        yield None, 0, left_out
        return
    with tempfile.TemporaryDirectory(prefix="refstore-index-") as scratch:
        index = Path(scratch) / "index"
        real = _git_text(["rev-parse", "--git-path", "index"], top)
        if real and (top / real).is_file():
            shutil.copyfile(top / real, index)
        env = {**os.environ, "GIT_INDEX_FILE": str(index), "GIT_LITERAL_PATHSPECS": "1"}
        for start in range(0, len(chosen), 500):
            added = _git(["add", "--intent-to-add", "--", *chosen[start : start + 500]], top, env)
            if added.returncode != 0:  # the patches then hold tracked files only, as before
                yield None, 0, names
                return
        yield env, len(chosen), left_out


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


def restore_code(state: CodeState, run_path: str, patches: Mapping[str, Path], cwd: Path) -> str:
    """Create branch ``refstore/<run_path>`` in ``cwd``'s repository and recreate the run's working tree:
    at the run's commit with ``diff.patch`` where the repository has that commit, else at its upstream
    commit with ``upstream.patch`` (``patches``: the saved patch files by name).

    Refuses (:class:`RunError`, repository untouched) outside a repository, when neither commit is there,
    when tracked files have uncommitted changes, when the branch exists, or when the checkout or the patch
    would write over a file git does not track. Returns the branch name.
    """
    branch = f"refstore/{run_path}"
    top = _check_repository(branch, cwd)
    base, patch = _base(state, patches, cwd)
    _check_overwrites(base, patch, top)
    _git_checked(["checkout", "-q", "-b", branch, base], top, f"cannot create branch {branch}")
    if patch is not None:
        _git_checked(
            ["apply", "--binary", "--whitespace=nowarn", str(patch)],
            top,
            f"branch {branch} was created at {base[:12]}, but {patch.name} does not apply",
        )
    return branch


def _base(state: CodeState, patches: Mapping[str, Path], cwd: Path) -> tuple[str, Path | None]:
    """The commit to branch from and the patch to apply there."""
    if _has_commit(state.commit, cwd):
        return state.commit, patches.get(PATCH_NAME) if state.patch else None
    if state.upstream is not None and state.upstream != state.commit and _has_commit(state.upstream, cwd):
        return state.upstream, patches.get(UPSTREAM_PATCH_NAME) if state.upstream_patch else None
    where = f" (fetch it from {state.remote})" if state.remote else ""
    if state.upstream is not None and state.upstream != state.commit:
        where = f", nor is its upstream commit {state.upstream}" + where
    raise RunError(f"commit {state.commit} is not in the repository at {cwd}{where}")


def _has_commit(commit: str, cwd: Path) -> bool:
    return _git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd).returncode == 0


def _check_repository(branch: str, cwd: Path) -> Path:
    """The top folder of ``cwd``'s repository, if a restore may start there."""
    top = _git_text(["rev-parse", "--show-toplevel"], cwd)
    if not top:
        raise RunError(f"{cwd}: not inside a git repository")
    if _git_text(["status", "--porcelain", "--untracked-files=no"], cwd):
        raise RunError(f"{cwd}: tracked files have uncommitted changes; commit or stash them first")
    if _git(["rev-parse", "--verify", "-q", f"refs/heads/{branch}"], cwd).returncode == 0:
        raise RunError(f"branch {branch} already exists in {cwd}")
    return Path(top)


def _check_overwrites(base: str, patch: Path | None, top: Path) -> None:
    """Refuse when the checkout or the patch would write over a file git does not track here.

    ``git checkout`` replaces an *ignored* file that the target commit tracks without a word (and refuses
    an untracked one only after parsing its message would be needed), and ``git apply`` creates the files a
    patch adds: either would destroy local work no commit holds (a ``.env``, a local config). So every path
    the commit or the patch writes that is not in the index must not exist, nor may a file stand where such
    a path needs a folder; the first few are named.
    """
    wanted = set(_git_paths(["ls-tree", "--full-tree", "-r", "-z", "--name-only", base], top))
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


def _git(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=_GIT_TIMEOUT, check=False
        )
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
