"""Chunked manifests at scale (issue 16): bounded memory and incremental versions.

    python benchmarks/manifest_scale.py [--entries 10000000] [--draft-entries 1000000] [--big 100000000]
                                        [--parts scale,listing,draft,big] [--nice N] [--data DIR]
                                        [--results] [--quick]

Entries are generated S3-like listings, no server: ``part-00042/obj-000123456.parquet`` under
``s3://bench-bucket/datasets/``, 1,000 folders, sizes, ETag digests (``etag:<32 hex>``) and version ids,
made in sorted order and streamed (never a list of all entries). Every step runs in a fresh interpreter,
so its peak resident memory (``ru_maxrss``) is that step's alone:

- ``scale`` (``--entries``): **build + write** (``ChunkWriter`` putting chunks as files at
  ``manifests/<aa>/<hex>.json``, as a registry lays them out, skipping digests already stored); **read**
  (``ChunkedManifest`` over those files, every entry iterated); **change**: a copy with 1% of the entries
  changed as one contiguous stretch (10 of the 1,000 folders rewritten: new ETags, sizes and version ids, a
  tenth removed, a tenth as many added) written into the same store: bytes written vs the manifest's bytes;
  **diff** (``chunks.diff``) of the two stored manifests, its counts checked against what was changed.
- ``draft`` (``--draft-entries``): the public path on a local ``Registry``: an ``Artifact`` holding the
  entries (given through ``Artifact._add``, an internal shortcut: listing a real source is not what this
  measures), logged; then ``v.new_draft()``, ``draft.remove(folder)`` on 1% of the entries, a few entries
  added, logged: bytes of the new files under ``manifests/`` vs the new version's manifest bytes.
- ``listing``: the generated listing alone (what the build's time holds that is not refstore's).
- ``big`` (``--big``): build + write alone, for 10^8 entries (about 20 minutes here; 12 GB of chunks).

Each part's figures go to ``<data>/results.json`` (a part run again replaces its own); ``--results`` writes
this case's section of ``benchmarks/RESULTS.md`` from that file; the section is printed either way.
``--quick`` is a smoke run (100,000 entries, seconds; its results go to ``<data>/quick``). The generated
stores are deleted after each part. ``benchmarks/run.py`` does not run this case (as with
``transfers.py``, ``parallel_listing.py`` and ``rereference.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TITLE = "## Chunked manifests at scale (issue 16, `benchmarks/manifest_scale.py`)"
BUCKET_BASE = "s3://bench-bucket/datasets/"
FOLDERS = 1_000
MASK = 2**128 - 1
GB = 10**9


# -- the listing ----------------------------------------------------------------------------------------


def folder_size(n: int) -> int:
    return max(1, n // FOLDERS)


def changed_folders(n: int) -> range:
    """The folders the 1% change rewrites: one contiguous stretch in the middle."""
    folders = -(-n // folder_size(n))
    first = folders // 2
    return range(first, first + max(1, folders // 100))


def _fields(i: int, salt: int) -> tuple[int, str, str]:
    h = (i * 0x9E3779B97F4A7C15F39CC0605CEDC835 + salt * 0xD6E8FEB86659FD93) & MASK
    size = 4_096 + (h >> 72) % 250_000_000
    return size, f"{h:032x}", f"{(h * 0xFF51AFD7ED558CCD) & MASK:032x}"


def listing(n: int, *, changed: bool = False) -> Iterator[Any]:
    """``n`` S3-like entries in path order; ``changed``: the copy with the 1% stretch rewritten (every
    tenth object removed, every tenth gaining a neighbour ``obj-<i>-1.parquet``, the rest new versions)."""
    from refstore.core.manifest import ManifestEntry

    per = folder_size(n)
    stretch = changed_folders(n) if changed else range(0)
    for i in range(n):
        folder = i // per
        path = f"part-{folder:05d}/obj-{i:09d}.parquet"
        salt = 0
        if folder in stretch:
            if i % 10 == 5:
                yield neighbour(folder, i)  # obj-<i>-1.parquet sorts before obj-<i>.parquet
            if i % 10 == 0:
                continue
            salt = 1
        size, etag, vid = _fields(i, salt)
        yield ManifestEntry(path, BUCKET_BASE + path, size, "etag:" + etag, etag, vid)


def neighbour(folder: int, i: int) -> Any:
    """The object the change adds beside object ``i``."""
    from refstore.core.manifest import ManifestEntry

    path = f"part-{folder:05d}/obj-{i:09d}-1.parquet"
    size, etag, vid = _fields(i, 2)
    return ManifestEntry(path, BUCKET_BASE + path, size, "etag:" + etag, etag, vid)


def expected_change(n: int) -> tuple[set[str], set[str], set[str]]:
    """What the 1% change added, removed and modified, by path."""
    per = folder_size(n)
    added, removed, modified = set(), set(), set()
    for folder in changed_folders(n):
        for i in range(folder * per, min(n, (folder + 1) * per)):
            path = f"part-{folder:05d}/obj-{i:09d}.parquet"
            (removed if i % 10 == 0 else modified).add(path)
            if i % 10 == 5:
                added.add(f"part-{folder:05d}/obj-{i:09d}-1.parquet")
    return added, removed, modified


# -- a registry-like folder of chunks -------------------------------------------------------------------


class ChunkFolder:
    """Chunks as files at ``manifests/<aa>/<hex>.json`` under ``root``; a put skips a digest stored."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.puts = self.put_bytes = self.written = self.written_bytes = 0

    def path(self, digest: str) -> Path:
        hex_digest = digest.removeprefix("sha256:")
        return self.root / "manifests" / hex_digest[:2] / f"{hex_digest}.json"

    def put(self, digest: str, data: bytes) -> None:
        self.puts += 1
        self.put_bytes += len(data)
        path = self.path(digest)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        self.written += 1
        self.written_bytes += len(data)

    def load(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()


def _measured(started: float, cpu: float, **figures: Any) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime - cpu,
        "peak_rss": usage.ru_maxrss * 1024,
        "load": os.getloadavg()[0],
        **figures,
    }


