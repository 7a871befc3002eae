"""A gc killed half-way, and writes cut short: what they leave is put back or swept (issue 14 items 17, 18).

- A gc killed between moving garbage to ``trash/`` and putting back what a concurrent log turned out to
  need leaves a version whose manifest and stored copies are in the trash: a reader puts them back, and
  the next gc does not wait a day for the dead gc's lock.
- Temporary files (``<name>.tmp-<pid>-<hex>``) of writers that died are swept by gc after a day; a write cut
  short by a full disk removes its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import refstore
from refstore.core.manifest import Manifest, ManifestEntry, canonical_json
from refstore.core.records import VersionRecord
from refstore.snapshots.gc import HOLD_AFTER_TRASH, collect_garbage
from refstore.snapshots.intents import manifest_path
from refstore.storage.download import blob_path
from refstore.storage.hashing import hash_bytes
from refstore.surfaces.cli import main

GC = (
    "import sys, refstore, refstore.snapshots.gc; "
    "refstore.snapshots.gc.collect_garbage(refstore.Registry(sys.argv[1]), yes=True)"
)
NEEDED = {"w.bin": b"weights 1", "cfg.json": b"{}"}


def _log_copies(registry: refstore.Registry, folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    artifact = refstore.Artifact("model", type="model")
    artifact.add_dir(folder)
    registry.log(artifact)


def _killed_gc_with_a_version_in_its_trash(registry: refstore.Registry, tmp_path: Path) -> Manifest:
    """v0 logged; then a gc trashes what a concurrent log relies on (it checked them before the trash),
    the log claims v1, and the gc is killed before it puts them back. Returns v1's manifest."""
    _log_copies(registry, tmp_path / "v0", {"w.bin": b"weights 0"})
    manifest = Manifest.of(ManifestEntry(p, None, len(d), hash_bytes(d)) for p, d in NEEDED.items())
    registry.store.create(manifest_path(manifest.digest), manifest.to_bytes())
    for data in [*NEEDED.values(), b"garbage"]:
        registry.store.create(blob_path(hash_bytes(data)), data)
    held = tmp_path / "gc-held"
    gc = subprocess.Popen(
        [sys.executable, "-c", GC, registry.root], env={**os.environ, HOLD_AFTER_TRASH: str(held)}
    )
    try:
        deadline = time.monotonic() + 120
        while not held.exists():
            assert gc.poll() is None and time.monotonic() < deadline, "gc never reached the trash"
            time.sleep(0.05)
        record = VersionRecord(
            name="model",
            version=1,
            type="model",
            manifest_digest=manifest.digest,
            content_digest=manifest.content_digest,
            created_at=datetime.now(timezone.utc).isoformat(),
        )
        registry.store.create("artifacts/model/versions/1.json", record.to_bytes())  # the log's claim
    finally:
        gc.send_signal(signal.SIGKILL)
        gc.wait()
    assert registry.store.exists("gc.lock")
    assert registry.store.exists(f"trash/{manifest_path(manifest.digest)}")
    assert not registry.store.exists(manifest_path(manifest.digest))
    return manifest


def _all_in_place(registry: refstore.Registry, manifest: Manifest) -> bool:
    needed = [manifest_path(manifest.digest), *(blob_path(hash_bytes(d)) for d in NEEDED.values())]
    return all(registry.store.exists(p) for p in needed)


def _trash_files(registry: refstore.Registry) -> list[Path]:
    return [p for p in Path(registry.root.removeprefix("file://"), "trash").rglob("*") if p.is_file()]


def _gc_cli(registry: refstore.Registry) -> str:
    result = CliRunner().invoke(main, ["--root", registry.root, "gc", "--yes"])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_reader_puts_back_what_a_killed_gc_left_in_the_trash(tmp_path: Path) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    manifest = _killed_gc_with_a_version_in_its_trash(registry, tmp_path)
    reader = refstore.Registry(tmp_path / "registry")
    v1 = reader.get("model:v1")
    assert dict(v1.manifest) == dict(manifest)
    assert _all_in_place(registry, manifest)
    out = v1.download(tmp_path / "out", skip_cache=True)
    assert {p: (out / p).read_bytes() for p in NEEDED} == NEEDED
    assert "1 objects in trash/" in _gc_cli(registry)  # the dead gc's lock is taken over at once
    assert not registry.store.exists(blob_path(hash_bytes(b"garbage")))
    assert not registry.store.exists("gc.lock") and _trash_files(registry) == []
    assert _all_in_place(registry, manifest)


def test_the_next_gc_puts_back_what_a_killed_gc_left_without_waiting_for_its_lock(tmp_path: Path) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    manifest = _killed_gc_with_a_version_in_its_trash(registry, tmp_path)
    report = collect_garbage(refstore.Registry(tmp_path / "registry"), yes=True)
    garbage = blob_path(hash_bytes(b"garbage"))
    assert garbage in report.leftovers and set(report.restored) <= set(report.leftovers)
    assert not registry.store.exists(garbage)
    assert _all_in_place(registry, manifest) and _trash_files(registry) == []
    for version in refstore.Registry(tmp_path / "registry").versions("model"):
        version.download(tmp_path / "out" / version.qualified_name, skip_cache=True)


