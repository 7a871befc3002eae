"""The download cache: bytes on disk once, downloads that never share a file, edits that never leak.

A cold download's files are hard links to the cache's checked bytes; a later download beside it gets
copies; a download made after the earlier one is gone gets links again. Every read from the cache
re-hashes, so a download edited in place (which edits the cached file it shares) is fetched again.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import refstore
from refstore.core.manifest import ManifestEntry
from refstore.storage import cache as cache_module
from refstore.storage import cache_bounds
from refstore.storage.cache import Cache

CONTENT = {f"part-{i}.bin": f"pinned bytes {i}\n".encode() * 500 for i in range(3)}


def _s3_version(s3_fs: Any, bucket: str, tmp_path: Path) -> refstore.ArtifactVersion:
    s3_fs.pipe({f"{bucket}/data/{name}": data for name, data in CONTENT.items()})
    s3_fs.invalidate_cache()
    artifact = refstore.Artifact("cached")
    artifact.add_reference(f"s3://{bucket}/data")
    return refstore.Registry(tmp_path / "registry").log(artifact)


def _links(folder: Path) -> dict[str, int]:
    return {name: os.stat(folder / name).st_nlink for name in CONTENT}


def _gets(server: Any, mark: int) -> list[str]:
    return [r for r in server.requests_since(mark) if r.startswith("GET ")]


def test_cold_download_shares_the_cached_file_and_later_downloads_get_copies(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _s3_version(s3_fs, s3_bucket, tmp_path)
    first = version.download(tmp_path / "first")
    assert _links(first) == dict.fromkeys(CONTENT, 2)  # the download and the cache: one copy on disk
    mark = s3_server.mark()
    second = version.download(tmp_path / "second")
    assert _gets(s3_server, mark) == []
    assert _links(second) == dict.fromkeys(CONTENT, 1)  # never the same file as another download
    assert _links(first) == dict.fromkeys(CONTENT, 2)
    for name, data in CONTENT.items():
        assert (second / name).read_bytes() == data


def test_warm_download_links_again_once_the_earlier_download_is_gone(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _s3_version(s3_fs, s3_bucket, tmp_path)
    first = version.download(tmp_path / "first")
    for name in CONTENT:
        (first / name).unlink()
    mark = s3_server.mark()
    again = version.download(tmp_path / "again")
    assert _gets(s3_server, mark) == []
    assert _links(again) == dict.fromkeys(CONTENT, 2)
    assert {name: (again / name).read_bytes() for name in CONTENT} == CONTENT


def test_a_download_edited_in_place_is_never_served_from_the_cache(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _s3_version(s3_fs, s3_bucket, tmp_path)
    first = version.download(tmp_path / "first")
    with open(first / "part-1.bin", "r+b") as handle:  # in place: the cached file changes with it
        handle.write(b"EDITED")
    mark = s3_server.mark()
    second = version.download(tmp_path / "second")
    assert [r.split("?")[0] for r in _gets(s3_server, mark)] == [f"GET /{s3_bucket}/data/part-1.bin"]
    assert {name: (second / name).read_bytes() for name in CONTENT} == CONTENT
    assert (first / "part-1.bin").read_bytes().startswith(b"EDITED")  # the user's edit is theirs


def test_download_over_an_earlier_one_replaces_each_file_whole(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _s3_version(s3_fs, s3_bucket, tmp_path)
    dest = version.download(tmp_path / "dest")
    for name in ("part-0.bin", "part-2.bin"):
        (dest / name).unlink()
    (dest / "part-2.bin").write_bytes(b"stale")  # a new file at the place of a download's file
    mark = s3_server.mark()
    version.download(dest, overwrite=True)
    assert _gets(s3_server, mark) == []
    assert {name: (dest / name).read_bytes() for name in CONTENT} == CONTENT
    assert sorted(os.listdir(dest)) == sorted(CONTENT)  # no scratch file left beside them


def test_copies_from_the_registry_are_linked_from_the_cache_too(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_bytes(b"alpha")
    artifact = refstore.Artifact("copies")
    artifact.add_dir(source)
    version = refstore.Registry(tmp_path / "registry").log(artifact)
    first = version.download(tmp_path / "first")
    assert os.stat(first / "a.txt").st_nlink == 2
    second = version.download(tmp_path / "second")
    assert os.stat(second / "a.txt").st_nlink == 1
    assert (second / "a.txt").read_bytes() == b"alpha"


def test_a_download_records_its_pins_in_one_pack_that_later_downloads_read(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _s3_version(s3_fs, s3_bucket, tmp_path)
    version.download(tmp_path / "first")
    pins = Path(os.environ["REFSTORE_CACHE_DIR"]) / "pins"
    written = [p for p in pins.rglob("*") if p.is_file()]
    assert [p.parent.name for p in written] == ["packs"]  # one file for the download, not one per object
    lines = written[0].read_text().splitlines()
    assert len(lines) == len(CONTENT) and all(len(line) == 64 + 1 + 32 for line in lines)

    mark = s3_server.mark()
    assert _tree(version.download(tmp_path / "second")) == CONTENT
    assert _gets(s3_server, mark) == []  # a new process's cache found the bytes through the pack

    # pins written one file per pin (by refstore before packs) are still read
    written[0].unlink()
    for line in lines:
        key, content = line.split()
        (pins / key[:2]).mkdir(exist_ok=True)
        (pins / key[:2] / key).write_text(content)
    mark = s3_server.mark()
    assert _tree(version.download(tmp_path / "third")) == CONTENT
    assert _gets(s3_server, mark) == []


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_pins_remembered_by_many_threads_all_reach_packs_that_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins go out in packs of PACK_PINS while threads keep remembering; past MAX_PACKS the packs merge
    into one; a new cache (another process) knows every pin, and a prune to 0 removes them all."""
    monkeypatch.setattr(cache_module, "PACK_PINS", 7)
    monkeypatch.setattr(cache_module, "MAX_PACKS", 4)
    cache = Cache(tmp_path / "cache")
    entries = [ManifestEntry(f"f{i}", f"s3://b/f{i}", 1, "md5:00", version_id=str(i)) for i in range(200)]
    contents = {e.path: f"{i:032x}" for i, e in enumerate(entries)}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda e: cache.remember(e, contents[e.path]), entries))
    cache.write_pins()
    assert 1 <= len(cache.pack_files()) <= 4 + 1  # merged as they piled up
    later = Cache(tmp_path / "cache")
    assert {e.path: later.known_content(e) for e in entries} == contents
    assert cache_bounds.prune(later, 0).pins_removed == len(entries)
    assert Cache(tmp_path / "cache").known_content(entries[0]) is None
