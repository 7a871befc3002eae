"""Walking a local folder (issue 14, items 3, 5, 22, 23 and 25): ``add_dir`` (``log --copy``) and
``add_reference`` of a folder take the same files by the same rule, record a size and a digest from one
read, and never leave something out silently: a folder that cannot be read, a dangling link, a loop of
links, a name that is not UTF-8 and an empty folder are errors naming them, unless an exclude glob leaves
them out.

Unreadable folders: the tests run as root, whom ``chmod 000`` does not stop. The add runs instead in a
child process as the unprivileged uid 65534 (``setpriv --reuid=65534 --regid=65534 --clear-groups``), on
a folder owned by root with mode 000, in a world-searchable scratch folder (pytest's ``tmp_path`` is
private to root)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import refstore
import refstore.storage.hashing
from refstore.storage.hashing import hash_bytes
from refstore.surfaces.cli import main

NOBODY = 65534


def _both(folder: Path, **options: object) -> dict[str, Callable[[], list[refstore.ManifestEntry]]]:
    """The two ways to snapshot a local folder."""
    return {
        "add_dir": lambda: refstore.Artifact("copies").add_dir(folder, **options),  # type: ignore[arg-type]
        "add_reference": lambda: refstore.Artifact("refs").add_reference(folder, **options),  # type: ignore[arg-type]
    }


# -- item 3: size and digest from the same read ---------------------------------------------------------


def test_a_file_appended_to_after_it_was_read_keeps_the_size_that_was_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file grows right after refstore read it (the window that used to lie between the hash and the
    ``stat`` of a large add_dir): the entry holds the size and digest of the bytes read, and the log that
    would store the copy refuses the file that changed since, naming it, instead of recording a version
    that can never be downloaded."""
    data = tmp_path / "data"
    data.mkdir()
    first = os.urandom(5000)
    (data / "log.txt").write_bytes(first)
    (data / "other.bin").write_bytes(b"steady")
    real = refstore.storage.hashing._hash_open

    def read_then_append(fd: int, path: str) -> refstore.storage.hashing.FileHash:
        found = real(fd, path)
        if path.endswith("log.txt"):
            with open(path, "ab") as writer:
                writer.write(b"appended after the read")
        return found

    monkeypatch.setattr(refstore.storage.hashing, "_hash_open", read_then_append)
    for add in ("add_dir", "add_file"):
        (data / "log.txt").write_bytes(first)
        artifact = refstore.Artifact("growing")
        if add == "add_dir":
            artifact.add_dir(data)
        else:
            artifact.add_file(data / "log.txt")
        entry = artifact.manifest["log.txt"]
        assert (entry.size, entry.digest) == (len(first), hash_bytes(first)), add
        with pytest.raises(refstore.ObjectChangedError, match=r"log\.txt"):
            refstore.Registry(tmp_path / f"reg-{add}").log(artifact)