def test_a_killed_gc_on_an_s3_registry_is_recovered_by_a_reader(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    registry = refstore.Registry(f"s3://{s3_bucket}/registry")
    manifest = _killed_gc_with_a_version_in_its_trash(registry, tmp_path)
    v1 = refstore.Registry(f"s3://{s3_bucket}/registry").get("model:v1")
    assert dict(v1.manifest) == dict(manifest) and _all_in_place(registry, manifest)
    out = v1.download(tmp_path / "out", skip_cache=True)
    assert {p: (out / p).read_bytes() for p in NEEDED} == NEEDED
    report = collect_garbage(registry, yes=True)  # the dead gc's lock is taken over at once
    assert blob_path(hash_bytes(b"garbage")) in report.leftovers
    s3_fs.invalidate_cache()
    assert collect_garbage(registry).leftovers == [] and not registry.store.exists("gc.lock")
    assert not s3_fs.exists(f"{s3_bucket}/registry/{blob_path(hash_bytes(b'garbage'))}")


HOLDER = textwrap.dedent(
    """
    import json, time
    from refstore.core.liveness import identity
    print(json.dumps(identity()), flush=True)
    time.sleep(600)
    """
)


def test_a_lock_of_a_live_gc_is_respected_and_of_a_dead_one_taken_over(tmp_path: Path) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    _log_copies(registry, tmp_path / "v0", {"w.bin": b"weights 0"})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        body = {"created_at": datetime.now(timezone.utc).isoformat(), **json.loads(holder.stdout.readline())}
        registry.store.create("gc.lock", canonical_json(body))
        for lock in (body, {**body, "host": "elsewhere"}, {k: v for k, v in body.items() if k != "boot_id"}):
            registry.store.replace("gc.lock", canonical_json(lock))
            result = CliRunner().invoke(main, ["--root", registry.root, "gc", "--yes"])
            assert result.exit_code == 1 and "another gc is running" in result.output, lock
        registry.store.replace("gc.lock", canonical_json(body))
    finally:
        holder.kill()
        holder.wait()
    _gc_cli(registry)
    assert not registry.store.exists("gc.lock")
    for lock in ({**body, "host": "elsewhere"}, {k: v for k, v in body.items() if k != "boot_id"}):
        registry.store.replace("gc.lock", canonical_json(lock))  # not known dead: a day's expiry
        assert CliRunner().invoke(main, ["--root", registry.root, "gc", "--yes"]).exit_code == 1


def test_gc_sweeps_temporary_files_of_dead_writers_after_a_day(tmp_path: Path) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    _log_copies(registry, tmp_path / "v0", {"w.bin": b"weights 0"})
    root = tmp_path / "registry"
    stale = [
        f"manifests/ab/{'ab' * 32}.json.tmp-4242-0123abcd",
        "artifacts/model/versions/1.json.tmp-4242-89abcdef",
        f"blobs/cd/{'cd' * 16}.tmp-77-deadbeef",
    ]
    fresh = "artifacts/model/aliases/prod.json.tmp-4243-00000000"
    not_temp = "artifacts/model/notes.tmp-x"
    old = time.time() - timedelta(days=1, minutes=5).total_seconds()
    for relative in [*stale, fresh, not_temp]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b'{"partial')
        if relative != fresh:
            os.utime(root / relative, (old, old))
    dry = collect_garbage(registry)
    assert dry.temp_files == sorted(stale) and all((root / p).exists() for p in stale)
    result = CliRunner().invoke(main, ["--root", registry.root, "--json", "gc", "--yes"])
    assert result.exit_code == 0 and json.loads(result.output)["temp_files"] == sorted(stale)
    assert not any((root / p).exists() for p in stale)
    assert (root / fresh).exists() and (root / not_temp).exists()
    assert [v.version for v in registry.versions("model")] == [0]
    text = CliRunner().invoke(main, ["--root", registry.root, "gc"]).output
    assert "temporary" not in text


FULL_DISK = textwrap.dedent(
    """
    import json, os, pathlib, sys
    import refstore
    registry_root, files = sys.argv[1], pathlib.Path(sys.argv[2])
    artifact = refstore.Artifact("many")
    artifact.add_reference(str(files))
    try:
        refstore.Registry(registry_root).log(artifact)
        outcome = "logged"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    root = pathlib.Path(registry_root)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    print(json.dumps({"outcome": outcome, "files": left}))
    """
)


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounts a small tmpfs in a mount namespace (root and unshare)",
)
def test_a_write_cut_short_by_a_full_disk_leaves_no_temporary_file(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for i in range(3000):
        (files / f"file-with-a-longish-name-{i:05d}.txt").write_text(f"content {i}")
    registry = tmp_path / "registry"
    registry.mkdir()
    script = (
        f'mount -t tmpfs -o size=64k tmpfs {registry} && exec {sys.executable} -c "$0" {registry} {files}'
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, FULL_DISK], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["outcome"] != "logged" and "No space left" in found["outcome"], found
    assert not [f for f in found["files"] if ".tmp-" in f], found["files"]
    assert not [f for f in found["files"] if f.startswith(("manifests/", "artifacts/"))], found["files"]
