"""Case 4: a manifest of 1,000,000 entries: build, write, read back, diff, and the peak memory."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

from _common import BENCH_DIR, CaseResult, Target, fmt_seconds

STEPS = ("build", "write", "read", "diff")
MEMORY_LIMIT = 1.5 * 2**30


def manifest_case(n: int, repeat: int) -> CaseResult:
    result = CaseResult("Manifest of many entries", base_tool="")
    rows = {step: result.row(f"{n:,} entries", step) for step in STEPS}
    peaks: list[int] = []
    sizes: list[int] = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="refstore-bench-manifest-") as folder:
            done = subprocess.run(
                [sys.executable, str(BENCH_DIR / "manifest_steps.py"), str(n), folder],
                capture_output=True,
                text=True,
                check=True,
            )
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        for step in STEPS:
            rows[step].seconds.append(answer["times"][step])
        peaks.append(answer["peak_rss"])
        sizes.append(answer["bytes"])
    peak = statistics.median(peaks)
    slowest = max(rows[s].median for s in STEPS)
    result.notes.append(
        f"Encoded manifest: {sizes[0] / 2**20:.0f} MiB ({sizes[0] / n:.0f} bytes per entry); "
        f"peak resident memory of the process doing all four steps: {peak / 2**30:.2f} GiB (median)."
    )
    result.targets += [
        Target(
            f"manifest, {n:,} entries: each step",
            "seconds, not minutes",
            f"slowest step {fmt_seconds(slowest)}",
            slowest < 60,
        ),
        Target(
            f"manifest, {n:,} entries: peak memory",
            "< 1.5 GB",
            f"{peak / 2**30:.2f} GiB",
            peak < MEMORY_LIMIT,
        ),
    ]
    return result
