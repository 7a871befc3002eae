"""A download never destroys local work (issue 12, item 2), counted on real servers.

Files already holding the pinned bytes are kept and not fetched again; files with other bytes stop the
download before it writes anything (``overwrite=True`` / ``--force`` replaces them); files the version
does not hold are listed (``clean=True`` / ``--clean`` removes them, never through a link); a download that
fails half-way says how many entries are in place, and running it again completes it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from faultproxy import FaultProxy

import refstore
from refstore.surfaces.cli import main

#: Tests that do not count requests run on moto and on Ceph RGW.
S3_SERVERS = ("moto", "rgw")
SALES = {
    "raw/sales.csv": b"day,amount\n1,10\n2,20\n",
    "raw/stores.csv": b"id\n1\n",
    "README": b"sales data\n",
}


def _log(fs: Any, bucket: str, files: dict[str, bytes], name: str = "s3sales") -> refstore.ArtifactVersion:
    fs.pipe({f"{bucket}/sales/{path}": data for path, data in files.items()})
    fs.invalidate_cache()
    artifact = refstore.Artifact(name)
    artifact.add_reference(f"s3://{bucket}/sales")
    return refstore.Registry().log(artifact)


def _gets(server: Any, mark: int) -> list[str]:
    return [r.split("?")[0] for r in server.requests_since(mark) if r.startswith("GET ")]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Another machine's view: an empty download cache, so nothing is known about the pinned bytes."""
    monkeypatch.setenv("REFSTORE_CACHE_DIR", str(tmp_path / name))


# -- local edits are never replaced ----------------------------------------------------------------------


