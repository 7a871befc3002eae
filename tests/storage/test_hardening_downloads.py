"""Downloads that hold when files change under them (issue 14): a folder swapped for a link mid-download
(item 9), two PID namespaces sharing a cache (item 19), a cache spread over filesystems (item 20),
prefixes at ``/`` boundaries (item 24)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from faultproxy import FaultProxy

import refstore
import refstore.storage.cache
from refstore.surfaces.cli import main


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _log_files(tmp_path: Path, files: dict[str, bytes], name: str) -> refstore.ArtifactVersion:
    source = tmp_path / f"src-{name}"
    for path, data in files.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(data)
    artifact = refstore.Artifact(name)
    artifact.add_reference(source)
    return refstore.Registry().log(artifact)


# -- item 24: a path prefix matches at / boundaries, or names one file ------------------------------------

SPLITS = {"train/a.txt": b"a", "train2/b.txt": b"b", "train.txt": b"t", "test/c.txt": b"c"}


def test_a_prefix_takes_a_folder_at_slash_boundaries_never_its_siblings(tmp_path: Path) -> None:
    version = _log_files(tmp_path, SPLITS, "splits")
    for prefix in ("train", "train/"):
        got = version.download(tmp_path / prefix.replace("/", "_slash"), path_prefix=prefix)
        assert _tree(got) == {"train/a.txt": b"a"}, prefix
    assert _tree(version.download(tmp_path / "one", path_prefix="train2/b.txt")) == {"train2/b.txt": b"b"}
    with pytest.raises(refstore.ObjectNotFoundError, match="'trai'"):
        version.download(tmp_path / "none", path_prefix="trai")
    result = CliRunner().invoke(main, ["get", "splits:v0", str(tmp_path / "cli"), "--prefix", "train"])
    assert result.exit_code == 0, result.output
    assert _tree(tmp_path / "cli") == {"train/a.txt": b"a"}


def test_clean_under_a_prefix_never_touches_files_of_a_sibling_with_a_longer_name(tmp_path: Path) -> None:
    version = _log_files(tmp_path, SPLITS, "splits")
    dest = tmp_path / "dest"
    (dest / "train2").mkdir(parents=True)
    (dest / "train2" / "mine.txt").write_bytes(b"my work")
    (dest / "train.txt.bak").write_bytes(b"my backup")
    (dest / "train").mkdir()
    (dest / "train" / "old.txt").write_bytes(b"old")
    got = version.download(dest, path_prefix="train", clean=True)
    assert got.removed == ("train/old.txt",)
    assert _tree(dest) == {"train/a.txt": b"a", "train2/mine.txt": b"my work", "train.txt.bak": b"my backup"}
    got = version.download(dest, path_prefix="train.txt")
    assert got.extra == ()  # a file's path: train.txt.bak is not under it
    assert (dest / "train.txt").read_bytes() == b"t"


# -- item 9: a folder swapped for a link during a download -----------------------------------------------

SWAPPER = """
import ctypes, os, sys, time
sub, aside, outside, stop = sys.argv[1:5]
libc = ctypes.CDLL(None, use_errno=True)
os.symlink(outside, aside)
while not os.path.exists(stop):  # sub and the link trade places atomically (renameat2 RENAME_EXCHANGE)
    if libc.renameat2(-100, sub.encode(), -100, aside.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
    time.sleep(0.0003)
"""


@pytest.mark.parametrize("warm", [True, False], ids=["from-the-cache", "fetched"])
def test_a_folder_swapped_for_a_link_during_a_download_never_sends_a_file_outside(
    tmp_path: Path, warm: bool
) -> None:
    files = {f"sub/f{i:04d}.txt": f"file {i}\n".encode() for i in range(1500)}
    version = _log_files(tmp_path, files, "many")
    if warm:
        version.download(tmp_path / "warm-up")
        shutil.rmtree(tmp_path / "warm-up")  # the cache holds every file, held by no download
    outside = tmp_path / "outside"
    outside.mkdir()
    for attempt in range(8):  # the swap may be seen by the check before writing: then nothing races
        dest = tmp_path / f"dest{attempt}"
        (dest / "sub").mkdir(parents=True)
        stop = tmp_path / f"stop{attempt}"
        args = [str(dest / "sub"), str(dest / "sub-aside"), str(outside), str(stop)]
        swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, *args])
        while not os.path.lexists(dest / "sub-aside") and swapper.poll() is None:
            time.sleep(0.01)  # swapping from now on
        try:
            try:
                version.download(dest, skip_cache=not warm)
            except refstore.UnsafePathError as exc:  # the swap seen: refused, never followed
                assert re.search("outside|a link appeared|changed", str(exc)), str(exc)
        finally:
            stop.touch()
            swapper.wait(timeout=30)
        assert swapper.returncode == 0, "the swapper stopped early"
        assert sorted(os.listdir(outside)) == [], f"attempt {attempt}: files written through the link"


# -- item 19: downloads in two PID namespaces share a host name and a cache --------------------------------

DOWNLOAD = """
import sys, refstore
refstore.Registry(sys.argv[1]).get("ns:v0").download(sys.argv[2])
"""


def test_a_download_in_another_pid_namespace_keeps_this_process_scratch_files(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root")
    files = {f"f{i}.txt": f"file {i}\n".encode() for i in range(20)}
    _log_files(tmp_path, files, "ns")
    cache = Path(os.environ["REFSTORE_CACHE_DIR"])
    (cache / "tmp").mkdir(parents=True)
    from refstore.storage.scratch import scratch_name

    ours = cache / "tmp" / scratch_name()  # a file this (live) process is writing
    ours.write_bytes(b"half of a download in flight")
    registry = os.environ["REFSTORE_ROOT"]
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", DOWNLOAD]
    env = {**os.environ, "PYTHONPATH": str(Path(refstore.__file__).parents[1])}  # this refstore
    done = subprocess.run(
        [*command, registry, str(tmp_path / "other")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert _tree(tmp_path / "other") == files
    assert ours.exists(), "a download in another PID namespace removed a live process's scratch file"


def test_a_scratch_file_that_vanishes_mid_download_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (an older refstore in another namespace) removes a file in flight in ``tmp/``."""
    files = {f"f{i}.txt": f"file {i}\n".encode() for i in range(5)}
    version = _log_files(tmp_path, files, "vanish")
    admit = refstore.storage.cache.Cache.admit
    removed: list[str] = []

    def admit_after_removal(
        self: refstore.storage.cache.Cache, entry: object, fetched: str, content: str
    ) -> str:
        if len(removed) < 2:
            removed.append(fetched)
            os.unlink(fetched)
        return admit(self, entry, fetched, content)  # type: ignore[arg-type]

    monkeypatch.setattr(refstore.storage.cache.Cache, "admit", admit_after_removal)
    assert _tree(version.download(tmp_path / "dest")) == files
    assert len(removed) == 2


# -- item 20: a cache whose blobs/ or tmp/ is on another filesystem -----------------------------------------


@pytest.mark.parametrize("moved", ["blobs", "tmp", "pins"])
@pytest.mark.parametrize("skip_cache", [False, True], ids=["cached", "skip-cache"])
def test_a_cache_folder_linked_to_another_filesystem_still_downloads(
    tmp_path: Path, moved: str, skip_cache: bool
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is not another filesystem here")
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    try:
        files = {f"d/f{i}.txt": f"file {i}\n".encode() * 100 for i in range(10)}
        version = _log_files(tmp_path, files, "xdev")
        cache = Path(os.environ["REFSTORE_CACHE_DIR"])
        cache.mkdir(parents=True)
        (cache / moved).symlink_to(elsewhere)
        assert _tree(version.download(tmp_path / "cold", skip_cache=skip_cache)) == files
        assert _tree(version.download(tmp_path / "warm")) == files
        assert _tree(version.download(tmp_path / "warm-again")) == files
        leftovers = [p for p in elsewhere.rglob("*") if p.is_file() and p.name.endswith(".part")]
        assert leftovers == []
    finally:
        shutil.rmtree(elsewhere)


# -- item 2: a blob found corrupt on read is quarantined, and the next log uploads it again ------------------


def _blob_of(registry: Path, data: bytes) -> Path:
    from refstore.storage.hashing import hash_bytes

    digest = hash_bytes(data).split(":", 1)[1]
    return registry / "blobs" / digest[:2] / digest


@pytest.mark.parametrize("reader", ["download", "open"])
def test_a_corrupt_blob_is_quarantined_never_deleted_and_the_next_log_restores_it(
    tmp_path: Path, reader: str
) -> None:
    data = b"the pinned bytes\n" * 100
    (tmp_path / "model.bin").write_bytes(data)
    root = tmp_path / "registry"
    registry = refstore.Registry(root)
    artifact = refstore.Artifact("model")
    artifact.add_file(tmp_path / "model.bin")
    version = registry.log(artifact)
    blob = _blob_of(root, data)
    damaged = b"X" + data[1:]  # same size: only the hash tells
    blob.write_bytes(damaged)
    with pytest.raises(refstore.IntegrityError) as raised:
        if reader == "download":
            version.download(tmp_path / "dest", skip_cache=True)
        else:
            version.open("model.bin").read()
    quarantined = list((root / "quarantine").rglob("*"))
    quarantined = [p for p in quarantined if p.is_file()]
    assert [p.read_bytes() for p in quarantined] == [damaged], "moved aside, never deleted"
    assert blob.name in str(raised.value) and "quarantine/" in str(raised.value)
    assert not blob.exists()
    report = refstore.collect_garbage(registry, yes=True)
    assert report.quarantined == [quarantined[0].relative_to(root).as_posix()]
    assert quarantined[0].exists(), "gc never deletes quarantine/"
    again = refstore.Artifact("model")  # the next log that has the bytes uploads the blob again
    again.add_file(tmp_path / "model.bin")
    assert registry.log(again) == version
    assert blob.read_bytes() == data
    assert _tree(version.download(tmp_path / "dest", skip_cache=True)) == {"model.bin": data}
    assert version.open("model.bin").read() == data


def test_a_blob_damaged_on_the_way_but_right_in_the_store_is_not_quarantined(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Only bytes wrong in the store are moved aside: a transfer damaged once (a proxy flipping bytes) is
    fetched again to tell."""
    data = os.urandom(5000)
    (tmp_path / "model.bin").write_bytes(data)
    proxy = FaultProxy(s3_server.endpoint_url).start()
    try:
        options = {"endpoint_url": proxy.url}
        registry = refstore.Registry(f"s3://{s3_bucket}/reg", storage_options=options)
        artifact = refstore.Artifact("model")
        artifact.add_file(tmp_path / "model.bin")
        version = registry.log(artifact)
        proxy.inject("corrupt", times=1, match=f"GET /{s3_bucket}/reg/blobs/")  # the check's read is clean
        with pytest.raises(refstore.ObjectChangedError) as raised:
            version.download(tmp_path / "dest")
        assert not isinstance(raised.value, refstore.IntegrityError)
        assert registry.store.backend.fs.find(f"{s3_bucket}/reg/quarantine") == []
        assert _tree(version.download(tmp_path / "dest")) == {"model.bin": data}
    finally:
        proxy.stop()


def test_a_corrupt_blob_in_an_s3_registry_is_quarantined_and_restored_by_the_next_log(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    (tmp_path / "model.bin").write_bytes(data)
    registry = refstore.Registry(f"s3://{s3_bucket}/reg")
    artifact = refstore.Artifact("model")
    artifact.add_file(tmp_path / "model.bin")
    version = registry.log(artifact)
    blob = f"{s3_bucket}/reg/" + _blob_of(Path(""), data).as_posix()
    s3_fs.pipe_file(blob, b"Y" + data[1:])
    with pytest.raises(refstore.IntegrityError, match="quarantine/"):
        version.download(tmp_path / "dest")
    s3_fs.invalidate_cache()
    assert [s3_fs.cat_file(p) for p in s3_fs.find(f"{s3_bucket}/reg/quarantine")] == [b"Y" + data[1:]]
    assert not s3_fs.exists(blob)
    again = refstore.Artifact("model")
    again.add_file(tmp_path / "model.bin")
    registry.log(again)
    assert _tree(version.download(tmp_path / "dest")) == {"model.bin": data}
