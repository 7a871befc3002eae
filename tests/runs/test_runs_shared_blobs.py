"""Run files and artifact copies share the registry's blob store (issue 15): the same checkpoint saved by a
run and logged as an artifact is stored once; gc counts every run file state as a reference, frees the bytes
of deleted runs, and never takes a blob from under a run that pushes it while gc runs; runs made before the
shared store stay readable.

Registry-involving tests run twice: in a local folder and in a bucket on the moto S3 server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runs_support import FAST, registry_root, run_area, states, wait_until

import refstore
from refstore import CorruptBlobError, Registry
from refstore.runs.files import RunFiles
from refstore.runs.removing import remove_run
from refstore.snapshots.gc import collect_garbage
from refstore.snapshots.intents import listing
from refstore.storage.download import blob_path
from refstore.storage.hashing import hash_bytes
from refstore.storage.quarantine import quarantined_blobs

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _blobs(registry: Registry) -> list[str]:
    return sorted(listing(registry.store, ["blobs"]))


def _orphan(registry: Registry, data: bytes) -> str:
    """A blob nothing references (a log that died after uploading it), unless it is there already."""
    relative = blob_path(hash_bytes(data))
    with contextlib.suppress(FileExistsError):
        registry.store.create(relative, data)
    return relative


def test_a_checkpoint_saved_by_a_run_and_logged_as_an_artifact_is_stored_once(
    registry_root: str, tmp_path: Path
) -> None:
    registry = Registry(registry_root)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights " * 1000)
    with refstore.init("proj") as run:
        run.save(str(checkpoint), policy="now")
        model = refstore.Artifact("model", type="model")
        model.add_file(checkpoint)
        run.log_artifact(model)
    assert _blobs(registry) == [blob_path(hash_bytes(b"weights " * 1000))]
    assert listing(registry.store, [f"runs/{run.path}/blobs"]) == {}
    out = tmp_path / "out"
    assert refstore.restore("model.pt", run.path, root=out).read() == b"weights " * 1000
    registry.get("model:v0").download(out / "model", skip_cache=True)


def test_gc_keeps_the_bytes_of_every_state_of_every_run(registry_root: str, tmp_path: Path) -> None:
    registry = Registry(registry_root)
    checkpoint = tmp_path / "ckpt.pt"
    with refstore.init("proj", sync_interval=FAST) as run:
        for number in range(3):
            (tmp_path / "ckpt.tmp").write_text(f"epoch {number}")
            os.replace(tmp_path / "ckpt.tmp", checkpoint)  # never seen half-written by the live sync
            if number == 0:
                run.save(str(checkpoint))
            wait_until(
                lambda n=number: len(states(registry_root, run.path, "ckpt.pt")) == n + 1, what="a state"
            )
    garbage = _orphan(registry, b"left by a log that died")
    dry = collect_garbage(registry)
    assert dry.blobs == [garbage]
    assert collect_garbage(registry, yes=True).blobs == [garbage]
    for number in range(3):
        restored = refstore.restore("ckpt.pt", run.path, root=tmp_path / f"s{number}", state=number)
        assert restored.read() == f"epoch {number}".encode()


def test_a_push_puts_back_the_bytes_a_gc_took_between_its_upload_and_its_record(
    registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push finds the bytes there (an old orphan), then gc runs to the end before the state's record
    is written: gc saw no reference and deleted them. The push checks after its record and puts them back.
    (A push that does not know the file's newest state lists them and claims the next in this thread.)"""
    _push_beside_gc(Registry(registry_root), tmp_path, monkeypatch, after=None)


