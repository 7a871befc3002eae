"""The ``refstore cache`` commands: what the download cache holds, and pruning it to a size."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

import click

from ..core.sizes import human_size
from .cli_options import global_options, settings
from .render import emit

if TYPE_CHECKING:  # imported when a command runs, so that the command line starts fast
    from ..storage.cache_bounds import CacheInfo


@click.group("cache")
@global_options()
def cache_group() -> None:
    """Look at and bound the local download cache ($REFSTORE_CACHE_DIR, default ~/.cache/refstore)."""


@cache_group.command("info")
@global_options()
@click.pass_context
def cache_info_command(ctx: click.Context) -> None:
    """Size, objects and oldest use of the download cache.

    Also how much of it download folders share as hard links (removing those frees no disk space while the
    downloads remain), how many pins it keeps, and the newest use.
    """
    from ..storage import cache_bounds
    from ..storage.cache import Cache

    found = cache_bounds.info(Cache())
    emit(found.to_json(), settings(ctx)["json"], "\n".join(_info_lines(found)))


def _info_lines(found: CacheInfo) -> list[str]:
    lines = [
        f"cache       {found.root}",
        f"size        {human_size(found.size)} in {found.entries:,} object(s)",
    ]
    if found.linked_size:
        lines.append(
            f"linked      {human_size(found.linked_size)} also in download folders (hard links: pruning "
            "those frees no disk space until the downloads are deleted too)"
        )
    lines.append(f"pins        {found.pins:,}")
    lines.append(f"oldest use  {_when(found.oldest_use)}")
    lines.append(f"newest use  {_when(found.newest_use)}")
    return lines


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    age = max(0.0, time.time() - stamp)
    unit, size = next(((u, n) for u, n in _UNITS if age >= 2 * n), ("second", 1))
    when = datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")
    return f"{when} ({int(age // size)} {unit}s ago)"


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))


@cache_group.command("prune")
@click.option(
    "--max-size",
    metavar="SIZE",
    envvar="REFSTORE_CACHE_MAX_SIZE",
    required=True,
    help="Keep at most SIZE: 10GB, 500MiB or bytes; 0 empties the cache (default $REFSTORE_CACHE_MAX_SIZE).",
)
@global_options()
@click.pass_context
def cache_prune_command(ctx: click.Context, max_size: str) -> None:
    """Remove the least recently used cached objects down to --max-size.

    Asks first (-y/--yes does not). Pins that name no cached object go too. Files downloaded as hard
    links to cached objects keep their bytes; a removed object is fetched again by the next download that
    needs it. Safe beside running downloads.
    """
    from ..core.sizes import parse_size
    from ..storage import cache_bounds
    from ..storage.cache import Cache

    as_json, yes = settings(ctx)["json"], settings(ctx)["yes"]
    try:
        limit = parse_size(max_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-size") from None
    cache = Cache()
    chosen = cache_bounds.plan(cache, limit)
    if chosen.doomed and not yes:
        question = (
            f"Remove {len(chosen.doomed):,} cached object(s) ({human_size(chosen.freed)}) from {cache.root}"
        )
        if not click.confirm(f"{question}, least recently used first?", err=True):
            emit({"path": str(cache.root), "removed": 0, "declined": True}, as_json, "nothing removed")
            return
    report = cache_bounds.prune(cache, limit, chosen=chosen)
    text = (
        f"removed {report.removed:,} object(s) ({human_size(report.freed)}) "
        f"and {report.pins_removed:,} pin(s); "
        f"{report.root} holds {human_size(report.size)} in {report.entries:,} object(s) "
        f"(at most {max_size.strip()})"
    )
    if report.skipped:
        text += f"; kept {report.skipped:,} that a download used meanwhile"
    emit(report.to_json(), as_json, text)
