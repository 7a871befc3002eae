"""Chunked manifests (format 4): the same entries and content digest as one document, content-defined
boundaries that change only around an edit, lookups and diffs that read only the chunks they need, and
every chunk checked against its digest and its ref."""

from __future__ import annotations

import hashlib
import json

import pytest

from refstore.core import chunks
from refstore.core.exceptions import IntegrityError, ManifestError
from refstore.core.manifest import Manifest, ManifestDiff, ManifestEntry, new_entry


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 8 to 64 entries (16 on average), index chunks of 2 to 16 refs, a root of 8 refs at most:
    the shapes of 10^8 entries, at the size of a test."""
    monkeypatch.setattr(chunks, "SINGLE_LIMIT", 50)
    monkeypatch.setattr(chunks, "MIN_ENTRIES", 8)
    monkeypatch.setattr(chunks, "_ENTRY_MASK", 15)
    monkeypatch.setattr(chunks, "MAX_ENTRIES", 64)
    monkeypatch.setattr(chunks, "MIN_REFS", 2)
    monkeypatch.setattr(chunks, "_REF_MASK", 3)
    monkeypatch.setattr(chunks, "MAX_REFS", 16)
    monkeypatch.setattr(chunks, "ROOT_REFS", 8)


def _entries(n: int, prefix: str = "d") -> list[ManifestEntry]:
    return [
        new_entry(
            f"{prefix}{i % 7}/f{i:06d}.bin",
            f"s3://bkt/data/{prefix}{i % 7}/f{i:06d}.bin",
            i,
            f"etag:{i:032x}",
            f"{i:032x}",
            f"v{i}" if i % 3 else None,
        )
        for i in range(n)
    ]


class Stored(dict[str, bytes]):
    """A chunk store that counts what is put."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, digest: str, data: bytes) -> None:
        self.puts += 1
        self[digest] = data


def _stored(manifest: Manifest, store: Stored) -> chunks.ChunkedManifest:
    made = chunks.chunked(manifest)
    assert isinstance(made, chunks.PendingManifest)
    store.update(made.pending)
    return chunks.ChunkedManifest(made.to_bytes(), made.digest, store.__getitem__)


def test_same_entries_and_content_digest_as_one_document(small: None) -> None:
    flat = Manifest.of(_entries(3000))
    store = Stored()
    read = _stored(flat, store)
    assert read.content_digest == flat.content_digest  # decides whether a log makes a new version
    assert list(read) == list(flat) and dict(read.items()) == dict(flat.items())
    assert len(read) == 3000 and read.total_size == flat.total_size
    assert read.digest == "sha256:" + hashlib.sha256(read.to_bytes()).hexdigest()
    assert json.loads(read.to_bytes())["depth"] == 1  # more than 8 chunks: an index level
    sizes = [json.loads(data)["entries"] for data in store.values() if b'"refstore.chunk/1"' in data]
    assert sum(map(len, sizes)) == 3000 and all(len(rows) <= 64 for rows in sizes)
    assert chunks.chunked(flat).digest == read.digest  # deterministic


def test_small_manifests_stay_one_document() -> None:
    flat = Manifest.of(_entries(100))
    assert chunks.chunked(flat) is flat
    assert chunks.read_manifest(flat.to_bytes(), flat.digest, {}.__getitem__) == flat


def test_an_insert_or_a_removed_folder_changes_only_the_chunks_around_it(small: None) -> None:
    base = _entries(3000)
    store = Stored()
    first = _stored(Manifest.of(base), store)
    inserted = new_entry("d3/f001500.binx", "s3://bkt/x", 1, "etag:" + "a" * 32, "a" * 32, None)
    writer_store = Stored()
    writer = chunks.ChunkWriter(lambda d, b: writer_store.put(d, b) if d not in store else None)
    writer.add_all(sorted([*base, inserted], key=lambda e: e.path))
    writer.finish()
    assert 1 <= writer_store.puts <= 4  # the chunk that took it, the index chunk above it
    removed = sorted((e for e in base if not e.path.startswith("d5/")), key=lambda e: e.path)  # contiguous
    again = Stored()
    writer = chunks.ChunkWriter(lambda d, b: again.put(d, b) if d not in store else None)
    writer.add_all(removed)
    writer.finish()
    leaves = sum(1 for d in store.values() if b'"refstore.chunk/1"' in d)
    assert again.puts <= 5 < leaves // 4  # the chunks at both ends of the gap, and index chunks
    assert first.content_digest != chunks.chunked(Manifest.of(removed)).content_digest


def test_a_lookup_reads_only_the_chunks_on_its_way(small: None) -> None:
    store = Stored()
    read = _stored(Manifest.of(_entries(3000)), store)
    assert read["d4/f000004.bin"].size == 4
    assert read.chunks_read == 2  # an index chunk, a chunk of entries
    with pytest.raises(KeyError):
        read["d4/nothing"]
    assert "d9/x" not in read
    before = read.chunks_read
    under = list(chunks.entries_under(read, "d2"))
    assert len(under) == len([e for e in _entries(3000) if e.path.startswith("d2/")])
    leaves = sum(1 for d in store.values() if b'"refstore.chunk/1"' in d)
    assert read.chunks_read - before < leaves / 3  # about a seventh of the chunks, plus index chunks


