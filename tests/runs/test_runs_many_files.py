"""A run that saves many files (issue 14 item 12): 2,000 files saved by one glob (500 on moto S3, which
answers slowly), and hundreds saved one
``save`` call at a time, all reach the registry once, and ``refstore sync`` afterwards has nothing left to
do. The run directory's state is no longer rewritten after every file (which made this quadratic: 1,000
files took 53 s); the timing itself is measured by ``benchmarks/case_runs.py``, not asserted here."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from runs_support import FAST, registry_root, run_area, states

import refstore
from refstore import Registry
from refstore.runs.files import RunFiles
from refstore.runs.local import LocalState
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _tree(root: Path, count: int) -> list[str]:
    names = []
    for i in range(count):
        name = f"shard{i // 250:02d}/step{i:05d}.txt"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"metrics of step {i}\n")
        names.append(name)
    return names


def test_two_thousand_files_saved_by_one_glob_all_sync(registry_root: str, tmp_path: Path) -> None:
    count = 2000 if "://" not in registry_root else 500  # moto answers a few hundred requests a second
    names = _tree(tmp_path / "out", count)
    with refstore.init("proj", sync_interval=FAST) as run:
        assert sorted(run.save("out/**/*.txt", base_path="out")) == names
    files = RunFiles(Registry(registry_root).store, run.path)
    assert files.names() == names
    assert [files.states(n) for n in names[::97]] == [[0]] * len(names[::97])
    with refstore.restore(names[-1], run.path, root=tmp_path / "back") as handle:
        assert handle.read() == f"metrics of step {count - 1}\n".encode()
    state = LocalState.load(run.dir)
    assert set(state.synced) == set(names) and state.status == "finished"
    synced = CliRunner().invoke(main, ["sync", "--json"], catch_exceptions=False)
    assert json.loads(synced.output)[0]["uploaded"] == []


def test_hundreds_of_saves_one_file_each(registry_root: str, tmp_path: Path) -> None:
    names = _tree(tmp_path / "out", 300)
    with refstore.init("proj", sync_interval=FAST) as run:
        for name in names:
            run.save(f"out/{name}", base_path="out", policy="now")
        for _ in range(3):  # the same pattern saved again is remembered once, as the newest
            run.save("out/shard00/*.txt", base_path="out", policy="live")
        (run.dir / "shard00" / "late.txt").write_text("written into the run directory later")
    patterns = LocalState.load(run.dir).patterns
    assert len(patterns) == 301 and patterns[-1] == ("shard00/*.txt", "live")
    files = RunFiles(Registry(registry_root).store, run.path)
    assert files.names() == sorted([*names, "shard00/late.txt"])
    assert files.state("shard00/late.txt", 0).policy == "live"
    assert states(registry_root, run.path, names[-1]) == [0]


def test_the_newest_pattern_decides_a_later_file_literal_or_glob(registry_root: str, tmp_path: Path) -> None:
    with refstore.init("proj", sync_interval=FAST) as run:
        run.save(str(run.dir / "a.log"), policy="live")  # a literal path, saved before the file exists
        run.save(str(run.dir / "*.log"), policy="end")  # newer: wins for a.log too
        run.save(str(run.dir / "*.txt"), policy="end")
        run.save(str(run.dir / "b.txt"), policy="now")  # newer than *.txt: wins for b.txt
        for name in ("a.log", "b.txt", "c.txt"):
            (run.dir / name).write_text(name)
    files = RunFiles(Registry(registry_root).store, run.path)
    policies = {name: files.state(name, 0).policy for name in ("a.log", "b.txt", "c.txt")}
    assert policies == {"a.log": "end", "b.txt": "now", "c.txt": "end"}
