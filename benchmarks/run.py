"""Run every benchmark case side by side with the peers and write ``benchmarks/RESULTS.md``.

    python benchmarks/run.py            # the full run (about 30 minutes on 2 cores), writes RESULTS.md
    python benchmarks/run.py --quick    # small N, a minute or so; writes to --out (default: RESULTS-quick.md)

wandb runs in its own venv (``benchmarks/.venv-peers``, created on first use) as a subprocess, so it
never changes the packages of the interpreter that runs refstore. ``--no-peers`` leaves it out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("REFSTORE_PROGRESS", "0")

from _common import (
    BENCH_DIR,
    CaseResult,
    Target,
    fmt_ratio,
    fmt_seconds,
    machine,
    moto_server,
    peer_version,
    peers_python,
    versions,
)

CASES = ("s3", "local", "download", "manifest", "import", "runs")
#: The order the cases run in, each in its own process.
ORDER = ("s3", "download", "local", "manifest", "import", "runs")


@dataclass(frozen=True)
class Sizes:
    s3: tuple[int, ...]
    download: tuple[int, ...]
    warm: int
    big_files: int  # 1 MiB files
    small_files: int
    manifest: int
    repeat: int
    import_repeat: int
    runs: tuple[int, ...] = (1000, 10_000)  # files a run saves


FULL = Sizes((1000, 5000, 20000), (1000, 5000), 10_000, 2048, 100_000, 1_000_000, 3, 15)
QUICK = Sizes((50, 200), (50,), 200, 8, 500, 10_000, 1, 2, (200,))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat or sizes.repeat
    cases = args.cases.split(",") if args.cases else list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases: {', '.join(sorted(unknown))} (known: {', '.join(CASES)})")
    out = Path(args.out) if args.out else BENCH_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    peers = None if args.no_peers else peers_python()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="refstore-bench-data-"))
    if args.one_case:  # a child of the run below: one case, its results pickled for the parent
        results = _run([args.one_case], sizes, repeat, peers, data)
        Path(args.one_case_out).write_bytes(pickle.dumps(results))
        return 0
    started = time.monotonic()
    results = []
    try:
        for case in (c for c in ORDER if c in cases):
            results += _isolated(case, argv if argv is not None else sys.argv[1:], data)
    finally:
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    elapsed = time.monotonic() - started
    out.write_text(_report(results, sizes, repeat, peers, args, elapsed))
    print(f"wrote {out} ({elapsed:.0f} s)")
    missed = [t.name for r in results for t in r.targets if not t.met]
    print("targets missed: " + ("; ".join(missed) if missed else "none"))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run")
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--repeat", type=int, help="repeats per measurement (default 3, quick 1)")
    parser.add_argument("--no-peers", action="store_true", help="leave wandb out (no venv is created)")
    parser.add_argument("--out", help="where to write the table (default benchmarks/RESULTS.md)")
    parser.add_argument("--data", help="folder for generated data (default: a temporary folder)")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated data afterwards")
    parser.add_argument("--one-case", help=argparse.SUPPRESS)
    parser.add_argument("--one-case-out", help=argparse.SUPPRESS)
    return parser


def _isolated(case: str, argv: list[str], data: Path) -> list[CaseResult]:
    """Run one case in a fresh interpreter, so that no case pays for what an earlier one left behind
    (heap, threads, imports, files being written back); its results come back pickled."""
    out = data / f"{case}.results.pickle"
    data.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--data", str(data)]
    command += ["--one-case", case, "--one-case-out", str(out)]
    finished = subprocess.run(command, check=False)
    if finished.returncode != 0 or not out.exists():
        failed = CaseResult(case, notes=[f"This case's process failed (exit code {finished.returncode})."])
        failed.targets.append(Target(f"{case}: the case ran", "it runs", "failed", False))
        return [failed]
    results: list[CaseResult] = pickle.loads(out.read_bytes())
    out.unlink()
    return results


def _run(cases: list[str], sizes: Sizes, repeat: int, peers: Path | None, data: Path) -> list[CaseResult]:
    """Each case in turn; a case that fails is reported as failed and the others still run."""
    results: list[CaseResult] = []
    if "s3" in cases:
        _attempt(
            results, "Reference to a versioned S3 prefix", lambda: _s3_references(sizes, repeat, peers, data)
        )
    if "download" in cases:
        _attempt(results, "Download of pinned S3 objects", lambda: _downloads(sizes, repeat, data))
    if "local" in cases:
        _attempt(
            results,
            "Reference to a local directory (page-cached)",
            lambda: _local(sizes, repeat, peers, data),
        )
    if "manifest" in cases:
        import case_manifest

        _log("case 4: manifest")
        _attempt(
            results, "Manifest of many entries", lambda: case_manifest.manifest_case(sizes.manifest, repeat)
        )
    if "import" in cases:
        import case_import

        _log("case 5: start-up")
        _attempt(results, "Start-up time", lambda: case_import.import_case(sizes.import_repeat))
    if "runs" in cases:
        import case_runs

        _log("case 6: a run saving many files")
        _attempt(results, "A run saving many files", lambda: case_runs.runs_case(list(sizes.runs), repeat))
    return results


def _attempt(results: list[CaseResult], title: str, run: Callable[[], CaseResult]) -> None:
    try:
        results.append(run())
    except Exception as exc:
        traceback.print_exc()
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        failed = CaseResult(title, notes=[f"This case failed: {error}"])
        failed.targets.append(Target(f"{title}: the case ran", "it runs", "failed", False, error))
        results.append(failed)


def _s3_references(sizes: Sizes, repeat: int, peers: Path | None, data: Path) -> CaseResult:
    import case_s3

    with moto_server(data / "servers-references") as server:
        _log(f"S3: writing {', '.join(map(str, sizes.s3))} objects to moto")
        case_s3.populate(server, list(sizes.s3), case_s3.REFERENCE_OBJECT_SIZE)
        _log("case 1: S3 references")
        return case_s3.reference_case(server, list(sizes.s3), repeat, peers)


def _downloads(sizes: Sizes, repeat: int, data: Path) -> CaseResult:
    import case_s3

    prefixes = sorted({*sizes.download, sizes.warm})
    with moto_server(data / "servers-downloads") as server:
        _log(f"S3: writing {', '.join(map(str, prefixes))} objects to moto")
        case_s3.populate(server, prefixes, case_s3.OBJECT_SIZE)
        _log("case 3: downloads")
        return case_s3.download_case(server, list(sizes.download), sizes.warm, sizes.warm, repeat)


def _local(sizes: Sizes, repeat: int, peers: Path | None, data: Path) -> CaseResult:
    import case_local

    _log("case 2: local references (writing the trees)")
    big, small = data / "big-files", data / "small-files"
    big_bytes = case_local.make_tree(big, sizes.big_files, case_local.MIB)
    small_bytes = case_local.make_tree(small, sizes.small_files, None)
    trees = [
        (f"{sizes.big_files:,} files x 1 MiB ({big_bytes / 2**30:.2f} GiB)", big, sizes.big_files, big_bytes),
        (f"{sizes.small_files:,} small files (0.5-4 KiB)", small, sizes.small_files, small_bytes),
    ]
    try:
        return case_local.local_case(trees, repeat, peers)
    finally:
        shutil.rmtree(big, ignore_errors=True)
        shutil.rmtree(small, ignore_errors=True)


def _log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- the report -----------------------------------------------------------------------------------------


def _report(
    results: list[CaseResult],
    sizes: Sizes,
    repeat: int,
    peers: Path | None,
    args: argparse.Namespace,
    elapsed: float,
) -> str:
    box = machine()
    now = datetime.datetime.now(datetime.timezone.utc)
    packages = versions(["refstore", "fsspec", "s3fs", "aiobotocore", "moto", "xxhash"])
    packages["wandb (peers venv)"] = peer_version(peers, "wandb")
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    lines = [
        "# refstore benchmarks",
        "",
        f"Produced by `{command}` — do not edit by hand. Medians of {repeat} repeat(s), peers run side by "
        "side on the same data in the same run (interleaved), requests counted on the server (moto's access "
        "log). Each case runs in a fresh interpreter, and dirty pages are written back (`os.sync()`) before "
        "timed steps. The machine is shared and noisy: read the ratios, not the absolute times.",
        "",
        f"- date: {now:%Y-%m-%d %H:%M UTC}; the run took {elapsed / 60:.1f} min",
        f"- machine: {box['nproc']} CPUs ({box['cpu']}), {box['memory']} memory, {box['os']}, "
        f"Python {box['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in packages.items()),
        "",
        "## Targets",
        "",
        "| target | wanted | measured | met |",
        "|---|---|---|---|",
    ]
    for result in results:
        for t in result.targets:
            lines.append(f"| {t.name} | {t.target} | {t.measured} | {'yes' if t.met else '**no**'} |")
    missed = [t for result in results for t in result.targets if not t.met]
    if missed:
        lines += ["", "### Targets not met, and why", ""]
        lines += [
            f"- **{t.name}** ({t.measured}; wanted {t.target}): {t.why or 'see the table below'}."
            for t in missed
        ]
    for result in results:
        lines += ["", f"## {result.title}", "", *_table(result)]
        for note in result.notes:
            lines += ["", note]
    return "\n".join(lines) + "\n"


def _table(result: CaseResult) -> list[str]:
    lines = [
        f"| workload | tool | median | repeats | requests | throughput | x {result.base_tool or '-'} |",
        "|---|---|---|---|---|---|---|",
    ]
    reference: dict[str, float] = {}
    for row in result.rows:
        if result.base_tool and row.tool.startswith(result.base_tool) and row.workload not in reference:
            reference[row.workload] = row.median
    for row in result.rows:
        base = reference.get(row.workload)
        ratio = fmt_ratio(row.median / base) if base else "-"
        throughput = _throughput(row.nbytes / row.median) if row.nbytes and row.seconds else "-"
        repeats = " / ".join(fmt_seconds(s) for s in row.seconds)
        requests = "-" if row.median_requests is None else f"{row.median_requests:,}"
        lines.append(
            f"| {row.workload} | {row.tool} | {fmt_seconds(row.median)} | {repeats} | {requests} | "
            f"{throughput} | {ratio} |"
        )
    return lines


def _throughput(rate: float) -> str:
    return f"{rate / 1e9:.2f} GB/s" if rate >= 1e9 else f"{rate / 1e6:.1f} MB/s"


if __name__ == "__main__":
    sys.exit(main())
