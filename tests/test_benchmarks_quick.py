"""The benchmark scripts run end to end in their quick mode (small N, no peers), so they never rot.

No timing is asserted here: performance figures come from ``python benchmarks/run.py`` (RESULTS.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_write_a_results_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--no-peers", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for title in (
        "## Targets",
        "## Reference to a versioned S3 prefix",
        "## Download of pinned S3 objects",
        "## Reference to a local directory",
        "## Manifest of many entries",
        "## Start-up time",
        "## A run saving many files",
    ):
        assert title in text, title
    assert "| 200 objects | refstore |" in text
    assert not list(tmp_path.glob("refstore-bench-*")), "generated data left behind"
