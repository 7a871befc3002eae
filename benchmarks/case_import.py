"""Case 5: ``import refstore`` and ``refstore --help`` against a bare interpreter, each in a new process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from _common import CaseResult, Target, fmt_seconds, timed

LIMIT = 0.150


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("refstore")
    found = str(script) if script.exists() else shutil.which("refstore")
    return [found, "--help"] if found else [sys.executable, "-m", "refstore", "--help"]


def import_case(repeat: int) -> CaseResult:
    result = CaseResult("Start-up time", base_tool="bare interpreter")
    commands = {
        "bare interpreter: python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import refstore'": [sys.executable, "-c", "import refstore"],
        "refstore --help": _cli(),
    }
    rows = {label: result.row("new process", label) for label in commands}
    for _ in range(repeat):
        for label, argv in commands.items():
            rows[label].seconds.append(
                timed(lambda argv=argv: subprocess.run(argv, check=True, capture_output=True))[0]
            )
    bare = rows["bare interpreter: python -c pass"].median
    for label in ("python -c 'import refstore'", "refstore --help"):
        extra = rows[label].median - bare
        result.targets.append(
            Target(f"{label}: over a bare interpreter", "< 150 ms", fmt_seconds(extra), extra < LIMIT)
        )
    return result