def _clock() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


# -- the steps, each in its own interpreter --------------------------------------------------------------


def step_write(n: int, store: Path, changed: bool) -> dict[str, Any]:
    from refstore.core.chunks import ChunkWriter

    folder = ChunkFolder(store)
    started, cpu = _clock()
    writer = ChunkWriter(folder.put)
    writer.add_all(listing(n, changed=changed))
    root = writer.finish()
    folder.put(root.digest, root.data)
    return _measured(
        started,
        cpu,
        digest=root.digest,
        count=root.count,
        chunks=folder.puts,
        manifest_bytes=folder.put_bytes,
        root_bytes=len(root.data),
        written=folder.written,
        written_bytes=folder.written_bytes,
    )


def step_listing(n: int) -> dict[str, Any]:
    """The generated listing alone (what the build's time includes that is not refstore's)."""
    started, cpu = _clock()
    count = sum(1 for _ in listing(n))
    return _measured(started, cpu, count=count)


def step_read(store: Path, digest: str, n: int) -> dict[str, Any]:
    from refstore.core.chunks import read_manifest

    folder = ChunkFolder(store)
    started, cpu = _clock()
    manifest = read_manifest(folder.load(digest), digest, folder.load)
    count = total = 0
    last = ""
    for path, entry in manifest.items():
        assert path > last, path
        last = path
        count += 1
        total += entry.size
    figures = _measured(started, cpu, chunks_read=manifest.chunks_read)  # type: ignore[attr-defined]
    assert count == n == len(manifest) and total == manifest.total_size, (count, n, total)
    return figures


def step_diff(store: Path, old_digest: str, new_digest: str, n: int) -> dict[str, Any]:
    from refstore.core.chunks import diff, read_manifest, stored_digests

    folder = ChunkFolder(store)
    started, cpu = _clock()
    old = read_manifest(folder.load(old_digest), old_digest, folder.load)
    new = read_manifest(folder.load(new_digest), new_digest, folder.load)
    found = diff(old, new)
    figures = _measured(
        started,
        cpu,
        chunks_read=old.chunks_read + new.chunks_read,  # type: ignore[attr-defined]
        added=len(found.added),
        removed=len(found.removed),
        modified=len(found.modified),
    )
    figures["chunks_total"] = len(stored_digests(old)) + len(stored_digests(new)) - 2  # without the roots
    added, removed, modified = expected_change(n)
    found_sets = (set(found.added), set(found.removed), set(found.modified))
    figures["exact"] = found_sets == (added, removed, modified)
    assert figures["exact"], "the diff is not what was changed"
    return figures


