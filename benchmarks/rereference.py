"""Incremental local hashing (issue 16): an unchanged 100,000-file tree referenced again vs the first time.

    python benchmarks/rereference.py [--files 100000] [--trees small,64k] [--repeat 3] [--results]

Trees (written once under ``--data``, 1,000 files per folder): ``small``, files of 0.5-4 KiB (as
``case_local``'s small files), and ``64k``, files of 64 KiB (6.1 GiB for 100,000). Each step runs in a fresh
interpreter and times ``Artifact.add_reference(tree)`` alone, after ``os.sync()``: imports excluded (the
``Artifact`` class and the local backend are imported before the clock starts; until 2026-12-02 the lazy
import of ``refstore.Artifact``, 0.3-0.8 s, was inside it), wall time and the process's CPU time:

- ``first, page-cached``: an empty stat cache (a fresh ``REFSTORE_CACHE_DIR``), the tree's bytes in memory;
- ``first, from disk``: the same after the tree's pages were dropped (``posix_fadvise(DONTNEED)`` on every
  file: the bytes are read from the disk, the folders and inodes stay cached), as for a tree not read lately;
- ``again, unchanged``: the stat cache the first reference wrote: every file is stat'ed, none is read;
- ``first, no stat cache`` (``REFSTORE_STAT_CACHE=0``): what a first reference cost before the cache, to show
  what recording it costs.

Every step's entries are checked against the first one's. ``--results`` replaces (or adds) this case's
section of ``benchmarks/RESULTS.md``; the table is printed either way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine  # noqa: E402
from case_local import make_tree  # noqa: E402
from parallel_listing import write_section  # noqa: E402

TITLE = "## Referencing an unchanged local tree again (issue 16)"
SIZES = {"small": None, "64k": 64 * 1024}

#: One timed reference in a fresh interpreter: argv = [tree]; prints {"seconds", "cpu", "entries", "digest"}.
STEP = r"""
import hashlib, json, sys, time
import refstore
import refstore.storage.backends.local
Artifact = refstore.Artifact
t0, c0 = time.perf_counter(), time.process_time()
entries = Artifact("bench").add_reference(sys.argv[1], max_objects=10**7)
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
digest = hashlib.sha256("".join(f"{e.path}:{e.digest}" for e in entries).encode()).hexdigest()
print(json.dumps({"seconds": seconds, "cpu": cpu, "entries": len(entries), "digest": digest}))
"""


def step(tree: Path, cache: Path, *, stat_cache: bool = True) -> dict[str, float | int | str]:
    env = {**os.environ, "REFSTORE_CACHE_DIR": str(cache), "REFSTORE_PROGRESS": "0"}
    env["REFSTORE_STAT_CACHE"] = "1" if stat_cache else "0"
    os.sync()
    done = subprocess.run(
        [sys.executable, "-c", STEP, str(tree)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the reference failed:\n{done.stderr[-3000:]}")
    result: dict[str, float | int | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def drop_pages(tree: Path) -> None:
    """Drop the page cache of every file under ``tree`` (clean pages: after ``os.sync()``)."""
    os.sync()
    for folder, _, names in os.walk(tree):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(tree: Path, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each step's wall seconds and CPU seconds (this process's threads), by step."""
    rows: dict[str, list[float]] = {
        "first, page-cached": [],
        "first, from disk": [],
        "again, unchanged": [],
        "first, no stat cache": [],
    }
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    expected: str | None = None
    with tempfile.TemporaryDirectory(prefix="refstore-rereference-") as scratch:
        for round_ in range(repeat):
            for name in ("first, page-cached", "first, from disk"):
                cache = Path(scratch) / f"cache-{round_}-{len(name)}"
                step(tree, Path(scratch) / "warm-up", stat_cache=False)  # the bytes in memory again
                if name == "first, from disk":
                    drop_pages(tree)
                first = step(tree, cache)
                again = step(tree, cache)
                rows[name].append(float(first["seconds"]))
                rows["again, unchanged"].append(float(again["seconds"]))
                cpu[name].append(float(first["cpu"]))
                cpu["again, unchanged"].append(float(again["cpu"]))
                for found in (first, again):
                    expected = expected or str(found["digest"])
                    assert found["digest"] == expected, "a reference listed other entries"
                shutil.rmtree(cache)
            off = step(tree, Path(scratch) / "off", stat_cache=False)
            assert off["digest"] == expected
            rows["first, no stat cache"].append(float(off["seconds"]))
            cpu["first, no stat cache"].append(float(off["cpu"]))
            print(
                f"{tree.name} round {round_ + 1}: "
                + ", ".join(f"{k} {v[-1]:.2f} s ({cpu[k][-1]:.2f} s CPU)" for k, v in rows.items())
            )
    return rows, cpu


def report(
    results: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]],
    files: int,
    trees: dict[str, int],
    repeat: int,
) -> str:
    import refstore

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    lines = [
        TITLE,
        "",
        f"Produced by `python benchmarks/rereference.py` on {when}: trees of {files:,} files, "
        f"`Artifact.add_reference` timed alone in a fresh interpreter, medians of {repeat} rounds (the "
        f"unchanged re-reference is measured after each first reference, so {2 * repeat} times). "
        f"{info['nproc']} CPUs, {info['memory']}; refstore {refstore.__version__}. Load average (5 min) at "
        f"the end: {os.getloadavg()[1]:.1f} (a shared machine: read the ratios).",
        "",
        "| tree | step | median | rounds | CPU (median) | first / this |",
        "|---|---|---|---|---|---|",
    ]
    for tree, (rows, cpu) in results.items():
        again = statistics.median(rows["again, unchanged"])
        label = f"{tree} ({trees[tree] / 2**30:.2f} GiB)"
        for name, seconds in rows.items():
            median = statistics.median(seconds)
            rounds = " / ".join(f"{s:.2f}" for s in seconds)
            ratio = "-" if name == "again, unchanged" else f"{median / again:.1f}x"
            used = statistics.median(cpu[name])
            lines.append(f"| {label} | {name} | {median:.2f} s | {rounds} | {used:.2f} s | {ratio} |")
    lines += [
        "",
        "The last column is each first reference's time over the median unchanged re-reference of the same "
        "tree; CPU is the process's CPU time (all its threads; hashing in worker processes not counted). "
        "The re-reference stats every file (one `stat` each, no `open`); what is left of the first "
        f"time is the walk, the stats and building {files:,} entries.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--trees", default="small,64k")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default="/tmp/refstore-rereference-data")
    parser.add_argument("--results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    results, sizes = {}, {}
    for name in args.trees.split(","):
        tree = Path(args.data) / f"{name}-{args.files}"
        sizes[name] = make_tree(tree, args.files, SIZES[name])
        time.sleep(1.1)  # files written within a second of their read are never recorded (stat_cache)
        results[name] = measure(tree, args.repeat)
    text = report(results, args.files, sizes, args.repeat)
    print(text)
    if args.results:
        write_section(text, HERE / "RESULTS.md", TITLE)


if __name__ == "__main__":
    main()
