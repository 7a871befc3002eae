"""Concurrent publishers: many processes log versions of one artifact, and move one alias, at once; and
processes that delete, alias, log and edit one artifact at once (issue 15).

Every version must be present, numbered with no gap and no duplicate, ``latest`` the newest, no record
torn; an alias moved concurrently always points at a version that exists and is always readable. Each
scenario runs on a local registry and on registries in versioned and unversioned buckets of moto and of
Ceph RGW. ``--soak`` scales up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import refstore
from refstore.storage.hashing import hash_bytes

WORKER = Path(__file__).with_name("trust_worker.py")
START_TIMEOUT = 60.0
RUN_TIMEOUT = 240.0


@dataclass(frozen=True)
class Scale:
    processes: int
    versions_each: int


def _scale(soak: bool, where: str) -> Scale:
    if soak:
        return Scale(16, 25) if where == "local" else Scale(12, 10)
    return Scale(8, 5) if where == "local" else Scale(8, 3)


def _on_rgw(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.s3_server("rgw"))


@pytest.fixture(params=["local", "s3", "s3-unversioned", _on_rgw("rgw"), _on_rgw("rgw-unversioned")])
def registry_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh registry root: a local folder, or a prefix in a fresh bucket (versioned or not) of moto
    ("s3") or Ceph RGW ("rgw"; RGW ignores create-only writes in versioned buckets)."""
    if request.param == "local":
        yield str(tmp_path / "registry")
    else:
        fixture = "s3_unversioned_bucket" if request.param.endswith("-unversioned") else "s3_bucket"
        bucket = request.getfixturevalue(fixture)  # also sets AWS_S3_ENDPOINT_URL for the workers
        yield f"s3://{bucket}/registry"


def _race(tmp_path: Path, commands: list[list[str]], stop_after: int | None = None) -> list[list[Any]]:
    """Start every worker, release them together, and collect each one's JSON lines.

    With ``stop_after``, the workers from that index on (readers) are told to stop once the others end.
    """
    go, stop = tmp_path / "go", tmp_path / "stop"
    readers_from = len(commands) if stop_after is None else stop_after
    argvs = [
        [sys.executable, str(WORKER), *command, *([str(stop)] if i >= readers_from else []), str(go)]
        for i, command in enumerate(commands)
    ]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        go.touch()
        writers = procs[:stop_after] if stop_after is not None else procs
        outputs = {id(p): p.communicate(timeout=RUN_TIMEOUT) for p in writers}
        stop.touch()
        outputs.update({id(p): p.communicate(timeout=RUN_TIMEOUT) for p in procs if id(p) not in outputs})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for proc in procs:
        out, err = outputs[id(proc)]
        assert proc.returncode == 0, err
        results.append([json.loads(line) for line in out.splitlines() if line.strip()])
    return results


def _expected_content(worker: int, i: int) -> bytes:
    return f"worker {worker} version {i}\n".encode() * (1 + i)


def test_concurrent_log_numbers_every_version_once(registry_root: str, tmp_path: Path, soak: bool) -> None:
    scale = _scale(soak, "s3" if registry_root.startswith("s3://") else "local")
    workdir = tmp_path / "sources"
    commands = [
        ["log", registry_root, "shared", str(w), str(scale.versions_each), str(workdir)]
        for w in range(scale.processes)
    ]
    started = time.monotonic()
    results = _race(tmp_path, commands)
    elapsed = time.monotonic() - started
    total = scale.processes * scale.versions_each

    registry = refstore.Registry(registry_root)
    versions = registry.versions("shared")  # every record read and checked against its digest
    assert [v.version for v in versions] == list(range(total)), "gaps or duplicates"
    assert registry.get("shared").version == total - 1 == registry.get("shared:latest").version
    created = [v.created_at for v in versions]
    assert created == sorted(created), "a higher version number was claimed before a lower one"

    claimed: dict[int, tuple[int, int]] = {}
    for worker, lines in enumerate(results):
        assert [line["i"] for line in lines] == list(range(scale.versions_each))
        numbers = [line["version"] for line in lines]
        assert numbers == sorted(numbers), "a worker's later log got an older version"
        for line in lines:
            assert line["version"] not in claimed, "two logs were handed the same version"
            claimed[line["version"]] = (worker, line["i"])
        assert registry.get(f"shared:w{worker}").version == numbers[-1]
    assert sorted(claimed) == list(range(total))
    for version in versions:
        worker, i = claimed[version.version]
        entry = version.manifest["data.txt"]  # manifest read and checked against its digest
        assert entry.digest == hash_bytes(_expected_content(worker, i))
        assert version.metadata == {"worker": worker, "i": i}
    print(f"{total} versions by {scale.processes} processes in {elapsed:.1f} s")