def step_draft_log(n: int, registry: Path) -> dict[str, Any]:
    """The first version: an Artifact holding ``n`` entries, logged."""
    import refstore

    started, cpu = _clock()
    art = refstore.Artifact("scale", "dataset")
    art._add(list(listing(n)))
    made = _measured(started, cpu)
    started, cpu = _clock()
    version = refstore.Registry(registry).log(art)
    logged = _measured(started, cpu, version=version.version, bytes=_manifest_bytes(Path(registry)))
    return {"add": made, "log": logged}


def step_draft_change(n: int, registry: Path) -> dict[str, Any]:
    """A draft of that version, 1% removed as whole folders, a few entries added, logged."""
    import refstore
    from refstore.core.chunks import stored_digests
    from refstore.snapshots.intents import manifest_path

    registry = Path(registry)
    before = _files(registry / "manifests")
    steps: dict[str, Any] = {}
    started, cpu = _clock()
    reg = refstore.Registry(registry)
    version = reg.get("scale:latest")
    draft = version.new_draft()
    steps["new_draft"] = _measured(started, cpu, entries=len(draft.manifest))
    started, cpu = _clock()
    removed = sum(draft.remove(f"part-{f:05d}") for f in changed_folders(n))
    steps["remove"] = _measured(started, cpu, removed=removed, calls=len(changed_folders(n)))
    started, cpu = _clock()
    per, folder = folder_size(n), changed_folders(n)[-1] + 1  # beside objects the draft kept
    extra = [neighbour(folder, i) for i in range(folder * per + 5, min(n, (folder + 1) * per), 10)][:10]
    draft._add(extra)
    steps["add"] = _measured(started, cpu, added=len(extra))
    started, cpu = _clock()
    new = reg.log(draft)
    new_files = _files(registry / "manifests") - before
    stored = stored_digests(new.manifest)
    total = sum((registry / manifest_path(d)).stat().st_size for d in stored)
    written = sum(p.stat().st_size for p in new_files)
    steps["log"] = _measured(
        started,
        cpu,
        version=new.version,
        manifest_bytes=total,
        chunks=len(stored),
        written_bytes=written,
        written_files=len(new_files),
        entries=len(new.manifest),
    )
    assert len(new.manifest) == n - removed + len(extra)
    assert [d for d in reg.get("scale:v0").diff(new).removed if not d.startswith("part-")] == []
    return steps


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.json")} if folder.exists() else set()


def _manifest_bytes(registry: Path) -> int:
    return sum(p.stat().st_size for p in _files(registry / "manifests"))


STEPS = {"write": step_write, "read": step_read, "diff": step_diff, "listing": step_listing}