def test_a_file_written_to_throughout_add_dir_is_read_again_or_refused_by_name(tmp_path: Path) -> None:
    """A writer appends to one file while ``add_dir`` runs, again and again: every entry pairs a size with
    the digest of exactly that many bytes of the file (appends only grow it, so they are its first bytes),
    or the add fails with ``ObjectChangedError`` naming the file; never a size and a digest from different
    moments."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(200):
        (data / f"f{i:03}.bin").write_bytes(os.urandom(2000))
    growing = data / "growing.log"
    growing.write_bytes(b"start\n")
    stop = threading.Event()

    def writer() -> None:
        with open(growing, "ab", buffering=0) as out:
            while not stop.is_set():
                out.write(os.urandom(64))

    thread = threading.Thread(target=writer)
    thread.start()
    outcomes = []
    try:
        for _ in range(15):
            try:
                entries = refstore.Artifact("busy").add_dir(data)
            except refstore.ObjectChangedError as exc:
                assert "growing.log" in str(exc)
                outcomes.append("refused")
                continue
            entry = next(e for e in entries if e.path == "growing.log")
            with open(growing, "rb") as handle:
                assert hash_bytes(handle.read(entry.size)) == entry.digest
            outcomes.append("consistent")
    finally:
        stop.set()
        thread.join()
    assert len(outcomes) == 15


# -- item 5: folders that cannot be read ---------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A scratch folder the unprivileged user can search (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a child as another user")
    folder = Path(tempfile.mkdtemp(prefix="refstore-nobody-"))
    folder.chmod(0o755)
    # The child runs this interpreter as another user: it must be able to pass through the folders that
    # hold the environment and the checkout (tox keeps .tox/ private to root). Only search permission is
    # added, and only for the test.
    opened: list[tuple[Path, int]] = []
    for start in (Path(sys.prefix), Path(__file__).resolve().parents[2]):
        for path in (start, *start.parents):
            mode = path.stat().st_mode
            if not mode & stat.S_IXOTH:
                opened.append((path, mode))
                path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    yield folder
    for path, mode in reversed(opened):
        path.chmod(stat.S_IMODE(mode))
    for path in folder.rglob("*"):  # let root remove what it made unreadable
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def _as_nobody(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "REFSTORE_CACHE_DIR": str(home / "cache"),
        "REFSTORE_DIR": str(home),
        "REFSTORE_ROOT": str(home / "registry"),
    }
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *args]
    return subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=120)


_SNAPSHOTS = """
import json, sys
import refstore
folder, exclude = sys.argv[1], sys.argv[2:] or None
out = {}
for how in ("add_dir", "add_reference"):
    try:
        entries = getattr(refstore.Artifact("x"), how)(folder, exclude=exclude)
        out[how] = sorted(e.path for e in entries)
    except refstore.RefstoreError as exc:
        out[how] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def test_a_folder_that_cannot_be_read_is_an_error_naming_it_unless_excluded(shared_dir: Path) -> None:
    data = shared_dir / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("readable")
    (data / "sub" / "b.txt").write_text("readable too")
    locked = data / "sub" / "locked"
    locked.mkdir()
    (locked / "secret.txt").write_text("unseen")
    locked.chmod(0o000)
    home = shared_dir / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)

    seen = _as_nobody([sys.executable, "-c", _SNAPSHOTS, str(data)], home)
    assert seen.returncode == 0, seen.stderr
    for how, result in json.loads(seen.stdout).items():
        assert result[0] == "StorageAccessError", (how, result)
        assert f"{locked}: permission denied" in result[1] and "exclude" in result[1], (how, result)

    left_out = _as_nobody([sys.executable, "-c", _SNAPSHOTS, str(data), "sub/locked"], home)
    assert json.loads(left_out.stdout) == {
        "add_dir": ["a.txt", "sub/b.txt"],
        "add_reference": ["a.txt", "sub/b.txt"],
    }

    private = data / "sub" / "private.txt"  # a file that cannot be read: the same rule
    private.write_text("unseen")
    private.chmod(0o000)
    seen = _as_nobody([sys.executable, "-c", _SNAPSHOTS, str(data), "sub/locked"], home)
    for how, result in json.loads(seen.stdout).items():
        assert result[0] == "StorageAccessError" and f"{private}: permission denied" in result[1], how
    both = _as_nobody([sys.executable, "-c", _SNAPSHOTS, str(data), "sub/locked", "private.txt"], home)
    assert json.loads(both.stdout)["add_dir"] == ["a.txt", "sub/b.txt"]
    private.unlink()

    for copy in (["--copy"], []):  # refstore log --copy, and a reference
        cli = [sys.executable, "-m", "refstore", "log", "ds", str(data), *copy]
        refused = _as_nobody(cli, home)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.count("\n") == 1 and f"{locked}: permission denied" in refused.stderr
        assert "Traceback" not in refused.stderr
        logged = _as_nobody([*cli, "--exclude", "locked/", "--json"], home)
        assert logged.returncode == 0, logged.stderr
        assert json.loads(logged.stdout)["version"]["entry_count"] == 2


# -- item 23: links ------------------------------------------------------------------------------------


def _folder_with(tmp_path: Path, link: str) -> Path:
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "up").symlink_to("..", target_is_directory=True)  # a link to a folder: not entered
    (folder / "sub" / "to-a").symlink_to("../a.txt")  # a link to a file: followed
    if link == "loop":
        (folder / "sub" / "bad").symlink_to("bad")
    else:
        (folder / "sub" / "bad").symlink_to("missing.txt")
    return folder


