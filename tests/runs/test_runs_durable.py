"""Saved files survive a crash without one fsync per file (issue 14 item 12): into a local registry, a run
writes each file's bytes and state record without fsync and fsyncs them, with their folders, in one batch
before it writes the run's state or reports the batch done. A record that a crash left empty (written, not
yet fsynced, so never reported synced) is passed over by readers for the file's previous state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runs_support import FAST, run_area

import refstore
from refstore import Registry
from refstore.runs.files import RunFiles
from refstore.runs.local import LocalState

__all__ = ["run_area"]  # fixture used by name


@pytest.fixture
def local_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root = str(tmp_path / "registry")
    monkeypatch.setenv("REFSTORE_ROOT", root)
    return root


def test_every_synced_blob_record_and_folder_is_fsynced(
    local_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: set[str] = set()
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    (tmp_path / "out").mkdir()
    for i in range(50):
        (tmp_path / "out" / f"f{i:02d}.txt").write_text(f"file {i}\n")
    with refstore.init("proj", sync_interval=FAST) as run:
        run.save("out/*.txt", base_path="out")
    base = Path(local_root) / "runs" / run.path
    blobs = [*(Path(local_root) / "blobs").glob("*/*")]  # the registry's blob store, shared with artifacts
    written = [*blobs, *base.glob("files/*/*.json"), *base.glob("files/*")]
    assert len(written) == 150
    assert {str(p) for p in written} <= synced
    assert {str(p.parent) for p in blobs} | {str(Path(local_root) / "blobs"), str(base / "files")} <= synced
    assert set(LocalState.load(run.dir).synced) == {f"f{i:02d}.txt" for i in range(50)}


def test_a_record_a_crash_left_empty_is_passed_over(local_root: str, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.txt").write_text("weights")
    with refstore.init("proj", sync_interval=FAST) as run:
        run.save("out/model.txt", base_path="out")
    files = RunFiles(Registry(local_root).store, run.path)
    cut = Path(local_root) / "runs" / run.path / "files" / "model.txt" / "1.json"
    cut.write_bytes(b"")  # claimed, then the machine went down before the batch was fsynced
    newest = files.newest("model.txt")
    assert newest is not None and newest.state == 0
    with refstore.restore("model.txt", run.path, root=tmp_path / "back") as handle:
        assert handle.read() == b"weights"
