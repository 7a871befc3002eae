"""``gc``: unreferenced manifests and blobs go, referenced ones stay, even beside a concurrent log."""

from __future__ import annotations

import contextlib
import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from gc_race import race_gc

import refstore
from refstore.core.manifest import Manifest, ManifestEntry, canonical_json
from refstore.snapshots.gc import collect_garbage, log_intent
from refstore.snapshots.intents import manifest_path
from refstore.storage.download import blob_path
from refstore.storage.hashing import hash_bytes
from refstore.surfaces.cli import main


def _orphan_blob(registry: refstore.Registry, data: bytes) -> str:
    """A blob no version references, as a log that died after uploading leaves it."""
    relative = blob_path(hash_bytes(data))
    registry.store.create(relative, data)
    return relative


def _copies_manifest(files: dict[str, bytes]) -> Manifest:
    """The manifest ``add_file``/``add_dir`` builds for these files."""
    return Manifest.of(ManifestEntry(p, None, len(d), hash_bytes(d)) for p, d in files.items())


def _orphan_manifest(registry: refstore.Registry, manifest: Manifest) -> str:
    relative = manifest_path(manifest.digest)
    registry.store.create(relative, manifest.to_bytes())
    return relative


def _log_copies(
    registry: refstore.Registry, folder: Path, files: dict[str, bytes]
) -> refstore.ArtifactVersion:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    artifact = refstore.Artifact("model", type="model")
    artifact.add_dir(folder)
    return registry.log(artifact)


def _assert_intact(registry: refstore.Registry, target: Path) -> None:
    """Every version downloads, byte-checked, from a cold cache."""
    for version in registry.versions("model"):
        version.download(target / version.qualified_name, skip_cache=True)


def _stored(registry: refstore.Registry, folder: str) -> list[str]:
    root = Path(registry.root.removeprefix("file://")) / folder
    return sorted(p.relative_to(root.parent).as_posix() for p in root.rglob("*") if p.is_file())


def test_dry_run_reports_and_yes_deletes_only_what_no_version_references(tmp_path: Path) -> None:
    registry = refstore.Registry()
    v0 = _log_copies(registry, tmp_path / "v0", {"w.bin": b"weights 0", "cfg.json": b"{}"})
    _log_copies(registry, tmp_path / "v1", {"w.bin": b"weights 1", "cfg.json": b"{}"})
    blob = _orphan_blob(registry, b"left by a crashed log")
    manifest = _orphan_manifest(registry, _copies_manifest({"x": b"left by a crashed log"}))
    before = _stored(registry, "blobs") + _stored(registry, "manifests")

    dry = collect_garbage(registry)
    assert (dry.dry_run, dry.blobs, dry.manifests) == (True, [blob], [manifest])
    assert dry.size == len(b"left by a crashed log") + len(registry.store.read(manifest))
    assert _stored(registry, "blobs") + _stored(registry, "manifests") == before

    done = collect_garbage(registry, yes=True)
    assert (done.dry_run, done.blobs, done.manifests, done.restored) == (False, [blob], [manifest], [])
    assert sorted(set(before) - set(_stored(registry, "blobs") + _stored(registry, "manifests"))) == sorted(
        [blob, manifest]
    )
    assert _stored(registry, "trash") == [] and _stored(registry, "intents") == []
    _assert_intact(registry, tmp_path / "out")
    assert v0.verify()
    assert collect_garbage(registry, yes=True).to_json()["blobs"] == []


def test_cli_is_a_dry_run_unless_yes(tmp_path: Path) -> None:
    registry = refstore.Registry()
    _log_copies(registry, tmp_path / "v0", {"w.bin": b"weights"})
    blob = _orphan_blob(registry, b"garbage bytes")
    runner = CliRunner()
    dry = runner.invoke(main, ["gc"], catch_exceptions=False)
    assert dry.exit_code == 0
    assert dry.output.splitlines() == [
        f"would delete  {blob}",
        "dry run: 0 manifests and 1 blob (13 B) unreferenced; --yes deletes them",
    ]
    assert registry.store.exists(blob)
    done = runner.invoke(main, ["gc", "--yes", "--json"], catch_exceptions=False)
    assert done.exit_code == 0 and json.loads(done.output)["blobs"] == [blob]
    assert not registry.store.exists(blob)


def test_an_intent_protects_what_a_running_log_relies_on(tmp_path: Path) -> None:
    """Between a log's intent and its version, the orphan it is about to reuse is not collected."""
    registry = refstore.Registry()
    blob = _orphan_blob(registry, b"about to be reused")
    with log_intent(registry.store, _copies_manifest({"r.bin": b"about to be reused"})):
        assert collect_garbage(registry, yes=True).blobs == []
        assert registry.store.exists(blob)
    assert collect_garbage(registry, yes=True).blobs == [blob]


def test_expired_intents_protect_nothing_and_are_deleted(tmp_path: Path) -> None:
    registry = refstore.Registry()
    blob = _orphan_blob(registry, b"from a log that crashed long ago")
    stale = datetime.now(timezone.utc) - timedelta(days=8)
    body = {"format": "refstore.intent/1", "created_at": stale.isoformat(), "paths": [blob]}
    registry.store.create("intents/crashed.json", canonical_json(body))
    dry = collect_garbage(registry)
    assert (dry.blobs, dry.expired_intents) == ([blob], ["intents/crashed.json"])
    collect_garbage(registry, yes=True)
    assert not registry.store.exists(blob) and not registry.store.exists("intents/crashed.json")


