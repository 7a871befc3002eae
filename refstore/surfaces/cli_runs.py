"""The run commands of the ``refstore`` command line: ``restore``, ``sync`` and ``runs ls|show|rm``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from ..core.sizes import human_size
from .cli_options import global_options, registry_of, settings
from .render import emit, printable, table

if TYPE_CHECKING:  # the rest is imported when a command runs, so that the command line starts fast
    from ..runs.clean import RunDirStatus, SyncResult

_dir_option = click.option(
    "--dir", "dir_", default=None, help="Where run directories live (default $REFSTORE_DIR, else .)."
)


def _echo(data: Any, as_json: bool, lines: Sequence[str]) -> None:
    emit(data, as_json, "\n".join(printable(line) for line in lines))  # a run's name, error, files


@click.command("restore")
@click.argument("run_path")
@click.argument("files", nargs=-1)
@click.option("--dest", default=".", show_default=True, help="Folder to restore FILES into.")
@click.option("--replace", is_flag=True, help="Overwrite local files that already exist.")
@click.option(
    "--state",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Restore synced state N of FILES (0 is the first; `refstore runs show` lists them), not the newest.",
)
@global_options()
@click.pass_context
def restore_command(
    ctx: click.Context, run_path: str, files: Sequence[str], dest: str, replace: bool, state: int | None
) -> None:
    """Restore FILES of the run RUN_PATH (project/run_id); without FILES, its code.

    A file is restored as its newest synced state, or as state N with --state N (every synced state of a
    live file is kept). A local file already there is left as it is unless --replace; with --state, one
    holding other bytes than state N is an error.

    Restoring the code creates branch refstore/RUN_PATH in the current git repository and recreates the
    run's working tree there: at the run's commit plus its diff.patch where this repository has that
    commit; else (a fresh clone of the remote) at the newest commit of the run's history that the remote
    held plus its upstream.patch (unpushed commits and uncommitted changes, as uncommitted changes). Refuses
    when tracked files have uncommitted changes, or to write over untracked or ignored files.
    """
    from ..runs.restoring import restore, restore_code
    from ..snapshots.registry import Registry

    as_json = settings(ctx)["json"]
    registry = Registry(ctx.obj["root"])
    if not files:
        if state is not None:
            raise click.UsageError("--state needs FILES: the code has no states")
        branch = restore_code(run_path, registry=registry)
        _echo({"branch": branch}, as_json, [f"on branch {branch}"])
        return
    paths = []
    for name in files:
        with restore(name, run_path, replace=replace, root=dest, registry=registry, state=state) as handle:
            paths.append(handle.name)
    _echo({"files": paths}, as_json, paths)


@click.command("sync")
@click.option("--clean", is_flag=True, help="Delete local run directories whose files are all synced.")
@_dir_option
@global_options()
@click.pass_context
def sync_command(ctx: click.Context, clean: bool, dir_: str | None) -> None:
    """Upload what local run directories have not synced; with --clean, delete the fully synced ones.

    Each run directory goes to the registry its run was started with (not --root). A run whose process
    died is recorded as crashed.
    """
    from ..core.exceptions import RunError
    from ..core.places import run_area
    from ..runs.clean import survey, sync_pending

    as_json, yes = settings(ctx)["json"], settings(ctx)["yes"]
    area = run_area(dir_)
    if clean:
        _clean(survey(area), yes, as_json)
        return
    results = sync_pending(area)
    _echo([_result_json(r) for r in results], as_json, [_result_line(r) for r in results] or ["no runs"])
    failed = [f for r in results for f in r.failures]
    if failed:
        raise RunError(f"{len(failed)} file(s) not synced, local copies kept: " + "; ".join(map(str, failed)))


def _result_line(result: SyncResult) -> str:
    if result.running:
        return f"{result.run_path}: still running, skipped ({result.dir})"
    line = f"{result.run_path}: {len(result.uploaded)} file(s) uploaded"
    line += f", {len(result.failures)} failed" if result.failures else ""
    return f"{line} (run {result.state}{': ' + result.error if result.error else ''})"


def _result_json(result: SyncResult) -> dict[str, Any]:
    return {
        "run_path": result.run_path,
        "dir": str(result.dir),
        "running": result.running,
        "state": result.state,
        "error": result.error,
        "registry": result.registry,
        "uploaded": list(result.uploaded),
        "failed": [{"path": f.path, "error": f.error} for f in result.failures],
    }


def _clean(statuses: list[RunDirStatus], yes: bool, as_json: bool) -> None:
    from ..runs.clean import delete

    doomed = [s for s in statuses if s.clean]
    kept = [s for s in statuses if not s.clean]
    lines = [f"kept {s.dir.name} ({s.run_path}): {_why_kept(s)}" for s in kept]
    total = sum(s.size for s in doomed)
    if doomed and not yes:
        for line in lines:
            click.echo(printable(line), err=True)
        lines = []
        question = f"Delete {len(doomed)} synced run director{'y' if len(doomed) == 1 else 'ies'}"
        if not click.confirm(f"{question} ({human_size(total)})?", err=True):
            doomed, total = [], 0
    deleted = []
    for status in doomed:
        if delete(status):
            deleted.append(status)
            lines.append(f"deleted {status.dir.name} ({status.run_path}): {human_size(status.size)}")
        else:
            lines.append(f"kept {status.dir.name} ({status.run_path}): opened again while being cleaned")
            kept.append(replace(status, running=True, holders=("opened again while being cleaned",)))
    doomed, total = deleted, sum(s.size for s in deleted)
    lines.append(
        f"freed {human_size(total)} in {len(doomed)} run director{'y' if len(doomed) == 1 else 'ies'}"
    )
    data = {
        "deleted": [str(s.dir) for s in doomed],
        "kept": [{"dir": str(s.dir), "reason": _why_kept(s)} for s in kept],
        "freed": total,
    }
    _echo(data, as_json, lines)


def _why_kept(status: RunDirStatus) -> str:
    if status.running:
        return "still running: " + "; ".join(status.holders) if status.holders else "still running"
    shown = ", ".join(status.unsynced[:5]) + (", ..." if len(status.unsynced) > 5 else "")
    return f"{len(status.unsynced)} file(s) not synced: {shown}"


@click.group("runs")
@global_options()
def runs_group() -> None:
    """Look at runs and clean them up: ls, show, rm."""


@runs_group.command("show")
@click.argument("run_path")
@_dir_option
@global_options()
@click.pass_context
def runs_show_command(ctx: click.Context, run_path: str, dir_: str | None) -> None:
    """Show the run RUN_PATH (project/run_id): state (finished, failed with its error, crashed), times,
    config, code, every synced state of each file (restore one with refstore restore --state N) and
    lineage (the versions it used and logged)."""
    from ..core.places import run_area
    from ..runs.overview import overview
    from ..runs.restoring import check_run_path
    from ..snapshots.registry import Registry

    found = overview(Registry(settings(ctx)["root"]), check_run_path(run_path), run_area(dir_))
    _echo(found.to_json(), settings(ctx)["json"], found.lines())


@runs_group.command("ls")
@click.argument("project", required=False)
@_dir_option
@global_options()
@click.pass_context
def runs_ls_command(ctx: click.Context, project: str | None, dir_: str | None) -> None:
    """List the runs of PROJECT (default: of every project), oldest first: run path, name, state, start,
    duration and number of synced files. A run whose process died is shown crashed when this machine
    holds its run directory."""
    from ..core.places import run_area
    from ..runs.listing import list_runs

    registry = registry_of(ctx)
    found = list_runs(registry, project, run_area(dir_))
    rows = [
        [
            s.record.path,
            s.record.name,
            s.state,
            _started(s.record.created_at),
            _elapsed(s.duration),
            f"{s.files:,}",
        ]
        for s in found
    ]
    text = [f"registry {registry.root}"]
    text += table(["RUN", "NAME", "STATE", "STARTED", "DURATION", "FILES"], rows).splitlines() or ["no runs"]
    _echo([s.to_json() for s in found], settings(ctx)["json"], text)


def _started(created_at: str) -> str:
    """``2026-12-01 21:04:10`` (UTC) from the record's ISO time; the text as it is when it is not one."""
    try:
        return datetime.fromisoformat(created_at).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return created_at