def run_step(name: str, *args: Any, nice: int = 0) -> dict[str, Any]:
    """One step in a fresh interpreter (``nice`` added), its figures back as JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--step", name, json.dumps(args)]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    os.sync()
    print(f"[{time.strftime('%H:%M:%S')}] {name} {args[:1]}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {json.dumps(figures)[:400]}", file=sys.stderr, flush=True)
    return figures


def code_state() -> str:
    """The commit measured, and refstore's files that differed from it (others edit the checkout)."""
    git = ["git", "-C", str(HERE.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run([*git, "status", "--porcelain", "refstore"], capture_output=True, text=True).stdout
    changed = [line[3:] for line in dirty.splitlines()]
    return head.strip() + (f" (uncommitted edits to {', '.join(changed)})" if changed else "")


def part_scale(n: int, data: Path, nice: int) -> dict[str, Any]:
    store = data / f"scale-{n}"
    shutil.rmtree(store, ignore_errors=True)
    try:
        write = run_step("write", n, str(store), False, nice=nice)
        read = run_step("read", str(store), write["digest"], n, nice=nice)
        change = run_step("write", n, str(store), True, nice=nice)
        diffed = run_step("diff", str(store), write["digest"], change["digest"], n, nice=nice)
        disk = sum(p.stat().st_size for p in (store / "manifests").rglob("*.json"))
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return {"entries": n, "write": write, "read": read, "change": change, "diff": diffed, "disk": disk}


def part_draft(n: int, data: Path, nice: int) -> dict[str, Any]:
    registry = data / f"draft-{n}"
    shutil.rmtree(registry, ignore_errors=True)
    try:
        first = run_step("draft_log", n, str(registry), nice=nice)
        second = run_step("draft_change", n, str(registry), nice=nice)
    finally:
        shutil.rmtree(registry, ignore_errors=True)
    return {"entries": n, "first": first, "second": second}


def part_big(n: int, data: Path, nice: int) -> dict[str, Any]:
    store = data / f"big-{n}"
    shutil.rmtree(store, ignore_errors=True)
    try:
        write = run_step("write", n, str(store), False, nice=nice)
        disk = sum(p.stat().st_size for p in (store / "manifests").rglob("*.json"))
        files = sum(1 for _ in (store / "manifests").rglob("*.json"))
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return {"entries": n, "write": write, "disk": disk, "files": files}


# -- the report -----------------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:.1f} MB"


def _row(what: str, f: dict[str, Any], note: str = "") -> str:
    return (
        f"| {what} | {f['seconds']:.1f} s | {f['cpu']:.1f} s | {_gb(f['peak_rss'])} | {f['load']:.1f} | "
        f"{note} |"
    )


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets against what the parts measured."""
    rows = []
    scale, big = results.get("scale"), results.get("big")
    if scale:
        steps = {"build + write": scale["write"], "read": scale["read"], "1% copy": scale["change"]}
        steps["diff"] = scale["diff"]
        top = max(steps, key=lambda k: steps[k]["peak_rss"])
        peak = steps[top]["peak_rss"]
        rows.append(
            f"| {scale['entries']:,} entries: each step's peak RSS | < 1 GB | {_gb(peak)} ({top}) | "
            f"{'yes' if peak < GB else 'no'} |"
        )
        share = scale["change"]["written_bytes"] / scale["change"]["manifest_bytes"]
        rows.append(
            f"| {scale['entries']:,} entries, 1% changed: bytes written | ≤ 3% of the manifest's | "
            f"{share:.2%} | {'yes' if share <= 0.03 else 'no'} |"
        )
    if big:
        peak = big["write"]["peak_rss"]
        rows.append(
            f"| {big['entries']:,} entries build + write: peak RSS | < 1 GB (24 GB machine) | {_gb(peak)}, "
            f"{big['write']['seconds'] / 60:.0f} min | {'yes' if peak < GB else 'no'} |"
        )
    for run in results.get("draft", []):
        log = run["second"]["log"]
        share = log["written_bytes"] / log["manifest_bytes"]
        peak = max(run["first"]["log"]["peak_rss"], log["peak_rss"])
        rows.append(
            f"| draft of a {run['entries']:,}-entry version, 1% removed: bytes written | ≤ 3% | "
            f"{share:.2%} | {'yes' if share <= 0.03 else 'no'} |"
        )
        rows.append(
            "| ... its processes' peak RSS (public API: `Artifact`, `Registry.log`) | < 1 GB | "
            f"{_gb(peak)} | {'yes' if peak < GB else 'no'} |"
        )
    if not rows:
        return []
    return ["| target | wanted | measured | met |", "|---|---|---|---|", *rows, ""]


def report(results: dict[str, Any]) -> str:
    from _common import machine

    import refstore

    info = machine()
    when = results.get("when", "?")
    lines = [
        TITLE,
        "",
        f"Produced by `python benchmarks/manifest_scale.py --results` (last part on {when}), its steps "
        "run under `nice -n 10` (the 10^8 build under `nice -n 19`) beside CI runs and other sessions' "
        f"benchmarks on the same machine: {info['nproc']} CPUs "
        f"({info['cpu']}), {info['memory']}, Python {info['python']}, refstore {refstore.__version__}. Every "
        "step is one run in a fresh interpreter: **wall** time, **CPU** (user + system of that process: "
        "what the step cost, whatever else ran), **peak RSS** (`ru_maxrss`), the 1-minute load average "
        "at the step's end (2 cores: above 2, the step waited for a core). Chunk files were written to "
        "the page cache of a local disk and read back from it.",
        "",
        *targets(results),
    ]
    scale = results.get("scale")
    if scale:
        n = scale["entries"]
        w, r, c, d = scale["write"], scale["read"], scale["change"], scale["diff"]

        def per_entry(f: dict[str, Any]) -> str:
            return f"{f['cpu'] / n * 1e6:.1f} µs CPU per entry"

        gen = results.get("listing") if results.get("listing", {}).get("count") == n else None
        share = c["written_bytes"] / c["manifest_bytes"]
        lines += [
            f"### {n:,} entries: build, write, read, change 1%, diff",
            "",
            f"Code measured: {scale.get('code', '?')}.",
            "",
            "| step | wall | CPU | peak RSS | load | what |",
            "|---|---|---|---|---|---|",
            _row(
                "build + write",
                w,
                f"{w['chunks'] - 1:,} chunks + root ({w['root_bytes'] / 1e3:.0f} kB), "
                f"{_gb(w['manifest_bytes'])} ({w['manifest_bytes'] / n:.0f} B per entry); {per_entry(w)}",
            ),
            *([_row("(the generated listing alone, no refstore)", gen, per_entry(gen))] if gen else []),
            _row("full read (every entry iterated)", r, f"{r['chunks_read']:,} chunks read"),
            _row(
                "copy with 1% changed, into the same store",
                c,
                f"{c['written']:,} of {c['chunks']:,} files written: {_gb(c['written_bytes'])} of "
                f"{_gb(c['manifest_bytes'])} = **{share:.2%}** of the manifest's bytes",
            ),
            _row(
                "diff of the two (`chunks.diff`)",
                d,
                f"{d['chunks_read']:,} of {d['chunks_total']:,} chunks read; {d['added']:,} added, "
                f"{d['removed']:,} removed, {d['modified']:,} modified: "
                + ("exactly what was changed" if d["exact"] else "NOT what was changed"),
            ),
            "",
            f"The change: {len(changed_folders(n))} folders of {folder_size(n):,} in a row (of {FOLDERS:,}) "
            "rewritten: 9 in 10 objects with a new ETag, size and version id, 1 in 10 removed, and a new "
            f"object beside 1 in 10. Both manifests on disk: {_gb(scale['disk'])}.",
            "",
            "Where the time goes: the build's CPU includes making the generated entries (the listing row "
            "above: `ManifestEntry` objects and their strings). A full read costs about 5 µs of CPU per "
            "entry, most of it checking each row as it becomes an entry (`_RowReader.add` and "
            "`ManifestEntry.checked` in `refstore/core/manifest.py`: about 85% of a 200,000-entry read under "
            "cProfile), not reading or hashing chunks. Memory stays flat: the writer holds one chunk, a "
            "reader four, a diff the stretch of chunks that differ.",
            "",
        ]
    draft = results.get("draft", [])
    for run in draft:
        n, first, second = run["entries"], run["first"], run["second"]
        log2 = second["log"]
        lines += [
            f"### Incremental version through the public API, {n:,} entries (local `Registry`)",
            "",
            f"Code measured: {run.get('code', '?')}.",
            "",
            "| step | wall | CPU | peak RSS so far | load | what |",
            "|---|---|---|---|---|---|",
            _row("`Artifact._add(entries)` (internal shortcut for a listing)", first["add"]),
            _row("`Registry.log` (first version)", first["log"], f"{_gb(first['log']['bytes'])} of manifest"),
            _row(
                "`reg.get(...).new_draft()` (new process)",
                second["new_draft"],
                f"{second['new_draft']['entries']:,} entries",
            ),
            _row(
                "`draft.remove(folder)`",
                second["remove"],
                f"{second['remove']['calls']} folders, {second['remove']['removed']:,} entries",
            ),
            _row("`draft._add(...)`", second["add"], f"{second['add']['added']} entries"),
            _row(
                "`Registry.log(draft)`",
                log2,
                f"{log2['written_files']:,} new files under manifests/: {_gb(log2['written_bytes'])} of the "
                f"version's {_gb(log2['manifest_bytes'])} ({log2['chunks']:,} files) = "
                f"**{log2['written_bytes'] / log2['manifest_bytes']:.2%}**",
            ),
            "",
            f'The change: `draft.remove("part-NNNNN")` on {len(changed_folders(n))} folders in a row '
            f"({second['remove']['removed']:,} entries, 1%), then {second['add']['added']} new objects "
            "added beside objects of the next folder: removals and a few additions, where the first part's "
            "change also rewrites entries.",
            "",
        ]
    if draft:
        lines += [
            "Entries reach the first version through `Artifact._add(list)`, an internal method: listing "
            "a real source of that many objects is not what this measures. Peak RSS here is the "
            "process's so far (the first two rows are one process, the last four another). An `Artifact` "
            "holds its entries in a dict, and `Registry.log` makes every chunk of the new version in "
            "memory (`chunks.chunked`) before it writes the ones the registry lacks: the bytes written "
            "follow the change, the time and memory of a log still follow the whole manifest. "
            "`Artifact.remove` looks at every entry on each call "
            f"({draft[-1]['second']['remove']['cpu'] / draft[-1]['second']['remove']['calls']:.1f} s of CPU "
            f"per call at {draft[-1]['entries']:,} entries). The 10 adds to the largest draft took "
            f"{draft[-1]['second']['add']['cpu']:.1f} s of CPU, where they do no work that grows with the "
            "entries: not profiled (a full garbage collection of the draft's entries falling in that step "
            "would explain it).",
            "",
        ]
    big = results.get("big")
    if big:
        w, n = big["write"], big["entries"]
        lines += [
            f"### {n:,} entries: build + write",
            "",
            f"Code measured: {big.get('code', '?')}.",
            "",
            "| step | wall | CPU | peak RSS | load | what |",
            "|---|---|---|---|---|---|",
            _row(
                "build + write",
                w,
                f"{big['files']:,} files, {_gb(big['disk'])} on disk; {w['cpu'] / n * 1e6:.1f} µs CPU per "
                "entry",
            ),
            "",
            f"The root ({w['root_bytes'] / 1e3:.1f} kB) names index chunks (more than 4,096 chunks of "
            "entries). " + results.get("big_note", ""),
            "",
        ]
    elif results.get("big_note"):
        lines += ["### 10^8 entries: build + write", "", results["big_note"], ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--step":
        name, args = sys.argv[2], json.loads(sys.argv[3])
        steps = {**STEPS, "draft_log": step_draft_log, "draft_change": step_draft_change}
        print(json.dumps(steps[name](*args)))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--draft-entries", default="1000000", help="comma-separated sizes")
    parser.add_argument("--big", type=int, default=100_000_000)
    parser.add_argument("--parts", default="scale,draft", help="of scale,listing,draft,big (big is long)")
    parser.add_argument("--data", default="/tmp/refstore-manifest-scale")
    parser.add_argument("--nice", type=int, default=0, help="run the steps under nice -n NICE")
    parser.add_argument("--quick", action="store_true", help="100,000 entries, a smoke run")
    parser.add_argument("--results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    parser.add_argument("--big-note", help="what the section says about the big run (or its absence)")
    args = parser.parse_args()
    data = Path(args.data) / ("quick" if args.quick else "full")
    data.mkdir(parents=True, exist_ok=True)
    saved = data / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    parts = args.parts.split(",") if args.parts else []
    if args.quick:
        args.entries, args.draft_entries, args.big = 100_000, "100000", 200_000
    if "scale" in parts:
        results["scale"] = {"code": code_state(), **part_scale(args.entries, data, args.nice)}
    if "listing" in parts:
        results["listing"] = run_step("listing", args.entries, nice=args.nice)
    if "draft" in parts:
        results["draft"] = [
            {"code": code_state(), **part_draft(int(n), data, args.nice)}
            for n in args.draft_entries.split(",")
        ]
    if "big" in parts:
        results["big"] = {"code": code_state(), **part_big(args.big, data, args.nice)}
    if args.big_note:
        results["big_note"] = args.big_note
    if parts:
        results["when"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    saved.write_text(json.dumps(results, indent=1))
    text = report(results)
    print(text)
    if args.results:
        from parallel_listing import write_section

        write_section(text, HERE / "RESULTS.md", TITLE)


if __name__ == "__main__":
    main()
