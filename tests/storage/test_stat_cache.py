"""Incremental local hashing (issue 16): a tree referenced again is not read again, unless its files changed.

Reads are counted with an audit hook on ``open`` (every file refstore hashes is opened in this process here:
the trees are small, so hashing stays on the calling thread). Files are made more than a second before the
first reference where a test needs them recorded: a file changed within a second of its read is never
recorded (issue 14's rule), which one test checks too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

import refstore
from refstore.storage import stat_columns
from refstore.storage.hashing import hash_bytes
from refstore.storage.locations import resolve
from refstore.storage.stat_cache import StatCache

_opened: list[str] | None = None
_children: list[object] = []  # the stat_columns interpreters started


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "subprocess.Popen" and stat_columns.__file__ in map(str, args[1]):  # type: ignore[call-overload]
        _children.append(args)
    if _opened is not None and event == "open":
        path, _, flags = args
        if isinstance(flags, int) and flags & getattr(os, "O_DIRECTORY", 0):
            return  # folders opened to list or stat their files
        name = os.fsdecode(path) if isinstance(path, (str, bytes)) else ""
        if name and "refstore-cache" not in name and not name.startswith(("/proc/", "/sys/", "/dev/")):
            _opened.append(name)  # (not a Dask monitor thread's statm, nor the /dev/null of a child)


sys.addaudithook(_audit)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The files opened by the test from here on (refstore's own cache left out)."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture(autouse=True, params=["one process", "two processes"])
def stats_taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test twice: stats taken here alone, and (from the first file on) half of them by a second
    interpreter (:mod:`refstore.storage.stat_columns`), which the test then must have started."""
    if request.param == "one process":
        yield
        return
    monkeypatch.setattr(stat_columns, "PARALLEL_FROM", 1)
    monkeypatch.setattr(stat_columns, "BLOCK", 1)  # (runs go to it in blocks of a file or two)
    monkeypatch.setattr(stat_columns, "_cores", lambda: 2)  # (as on a machine of one core too)
    answered: list[int] = []
    real = stat_columns._answer

    def counted(child: stat_columns.Child, count: int) -> stat_columns.Columns | None:
        answered.append(count)
        return real(child, count)

    monkeypatch.setattr(stat_columns, "_answer", counted)
    started = len(_children)
    yield
    assert len(_children) > started, "no second interpreter took stats"
    assert any(answered), "the second interpreter was given no file"


def _tree(root: Path, folders: int = 3, files: int = 20) -> dict[str, bytes]:
    contents = {f"d{d}/f{i:02d}.bin": os.urandom(100 + i) for d in range(folders) for i in range(files)}
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return contents


def _settle() -> None:
    """Let the files' mtimes and ctimes fall more than a second behind (see the module docstring)."""
    time.sleep(1.1)


def _digests(entries: list[refstore.ManifestEntry]) -> dict[str, str]:
    return {e.path: e.digest for e in entries}


def test_a_tree_referenced_again_is_not_read_again(tmp_path: Path, opened: list[str]) -> None:
    root = tmp_path / "tree"
    contents = _tree(root)
    (root / "link.bin").symlink_to(root / "d0" / "f00.bin")
    _settle()
    first = refstore.Artifact("t").add_reference(root)
    assert len(opened) >= len(contents)
    opened.clear()
    again = refstore.Artifact("t").add_reference(root)
    assert opened == []  # not one file opened
    assert again == first
    copies = refstore.Artifact("t").add_dir(root)  # add_dir walks and hashes the same way
    assert opened == []
    assert (
        _digests(copies)
        == _digests(first)
        == {
            **{name: hash_bytes(data) for name, data in contents.items()},
            "link.bin": hash_bytes(contents["d0/f00.bin"]),
        }
    )


def test_an_edit_that_keeps_size_and_mtime_is_still_caught(tmp_path: Path, opened: list[str]) -> None:
    root = tmp_path / "tree"
    contents = _tree(root)
    _settle()
    first = _digests(refstore.Artifact("t").add_reference(root))
    edited, replaced = root / "d1" / "f03.bin", root / "d2" / "f04.bin"
    for path, how in ((edited, "in place"), (replaced, "replaced")):
        before = path.stat()
        data = bytes(b ^ 0xFF for b in path.read_bytes())  # same size
        if how == "in place":
            with open(path, "r+b") as handle:
                handle.write(data)
        else:  # a new file (new inode) renamed over it
            (path.parent / "new").write_bytes(data)
            os.replace(path.parent / "new", path)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    expected = hash_bytes(edited.read_bytes())
    opened.clear()
    again = _digests(refstore.Artifact("t").add_reference(root))
    changed = {name for name in first if first[name] != again[name]}
    assert changed == {"d1/f03.bin", "d2/f04.bin"}
    assert again["d1/f03.bin"] == expected
    assert sorted(Path(p).name for p in opened) == ["f03.bin", "f04.bin"]  # only those were read
    assert len(contents) == len(again)