def test_trash_left_by_an_interrupted_gc_is_put_back_or_deleted(tmp_path: Path) -> None:
    """A gc that died after trashing: the next one restores what a version references, deletes the rest."""
    registry = refstore.Registry()
    version = _log_copies(registry, tmp_path / "v0", {"w.bin": b"needed"})
    needed = blob_path(version.manifest["w.bin"].digest)
    garbage = _orphan_blob(registry, b"not needed")
    for relative in (needed, garbage):
        registry.store.create(f"trash/{relative}", registry.store.read(relative))
        registry.store.delete(relative)
    assert collect_garbage(registry).leftovers == sorted([needed, garbage])
    report = collect_garbage(registry, yes=True)
    assert (report.restored, report.leftovers) == ([needed], sorted([needed, garbage]))
    assert registry.store.exists(needed) and not registry.store.exists(garbage)
    assert _stored(registry, "trash") == []
    _assert_intact(registry, tmp_path / "out")


def test_one_gc_at_a_time(tmp_path: Path) -> None:
    registry = refstore.Registry()
    _orphan_blob(registry, b"x")
    now = datetime.now(timezone.utc).isoformat()
    registry.store.create("gc.lock", canonical_json({"created_at": now, "host": "h", "pid": 1}))
    result = CliRunner().invoke(main, ["gc", "--yes"])
    assert result.exit_code == 1 and "another gc is running" in result.output
    assert collect_garbage(registry).blobs  # a dry run needs no lock
    old = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat()
    registry.store.replace("gc.lock", canonical_json({"created_at": old, "host": "h", "pid": 1}))
    assert collect_garbage(registry, yes=True).blobs  # an abandoned lock is taken over
    assert not registry.store.exists("gc.lock")


def test_gc_on_an_s3_registry(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    registry = refstore.Registry(f"s3://{s3_bucket}/registry")
    _log_copies(registry, tmp_path / "v0", {"w.bin": b"weights"})
    blob = _orphan_blob(registry, b"orphan on s3")
    needed = blob_path(hash_bytes(b"weights"))
    registry.store.create(f"trash/{needed}", b"weights")  # as an interrupted gc leaves it, original kept
    report = collect_garbage(registry, yes=True)
    assert (report.blobs, report.restored) == ([blob], [needed])
    s3_fs.invalidate_cache()
    assert not s3_fs.exists(f"{s3_bucket}/registry/{blob}")
    assert collect_garbage(registry).leftovers == [] and registry.store.list("intents") == []
    _assert_intact(registry, tmp_path / "out")


def _plant_orphans(registry: refstore.Registry, count: int) -> list[str]:
    """Orphan blobs ``orphan 0`` ... and the very manifests the logger will write: both get reused."""
    blobs = []
    for i in range(2 * count):
        with contextlib.suppress(FileExistsError):
            _orphan_blob(registry, f"orphan {i}".encode())
        blobs.append(blob_path(hash_bytes(f"orphan {i}".encode())))
    for k in range(count):
        files = {"shared.bin": f"orphan {2 * k}".encode(), "own.bin": f"own {k}".encode()}
        with contextlib.suppress(FileExistsError):
            _orphan_manifest(registry, _copies_manifest(files))
    return blobs


LOGGER = textwrap.dedent(
    """
    import pathlib, sys, time
    import refstore

    root, work, count = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
    registry = refstore.Registry(root)
    print("ready", flush=True)
    for k in range(count):
        folder = work / f"v{k}"
        folder.mkdir(parents=True)
        (folder / "shared.bin").write_bytes(f"orphan {2 * k}".encode())  # an orphan blob's bytes: reused
        (folder / "own.bin").write_bytes(f"own {k}".encode())
        artifact = refstore.Artifact("model", type="model")
        artifact.add_dir(folder)
        registry.log(artifact)
        time.sleep(0.02)  # room for more gc runs in between
    print("done", flush=True)
    """
)


def test_gc_racing_a_concurrent_log_never_deletes_what_a_version_references(tmp_path: Path) -> None:
    """Another process logs versions that reuse orphan blobs and manifests while gc runs in a loop."""
    count = 40
    registry = refstore.Registry(tmp_path / "shared-registry")
    orphans = _plant_orphans(registry, count)
    # again and again, so that every log races a gc over them
    race_gc(registry, LOGGER, [str(tmp_path / "work"), str(count)], lambda: _plant_orphans(registry, count))

    assert [v.version for v in registry.versions("model")] == list(range(count))
    _assert_intact(registry, tmp_path / "out")
    assert all(v.verify() for v in registry.versions("model"))
    collect_garbage(registry, yes=True)
    reused = {orphans[2 * k] for k in range(count)}
    assert {o for o in orphans if registry.store.exists(o)} == reused  # the others were garbage
    assert _stored(registry, "trash") == [] and _stored(registry, "intents") == []