def test_concurrent_alias_moves_always_point_at_a_readable_version(
    registry_root: str, tmp_path: Path, soak: bool
) -> None:
    registry = refstore.Registry(registry_root)
    count = 6
    for i in range(count):
        artifact = refstore.Artifact("moving")
        (tmp_path / "f.txt").write_text(f"content {i}")
        artifact.add_file(tmp_path / "f.txt")
        registry.log(artifact, aliases=["prod"] if i == 0 else ())
    movers = 12 if soak else (4 if registry_root.startswith("s3://") else 6)
    moves = 60 if soak else 10
    readers = 2
    commands = [["alias", registry_root, "moving", str(w), str(moves), str(count)] for w in range(movers)]
    commands += [["read", registry_root, "moving", str(count)] for _ in range(readers)]
    results = _race(tmp_path, commands, stop_after=movers)

    final_candidates = {lines[0]["moved"][-1] for lines in results[:movers]}
    for lines in results[movers:]:
        assert lines[0]["errors"] == []
        assert lines[0]["reads"] > 0
    final = registry.get("moving:prod")
    assert final.version in final_candidates
    assert "prod" in final.aliases
    assert sum("prod" in v.aliases for v in registry.versions("moving")) == 1


def test_concurrent_delete_alias_log_and_edit_never_leave_an_alias_on_a_deleted_version(
    registry_root: str, tmp_path: Path, soak: bool
) -> None:
    """Processes log versions (moving ``prod``), move ``prod``/``staging``, delete versions (with and without
    force) and edit v0 at once, while a reader reads ``latest`` and ``prod``: at the end no alias points at a
    deleted version, ``latest`` is the highest version left, every number was handed out once (a log whose
    version was deleted before its alias landed logs again, once more), no edit was lost; the reader never
    failed to read ``latest``."""
    from refstore.snapshots import aliases, lifecycle

    registry = refstore.Registry(registry_root)
    seed = 4
    for i in range(seed):
        artifact = refstore.Artifact("churn")
        (tmp_path / "seed.txt").write_text(f"seed {i}")
        artifact.add_file(tmp_path / "seed.txt")
        registry.log(artifact, aliases=["prod"] if i == 1 else ())
    remote = registry_root.startswith("s3://")
    n = 4 if soak and not remote else 2
    logs, moves, deletes, edits = (8, 20, 12, 8) if soak else ((2, 4, 3, 2) if remote else (3, 6, 4, 3))
    workdir = str(tmp_path / "sources")
    commands = [["churn_log", registry_root, "churn", str(w), str(logs), workdir] for w in range(n)]
    commands += [["churn_alias", registry_root, "churn", str(w), str(moves)] for w in range(n)]
    commands += [["churn_edit", registry_root, "churn", str(w), str(edits)] for w in range(n)]
    writers = len(commands)  # then, told when those are done: deleters (a forced delete last) and a reader
    commands += [["churn_delete", registry_root, "churn", str(w), str(deletes)] for w in range(n)]
    commands += [["churn_read", registry_root, "churn"]]
    results = _race(tmp_path, commands, stop_after=writers)

    everything = registry.versions("churn", deleted=True)
    assert [v.version for v in everything] == list(range(len(everything))), "a number skipped or given twice"
    logged = [number for lines in results[:n] for number in lines[0]["logged"]]
    assert len(set(logged)) == len(logged) == n * logs
    # A version deleted between its claim and its alias is logged again as a new number (Registry.log):
    # each log's content is in one version that log returned, and in deleted versions before it, no others.
    by_content: dict[str, list[refstore.ArtifactVersion]] = {}
    for version in everything[seed:]:
        by_content.setdefault(version.digest, []).append(version)
    assert len(by_content) == n * logs
    assert sorted(group[-1].version for group in by_content.values()) == sorted(logged)
    assert all(v.deleted for group in by_content.values() for v in group[:-1]), "a log made two live versions"
    deleted_by_workers = {d for lines in results[writers : writers + n] for d in lines[0]["deleted"]}
    deleted = {v.version for v in everything if v.deleted}
    assert deleted == deleted_by_workers and 0 not in deleted
    live = [v.version for v in registry.versions("churn")]
    assert registry.get("churn").version == max(live)
    heads = aliases.heads(registry.store, "churn")
    assert all(r.version not in deleted for r in heads.values()), f"an alias on a deleted version: {heads}"
    for alias in ("prod", "staging"):
        try:
            assert registry.get(f"churn:{alias}").version in live
        except refstore.ArtifactNotFoundError:
            assert alias not in heads
    assert not any(lifecycle.tombstone_of(registry.store, "churn", v) is None for v in deleted)
    tags = registry.get("churn:v0").tags
    assert sorted(tags) == sorted(f"w{w}-{i}" for w in range(n) for i in range(edits)), "an edit was lost"
    (reader,) = results[writers + n :]
    assert reader[0]["errors"] == [] and reader[0]["reads"] > 0