def test_a_file_changed_just_before_its_read_is_read_again_next_time(
    tmp_path: Path, opened: list[str]
) -> None:
    root = tmp_path / "tree"
    _tree(root, folders=1, files=5)
    _settle()
    (root / "d0" / "f02.bin").write_bytes(b"just written")  # within a second of the first reference
    refstore.Artifact("t").add_reference(root)
    opened.clear()
    refstore.Artifact("t").add_reference(root)
    assert [Path(p).name for p in opened] == ["f02.bin"]


def test_records_are_never_trusted_on_another_filesystem(tmp_path: Path, opened: list[str]) -> None:
    """The folder's path now leads to a tmpfs (/dev/shm) holding files of the same names, sizes and
    mtimes; even records forged to match their inodes and ctimes are not used there."""
    shm = Path("/dev/shm")
    assert shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev, "needs /dev/shm as a tmpfs"
    disk = tmp_path / "on-disk"
    _tree(disk, folders=1, files=6)
    other = Path(tempfile.mkdtemp(prefix="refstore-test-", dir=shm))
    try:
        for path in sorted(disk.rglob("*.bin")):
            twin = other / path.relative_to(disk)
            twin.parent.mkdir(exist_ok=True)
            twin.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))
            stat = path.stat()
            os.utime(twin, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        root = tmp_path / "data"  # the path the user references: a link to one filesystem, then the other
        root.symlink_to(disk)
        _settle()
        refstore.Artifact("t").add_reference(root)
        root.unlink()
        root.symlink_to(other)
        recorded = StatCache.load(str(root))
        assert len(recorded.states) == 6
        forged = {}  # the tmpfs files' own stat, recorded as made on the disk's filesystem
        for relative, state in recorded.states.items():
            now = (other / relative).stat()
            forged[relative] = (*state[:2], now.st_ctime_ns, now.st_ino, now.st_dev, state[5])
        recorded.write(forged, {other.stat().st_dev: recorded.filesystems[disk.stat().st_dev]})
        assert StatCache.load(str(root)).states == forged
        opened.clear()
        entries = refstore.Artifact("t").add_reference(root)
        assert len(opened) == 6  # every file read
        assert _digests(entries) == {
            p.relative_to(other).as_posix(): hash_bytes(p.read_bytes()) for p in other.rglob("*.bin")
        }
    finally:
        shutil.rmtree(other)


def test_a_damaged_cache_or_the_switch_off_means_reading(
    tmp_path: Path, opened: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tree"
    _tree(root, folders=1, files=4)
    _settle()
    expected = refstore.Artifact("t").add_reference(root)
    cache = StatCache.load(str(root.resolve()))
    cache.file.write_bytes(cache.file.read_bytes()[:-20])  # cut short, as by a crash
    opened.clear()
    assert refstore.Artifact("t").add_reference(root) == expected
    assert len(opened) == 4
    opened.clear()
    assert refstore.Artifact("t").add_reference(root) == expected  # written again, whole
    assert opened == []
    monkeypatch.setenv("REFSTORE_STAT_CACHE", "0")
    assert refstore.Artifact("t").add_reference(root) == expected
    assert len(opened) == 4


def test_an_unchanged_tree_leaves_the_records_file_alone(tmp_path: Path, opened: list[str]) -> None:
    root = tmp_path / "tree"
    _tree(root, folders=2, files=5)
    _settle()
    first = refstore.Artifact("t").add_reference(root)
    records = StatCache.load(str(root.resolve())).file
    before = records.stat()
    opened.clear()
    assert refstore.Artifact("t").add_reference(root) == first
    assert refstore.Artifact("t").add_dir(root) and opened == []
    after = records.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not written again


def test_files_added_and_removed_are_seen_and_the_others_not_read(tmp_path: Path, opened: list[str]) -> None:
    root = tmp_path / "tree"
    contents = _tree(root, folders=2, files=5)
    _settle()
    refstore.Artifact("t").add_reference(root)
    (root / "d0" / "f01.bin").unlink()
    (root / "d1" / "new.bin").write_bytes(b"new")
    (root / "d1" / "deeper").mkdir()
    (root / "d1" / "deeper" / "x.bin").write_bytes(b"x")
    _settle()
    opened.clear()
    again = _digests(refstore.Artifact("t").add_reference(root))
    assert sorted(Path(p).name for p in opened) == ["new.bin", "x.bin"]
    del contents["d0/f01.bin"]
    contents |= {"d1/new.bin": b"new", "d1/deeper/x.bin": b"x"}
    assert again == {name: hash_bytes(data) for name, data in contents.items()}
    opened.clear()
    assert _digests(refstore.Artifact("t").add_reference(root)) == again
    assert opened == []


def test_files_renamed_or_swapped_are_read_again(tmp_path: Path, opened: list[str]) -> None:
    """The same number of files, under other names (a rename) or each at the other's path (two renames
    through a third name): the records follow the paths, not the count."""
    root = tmp_path / "tree"
    contents = _tree(root, folders=2, files=5)
    _settle()
    refstore.Artifact("t").add_reference(root)
    (root / "d0" / "f01.bin").rename(root / "d0" / "g01.bin")
    (root / "d1" / "f02.bin").rename(root / "d1" / "swap")
    (root / "d1" / "f03.bin").rename(root / "d1" / "f02.bin")
    (root / "d1" / "swap").rename(root / "d1" / "f03.bin")
    _settle()
    opened.clear()
    again = _digests(refstore.Artifact("t").add_reference(root))
    assert sorted(Path(p).name for p in opened) == ["f02.bin", "f03.bin", "g01.bin"]
    contents["d0/g01.bin"] = contents.pop("d0/f01.bin")
    contents["d1/f02.bin"], contents["d1/f03.bin"] = contents["d1/f03.bin"], contents["d1/f02.bin"]
    assert again == {name: hash_bytes(data) for name, data in contents.items()}


def test_records_are_matched_by_path_not_by_position(tmp_path: Path) -> None:
    """Stats all as recorded but one path another: that file has no record (the recorded paths are
    compared as encoded text before they are decoded, and one by one after)."""
    root = tmp_path / "tree"
    _tree(root, folders=1, files=3)
    _settle()
    refstore.Artifact("t").add_reference(root)
    for decoded in (False, True):
        cache = StatCache.load(str(root.resolve()))
        assert cache.count == 3
        if decoded:
            assert cache.paths == ["d0/f00.bin", "d0/f01.bin", "d0/f02.bin"]
        found = cache.lookup(["d0/f00.bin", "d0/f01.bin", "d0/other"], cache.columns)
        assert found[:2] == cache.digests[:2] and found[2] is None
        assert cache.lookup(cache.paths, cache.columns) == cache.digests
    assert _digests(refstore.Artifact("t").add_reference(root)) == dict(
        zip(cache.paths, cache.digests, strict=True)
    )


def test_a_stopped_reference_again_ends_without_walking_the_tree(tmp_path: Path, opened: list[str]) -> None:
    """A re-reference whose listing is stopped (the caller cancelled, Ctrl-C) ends at once, as a first
    reference's hashing does, instead of walking and stat'ing the rest of the tree first."""
    root = tmp_path / "tree"
    _tree(root, folders=3, files=4)
    _settle()
    refstore.Artifact("t").add_reference(root)
    backend = resolve(root).backend
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        backend._list_sync(str(root.resolve()), 100, None, None, None, stop)  # type: ignore[attr-defined]
    refstore.Artifact("t").add_reference(root)  # (a second interpreter for the "two processes" case)


def test_a_tree_is_listed_in_the_order_of_its_paths(tmp_path: Path, opened: list[str]) -> None:
    """Files before, between and after subfolders whose names sort around ``/`` (``a.b`` < ``a/`` <
    ``a0``): the walk gives them in the sorted order of their paths, the first time and from the records."""
    root = tmp_path / "tree"
    for name in ("a.b", "a/b", "a/c/d", "a/c.e", "a/f", "a0", "a-", "b/a", "c", "a/c/z/y"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    _settle()
    first = [e.path for e in refstore.Artifact("t").add_reference(root)]
    assert first == sorted(first) and len(first) == 10
    opened.clear()
    assert [e.path for e in refstore.Artifact("t").add_reference(root)] == first
    assert opened == []


def test_a_file_that_cannot_be_stated_on_a_second_reference_is_the_error_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _tree(root, folders=2, files=3)
    _settle()
    refstore.Artifact("t").add_reference(root)
    (root / "d1" / "bad").symlink_to(root / "missing")
    for add in (refstore.Artifact("t").add_reference, refstore.Artifact("t").add_dir):
        with pytest.raises(refstore.ObjectNotFoundError) as raised:
            add(root)
        assert str(raised.value).startswith(f"{root}/d1/bad: a symbolic link to a missing file")
