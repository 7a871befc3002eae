"""Bad input: each case raises a named ``RefstoreError`` subclass and writes nothing.

Malformed URLs and unknown schemes, unsafe logical paths, names that break the rules, manifests from
elsewhere whose paths try to leave the download root, tampered or truncated manifests and records; a
corrupted cache entry is detected and fetched again; symbolic links never lead a download outside its root.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import refstore
from refstore.core.manifest import Manifest, ManifestEntry
from refstore.core.records import AliasRecord, VersionRecord, seal
from refstore.storage.hashing import hash_bytes

CONTENT_HEX = "00" * 16


def snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` (links not followed), with file sizes."""
    return {str(p.relative_to(root)): (p.lstat().st_size if p.is_file() else -1) for p in root.rglob("*")}


def assert_writes_nothing(tmp_path: Path, action: Callable[[], Any], error: type[Exception]) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(error):
        action()
    assert snapshot(tmp_path) == before


# -- URLs -------------------------------------------------------------------------------------------------

MALFORMED_URLS = [
    "",
    "   ",
    "s3://",
    "s3:///key",
    "s3://bad bucket/k",
    "s3://bucket/a//b",
    "s3://bucket/k?versionId=1",
    "gs://bucket/k#frag",
    "3s://x/y",
    "a\x00b",
    "http://",
    "http://[::1/x",
    "http://host:99999/x",
    "http://host:port/x",
    "https://user:pw@example.org/f",
    "https://example.org/f?X-Amz-Signature=abc&X-Amz-Credential=def",
    "https://example.org/f?token=abc",
    "https://acct.blob.core.windows.net/c/k?sv=2022-11-02&sig=abc",
    "s3://AKIA:secret@bucket/k",
]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_malformed_url_raises_invalid_url_and_writes_nothing(url: str, tmp_path: Path) -> None:
    assert_writes_nothing(
        tmp_path, lambda: refstore.Artifact("a").add_reference(url), refstore.InvalidURLError
    )
    assert_writes_nothing(tmp_path, lambda: refstore.Registry(url).artifacts(), refstore.InvalidURLError)


@pytest.mark.parametrize("url", ["ftp://host/file", "gopher://h/x", "hdfs://nn/path", "x-y+z.w://a"])
def test_unknown_scheme_raises_unsupported_scheme(url: str, tmp_path: Path) -> None:
    action = lambda: refstore.Artifact("a").add_reference(url)  # noqa: E731
    assert_writes_nothing(tmp_path, action, refstore.UnsupportedSchemeError)


def test_http_prefix_cannot_be_listed(tmp_path: Path) -> None:
    action = lambda: refstore.Artifact("a").add_reference("http://127.0.0.1:9/folder/")  # noqa: E731
    assert_writes_nothing(tmp_path, action, refstore.InvalidURLError)


# -- logical paths and names ------------------------------------------------------------------------------

UNSAFE_PATHS = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "./a",
    "a//b",
    "C:/x",
    "c:x",
    "x" * 1025,
    ".",
    "..",
]


@pytest.mark.parametrize("path", UNSAFE_PATHS, ids=repr)
def test_unsafe_logical_path_is_refused_on_the_way_in(path: str, tmp_path: Path) -> None:
    source = tmp_path / "f.txt"
    source.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "g.txt").write_text("y")
    assert_writes_nothing(
        tmp_path, lambda: refstore.Artifact("a").add_file(source, path), refstore.UnsafePathError
    )
    assert_writes_nothing(
        tmp_path, lambda: refstore.Artifact("a").add_dir(folder, path), refstore.UnsafePathError
    )
    action = lambda: refstore.Artifact("a").add_reference(source, path)  # noqa: E731
    assert_writes_nothing(tmp_path, action, refstore.UnsafePathError)


