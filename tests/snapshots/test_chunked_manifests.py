"""Large versions stored as chunked manifests (issue 16), on a local registry and on one in a moto bucket:
lookups and prefix downloads read only their chunks, a new version writes only the chunks that changed,
gc keeps what live versions use and frees the rest, and a damaged, missing or trashed chunk is handled.

The chunk sizes are made small (see ``small``) so that a few hundred files make the shapes of millions."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
from gc_race import race_gc

import refstore
from refstore.core import chunks
from refstore.core.chunks import ChunkedManifest
from refstore.snapshots.gc import collect_garbage
from refstore.snapshots.intents import TRASH, listing, manifest_path


@pytest.fixture(autouse=True)
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "SINGLE_LIMIT", 40)
    monkeypatch.setattr(chunks, "MIN_ENTRIES", 4)
    monkeypatch.setattr(chunks, "_ENTRY_MASK", 7)
    monkeypatch.setattr(chunks, "MAX_ENTRIES", 32)


@pytest.fixture
def registry(local_or_s3_registry: refstore.Registry) -> refstore.Registry:
    return local_or_s3_registry


def _tree(root: Path, folders: int = 12, files: int = 20) -> Path:
    for f in range(folders):
        (root / f"sub{f:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(files):
            (root / f"sub{f:02d}" / f"file{i:03d}.txt").write_text(f"folder {f} file {i}\n")
    return root


def _log(registry: refstore.Registry, data: Path) -> refstore.ArtifactVersion:
    artifact = refstore.Artifact("big")
    artifact.add_reference(data.as_uri(), name="data")
    return registry.log(artifact)


def _chunks(registry: refstore.Registry) -> set[str]:
    return set(listing(registry.store, ["manifests"]))


def _fresh(registry: refstore.Registry, ref: str) -> tuple[refstore.ArtifactVersion, ChunkedManifest]:
    version = refstore.Registry(registry.root).get(ref)
    manifest = version.manifest
    assert isinstance(manifest, ChunkedManifest)
    return version, manifest


def test_a_large_version_reads_only_the_chunks_it_needs(registry: refstore.Registry, tmp_path: Path) -> None:
    data = _tree(tmp_path / "data")
    logged = _log(registry, data)
    assert len(_chunks(registry)) > 10  # 240 entries: a root and its chunks
    version, manifest = _fresh(registry, "big:v0")
    assert manifest.digest == logged.manifest_digest and len(manifest) == 240
    assert version.manifest["data/sub05/file007.txt"].size == len("folder 5 file 7\n")
    assert manifest.chunks_read == 1
    out = version.download(tmp_path / "out", path_prefix="data/sub03", allow_local_refs=True)
    assert sorted(p.name for p in (out / "data" / "sub03").iterdir())[:2] == ["file000.txt", "file001.txt"]
    assert not (out / "data" / "sub04").exists()
    leaves = sum(1 for _ in manifest.leaf_refs())
    assert manifest.chunks_read <= 4 < leaves  # the chunks of one folder in twelve
    whole = version.download(tmp_path / "all", allow_local_refs=True)
    assert (whole / "data" / "sub11" / "file019.txt").read_text() == "folder 11 file 19\n"
    report = version.verify(allow_local_refs=True)
    assert report and len(report.ok) == 240


def test_a_new_version_writes_only_the_chunks_that_changed(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    data = _tree(tmp_path / "data")
    _log(registry, data)
    before = _chunks(registry)
    for i in range(20):
        (data / "sub06" / f"file{i:03d}.txt").write_text(f"changed {i}\n")
    v1 = _log(registry, data)
    written = _chunks(registry) - before
    assert v1.version == 1
    assert 1 <= len(written) <= len(before) // 3  # the root, and the chunks around sub06
    diff = refstore.Registry(registry.root).diff("big:v0", "big:v1")
    assert diff.modified == [f"data/sub06/file{i:03d}.txt" for i in range(20)]
    assert not diff.added and not diff.removed


def test_gc_keeps_the_chunks_live_versions_use_and_frees_the_others(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    data = _tree(tmp_path / "data")
    v0 = _log(registry, data)
    for i in range(20):
        (data / "sub00" / f"file{i:03d}.txt").write_text(f"changed {i}\n")
    v1 = _log(registry, data)
    only_v0 = {manifest_path(d) for d in chunks.stored_digests(v0.manifest)} - {
        manifest_path(d) for d in chunks.stored_digests(v1.manifest)
    }
    assert only_v0
    assert not collect_garbage(registry, yes=True).manifests  # both live: nothing to free
    registry.delete("big:v0")
    report = collect_garbage(registry, yes=True)
    assert set(report.manifests) == only_v0
    _, manifest = _fresh(registry, "big:v1")
    assert len(list(manifest.values())) == 240  # every chunk v1 uses is still there


def test_a_damaged_missing_or_trashed_chunk(registry: refstore.Registry, tmp_path: Path) -> None:
    _log(registry, _tree(tmp_path / "data"))
    _, manifest = _fresh(registry, "big:v0")
    leaf = list(manifest.leaf_refs())[3]
    relative = manifest_path(leaf.digest)
    good = registry.store.read(relative)
    registry.store.replace(relative, good.replace(b"file", b"fil3", 1))
    with pytest.raises(refstore.IntegrityError, match=f"chunk {leaf.digest} hashes to"):
        _fresh(registry, "big:v0")[0].manifest[leaf.first]
    registry.store.delete(relative)
    with pytest.raises(refstore.ArtifactNotFoundError, match="manifest chunk is missing"):
        _fresh(registry, "big:v0")[0].manifest[leaf.first]
    registry.store.create(f"{TRASH}/{relative}", good)  # where a gc killed half-way left it
    assert _fresh(registry, "big:v0")[0].manifest[leaf.first].path == leaf.first
    assert registry.store.read(relative) == good  # put back


CHUNKED_LOGGER = textwrap.dedent(
    """
    import pathlib, sys, time
    import refstore
    from refstore.core import chunks

    chunks.SINGLE_LIMIT, chunks.MIN_ENTRIES, chunks._ENTRY_MASK, chunks.MAX_ENTRIES = 40, 4, 7, 32
    root, work, count = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
    registry = refstore.Registry(root)
    claim = refstore.Registry._claim_version

    def slow_claim(self, *args, **kwargs):  # widens the race: the chunks are found, not yet used
        time.sleep(0.3)
        return claim(self, *args, **kwargs)

    refstore.Registry._claim_version = slow_claim
    print("ready", flush=True)
    for k in range(count):
        folder = work / f"v{k}"
        folder.mkdir(parents=True)
        for name, data in _files(k).items():
            (folder / name).write_bytes(data)
        artifact = refstore.Artifact("model", type="model")
        artifact.add_dir(folder)
        registry.log(artifact)
        time.sleep(0.02)
    print("done", flush=True)
    """
)


def _files(k: int) -> dict[str, bytes]:
    """Version ``k``'s files: 60 copies, so its manifest is chunked."""
    return {f"f{i:02d}.bin": f"{k} {i}".encode() for i in range(60)}