def test_an_edited_file_stops_the_download_before_it_writes_anything(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    version = _log(s3_fs, s3_bucket, SALES)
    dest = version.download(tmp_path / "dir")
    (dest / "raw" / "sales.csv").write_bytes(b"day,amount\n1,10\n2,25\n3,30\n")  # the user's edit
    (dest / "README").unlink()  # would be restored by a download that went ahead
    with pytest.raises(refstore.LocalChangesError) as raised:
        version.download(dest)
    assert isinstance(raised.value, FileExistsError)
    message = str(raised.value)
    assert "raw/sales.csv" in message and "1 local file(s)" in message and "\n" not in message
    assert (dest / "raw" / "sales.csv").read_bytes() == b"day,amount\n1,10\n2,25\n3,30\n"
    assert not (dest / "README").exists(), "nothing is written when the download refuses"


def test_the_refusal_names_the_first_few_files_and_the_count(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(8):
        (source / f"f{i}.txt").write_text(f"file {i}")
    artifact = refstore.Artifact("many")
    artifact.add_reference(source)
    version = refstore.Registry().log(artifact)
    dest = version.download(tmp_path / "dest")
    for i in range(8):
        (dest / f"f{i}.txt").write_text(f"edited {i}")
    with pytest.raises(refstore.LocalChangesError, match=r"8 local file\(s\).*f0\.txt.*f4\.txt.* and 3 more"):
        version.download(dest)


def test_overwrite_replaces_changed_files_and_keeps_the_right_ones(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _log(s3_fs, s3_bucket, SALES)
    dest = version.download(tmp_path / "dir")
    (dest / "raw" / "sales.csv").write_bytes(b"edited")
    before = _inodes(dest)
    _fresh_cache(tmp_path, monkeypatch, "other-cache")
    mark = s3_server.mark()
    version.download(dest, overwrite=True)
    assert _tree(dest) == SALES
    assert _gets(s3_server, mark) == [f"GET /{s3_bucket}/sales/raw/sales.csv"]  # only the changed file
    after = _inodes(dest)
    assert after["README"] == before["README"] and after["raw/stores.csv"] == before["raw/stores.csv"]


# -- files already right are kept, with no request ---------------------------------------------------------


def test_files_in_place_are_not_fetched_again_on_this_machine(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """The cache's record of each pin (xxh3_128 of its bytes) checks them, even with the bytes evicted."""
    version = _log(s3_fs, s3_bucket, SALES)
    dest = version.download(tmp_path / "dir", skip_cache=True)  # a record is kept even then
    (dest / "README").unlink()
    before = _inodes(dest)
    mark = s3_server.mark()
    version.download(dest, skip_cache=True)
    assert _gets(s3_server, mark) == [f"GET /{s3_bucket}/sales/README"]
    assert _tree(dest) == SALES
    assert {k: v for k, v in _inodes(dest).items() if k != "README"} == before


def test_single_part_s3_objects_are_checked_by_their_md5_etag_with_an_empty_cache(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _log(s3_fs, s3_bucket, SALES)
    dest = version.download(tmp_path / "dir")
    _fresh_cache(tmp_path, monkeypatch, "empty-cache")
    mark = s3_server.mark()
    version.download(dest)
    assert s3_server.requests_since(mark) == []
    assert _tree(dest) == SALES


def test_multipart_objects_are_fetched_once_to_compare_then_known(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multipart ETag is no hash of the bytes: with no record of them, the pinned object is fetched into
    the cache (never to the destination) and compared; the record then makes the next check free."""
    part = 5 * 2**20
    data = os.urandom(part) + b"tail"
    with s3_fs.open(f"{s3_bucket}/big/model.bin", "wb", block_size=part) as handle:
        handle.write(data)
    s3_fs.invalidate_cache()
    artifact = refstore.Artifact("model")
    artifact.add_reference(f"s3://{s3_bucket}/big")
    version = refstore.Registry().log(artifact)
    assert "-" in version.manifest["model.bin"].etag  # a multipart ETag
    dest = tmp_path / "dir"
    dest.mkdir()
    (dest / "model.bin").write_bytes(data)  # e.g. copied from a colleague's download
    inode = (dest / "model.bin").stat().st_ino
    _fresh_cache(tmp_path, monkeypatch, "empty-cache")
    mark = s3_server.mark()
    version.download(dest)
    assert _gets(s3_server, mark) == [f"GET /{s3_bucket}/big/model.bin"]
    assert (dest / "model.bin").stat().st_ino == inode, "the file in place was kept"
    mark = s3_server.mark()
    version.download(dest)
    assert s3_server.requests_since(mark) == []
    (dest / "model.bin").write_bytes(data[:-4] + b"TAIL")
    with pytest.raises(refstore.LocalChangesError, match=r"model\.bin"):
        version.download(dest)


def test_gcs_md5_digests_are_checked_locally(
    gcs_server: Any, gcs_fs: Any, gcs_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcs_fs.pipe({f"{gcs_bucket}/d/{path}": data for path, data in SALES.items()})
    gcs_fs.invalidate_cache()
    artifact = refstore.Artifact("gsales")
    artifact.add_reference(f"gs://{gcs_bucket}/d")
    version = refstore.Registry().log(artifact)
    assert version.manifest["README"].digest.startswith("md5:")
    dest = version.download(tmp_path / "dir")
    (dest / "README").write_bytes(b"sales data, edited\n")
    _fresh_cache(tmp_path, monkeypatch, "empty-cache")
    mark = gcs_server.mark()
    with pytest.raises(refstore.LocalChangesError, match="README"):
        version.download(dest)
    assert gcs_server.requests_since(mark) == []


# -- files the version does not hold -------------------------------------------------------------------


def test_files_of_another_version_are_listed_and_clean_removes_them(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    v0 = _log(s3_fs, s3_bucket, SALES)
    s3_fs.rm(f"{s3_bucket}/sales/raw", recursive=True)
    v1 = _log(s3_fs, s3_bucket, {"README": SALES["README"], "clean/sales.parquet": b"PAR1"})
    dest = v0.download(tmp_path / "dir")
    (dest / "notes.txt").write_text("mine")
    got = v1.download(dest)
    assert got == dest and isinstance(got, Path)
    assert got.extra == ("notes.txt", "raw/sales.csv", "raw/stores.csv") and got.removed == ()
    assert (dest / "raw" / "sales.csv").exists() and (dest / "notes.txt").exists()
    cleaned = v1.download(dest, clean=True)
    assert cleaned.removed == ("notes.txt", "raw/sales.csv", "raw/stores.csv") and cleaned.extra == ()
    assert _tree(dest) == {"README": SALES["README"], "clean/sales.parquet": b"PAR1"}
    assert not (dest / "raw").exists(), "folders left empty are removed too"


def test_clean_removes_links_never_what_they_point_to(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    artifact = refstore.Artifact("linked")
    artifact.add_reference(source)
    version = refstore.Registry().log(artifact)
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "keep.txt").write_text("not yours to delete")
    (outside / "file.txt").write_text("nor this")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "folder-link").symlink_to(outside / "deep", target_is_directory=True)
    (dest / "file-link").symlink_to(outside / "file.txt")
    got = version.download(dest, clean=True)
    assert got.removed == ("file-link", "folder-link")
    assert sorted(os.listdir(dest)) == ["a.txt"]
    assert (outside / "deep" / "keep.txt").read_text() == "not yours to delete"
    assert (outside / "file.txt").read_text() == "nor this"


def test_clean_never_touches_the_registry_or_the_cache_inside_the_destination(tmp_path: Path) -> None:
    """The registry (REFSTORE_ROOT) and the cache (REFSTORE_CACHE_DIR) of this test live in tmp_path."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    artifact = refstore.Artifact("here")
    artifact.add_reference(source)
    version = refstore.Registry().log(artifact)
    version.download(tmp_path / "elsewhere")  # fills the cache
    (tmp_path / ".refstore").mkdir()
    (tmp_path / ".refstore" / "registry-file").write_text("kept")
    refstore.Registry(tmp_path / "team").log(artifact)  # another registry, known by its marker file
    (tmp_path / "team" / "notes.txt").write_text("kept too")
    (tmp_path / "other" / "runs").mkdir(parents=True)  # a registry another process made: its marker says so
    (tmp_path / "other" / ".refstore-registry").write_text("")
    (tmp_path / "other" / "runs" / "x.json").write_text("{}")
    got = version.download(tmp_path, clean=True)
    assert "a.txt" not in got.removed
    assert (tmp_path / "refstore-root").is_dir() and any((tmp_path / "refstore-cache").rglob("*"))
    assert (tmp_path / ".refstore" / "registry-file").read_text() == "kept"
    assert (tmp_path / "team" / "notes.txt").read_text() == "kept too"
    assert (tmp_path / "other" / "runs" / "x.json").read_text() == "{}"
    assert refstore.Registry(tmp_path / "team").get("here:v0").manifest
    assert refstore.Registry().get("here:v0").manifest  # the registry still reads


def test_a_folder_or_a_file_in_the_way(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "b").mkdir(parents=True)
    (source / "a").write_text("file a")
    (source / "b" / "c.txt").write_text("file c")
    artifact = refstore.Artifact("shape")
    artifact.add_reference(source)
    version = refstore.Registry().log(artifact)
    dest = tmp_path / "dest"
    (dest / "a").mkdir(parents=True)  # a folder where the version has the file a
    (dest / "a" / "x.txt").write_text("mine")
    (dest / "b").write_text("a file where the version has the folder b")
    with pytest.raises(refstore.LocalChangesError, match=r"a \(a folder\).*b \(a file where"):
        version.download(dest)
    with pytest.raises(refstore.LocalChangesError, match=r"a \(a folder\).*--clean"):
        version.download(dest, overwrite=True)  # overwrite replaces files, never deletes a folder
    assert (dest / "a" / "x.txt").read_text() == "mine"
    got = version.download(dest, clean=True)
    assert got.removed == ("a/x.txt", "b")
    assert _tree(dest) == {"a": b"file a", "b/c.txt": b"file c"}


# -- failures half-way, and --prefix ----------------------------------------------------------------------


def test_a_download_that_fails_half_way_says_what_is_in_place_and_running_it_again_completes_it(
    s3_server: Any, s3_fs: Any, s3_unversioned_bucket: str, tmp_path: Path
) -> None:
    bucket = s3_unversioned_bucket
    files = {f"part-{i:02d}.bin": f"pinned {i}".encode() for i in range(20)}
    version = _log(s3_fs, bucket, files, name="parts")
    s3_fs.pipe_file(f"{bucket}/sales/part-07.bin", b"overwritten, and no versions kept")
    with pytest.raises(refstore.ObjectChangedError) as raised:
        version.download(tmp_path / "dir")
    match = re.search(
        r"parts:v0: (\d+) of 20 entries in place in \S+, (\d+) not; run the download again", str(raised.value)
    )
    assert match is not None, str(raised.value)
    in_place, missing = int(match[1]), int(match[2])
    assert in_place + missing == 20 and missing >= 1
    assert "part-07.bin" in str(raised.value)
    assert str(raised.value).endswith("once the pinned bytes of that object are back")
    assert len(_tree(tmp_path / "dir")) == in_place, "the count is what the folder holds"
    s3_fs.pipe_file(f"{bucket}/sales/part-07.bin", files["part-07.bin"])  # the bytes are back (same ETag)
    mark = s3_server.mark()
    version.download(tmp_path / "dir")
    assert len(_gets(s3_server, mark)) == missing  # only what was not in place
    assert _tree(tmp_path / "dir") == files


def test_a_download_cut_off_by_the_network_says_what_is_in_place_and_completes_later(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a proxy that keeps answering 503 for one object: the download gives up, says how far it
    got, and a later run (the network back) fetches only the rest."""
    monkeypatch.setattr("refstore.storage.backends._base.FETCH_BACKOFF", 0.01)
    files = {f"part-{i:02d}.bin": os.urandom(1000 + i) for i in range(12)}
    version = _log(s3_fs, s3_bucket, files, name="parts")
    proxy = FaultProxy(s3_server.endpoint_url).start()
    try:
        proxy.inject("503", times=1000, match=f"GET /{s3_bucket}/sales/part-05.bin")
        retries = {"total_max_attempts": 2, "mode": "standard"}
        options = {"endpoint_url": proxy.url, "config_kwargs": {"retries": retries}}
        with pytest.raises(refstore.StorageUnavailableError) as raised:
            version.download(tmp_path / "dir", storage_options=options)
    finally:
        proxy.stop()
    match = re.search(
        r"parts:v0: (\d+) of 12 entries in place in \S+, (\d+) not; run the download", str(raised.value)
    )
    assert match is not None and "part-05.bin" in str(raised.value), str(raised.value)
    assert str(raised.value).endswith("run the download again to complete it"), "the object is not gone"
    in_place = _tree(tmp_path / "dir")
    assert len(in_place) == int(match[1]) and int(match[2]) >= 1
    mark = s3_server.mark()
    version.download(tmp_path / "dir")
    # only the rest is fetched (a GET retried under load counts once: its key is what matters)
    fetched = {get.rsplit("/", 1)[-1] for get in _gets(s3_server, mark)}
    assert fetched == set(files) - set(in_place) and len(fetched) == int(match[2])
    assert _tree(tmp_path / "dir") == files


def test_a_prefix_matching_no_entry_is_an_error_naming_it(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    version = _log(s3_fs, s3_bucket, SALES)
    with pytest.raises(refstore.ObjectNotFoundError, match="'rwa/'"):
        version.download(tmp_path / "dir", path_prefix="rwa/")
    assert not (tmp_path / "dir").exists()
    result = CliRunner().invoke(main, ["get", "s3sales:v0", str(tmp_path / "dir"), "--prefix", "rwa/"])
    assert result.exit_code == 1 and "'rwa/'" in result.output and "Traceback" not in result.output
    got = version.download(tmp_path / "dir", path_prefix="raw/")
    assert _tree(got) == {k: v for k, v in SALES.items() if k.startswith("raw/")}


def test_extra_files_outside_the_prefix_are_not_listed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "raw").mkdir(parents=True)
    (source / "raw" / "a.csv").write_text("a")
    (source / "top.txt").write_text("t")
    artifact = refstore.Artifact("pre")
    artifact.add_reference(source)
    version = refstore.Registry().log(artifact)
    dest = tmp_path / "dest"
    (dest / "raw").mkdir(parents=True)
    (dest / "raw" / "old.csv").write_text("old")
    (dest / "mine.txt").write_text("mine")
    got = version.download(dest, path_prefix="raw/", clean=True)
    assert got.removed == ("raw/old.csv",)
    assert _tree(dest) == {"mine.txt": b"mine", "raw/a.csv": b"a"}


# -- the command line -------------------------------------------------------------------------------------


def test_cli_get_refuses_then_force_and_clean(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    _log(s3_fs, s3_bucket, SALES)
    runner = CliRunner()
    dest = tmp_path / "dir"
    assert runner.invoke(main, ["get", "s3sales:v0", str(dest)]).exit_code == 0
    (dest / "raw" / "sales.csv").write_bytes(b"edited")
    (dest / "extra.txt").write_text("x")
    refused = runner.invoke(main, ["get", "s3sales:v0", str(dest)])
    assert refused.exit_code == 1
    assert (
        refused.output.count("\n") == 1 and "raw/sales.csv" in refused.output and "--force" in refused.output
    )
    forced = runner.invoke(main, ["get", "s3sales:v0", str(dest), "--force"])
    assert forced.exit_code == 0 and "extra.txt" in forced.output and "--clean" in forced.output
    assert (dest / "raw" / "sales.csv").read_bytes() == SALES["raw/sales.csv"]
    cleaned = runner.invoke(main, ["get", "s3sales:v0", str(dest), "--clean", "--json"])
    assert cleaned.exit_code == 0
    assert json.loads(cleaned.stdout)["removed"] == ["extra.txt"]
    assert _tree(dest) == SALES


def test_an_entry_inside_a_folder_clean_never_walks_is_still_checked(tmp_path: Path) -> None:
    """A version may hold a `.refstore/...` file (a snapshot made before such folders were left out): a local
    file there with other bytes is a local change like any other."""
    source = tmp_path / "src"
    (source / ".refstore").mkdir(parents=True)
    (source / ".refstore" / "notes.txt").write_text("pinned")
    version = refstore.Registry().log(_copies("old", source))
    dest = tmp_path / "dest"
    (dest / ".refstore").mkdir(parents=True)
    (dest / ".refstore" / "notes.txt").write_text("local edit")
    with pytest.raises(refstore.LocalChangesError, match=r"\.refstore/notes\.txt"):
        version.download(dest, clean=True)
    assert (dest / ".refstore" / "notes.txt").read_text() == "local edit"


def _copies(name: str, folder: Path) -> refstore.Artifact:
    artifact = refstore.Artifact(name)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            artifact.add_file(path, path.relative_to(folder).as_posix())
    return artifact
