"""Case 2: references to a local directory (page-cached) against wandb's MD5 pass and a raw read.

Two trees: large files (1 MiB each) and many small ones. The raw baseline reads every byte with
``readinto`` on as many threads as there are cores, the physical limit the target is stated against.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import CaseResult, Row, Target, fmt_ratio, fmt_seconds, run_peer, timed

MIB = 2**20
SMALL_SIZES = (512, 1024, 2048, 4096)


def make_tree(root: Path, count: int, size: int | None) -> int:
    """``count`` files of ``size`` bytes (or mixed small sizes) under ``root``, 1,000 per folder; bytes."""
    marker = root.with_name(root.name + ".complete")
    if marker.exists():
        return int(marker.read_text())
    total = 0
    for i in range(count):
        folder = root / f"d{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        length = size if size is not None else SMALL_SIZES[i % len(SMALL_SIZES)]
        (folder / f"f{i:06d}.bin").write_bytes(os.urandom(length))
        total += length
    marker.write_text(str(total))
    return total


def _files(root: Path) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.join(folder, n) for n in names]
    return found


def raw_read(root: Path) -> int:
    """Read every byte under ``root`` (walk + readinto) on one thread per core; the bytes read."""

    def read(paths: list[str]) -> int:
        buffer = bytearray(MIB)
        total = 0
        for path in paths:
            with open(path, "rb", buffering=0) as handle:
                while n := handle.readinto(buffer):
                    total += n
        return total

    files = _files(root)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(read, [files[i::workers] for i in range(workers)]))


def local_case(trees: list[tuple[str, Path, int, int]], repeat: int, peers: Path | None) -> CaseResult:
    """``trees``: (label, root, file count, bytes)."""
    result = CaseResult("Reference to a local directory (page-cached)")
    for label, root, count, nbytes in trees:
        raw_read(root)  # into the page cache
        ours = result.row(label, "refstore add_reference (xxh3_128)", nbytes=nbytes)
        raw = result.row(label, "raw read of the bytes (readinto, all cores)", nbytes=nbytes)
        wandb = result.row(label, "wandb 0.31 add_reference (MD5)", nbytes=nbytes) if peers else None
        core = result.row(label, "refstore walk + hash only (no manifest entries)", nbytes=nbytes)
        for _ in range(repeat):
            ours.seconds.append(timed(lambda root=root, count=count: _refstore(root, count))[0])
            raw.seconds.append(timed(lambda root=root: raw_read(root))[0])
            core.seconds.append(timed(lambda root=root: _walk_and_hash(root))[0])
            if wandb is not None and peers is not None:
                answer = run_peer(peers, "wandb_reference.py", f"file://{root}", str(count + 10))
                assert answer["entries"] == count, answer
                wandb.seconds.append(float(answer["seconds"]))
        result.targets += _targets(label, ours, raw, wandb, core, count)
    return result


def _refstore(root: Path, count: int) -> None:
    import refstore

    entries = refstore.Artifact("bench").add_reference(root, max_objects=count + 10)
    assert len(entries) == count


def _walk_and_hash(root: Path) -> None:
    """The I/O part of a local reference alone: the walk and the hashing, no entries built."""
    from refstore.backends.local import _walk_files
    from refstore.hashing import hash_many

    hash_many((f, 0) for f in _walk_files(str(root), 10**9, str(root)))


def _targets(label: str, ours: Row, raw: Row, wandb: Row | None, core: Row, count: int) -> list[Target]:
    share = raw.median / ours.median
    speeds = f"{ours.nbytes / ours.median / 1e9:.2f} vs {raw.nbytes / raw.median / 1e9:.2f} GB/s"
    why = (
        f"walking and hashing alone take {fmt_seconds(core.median)} ({raw.median / core.median:.0%} of raw "
        f"read throughput); the other {fmt_seconds(ours.median - core.median)} is building {count:,} "
        "manifest entries in Python (metadata records, logical-path checks), the event-loop round trip and "
        "starting the hashing threads, none of which a raw read does"
    )
    targets = [
        Target(
            f"local reference, {label}: throughput vs raw read",
            "≥ 70%",
            f"{share:.0%} ({speeds})",
            share >= 0.7,
            "" if share >= 0.7 else why,
        )
    ]
    if wandb is not None:
        speedup = wandb.median / ours.median
        budget = wandb.median / 5
        why = (
            f"a raw read of the same files takes {fmt_seconds(raw.median)}; 5x wandb means "
            f"{fmt_seconds(budget)}, {budget / raw.median:.2f}x a raw read, for {count:,} files' system "
            f"calls, hashes and manifest entries (refstore: {ours.median / raw.median:.2f}x a raw read)"
        )
        targets.append(
            Target(
                f"local reference, {label}: faster than wandb",
                "≥ 5x",
                fmt_ratio(speedup),
                speedup >= 5,
                "" if speedup >= 5 else why,
            )
        )
    return targets