def test_unsafe_logical_path_is_refused_by_open(tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    for path in UNSAFE_PATHS:
        assert_writes_nothing(tmp_path, lambda p=path: version.open(p), refstore.UnsafePathError)


BAD_NAMES = ["", "bad name", "-leading", ".hidden", "a/b", "a:b", "x" * 129, "ünicode", "a\x00", "latest/x"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_and_aliases_are_refused(name: str, tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    registry = refstore.Registry(tmp_path / "registry")
    assert_writes_nothing(tmp_path, lambda: refstore.Artifact(name), refstore.InvalidNameError)
    assert_writes_nothing(
        tmp_path, lambda: registry.alias(version.qualified_name, name), refstore.InvalidNameError
    )
    assert_writes_nothing(tmp_path, lambda: registry.get(f"{name}:v0"), refstore.InvalidNameError)
    artifact = refstore.Artifact("other")
    artifact.add_file(tmp_path / "source" / "a.txt")
    assert_writes_nothing(tmp_path, lambda: registry.log(artifact, aliases=[name]), refstore.InvalidNameError)


@pytest.mark.parametrize("alias", ["latest", "v0", "v12"])
def test_reserved_aliases_are_refused(alias: str, tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    registry = refstore.Registry(tmp_path / "registry")
    assert_writes_nothing(
        tmp_path, lambda: registry.alias(version.qualified_name, alias), refstore.InvalidNameError
    )


# -- manifests and records from elsewhere -----------------------------------------------------------------


def _logged_copies(tmp_path: Path) -> refstore.ArtifactVersion:
    source = tmp_path / "source"
    if not source.exists():
        source.mkdir()
        (source / "a.txt").write_text("alpha")
        (source / "sub").mkdir()
        (source / "sub" / "b.txt").write_text("beta")
    artifact = refstore.Artifact("data")
    artifact.add_dir(source)
    return refstore.Registry(tmp_path / "registry").log(artifact)


def _entry(
    path: str, size: Any = 1, digest: Any = f"xxh3_128:{CONTENT_HEX}", ref: Any = None
) -> ManifestEntry:
    """An entry built without any check, as a hostile peer's library could."""
    return ManifestEntry(path, ref, size, digest)


def _plant_version(registry_dir: Path, name: str, entries: list[ManifestEntry]) -> None:
    """A manifest (canonical bytes of unchecked entries) and a correctly sealed version record."""
    data = Manifest.of(entries).to_bytes()
    hexdigest = hashlib.sha256(data).hexdigest()
    manifest = registry_dir / "manifests" / hexdigest[:2] / f"{hexdigest}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_bytes(data)
    record = VersionRecord(
        name, 0, "dataset", f"sha256:{hexdigest}", f"sha256:{'0' * 64}", "2024-01-01T00:00:00"
    )
    path = registry_dir / "artifacts" / name / "versions" / "0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record.to_bytes())


ESCAPING_PATHS = [
    "../evil.txt",
    "../../evil.txt",
    "/tmp/evil.txt",
    "a/../../evil.txt",
    "a\\..\\evil.txt",
    "a\x00b",
]


@pytest.mark.parametrize("path", ESCAPING_PATHS, ids=repr)
def test_manifest_from_elsewhere_cannot_leave_the_download_root(path: str, tmp_path: Path) -> None:
    registry_dir = tmp_path / "registry"
    _plant_version(registry_dir, "hostile", [_entry(path, ref=f"file://{tmp_path}/outside.txt")])
    version = lambda: refstore.Registry(registry_dir).get("hostile:v0")  # noqa: E731
    assert_writes_nothing(tmp_path, lambda: version().download(tmp_path / "dest"), refstore.UnsafePathError)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize(
    "entries",
    [[_entry("x" * 300)], [_entry("a"), _entry("a/b")]],  # a segment no filesystem takes; file and folder
    ids=["long-segment", "file-and-folder"],
)
def test_manifest_that_cannot_be_laid_out_writes_nothing(
    entries: list[ManifestEntry], tmp_path: Path
) -> None:
    _plant_version(tmp_path / "registry", "hostile", entries)
    version = refstore.Registry(tmp_path / "registry").get("hostile:v0")
    assert_writes_nothing(tmp_path, lambda: version.download(tmp_path / "dest"), refstore.UnsafePathError)


@pytest.mark.parametrize(
    "entry",
    [
        _entry("a.txt", digest="xxh3_128:../../../../outside"),  # a digest used as a file name
        _entry("a.txt", digest="md5:" + CONTENT_HEX),  # a stored copy must carry its xxh3_128
        _entry("a.txt", size=-1),
        _entry("a.txt", size="1"),
        _entry("a.txt", digest=None),
    ],
    ids=["digest-path", "copy-md5", "negative-size", "string-size", "no-digest"],
)
def test_malformed_manifest_entries_raise_manifest_error(entry: ManifestEntry, tmp_path: Path) -> None:
    _plant_version(tmp_path / "registry", "hostile", [entry])
    version = lambda: refstore.Registry(tmp_path / "registry").get("hostile:v0")  # noqa: E731
    assert_writes_nothing(tmp_path, lambda: version().download(tmp_path / "dest"), refstore.ManifestError)


def _manifest_file(registry_dir: Path) -> Path:
    return next((registry_dir / "manifests").rglob("*.json"))


def _flip_byte(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


TAMPERINGS: dict[str, Callable[[Path], None]] = {
    "manifest-byte": lambda r: _flip_byte(_manifest_file(r), 30),
    "manifest-truncated": lambda r: _manifest_file(r).write_bytes(_manifest_file(r).read_bytes()[:40]),
    "manifest-empty": lambda r: _manifest_file(r).write_bytes(b""),
    "record-field": lambda r: (r / "artifacts/data/versions/0.json").write_bytes(
        (r / "artifacts/data/versions/0.json").read_bytes().replace(b'"dataset"', b'"datasex"')
    ),
    "record-truncated": lambda r: (r / "artifacts/data/versions/0.json").write_bytes(
        (r / "artifacts/data/versions/0.json").read_bytes()[:50]
    ),
    "record-renumbered": lambda r: (r / "artifacts/data/versions/0.json").write_bytes(
        (r / "artifacts/data/versions/0.json").read_bytes().replace(b'"version":0', b'"version":1')
    ),
}


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=str)
def test_tampered_or_truncated_manifest_or_record_raises_integrity_error(tamper: str, tmp_path: Path) -> None:
    _logged_copies(tmp_path)
    TAMPERINGS[tamper](tmp_path / "registry")
    registry = refstore.Registry(tmp_path / "registry")
    action = lambda: registry.get("data:v0").download(tmp_path / "dest")  # noqa: E731
    assert_writes_nothing(tmp_path, action, refstore.IntegrityError)


def test_tampered_alias_records_raise_integrity_error(tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    registry = refstore.Registry(tmp_path / "registry")
    registry.alias(version.qualified_name, "prod")
    aliases = tmp_path / "registry" / "artifacts" / "data" / "aliases"
    (aliases / "prod" / "0.json").write_bytes(
        (aliases / "prod" / "0.json").read_bytes().replace(b'"version":0', b'"version":7')
    )
    assert_writes_nothing(tmp_path, lambda: registry.get("data:prod"), refstore.IntegrityError)
    (aliases / "staging").mkdir()
    (aliases / "staging" / "0.json").write_bytes(  # sealed, wrong name
        AliasRecord("data", "prod", 0, seq=0).to_bytes()
    )
    assert_writes_nothing(tmp_path, lambda: registry.get("data:staging"), refstore.IntegrityError)
    (aliases / "legacy.json").write_bytes(AliasRecord("data", "prod", 0).to_bytes())  # an older registry's
    assert_writes_nothing(tmp_path, lambda: registry.get("data:legacy"), refstore.IntegrityError)


@pytest.mark.parametrize(
    "change",
    [{"manifest_digest": "sha256:../../../etc/passwd"}, {"version": -1}, {"metadata": "x"}, {"name": "../x"}],
    ids=str,
)
def test_resealed_records_with_hostile_fields_raise_manifest_error(
    change: dict[str, Any], tmp_path: Path
) -> None:
    _logged_copies(tmp_path)
    path = tmp_path / "registry" / "artifacts" / "data" / "versions" / "0.json"
    body = {k: v for k, v in __import__("json").loads(path.read_bytes()).items() if k != "record_digest"}
    path.write_bytes(seal({**body, **change}))
    registry = refstore.Registry(tmp_path / "registry")
    assert_writes_nothing(tmp_path, lambda: registry.get("data:v0").manifest, refstore.ManifestError)


def test_altered_blob_in_the_registry_is_never_accepted(tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    blob = next(
        p for p in (tmp_path / "registry" / "blobs").rglob("*") if p.is_file() and p.read_bytes() == b"alpha"
    )
    blob.write_bytes(b"ALPHA")
    with pytest.raises(refstore.ObjectChangedError):
        version.download(tmp_path / "dest")
    assert not (tmp_path / "dest" / "a.txt").exists()
    cached = tmp_path / "refstore-cache" / "blobs"
    assert all(p.read_bytes() != b"ALPHA" for p in cached.rglob("*") if p.is_file())


# -- the cache --------------------------------------------------------------------------------------------


def _downloaded_once(s3_fs: Any, bucket: str, content: bytes, tmp_path: Path) -> refstore.ArtifactVersion:
    """A version referencing one S3 object, downloaded once (so its bytes are in the cache)."""
    s3_fs.pipe({f"{bucket}/data/f.bin": content})
    s3_fs.invalidate_cache()
    artifact = refstore.Artifact("s3data")
    artifact.add_reference(f"s3://{bucket}/data")
    version = refstore.Registry(tmp_path / "registry").log(artifact)
    version.download(tmp_path / "first")
    return version


def test_corrupted_cache_entry_is_detected_and_fetched_again(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _downloaded_once(s3_fs, s3_bucket, b"pinned bytes" * 1000, tmp_path)
    cache = tmp_path / "refstore-cache"
    blob = next(p for p in (cache / "blobs").rglob("*") if p.is_file())
    _flip_byte(blob, 5)
    mark = s3_server.mark()
    target = version.download(tmp_path / "second")
    assert (target / "f.bin").read_bytes() == b"pinned bytes" * 1000
    assert [r.split("?")[0] for r in s3_server.requests_since(mark)] == [f"GET /{s3_bucket}/data/f.bin"]
    assert blob.read_bytes() == b"pinned bytes" * 1000  # the entry was replaced by checked bytes


def test_corrupted_cache_pin_never_points_outside_the_cache(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _downloaded_once(s3_fs, s3_bucket, b"pinned", tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"pinned")  # same size as the entry: a lookup by that path would "match"
    for pin in (tmp_path / "refstore-cache" / "pins").rglob("*"):
        if pin.is_file():
            pin.write_text(os.path.relpath(victim, pin.parent.parent.parent / "blobs" / "xx"))
    target = version.download(tmp_path / "second")
    assert (target / "f.bin").read_bytes() == b"pinned"
    assert victim.read_bytes() == b"pinned"


def test_corrupted_cache_entry_of_a_copy_is_fetched_again_from_the_registry(tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    version.download(tmp_path / "first")
    blob = tmp_path / "refstore-cache" / "blobs" / hash_bytes(b"alpha")[9:11] / hash_bytes(b"alpha")[9:]
    blob.write_bytes(b"alphx")
    target = version.download(tmp_path / "second")
    assert (target / "a.txt").read_bytes() == b"alpha"
    assert blob.read_bytes() == b"alpha"


# -- symbolic links -----------------------------------------------------------------------------------------


def _folder_with_links(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("outside file")
    (outside / "deep" / "x.txt").write_text("outside folder")
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "real.txt").write_text("real")
    (folder / "file-link.txt").symlink_to(outside / "secret.txt")
    (folder / "dir-link").symlink_to(outside / "deep", target_is_directory=True)
    return folder


def test_symlinks_in_a_referenced_folder_files_followed_folders_not(tmp_path: Path) -> None:
    folder = _folder_with_links(tmp_path)
    referenced = refstore.Artifact("ref")
    referenced.add_reference(folder)
    copied = refstore.Artifact("copy")
    copied.add_dir(folder)
    for artifact in (referenced, copied):
        assert sorted(artifact.manifest) == ["file-link.txt", "real.txt"]
        assert artifact.manifest["file-link.txt"].digest == hash_bytes(b"outside file")


def test_download_replaces_a_file_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("must stay")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.txt").symlink_to(outside)
    version.download(dest)
    assert not (dest / "a.txt").is_symlink() and (dest / "a.txt").read_text() == "alpha"
    assert outside.read_text() == "must stay"


# "dest-sibling" starts like the root's path, "dest", without being inside it
@pytest.mark.parametrize("target", ["outside", "dest-sibling"])
def test_download_refuses_a_folder_symlink_leading_out_of_the_root(target: str, tmp_path: Path) -> None:
    version = _logged_copies(tmp_path)
    outside = tmp_path / target
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    assert_writes_nothing(tmp_path, lambda: version.download(dest), refstore.UnsafePathError)
    assert list(outside.iterdir()) == []
