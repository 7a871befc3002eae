"""Progress bars for long work: tqdm on a terminal, silent otherwise."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

from .sizes import human_size


def progress_bar(total: int | None, description: str, *, unit: str = "B", show: bool = True) -> Any:
    """A byte (or item) progress bar, shown only when stderr is a terminal and not disabled.

    ``REFSTORE_PROGRESS=0`` silences it, ``=1`` forces it; ``show=False`` silences it too (work that turns
    out to be quick). ``total=None``: a count without a known end.
    """
    setting = os.environ.get("REFSTORE_PROGRESS")
    disable = not sys.stderr.isatty() if setting is None else setting in ("0", "false", "no")
    if disable or not show:
        return _Silent()  # (no tqdm object: it would make a multiprocessing lock and a monitor thread)
    counted = "{n_fmt}" if total is None else "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}"
    return _Bar(
        total=total,
        desc=description,
        unit=unit,
        leave=False,
        file=sys.stderr,
        bar_format="{desc}: "
        + counted
        + " [{elapsed}"
        + ("" if total is None else "<{remaining}")
        + ", {rate_fmt}]",
    )


class _Bar(tqdm):  # type: ignore[misc]  # tqdm is untyped
    """Amounts as the rest of the command line prints them: ``1,088 files``, ``3.5 MiB``, ``12 files/s``."""

    @property
    def format_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = super().format_dict
        unit, n, total, elapsed = values["unit"], int(values["n"]), values["total"], values["elapsed"]
        rate = values["rate"] or (n / elapsed if elapsed else 0)
        if unit == "B":
            values["n_fmt"] = human_size(n)
            values["total_fmt"] = "?" if total is None else human_size(int(total))
            values["rate_fmt"] = f"{human_size(int(rate))}/s" if rate else "? B/s"
        else:
            values["n_fmt"] = f"{n:,}" if total is not None else f"{n:,} {unit}"
            values["total_fmt"] = "?" if total is None else f"{int(total):,} {unit}"
            values["rate_fmt"] = f"{rate:,.0f} {unit}/s" if rate else f"? {unit}/s"
        return values


class _Silent:
    """A bar that shows nothing: what :func:`progress_bar` gives when it is not shown."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        return None

    def close(self) -> None:
        return None