def test_gc_racing_chunked_logs_never_deletes_a_chunk_a_version_uses(tmp_path: Path) -> None:
    """Another process logs chunked versions whose chunks and root gc sees as orphans (planted again and
    again, as a deleted version leaves them) while gc runs in a loop: every version stays whole."""
    from refstore.core.manifest import Manifest, new_entry
    from refstore.storage.hashing import hash_bytes

    count = 12
    registry = refstore.Registry(tmp_path / "shared-registry")
    registry.create()
    planted: dict[str, bytes] = {}
    for k in range(count):
        entries = [new_entry(n, None, len(d), hash_bytes(d), None, None) for n, d in _files(k).items()]
        made = chunks.chunked(Manifest.of(entries))
        assert isinstance(made, chunks.PendingManifest)
        planted.update(made.pending)
        planted[made.digest] = made.to_bytes()

    def plant() -> None:
        for digest, data in planted.items():
            with contextlib.suppress(FileExistsError):
                registry.store.create(manifest_path(digest), data)

    plant()
    source = CHUNKED_LOGGER.replace("_files(k)", "{f'f{i:02d}.bin': f'{k} {i}'.encode() for i in range(60)}")

    def missing() -> list[str]:
        """What the versions there now use and gc took (planting again would hide it: check first)."""
        gone: list[str] = []
        reader = refstore.Registry(registry.root)
        for version in reader.versions("model") if "model" in reader.artifacts() else []:
            root = manifest_path(version.manifest_digest)
            if not registry.store.exists(root):
                gone.append(root)
                continue
            manifest = ChunkedManifest(registry.store.read(root), version.manifest_digest, {}.__getitem__)
            gone += [
                p for p in map(manifest_path, chunks.stored_digests(manifest)) if not registry.store.exists(p)
            ]
        return gone

    def check_then_plant() -> None:
        assert missing() == []
        plant()

    race_gc(registry, source, [str(tmp_path / "work"), str(count)], check_then_plant)
    assert missing() == []
    versions = registry.versions("model")
    assert [v.version for v in versions] == list(range(count))
    for version in versions:
        fresh = refstore.Registry(registry.root).get(version.qualified_name)
        assert isinstance(fresh.manifest, ChunkedManifest)
        out = fresh.download(tmp_path / "out" / version.qualified_name, skip_cache=True)
        assert (out / "f59.bin").read_bytes() == f"{version.version} 59".encode()


def test_refstore_urls_read_only_the_chunks_on_their_way(
    registry: refstore.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``refstore://`` open, cat and info of one file read the chunk that holds it, not the version."""
    import fsspec

    _log(registry, _tree(tmp_path / "data"))
    reads: list[str] = []
    real = ChunkedManifest._read_bytes

    def counted(self: ChunkedManifest, ref: chunks.ChunkRef, what: str) -> bytes:
        reads.append(ref.digest)
        return real(self, ref, what)

    monkeypatch.setattr(ChunkedManifest, "_read_bytes", counted)
    fs = fsspec.filesystem("refstore", root=registry.root, skip_instance_cache=True)
    assert fs.cat("big:v0/data/sub07/file003.txt") == b"folder 7 file 3\n"
    with fs.open("big:v0/data/sub07/file004.txt") as f:
        assert f.read() == b"folder 7 file 4\n"
    assert fs.info("big:v0/data/sub07/file005.txt")["size"] == len("folder 7 file 5\n")
    assert len(set(reads)) <= 2  # a chunk, and its neighbour if sub07 sits on a boundary
    assert len(fs.ls("big:v0/data/sub07")) == 20  # a folder listing reads the paths of the version
