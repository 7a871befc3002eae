"""Sizes as people read and write them."""

from __future__ import annotations

import re
from decimal import Decimal


def human_size(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def parse_size(text: str) -> int:
    """``"10GB"`` -> 10,000,000,000; ``"500MiB"`` -> 524,288,000; ``"1048576"`` -> 1,048,576 bytes.

    Decimal units (``kB``, ``MB``, ``GB``, ``TB``; ``K``, ``M``, ``G``, ``T`` alike) and binary ones
    (``KiB``, ``MiB``, ``GiB``, ``TiB``), any case, a space allowed before the unit; a fraction only with a
    unit (``1.5GB``), rounded down to whole bytes. :class:`ValueError` naming ``text`` otherwise."""
    match = _SIZE.fullmatch(text.lower())
    if match is None or match[2] not in _UNITS or ("." in match[1] and not match[2]):
        raise ValueError(f"{text!r} is not a size such as 10GB, 500MiB or 1048576 (bytes)")
    return int(Decimal(match[1]) * _UNITS[match[2]])
