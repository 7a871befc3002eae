"""Canonical manifest bytes, the two digests, and reading untrusted manifests back."""

from __future__ import annotations

import json

import pytest

import refstore
from refstore.manifest import Manifest, ManifestDiff, ManifestEntry


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
    assert '"format":"refstore.manifest/1"' in text and ", " not in text


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
    tampered = manifest.to_bytes().replace(b'"size":10', b'"size":11')
    with pytest.raises(refstore.IntegrityError, match="expected sha256:"):
        Manifest.from_bytes(tampered, expected_digest=manifest.digest)
    with pytest.raises(refstore.IntegrityError):
        Manifest.from_bytes(manifest.to_bytes()[:-7], expected_digest=manifest.digest)


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
