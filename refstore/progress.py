"""Progress bars for long work: tqdm on a terminal, silent otherwise."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(total: int | None, description: str, *, unit: str = "B", show: bool = True) -> Any:
    """A byte (or item) progress bar, shown only when stderr is a terminal and not disabled.

    ``REFSTORE_PROGRESS=0`` silences it, ``=1`` forces it; ``show=False`` silences it too (work that turns
    out to be quick). ``total=None``: a count without a known end.
    """
    setting = os.environ.get("REFSTORE_PROGRESS")
    disable = not sys.stderr.isatty() if setting is None else setting in ("0", "false", "no")
    disable = disable or not show
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=disable,
        leave=False,
        file=sys.stderr,
    )
