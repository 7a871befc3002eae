"""Local files that change under refstore (issue 14, items 1 and 4): a read never returns bytes other than
the pinned ones, and a record never pairs a size and a digest that did not exist together."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import refstore
from refstore.storage.hashing import hash_bytes, stat_and_hash

BIG = 6 * 2**20  # above the size that open() reads whole into memory


def _pinned(tmp_path: Path, data: bytes) -> tuple[refstore.ArtifactVersion, Path]:
    source = tmp_path / "src"
    source.mkdir()
    path = source / "data.bin"
    path.write_bytes(data)
    art = refstore.Artifact("local", type="dataset")
    art.add_reference(str(source))
    return refstore.Registry(str(tmp_path / "reg")).log(art), path


def test_in_place_edit_after_open_fails_the_read(tmp_path: Path) -> None:
    pinned = os.urandom(BIG)
    v, path = _pinned(tmp_path, pinned)
    with v.open("data.bin") as handle:
        assert handle.read(1000) == pinned[:1000]
        with open(path, "r+b") as writer:  # same size, other bytes, same inode
            writer.seek(BIG // 2)
            writer.write(b"X" * 4096)
        with pytest.raises(refstore.ObjectChangedError, match=r"data\.bin"):
            handle.read()


def test_ranged_read_after_in_place_edit_fails(tmp_path: Path) -> None:
    pinned = os.urandom(BIG)
    v, path = _pinned(tmp_path, pinned)
    with v.open("data.bin") as handle:
        with open(path, "r+b") as writer:
            writer.write(b"Y" * 10)
        handle.seek(BIG - 100)
        with pytest.raises(refstore.ObjectChangedError):
            handle.read(50)


def test_replace_after_open_never_gives_the_new_bytes(tmp_path: Path) -> None:
    """The handle keeps the inode whose bytes were checked; the replacement changes that inode's ctime
    (one link fewer), which refstore cannot tell from a write, so the read refuses (the source moved on)."""
    pinned = os.urandom(BIG)
    v, path = _pinned(tmp_path, pinned)
    with v.open("data.bin") as handle:
        other = path.with_name("other")
        other.write_bytes(os.urandom(BIG))
        os.replace(other, path)
        with pytest.raises(refstore.ObjectChangedError, match=r"data\.bin"):
            handle.read()
    with pytest.raises(refstore.ObjectChangedError, match=r"data\.bin"):
        v.open("data.bin")


@pytest.mark.parametrize("size", [64 * 1024, BIG])
def test_racing_replacements_never_return_other_bytes(tmp_path: Path, size: int) -> None:
    """A writer swaps same-size files with os.replace as fast as it can while reads go on: every read gives
    exactly the pinned bytes or raises ObjectChangedError (the red team saw 106 of ~19,000 wrong)."""
    pinned = os.urandom(size)
    v, path = _pinned(tmp_path, pinned)
    variants = [pinned, os.urandom(size)]
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            tmp = path.with_name(f"tmp-{i % 2}")
            tmp.write_bytes(variants[i % 2 == 0])
            os.replace(tmp, path)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    wrong = ok = refused = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            try:
                with v.open("data.bin") as handle:
                    data = handle.read()
            except refstore.ObjectChangedError:
                refused += 1
                continue
            if data == pinned:
                ok += 1
            else:
                wrong += 1
    finally:
        stop.set()
        thread.join()
    assert wrong == 0
    assert ok + refused > 20


def test_in_place_rewrites_never_give_a_torn_digest(tmp_path: Path) -> None:
    """A file rewritten in place while it is hashed (the red team: 15 of 20 tries gave a digest of bytes
    that never existed together). The writer overwrites a 128 KiB file front to back with all-A or all-B
    bytes, so every state the file passes through is new bytes up to some byte and old ones after it (a
    reader may see a write half-way through a page, so cuts are counted at every byte); a read torn across
    the writer's passes gives any other mix. Each result must be one of the real states, or a one-line
    refusal naming the file. (Plain reads of this file tear about one time in ten here.)"""
    size = 128 * 1024
    path = tmp_path / "busy.bin"
    path.write_bytes(b"A" * size)
    real = {
        hash_bytes(new * cut + old * (size - cut))
        for new, old in ((b"A", b"B"), (b"B", b"A"))
        for cut in range(size + 1)
    }
    writer = subprocess.Popen(  # a process of its own: no GIL between its writes and the reads
        [sys.executable, "-c", _WRITER, str(path), str(size)], stdout=subprocess.PIPE
    )
    assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
    torn = consistent = refused = 0
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                facts = stat_and_hash(str(path))
            except refstore.ObjectChangedError as exc:
                assert "busy.bin" in str(exc) and "\n" not in str(exc)
                refused += 1
                continue
            if facts.size == size and facts.digest in real:
                consistent += 1
            else:
                torn += 1
    finally:
        writer.kill()
        writer.wait()
    assert torn == 0, f"{torn} torn, {consistent} consistent, {refused} refused"
    assert consistent > 0


_WRITER = """
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY)
print("writing", flush=True)
i = 0
while True:
    block = (b"B" if i % 2 == 0 else b"A") * 16384
    for at in range(0, size, len(block)):
        os.pwrite(fd, block, at)
    i += 1
"""


def _blobs_named_by_their_bytes(root: Path) -> list[str]:
    """Blobs of a local registry whose bytes do not hash to their name."""
    return [
        str(blob)
        for blob in (root / "blobs").glob("*/*")
        if blob.is_file() and hash_bytes(blob.read_bytes()).split(":", 1)[1] != blob.name
    ]


def test_a_file_changing_during_log_never_poisons_the_blob_store(tmp_path: Path) -> None:
    """A writer swaps a copied file between two contents while it is logged into fresh registries: each log
    stores the bytes that were added or refuses naming the file; no blob ever holds other bytes than its
    name says (before, the blob named by hash Y could hold X, and every later log of Y reused it)."""
    size = 2 * 2**20
    path = tmp_path / "data.bin"
    path.write_bytes(b"Y" * size)
    writer = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(path), str(size)], stdout=subprocess.PIPE)
    assert writer.stdout is not None and writer.stdout.readline() == b"swapping\n"
    poisoned: list[str] = []
    logged = refused = 0
    try:
        deadline = time.monotonic() + 4
        n = 0
        while time.monotonic() < deadline:
            n += 1
            root = tmp_path / f"reg-{n}"
            art = refstore.Artifact("copy", type="dataset")
            try:
                art.add_file(path)
                refstore.Registry(str(root)).log(art)
                logged += 1
            except (refstore.ObjectChangedError, FileNotFoundError) as exc:
                assert "data.bin" in str(exc)
                refused += 1
            if root.exists():
                poisoned += _blobs_named_by_their_bytes(root)
    finally:
        writer.kill()
        writer.wait()
    assert not poisoned, f"{len(poisoned)} poisoned blobs ({logged} logged, {refused} refused)"
    assert logged > 0


_SWAPPER = """
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
print("swapping", flush=True)
i = 0
while True:
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write((b"X" if i % 2 == 0 else b"Y") * size)
    os.replace(tmp, path)
    i += 1
"""
