"""Stats taken on two cores (refstore.storage.stat_columns): a second interpreter stats the second half of
a large tree's files. What it hands back must be exactly what this process would have found, and when it
cannot start or fails, this process does its half: the result never depends on it."""

from __future__ import annotations

import os
import queue
import sys
from pathlib import Path

import pytest

from refstore.storage import stat_columns


def _tree(root: Path) -> list[tuple[str, list[str]]]:
    """Folders of odd names: bytes that are not UTF-8, a newline, spaces; a dangling link (cannot be
    stat'ed) and a folder that is gone (none of its files can)."""
    runs: list[tuple[str, list[str]]] = []
    for d in range(4):
        folder = root / f"d{d}"
        folder.mkdir()
        names = [f"f{i:03d}.bin" for i in range(50)]
        names += ["with space", "new\nline", os.fsdecode(b"latin-\xe9")]
        for i, name in enumerate(names):
            (folder / name).write_bytes(b"x" * (i + d))
        os.symlink(root / "missing", folder / "dangling")
        runs.append((f"{folder}/", sorted([*names, "dangling"])))
    runs.append((f"{root}/gone/", ["a", "b"]))
    return runs


def _lists(columns: stat_columns.Columns) -> list[list[int]]:
    return [list(column) for column in columns]


def _columns(runs: list[tuple[str, list[str]]]) -> list[list[int]]:
    return _lists(stat_columns.stat_runs(runs))


def _here(runs: list[tuple[str, list[str]]]) -> list[list[int]]:
    columns = stat_columns.new_columns()
    for folder, names in runs:
        stat_columns.stat_into(folder, names, columns)
    return [list(column) for column in columns]


@pytest.fixture
def two(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Stats split from the first file on (as on any machine: two cores said), and the children started."""
    monkeypatch.setattr(stat_columns, "PARALLEL_FROM", 1)
    monkeypatch.setattr(stat_columns, "BLOCK", 8)  # runs of 54 files: some cut, some whole to one side
    monkeypatch.setattr(stat_columns, "_cores", lambda: 2)
    started: list[object] = []
    real = stat_columns._start

    def counted(feed: queue.SimpleQueue[bytes | None]) -> stat_columns.Child | None:
        child = real(feed)
        started.append(child)
        return child

    monkeypatch.setattr(stat_columns, "_start", counted)
    return started


def test_a_second_interpreter_finds_what_this_one_would(tmp_path: Path, two: list[object]) -> None:
    runs = _tree(tmp_path)
    expected = _here(runs)
    assert expected[0].count(-1) == 4 + 2  # the links and the gone folder's files: size -1
    for cut in (1, 2, 3, 5):  # the shares fall between folders and inside one
        part = runs[:cut]
        assert _columns(part) == _here(part)
    assert len(two) == 4 and all(child is not None for child in two)
    many = [(folder, names[:3]) for folder, names in runs] * 6  # small runs, in blocks to each side
    with stat_columns.TreeStats(1) as stats:
        for folder, names in many:
            stats.add(folder, names)
        sides = [side for side, _ in stats._parts]
        assert _lists(stats.finish()) == _here(many)
    assert 0 < sum(sides) < len(sides), "both interpreters took files"


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python", ""])
def test_a_second_interpreter_that_fails_or_cannot_start_changes_nothing(
    tmp_path: Path, two: list[object], monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    runs = _tree(tmp_path)
    expected = _here(runs)
    monkeypatch.setattr(sys, "executable", executable)
    assert _columns(runs) == expected
    assert two == [two[0]] and (two[0] is None) == (executable != "/bin/false")


def test_a_small_tree_starts_no_second_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(stat_columns, "_start", lambda feed: started.append(feed))
    runs = _tree(tmp_path)
    assert _columns(runs) == _here(runs)
    assert started == []  # 217 files, under PARALLEL_FROM