@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_a_link_that_leads_nowhere_is_the_same_error_for_add_dir_and_add_reference(
    tmp_path: Path, link: str
) -> None:
    folder = _folder_with(tmp_path, link)
    why = "a loop of symbolic links" if link == "loop" else "a symbolic link to a missing file"
    for how, add in _both(folder).items():
        with pytest.raises(refstore.ObjectNotFoundError) as raised:
            add()
        assert str(raised.value).startswith(f"{folder}/sub/bad: {why}"), how
        assert "\n" not in str(raised.value)
    for how, add in _both(folder, exclude="sub/bad").items():
        entries = {e.path: e.digest for e in add()}
        assert entries == {"a.txt": hash_bytes(b"alpha"), "sub/to-a": hash_bytes(b"alpha")}, how


def test_a_loop_of_links_named_directly_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(refstore.ObjectNotFoundError, match="loop: a loop of symbolic links"):
        refstore.Artifact("x").add_reference(tmp_path / "loop")


def test_a_referenced_file_replaced_by_a_loop_of_links_is_missing_for_verify(tmp_path: Path) -> None:
    """After the snapshot, a loop is no object: ``verify`` reports the entry missing (it raised a raw
    ``OSError``), a download refuses it with ``ObjectChangedError`` naming it."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha")
    (folder / "b.txt").write_text("beta")
    artifact = refstore.Artifact("refs")
    artifact.add_reference(folder)
    version = refstore.Registry(tmp_path / "reg").log(artifact)
    (folder / "a.txt").unlink()
    (folder / "a.txt").symlink_to("a.txt")
    report = version.verify()
    assert (report.missing, report.ok) == (["a.txt"], ["b.txt"])
    with pytest.raises(refstore.ObjectChangedError, match=r"a\.txt: a loop of symbolic links"):
        version.download(tmp_path / "dl", skip_cache=True)


def test_cli_log_of_a_folder_with_a_loop_is_one_line(tmp_path: Path) -> None:
    folder = _folder_with(tmp_path, "loop")
    for copy in (["--copy"], []):
        result = CliRunner().invoke(main, ["log", "ds", str(folder), *copy])
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"refstore: error: {folder}/sub/bad: a loop of symbolic links; remove the link, "
            "or leave it out with an exclude glob"
        )


# -- item 22: names that are not UTF-8 ------------------------------------------------------------------


def _non_utf8(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    name = os.fsdecode(b"caf\xe9.csv")  # Latin-1, not UTF-8
    Path(folder, name).write_text("latin-1 name")
    return folder, f"{folder}/caf\\xe9.csv"


def test_a_file_name_that_is_not_utf8_is_refused_naming_it_escaped(tmp_path: Path) -> None:
    folder, shown = _non_utf8(tmp_path)
    for how, add in _both(folder).items():
        with pytest.raises(refstore.InvalidURLError) as raised:
            add()
        assert str(raised.value).startswith(f"{shown}: the name is not valid UTF-8"), how
    with pytest.raises(refstore.InvalidURLError, match=r"caf\\xe9\.csv: the name is not valid UTF-8"):
        refstore.Artifact("x").add_file(Path(folder, os.fsdecode(b"caf\xe9.csv")))
    for how, add in _both(folder, exclude="*.csv").items():
        assert [e.path for e in add()] == ["ok.txt"], how


def test_cli_log_of_a_name_that_is_not_utf8_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    folder, shown = _non_utf8(tmp_path)
    registry = tmp_path / "reg"
    for copy in (["--copy"], []):
        result = subprocess.run(
            [sys.executable, "-m", "refstore", "log", "ds", str(folder), "--root", str(registry), *copy],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.strip().startswith(f"refstore: error: {shown}: the name is not valid UTF-8")
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (registry / "artifacts").exists()


# -- item 25: empty folders ----------------------------------------------------------------------------


def test_an_empty_folder_is_the_same_error_for_add_dir_and_add_reference(tmp_path: Path) -> None:
    """One rule: a folder with no file to take is ``ObjectNotFoundError`` (it is what an unmounted mount
    point or a mistyped path looks like), never an empty version."""
    empty = tmp_path / "empty"
    (empty / "only" / "folders").mkdir(parents=True)
    for how, add in _both(empty).items():
        with pytest.raises(refstore.ObjectNotFoundError, match=f"file://{empty}: no ") as raised:
            add()
        assert "\n" not in str(raised.value), how
    result = CliRunner().invoke(main, ["log", "ds", str(empty), "--copy", "--root", str(tmp_path / "reg")])
    assert result.exit_code == 1 and f"file://{empty}: no files in this folder" in result.output