def test_diff_skips_chunks_both_versions_share(small: None) -> None:
    base = _entries(3000)
    changed = [e for e in base if not e.path.startswith("d1/f0000")]
    changed += [new_entry("d6/zz", "s3://bkt/zz", 5, "etag:" + "b" * 32, "b" * 32, None)]
    changed = [
        new_entry(e.path, e.ref, e.size + 1, "etag:" + "c" * 32, "c" * 32, None)
        if e.path == "d5/f002000.bin"
        else e
        for e in changed
    ]
    store = Stored()
    old, new = _stored(Manifest.of(base), store), _stored(Manifest.of(changed), store)
    found = chunks.diff(old, new)
    assert found == ManifestDiff.between(Manifest.of(base), Manifest.of(changed))
    assert found.added == ["d6/zz"] and found.modified == ["d5/f002000.bin"] and len(found.removed) == 15
    leaves = sum(1 for d in store.values() if b'"refstore.chunk/1"' in d)
    assert old.chunks_read + new.chunks_read < leaves / 3


def test_every_chunk_is_checked(small: None) -> None:
    flat = Manifest.of(_entries(3000))
    store = Stored()
    good = _stored(flat, store)
    leaf = next(good.leaf_refs())
    data = store[leaf.digest]
    # bytes that do not hash to the digest the tree names
    bad = Stored()
    bad.update(store)
    bad[leaf.digest] = data.replace(b'"d0/f000000.bin"', b'"d0/f000000.biN"', 1)
    damaged = chunks.ChunkedManifest(good.to_bytes(), good.digest, bad.__getitem__)
    with pytest.raises(IntegrityError, match="hashes to"):
        list(damaged)
    # another valid chunk served under this digest
    other = next(r for r in good.leaf_refs() if r.digest != leaf.digest)
    bad[leaf.digest] = store[other.digest]
    with pytest.raises(IntegrityError, match="hashes to"):
        chunks.ChunkedManifest(good.to_bytes(), good.digest, bad.__getitem__)[leaf.first]
    # a root whose ref lies about its chunk's count is refused whole (its bytes are checked too)
    root = json.loads(good.to_bytes())
    root["count"] += 1
    forged = json.dumps(root, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(IntegrityError):
        chunks.ChunkedManifest(forged, "sha256:" + hashlib.sha256(forged).hexdigest(), store.__getitem__)
    with pytest.raises(IntegrityError, match="hashes to"):
        chunks.ChunkedManifest(forged, good.digest, store.__getitem__)


def test_a_chunk_that_does_not_hold_what_its_ref_says_is_refused(small: None) -> None:
    entries = _entries(200)
    store = Stored()
    good = _stored(Manifest.of(entries), store)
    ref = next(good.leaf_refs())
    chunk = json.loads(store[ref.digest])
    chunk["entries"] = chunk["entries"][:-1]  # one entry dropped, re-hashed: its ref still counts it
    data = json.dumps(chunk, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    root = json.loads(good.to_bytes())
    root["chunks"] = [[*r[:4], digest] if r[4] == ref.digest else r for r in root["chunks"]]
    forged = json.dumps(root, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    store[digest] = data
    forged_manifest = chunks.ChunkedManifest(
        forged, "sha256:" + hashlib.sha256(forged).hexdigest(), store.__getitem__
    )
    with pytest.raises(IntegrityError, match="does not hold what its ref says"):
        forged_manifest[ref.first]


def test_writer_refuses_entries_out_of_order() -> None:
    writer = chunks.ChunkWriter(lambda d, b: None)
    a, b = _entries(2)
    writer.add(b)
    with pytest.raises(ManifestError, match="out of order"):
        writer.add(a)


def test_real_chunk_sizes_on_sixty_thousand_entries() -> None:
    flat = Manifest.of(_entries(60_000))
    made = chunks.chunked(flat)
    assert isinstance(made, chunks.PendingManifest)
    counts = [r.count for r in made.leaf_refs()]
    assert sum(counts) == 60_000 and len(counts) >= 3
    assert all(chunks.MIN_ENTRIES <= c <= chunks.MAX_ENTRIES for c in counts[:-1])
    assert made.content_digest == flat.content_digest


def test_paths_are_read_without_entries_whatever_the_names_hold(small: None) -> None:
    """The paths-only read gives exactly the manifest's paths: quotes, backslashes, non-ASCII, and refs
    that hold ``],["`` (where a cut of the bytes would see a row start) alike."""
    odd = ['q"uote', "back\\slash", "é/ü", "tab\there", "x],[", "[[y", "plain"]
    entries = [
        new_entry(f"{name}/{i:04d}", f"{base}/{i}/],[", i, "etag:" + "1" * 32, "1" * 32, None)
        if i % 5 == 0
        else new_entry(f"{name}/{i:04d}", None, i, "xxh3_128:" + "0" * 32, None, None)
        for base in ["s3://bkt"]
        for name in odd
        for i in range(40)
    ]
    assert b'],[",' in chunks._chunk_bytes(sorted(entries, key=lambda e: e.path))  # the cut's trap
    flat = Manifest.of(entries)
    read = _stored(flat, Stored())
    assert read.paths() == list(flat)
    plain = Manifest.of([e for e in entries if e.path.startswith("plain/") and e.ref is None])
    assert chunks._scanned_paths(chunks._chunk_bytes(list(plain.values()))) == list(plain)
