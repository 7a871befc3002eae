"""Canonical manifest bytes, the two digests, and reading untrusted manifests back."""

from __future__ import annotations

import hashlib
import json

import pytest

import refstore
from refstore.core.manifest import Manifest, ManifestDiff, ManifestEntry


def _entries() -> list[ManifestEntry]:
    return [
        ManifestEntry("b/x.bin", "s3://bkt/p/b/x.bin", 10, "etag:abc", "abc", "v1"),
        ManifestEntry("a.txt", "s3://bkt/p/a.txt", 3, "etag:def", "def", None),
        ManifestEntry("c.txt", None, 5, "xxh3_128:" + "00ff" * 8),
    ]


def test_canonical_bytes_do_not_depend_on_insertion_order() -> None:
    forward = Manifest.of(_entries())
    backward = Manifest.of(reversed(_entries()))
    assert forward.to_bytes() == backward.to_bytes()
    assert forward.digest == backward.digest
    text = forward.to_bytes().decode()
    assert '"format":"refstore.manifest/2"' in text and ", " not in text


def test_content_digest_ignores_locations_but_manifest_digest_does_not() -> None:
    original = Manifest.of(_entries())
    moved = Manifest.of(
        ManifestEntry(e.path, e.ref and e.ref.replace("bkt", "other"), e.size, e.digest, e.etag, e.version_id)
        for e in _entries()
    )
    assert original.content_digest == moved.content_digest
    assert original.digest != moved.digest


def test_round_trip_with_digest_check() -> None:
    manifest = Manifest.of(_entries())
    again = Manifest.from_bytes(manifest.to_bytes(), expected_digest=manifest.digest)
    assert dict(again) == dict(manifest)


def test_tampered_manifest_raises_integrity_error() -> None:
    manifest = Manifest.of(_entries())
    tampered = manifest.to_bytes().replace(b'"b/x.bin",0,10,', b'"b/x.bin",0,11,')
    assert tampered != manifest.to_bytes()
    with pytest.raises(refstore.IntegrityError, match="expected sha256:"):
        Manifest.from_bytes(tampered, expected_digest=manifest.digest)
    with pytest.raises(refstore.IntegrityError):
        Manifest.from_bytes(manifest.to_bytes()[:-7], expected_digest=manifest.digest)


def test_format_1_manifests_are_still_read_and_keep_their_digest() -> None:
    entries = {e.path: e.to_json() for e in _entries()}
    old = json.dumps(
        {"format": "refstore.manifest/1", "entries": entries}, sort_keys=True, separators=(",", ":")
    )
    digest = "sha256:" + hashlib.sha256(old.encode()).hexdigest()
    manifest = Manifest.from_bytes(old.encode(), expected_digest=digest)
    assert dict(manifest) == dict(Manifest.of(_entries()))
    assert manifest.to_bytes() == old.encode() and manifest.digest == digest
    assert manifest.content_digest == Manifest.of(_entries()).content_digest


def test_format_2_shares_ref_bases_and_etag_digests() -> None:
    manifest = Manifest.of(_entries())
    body = json.loads(manifest.to_bytes())
    assert body["bases"] == ["s3://bkt/p/"]
    assert body["entries"][0] == ["a.txt", 0, 3, 0, "def", None]
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


@pytest.mark.parametrize(
    "rows",
    [
        [["a", 5, 1, "md5:00", None, None]],  # no such base
        [["a", None, 1, 0, None, None]],  # etag digest without an etag
        [["a", "s3://b/a", 1, "md5:00", None]],  # short row
        [["a", "s3://b/a", 1, "md5:00", None, None], ["a", "s3://b/a", 1, "md5:00", None, None]],
    ],
)
def test_malformed_format_2_rows_raise_manifest_error(rows: list[list[object]]) -> None:
    body = {"bases": [], "entries": rows, "fields": ["path", "ref", "size", "digest", "etag", "version_id"]}
    body["format"] = "refstore.manifest/2"
    with pytest.raises(refstore.ManifestError):
        Manifest.from_bytes(json.dumps(body).encode())


def test_manifest_from_elsewhere_with_escaping_path_is_refused() -> None:
    body = {"format": "refstore.manifest/1", "entries": {"../../etc/passwd": {"size": 1, "digest": "md5:00"}}}
    with pytest.raises(refstore.UnsafePathError, match="etc/passwd"):
        Manifest.from_bytes(json.dumps(body).encode())


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"format":"other","entries":{}}',
        b'{"format":"refstore.manifest/1","entries":{"a":{}}}',
    ],
)
def test_malformed_manifests_raise_manifest_error(body: bytes) -> None:
    with pytest.raises(refstore.ManifestError):
        Manifest.from_bytes(body)


def test_diff() -> None:
    old = Manifest.of(_entries())
    new_entries = [e for e in _entries() if e.path != "a.txt"]
    new_entries[0] = ManifestEntry("b/x.bin", "s3://bkt/p/b/x.bin", 11, "etag:zzz", "zzz", "v2")
    new_entries.append(ManifestEntry("d.txt", None, 1, "xxh3_128:01"))
    diff = ManifestDiff.between(old, Manifest.of(new_entries))
    assert (diff.added, diff.removed, diff.modified) == (["d.txt"], ["a.txt"], ["b/x.bin"])


def test_streamed_bytes_and_digests_equal_canonical_json_of_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from refstore.core import manifest as module
    from refstore.core.manifest import canonical_json

    monkeypatch.setattr(module, "_CHUNK", 7)  # several pieces written
    monkeypatch.setattr(module, "_PIECE", 64)  # several pieces read

    entries = [
        ManifestEntry(f"d/{i:03d}-é.bin", f"s3://bkt/p/d/{i:03d}-é.bin", i, f"etag:{i:x}", f"{i:x}", None)
        for i in range(25)
    ]
    entries += [
        ManifestEntry("z/renamed.bin", "s3://bkt/elsewhere.bin", 1, "md5:00", "00", "v9"),
        *_entries(),
    ]
    manifest = Manifest.of(entries)
    body = json.loads(manifest.to_bytes())
    assert canonical_json(body) == manifest.to_bytes()
    content = {"format": "refstore.content/1", "entries": {e.path: [e.size, e.digest] for e in entries}}
    assert manifest.content_digest == "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()
    assert manifest.digest == "sha256:" + hashlib.sha256(manifest.to_bytes()).hexdigest()
    pretty = json.dumps(body, indent=1).encode()  # valid but not canonical: read by the whole-document parser
    assert Manifest.from_bytes(pretty) == Manifest.from_bytes(manifest.to_bytes()) == manifest
