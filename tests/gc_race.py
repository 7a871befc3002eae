"""Races gc against a logger in another process: the shape the gc trust tests share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import refstore
from refstore.snapshots.gc import collect_garbage


def race_gc(
    registry: refstore.Registry, logger_source: str, args: list[str], each_round: Callable[[], None]
) -> int:
    """Start ``logger_source`` (``python -c``, given the registry's root and ``args``), wait for it to print
    ``ready``, then until it exits run ``each_round`` and a gc (in that order) again and again, then check it
    printed ``done`` and exited 0. Returns how many gc runs raced it (at least 2)."""
    logger = subprocess.Popen(
        [sys.executable, "-c", logger_source, registry.root, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert logger.stdout is not None and logger.stdout.readline() == "ready\n"
    runs = 0
    try:
        while logger.poll() is None:
            each_round()
            collect_garbage(registry, yes=True)
            runs += 1
    finally:
        if logger.poll() is None:
            logger.kill()
        logger.wait(60)
    assert logger.returncode == 0 and logger.stdout.read() == "done\n"
    assert runs >= 2
    return runs