def test_a_push_into_a_local_registry_puts_back_what_a_gc_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the fast path of a local registry: the next state claimed directly, in this thread (on
    an object store that claim is written on the IO loop, where gc cannot be made to run in between)."""
    _push_beside_gc(Registry(tmp_path / "registry"), tmp_path, monkeypatch, after=-1)


def _push_beside_gc(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int | None
) -> None:
    data = b"an old orphan's bytes, reused"
    blob = _orphan(registry, data)
    staged = tmp_path / "staged"
    staged.write_bytes(data)
    files = RunFiles(registry.store, "proj/run1")
    record_path = files._state
    collected: list[list[str]] = []

    def gc_first(relpath: str, number: int) -> str:
        if not collected:
            collected.append(collect_garbage(registry, yes=True).blobs)
        return record_path(relpath, number)

    monkeypatch.setattr(files, "_state", gc_first)
    state = files.push("model.pt", staged, hash_bytes(data), len(data), "now", after)
    files.make_durable()
    assert collected == [[blob]]  # gc did take them
    assert registry.store.exists(blob)  # and the push put them back
    monkeypatch.undo()
    files.download(state, tmp_path / "out" / "model.pt")
    assert (tmp_path / "out" / "model.pt").read_bytes() == data
    assert collect_garbage(registry, yes=True).blobs == []


RUNNER = textwrap.dedent(
    """
    import os, pathlib, sys, time
    import refstore

    root, folder, most, pause = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    run = refstore.init("race", registry=root, sync_interval=0.01)
    print(run.path, flush=True)
    k = 0
    while k < most and not (folder / "stop").exists():
        (folder / "progress.tmp").write_text(str(k))
        os.replace(folder / "progress.tmp", folder / "progress")
        (run.dir / f"f{k:04d}.bin").write_bytes(f"orphan {k}".encode())  # a planted orphan's bytes: reused
        run.save(str(run.dir / f"f{k:04d}.bin"), policy="now")
        time.sleep(pause)  # room for gc runs in between
        k += 1
    run.finish()
    print(k, flush=True)
    """
)


def test_a_run_pushing_beside_gc_in_another_process_never_loses_a_state(
    registry_root: str, tmp_path: Path
) -> None:
    """Another process saves files whose bytes are orphan blobs while gc runs in a loop (three rounds),
    planting before each round the orphans of the files it is about to save, so that pushes race a gc over
    the blobs they reuse."""
    # files saved at most, pause between saves, files planted ahead (each gc round is slower on moto)
    most, pause, ahead = (300, 0.2, 5) if registry_root.startswith("s3://") else (3000, 0.005, 60)
    registry = Registry(registry_root)
    payloads = [f"orphan {j}".encode() for j in range(most)]
    for data in payloads[:ahead]:
        _orphan(registry, data)
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, registry_root, str(tmp_path), str(most), str(pause)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None
    run_path = runner.stdout.readline().strip()
    try:
        for _ in range(3):
            progress = tmp_path / "progress"
            done = int(progress.read_text()) if progress.exists() else 0
            for data in payloads[done : done + ahead]:
                _orphan(registry, data)
            collect_garbage(registry, yes=True)
        (tmp_path / "stop").touch()
        assert runner.wait(120) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(60)
    count = int(runner.stdout.read())
    assert count < most  # it was still pushing when the last gc ended

    collect_garbage(registry, yes=True)
    files = RunFiles(registry.store, run_path)
    assert len(files.names()) == count
    stored = set(listing(registry.store, ["blobs"]))
    assert {blob_path(hash_bytes(data)) for data in payloads[:count]} <= stored  # every state's bytes
    for k in range(0, count, max(1, count // 10)):  # and some of them read back, checked
        name = f"f{k:04d}.bin"
        files.download(files.state(name, 0), tmp_path / "out" / name)
        assert (tmp_path / "out" / name).read_bytes() == payloads[k]


def _run_with_blob_moved(registry: Registry, tmp_path: Path, data: bytes, where: str) -> tuple[str, str]:
    """A finished run that saved ``a.txt`` holding ``data``, whose blob then moved to ``where`` (a
    registry-relative path: ``{run}``, ``{blob}`` and ``{hex}`` filled in); its run path and the blob's path
    in the blob store."""
    (tmp_path / "a.txt").write_bytes(data)
    with refstore.init("proj") as run:
        run.save(str(tmp_path / "a.txt"), policy="now")
    blob = blob_path(hash_bytes(data))
    moved = where.format(run=run.path, blob=blob, hex=blob.rsplit("/", 1)[1])
    registry.store.create(moved, registry.store.read(blob))
    registry.store.delete(blob)
    return run.path, blob


def test_runs_made_before_the_shared_store_stay_readable_and_rm_frees_their_bytes(
    registry_root: str, tmp_path: Path
) -> None:
    registry = Registry(registry_root)
    data = b"kept by an old run"
    run_path, blob = _run_with_blob_moved(registry, tmp_path, data, "runs/{run}/blobs/{hex}")  # as it was
    own = f"runs/{run_path}/blobs/{blob.rsplit('/', 1)[1]}"
    assert collect_garbage(registry, yes=True).blobs == []
    assert refstore.restore("a.txt", run_path, root=tmp_path / "out").read() == data
    removed = remove_run(registry, run_path)
    assert (removed.files, removed.states, removed.freed) == (1, 1, len(data))
    assert not registry.store.exists(own)


def test_a_reader_reads_a_state_whose_bytes_a_gc_holds_in_its_trash(
    registry_root: str, tmp_path: Path
) -> None:
    registry = Registry(registry_root)
    data = b"in the trash for a moment"
    run_path, blob = _run_with_blob_moved(registry, tmp_path, data, "trash/{blob}")  # a gc moved it there
    assert refstore.restore("a.txt", run_path, root=tmp_path / "out").read() == data
    collect_garbage(registry, yes=True)  # the next gc puts it back: a state references it
    assert registry.store.exists(blob)


def test_a_corrupt_run_blob_goes_to_quarantine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "registry"
    monkeypatch.setenv("REFSTORE_ROOT", str(root))
    (tmp_path / "w.bin").write_bytes(b"good bytes")
    with refstore.init("proj") as run:
        run.save(str(tmp_path / "w.bin"), policy="now")
    blob = blob_path(hash_bytes(b"good bytes"))
    (root / blob).write_bytes(b"bad bytes!")  # a disk or a tool wrote into the registry
    with pytest.raises(CorruptBlobError, match="quarantine"):
        refstore.restore("w.bin", run.path, root=tmp_path / "out")
    assert quarantined_blobs(Registry(root).store) == {blob.rsplit("/", 1)[1]}
    assert not (tmp_path / "out" / "w.bin").exists()
