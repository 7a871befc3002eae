"""Chunks made on a Dask cluster (issue 16): ``Registry.log(..., executor=)`` cuts a large manifest into
segments whose chunks the workers make, and the driver stitches them into the very chunks, root and
manifest digest a log without an executor writes (on a local registry and on one in a moto bucket)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dask_support import OnWorkers

import refstore
from refstore.core import chunks
from refstore.core.manifest import new_entry
from refstore.snapshots.intents import listing

ENTRIES = 25_000


def _artifact() -> refstore.Artifact:
    """25,000 S3-like entries in 36 folders (a manifest is chunked past 20,000 entries)."""
    artifact = refstore.Artifact("big")
    artifact._add(
        [
            new_entry(
                f"d{i // 700:03d}/f{i:06d}.bin",
                f"s3://bucket/d{i // 700:03d}/f{i:06d}.bin",
                i % 977,
                f"etag:{i:032x}",
                f"{i:032x}",
                f"v{i}",
            )
            for i in range(ENTRIES)
        ]
    )
    return artifact


def _stored(registry: refstore.Registry) -> dict[str, bytes]:
    return {path: registry.store.read(path) for path in listing(registry.store, ["manifests"])}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 512 entries on average (the workers are threads of this process: they cut alike)."""
    monkeypatch.setattr(chunks, "MIN_ENTRIES", 64)
    monkeypatch.setattr(chunks, "_ENTRY_MASK", 511)


@pytest.mark.parametrize("segment", [3_001, 2**18])
def test_a_version_chunked_on_dask_workers_is_the_one_chunked_here(
    segment: int,
    local_or_s3_registry: refstore.Registry,
    on_workers: OnWorkers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Segments of 3,001 entries: 9 tasks whose first chunks differ from the manifest's (the driver cuts
    until its cuts meet theirs); one segment: the worker makes every chunk but the last."""
    monkeypatch.setattr(chunks, "SEGMENT_ENTRIES", segment)
    here = refstore.Registry(tmp_path / "here").log(_artifact())
    spread = local_or_s3_registry.log(_artifact(), executor=on_workers)

    assert spread.manifest_digest == here.manifest_digest
    assert _stored(local_or_s3_registry) == _stored(refstore.Registry(tmp_path / "here"))  # root + chunks
    assert len(_stored(local_or_s3_registry)) > 30
    assert [name for name, _ in on_workers.ran] == ["cut_segment"] * -(-ENTRIES // segment)
    reread = refstore.Registry(local_or_s3_registry.root).get("big:v0").manifest
    assert reread["d030/f021400.bin"].version_id == "v21400" and len(reread) == ENTRIES


def test_small_chunks_made_on_dask_workers_are_the_ones_made_here(
    on_workers: OnWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 100 to 700 entries (many cut at the maximum) from segments of 150 to 5,000 entries."""
    monkeypatch.setattr(chunks, "MIN_ENTRIES", 100)
    monkeypatch.setattr(chunks, "MAX_ENTRIES", 700)
    manifest = _artifact().manifest
    here = chunks.chunked(manifest)
    assert isinstance(here, chunks.PendingManifest) and len(here.pending) > 35
    for segment in (150, 333, 5_000):
        monkeypatch.setattr(chunks, "SEGMENT_ENTRIES", segment)
        spread = chunks.chunked(manifest, on_workers)
        assert isinstance(spread, chunks.PendingManifest)
        assert (spread.digest, spread.pending) == (here.digest, here.pending), segment
    assert len(on_workers.ran) == sum(-(-ENTRIES // s) for s in (150, 333, 5_000))