def _elapsed(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``12s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@runs_group.command("rm")
@click.argument("run_path")
@click.option("--force", is_flag=True, help="Delete a run whose record says running (its process is gone).")
@_dir_option
@global_options()
@click.pass_context
def runs_rm_command(ctx: click.Context, run_path: str, force: bool, dir_: str | None) -> None:
    """Delete the run RUN_PATH (project/run_id) from the registry: its record and every synced state of its
    files. Asks first unless -y/--yes. The bytes only it used are freed by the next refstore gc --yes (a run
    made by an older refstore kept them in its own folder: those go at once). A run still running is
    refused unless --force. Its run directory on this machine, if any, is kept."""
    from ..core.places import run_area
    from ..runs.local import find_run_dir
    from ..runs.removing import remove_run
    from ..runs.restoring import check_run_path
    from ..runs.run import read_record

    as_json, yes = settings(ctx)["json"], settings(ctx)["yes"]
    registry = registry_of(ctx)
    record = read_record(registry, check_run_path(run_path))
    if not yes and not click.confirm(
        printable(f"Delete run {record.path} ({record.name}) from {registry.root}?"), err=True
    ):
        _echo({"deleted": None}, as_json, ["nothing deleted"])
        return
    removed = remove_run(registry, record.path, force=force)
    lines = [
        f"deleted run {removed.run_path} ({removed.name}): "
        f"{removed.files:,} file(s), {removed.states:,} state(s)",
        "the bytes only it used are freed by the next `refstore gc --yes`"
        + (f" ({human_size(removed.freed)} of its own freed now)" if removed.freed else ""),
    ]
    local = find_run_dir(run_area(dir_), record.id)
    if local is not None:
        lines.append(f"its run directory {local} is kept (`refstore sync` would publish the run again)")
    _echo({"deleted": removed.to_json(), "kept_dir": str(local) if local else None}, as_json, lines)
