"""The ``refstore`` command line: one-line errors, ``--json`` on every command that prints."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .._version import __version__
from ..core.exceptions import RefstoreError
from ..core.sizes import human_size
from . import cli_lifecycle, render
from .cli_options import complete_ref, global_options, settings
from .cli_options import registry_of as _registry
from .render import emit as _emit


class _Main(click.Group):
    """Turns refstore, storage and client errors into one line on stderr and exit status 1, never a
    traceback (``--debug`` prints it first); only a bug in refstore shows one."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("refstore: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            from ..storage.backends import is_client_error

            told = isinstance(exc, (RefstoreError, OSError))
            if not told and not is_client_error(exc):
                raise  # click's own exits and usage errors, or a bug whose traceback is wanted
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            text = _one_line(exc) if told else f"{type(exc).__name__}: {_one_line(exc)}"
            click.echo(f"refstore: error: {text}", err=True)
            ctx.exit(1)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return render.printable(" ".join(text.split()))  # a message may quote a registry's bytes


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@global_options(group=True)
@click.version_option(__version__, prog_name="refstore")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Immutable, versioned snapshots of data anywhere fsspec reaches, without copying it.

    --root, --json, -y/--yes and --debug go before or after the command (refstore ls --root URL).
    """
    settings(ctx)


@main.command("log")
@click.argument("name", shell_complete=complete_ref)
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("--type", "type_", default="dataset", show_default=True, help="Artifact type.")
@click.option("--alias", "aliases", multiple=True, help="Alias to point at the version (repeatable).")
@click.option("--description", default=None, help="A description stored with the version.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=cli_lifecycle.SET_HELP)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag of the version (repeatable).")
@click.option("--ttl", default=None, metavar="DURATION", help=cli_lifecycle.TTL_HELP)
@click.option("--max-objects", default=10_000, show_default=True, help="Refuse prefixes with more objects.")
@click.option("--no-checksum", is_flag=True, help="Record locations only; downloads fetch them unchecked.")
@click.option("--copy", is_flag=True, help="Store copies of local files instead of referencing them.")
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out files or folders whose logical path matches (repeatable; *.tmp, raw/*.csv, cache/).",
)
@global_options()
@click.pass_context
def log_command(
    ctx: click.Context,
    name: str,
    sources: Sequence[str],
    type_: str,
    aliases: Sequence[str],
    description: str | None,
    assignments: Sequence[str],
    tags: Sequence[str],
    ttl: str | None,
    max_objects: int,
    no_checksum: bool,
    copy: bool,
    excludes: Sequence[str],
) -> None:
    """Snapshot SOURCES (URLs or local paths) as a new version of NAME: a new version unless the content
    equals the latest version's. Folders leave out refstore's own (registry, cache, run area)."""
    as_json = settings(ctx)["json"]
    from ..snapshots.artifact import Artifact

    registry = _registry(ctx, create=True)  # first: a folder that holds it leaves it out
    artifact = Artifact(
        name,
        type_,
        description=description,
        metadata=cli_lifecycle.metadata_pairs(assignments),
        tags=tags,
        ttl=cli_lifecycle.parse_ttl(ttl),
    )
    for source in sources:
        folder = _source_name(source) if len(sources) > 1 else None
        if copy:
            _add_copy(artifact, source, folder, excludes)
        else:
            artifact.add_reference(
                source, folder, checksum=not no_checksum, max_objects=max_objects, exclude=excludes
            )
    version = registry.log(artifact, aliases=aliases)
    outcome = "created" if version.created else "unchanged: the content equals the latest version"
    _emit(
        {"version": render.version_json(version), "created": version.created},
        as_json,
        f"{version.qualified_name} {version.digest} ({outcome})",
    )


def _source_name(source: str) -> str:
    return os.path.basename(source.rstrip("/")) or source


def _add_copy(artifact: Any, source: str, folder: str | None, excludes: Sequence[str]) -> None:
    path = Path(source).expanduser()
    if "://" in source:
        raise click.UsageError(f"{source}: --copy takes local paths only")
    if path.is_dir():
        artifact.add_dir(path, folder, exclude=excludes)
    else:
        artifact.add_file(path, folder)


@main.command("init")
@click.argument("target", required=False, metavar="[ROOT]")
@global_options()
@click.pass_context
def init_command(ctx: click.Context, target: str | None) -> None:
    """Create a registry at ROOT (default: --root, $REFSTORE_ROOT, else ./.refstore in this folder)."""
    from ..snapshots.registry import Registry
    from ..storage.store import DEFAULT_ROOT

    registry = Registry(target or ctx.obj["root"] or DEFAULT_ROOT)
    created = registry.create()
    text = f"created registry {registry.root}" if created else f"registry {registry.root} already exists"
    _emit({"root": registry.root, "created": created}, settings(ctx)["json"], text)


@main.command("ls")
@click.argument("name", required=False, shell_complete=complete_ref)
@click.option("--tag", default=None, help="Only versions with this tag.")
@click.option("--type", "type_", default=None, help="Only versions of this type.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Only versions whose metadata holds it.")
@global_options()
@click.pass_context
def ls_command(
    ctx: click.Context, name: str | None, tag: str | None, type_: str | None, meta: Sequence[str]
) -> None:
    """List artifacts, or the versions of NAME; --tag, --type and --meta list the versions (of every
    artifact, or of NAME) that match all of them."""
    as_json = settings(ctx)["json"]
    registry = _registry(ctx)
    if name is not None or tag is not None or type_ is not None or meta:
        if tag is None and type_ is None and not meta:
            found = registry.versions(name)
        else:
            metadata = cli_lifecycle.metadata_pairs(meta, "--meta")
            found = registry.find(type=type_, tag=tag, metadata=metadata, name=name)
        versions = [render.version_json(v) for v in found]
        rows = [
            [v["qualified_name"], v["type"], v["created_at"][:19], *_counts(v), ",".join(v["aliases"])]
            + ([",".join(v["tags"])] if any(x["tags"] for x in versions) else [])
            for v in versions
        ]
        headers = ["VERSION", "TYPE", "CREATED", "ENTRIES", "SIZE", "ALIASES"]
        headers += ["TAGS"] if any(v["tags"] for v in versions) else []
        _emit({"versions": versions}, as_json, render.table(headers, rows) if rows else "(no versions)")
        return
    artifacts = [_artifact_json(registry, n) for n in registry.artifacts()]
    rows = [
        [
            a["name"],
            a["latest"]["type"],
            str(a["versions"]),
            a["latest"]["qualified_name"],
            *_counts(a["latest"]),
            a["latest"]["created_at"][:19],
        ]
        for a in artifacts
    ]
    headers = ["ARTIFACT", "TYPE", "VERSIONS", "LATEST", "ENTRIES", "SIZE", "UPDATED"]
    _emit({"artifacts": artifacts}, as_json, render.table(headers, rows) if rows else "(no artifacts)")


def _artifact_json(registry: Any, name: str) -> dict[str, Any]:
    versions = registry.versions(name)
    return {"name": name, "versions": len(versions), "latest": render.version_json(versions[-1])}


def _counts(version: dict[str, Any]) -> list[str]:
    return [f"{version['entry_count']:,}", human_size(version["size"])]


@main.command("show")
@click.argument("ref", shell_complete=complete_ref)
@click.option(
    "--all", "show_all", is_flag=True, help=f"List every entry (default: the first {render.TREE_LIMIT})."
)
@global_options()
@click.pass_context
def show_command(ctx: click.Context, ref: str, show_all: bool) -> None:
    """Show a version: summary (entries, size, schemes, aliases, lineage) and a tree of its entries."""
    as_json = settings(ctx)["json"]
    version = _registry(ctx).get(ref)
    data = render.version_json(version)
    entries = list(version.manifest.values())
    tree = render.tree(
        entries, limit=None if show_all else render.TREE_LIMIT, title=f"{version.qualified_name}/"
    )
    text = "\n".join([*render.summary(data), "", *tree])
    history = [render.edit_json(e) for e in version.history()] if as_json else []
    _emit(
        {"version": data, "entries": [render.entry_json(e) for e in entries], "history": history},
        as_json,
        text,
    )


@main.command("get")
@click.argument("ref", shell_complete=complete_ref)
@click.argument("dest", required=False)
@click.option(
    "--prefix", default=None, help="Only entries under this folder (at / boundaries) or this one file."
)
@click.option("--skip-cache", is_flag=True, help="Fetch from the source even when cached.")
@click.option("--force", is_flag=True, help="Replace local files whose bytes differ from the version.")
@click.option("--clean", is_flag=True, help="Remove files the version does not hold (under --prefix).")
@click.option(
    "--allow-local-refs",
    is_flag=True,
    help="Read local files that a registry off this disk names without a content hash (trust it first).",
)
@global_options()
@click.pass_context
def get_command(
    ctx: click.Context,
    ref: str,
    dest: str | None,
    prefix: str | None,
    skip_cache: bool,
    force: bool,
    clean: bool,
    allow_local_refs: bool,
) -> None:
    """Download the pinned bytes of REF to DEST (default ./artifacts/NAME:vN).

    Files already holding the pinned bytes are kept; a file with other bytes stops the download before
    anything is written (--force replaces it); files REF does not hold are listed (--clean removes them).
    """
    from ..storage.download import first_few

    as_json = settings(ctx)["json"]
    version = _registry(ctx).get(ref)
    path = version.download(
        dest,
        path_prefix=prefix,
        skip_cache=skip_cache,
        overwrite=force,
        clean=clean,
        allow_local_refs=allow_local_refs,
    )
    data = {"version": render.version_json(version), "path": str(path)}
    _emit({**data, "extra": list(path.extra), "removed": list(path.removed)}, as_json, str(path))
    if path.removed and not as_json:
        removed = render.printable(first_few(path.removed))
        click.echo(f"refstore: removed {len(path.removed)} file(s): {removed}", err=True)
    if path.extra and not as_json:
        click.echo(
            f"refstore: left {len(path.extra)} file(s) that {version.qualified_name} does not hold: "
            f"{render.printable(first_few(path.extra))} (--clean removes them)",
            err=True,
        )


@main.command("diff")
@click.argument("ref_a", shell_complete=complete_ref)
@click.argument("ref_b", shell_complete=complete_ref)
@global_options()
@click.pass_context
def diff_command(ctx: click.Context, ref_a: str, ref_b: str) -> None:
    """What changed from REF_A to REF_B."""
    as_json = settings(ctx)["json"]
    registry = _registry(ctx)
    old, new = registry.get(ref_a), registry.get(ref_b)
    diff = old.diff(new)
    shown = render.printable
    lines = [f"+ {shown(p)}" for p in diff.added] + [f"- {shown(p)}" for p in diff.removed]
    lines += [f"M {shown(p)}" for p in diff.modified]
    data = {"from": render.version_json(old), "to": render.version_json(new), **diff.to_json()}
    _emit(data, as_json, "\n".join(lines) or "(no differences)")


@main.command("alias")
@click.argument("ref", shell_complete=complete_ref)
@click.argument("alias")
@click.option("--delete", is_flag=True, help="Remove ALIAS from the artifact REF (a NAME) instead.")
@global_options()
@click.pass_context
def alias_command(ctx: click.Context, ref: str, alias: str, delete: bool) -> None:
    """Point ALIAS at the version REF names; with --delete, remove ALIAS from the artifact NAME
    (refstore alias --delete NAME ALIAS)."""
    as_json = settings(ctx)["json"]
    if delete:
        if ":" in ref:
            raise click.UsageError(f"{ref}: --delete takes an artifact NAME, not a version")
        version = _registry(ctx).unalias(ref, alias)
        text = f"removed {version.name}:{alias} (it pointed at {version.qualified_name})"
        _emit({"removed": alias, "name": version.name, "version": version.version}, as_json, text)
        return
    version = _registry(ctx).alias(ref, alias)
    text = f"{version.name}:{alias} -> {version.qualified_name}"
    _emit({"version": render.version_json(version), "alias": alias}, as_json, text)


@main.command("verify")
@click.argument("ref", shell_complete=complete_ref)
@click.option(
    "--local", metavar="DIR", default=None, help="Check a downloaded folder, asking the source nothing."
)
@click.option("--strict", is_flag=True, help="Exit 1 on any drift (with --local: extra files too).")
@click.option(
    "--allow-local-refs",
    is_flag=True,
    help="Read local files that a registry off this disk names without a content hash (trust it first).",
)
@global_options()
@click.pass_context
def verify_command(
    ctx: click.Context, ref: str, local: str | None, strict: bool, allow_local_refs: bool
) -> None:
    """Check REF against live storage from metadata alone: exit 1 when it can no longer be downloaded
    (its pinned bytes are gone), 0 when the source moved on but the pinned version is still retrievable.

    With --local DIR, check a downloaded folder against the manifest instead: exit 1 when a file is changed
    or missing.
    """
    as_json = settings(ctx)["json"]
    version = _registry(ctx).get(ref)
    report = version.verify(local, allow_local_refs=allow_local_refs)
    gone, shown = set(report.unretrievable), render.printable
    lines = [f"changed  {shown(p)}" + (" (gone)" if p in gone else "") for p in report.changed]
    lines += [f"missing  {shown(p)}" + (" (gone)" if p in gone else "") for p in report.missing]
    lines += [f"gone     {shown(p)}" for p in sorted(gone - set(report.changed) - set(report.missing))]
    summary = f"{version.qualified_name}: {len(report.ok)} ok, {len(report.changed)} changed, "
    summary += f"{len(report.missing)} missing"
    if local is not None:
        lines += [f"extra    {shown(p)}" for p in report.extra]
        lines += [f"unverified {shown(p)}" for p in report.unverified]
        summary += f", {len(report.extra)} extra, {len(report.unverified)} unverified"
        failed = not report or (strict and bool(report.extra))
    else:
        if not report.retrievable:
            summary += f"; {len(gone)} can no longer be downloaded"
        elif not report:
            summary += "; the pinned version can still be downloaded"
        failed = not report.retrievable or (strict and not report)
    _emit(
        {"version": render.version_json(version), **report.to_json()}, as_json, "\n".join([*lines, summary])
    )
    if failed:
        ctx.exit(1)


@main.command("gc")
@click.option(
    "--intent-ttl",
    metavar="DURATION",
    default=None,
    help="How long a running log's intent protects what it relies on: 7d, 36h, 90m, 3600 "
    "(default $REFSTORE_INTENT_TTL, else 7d). Keep it longer than your longest log.",
)
@global_options()
@click.pass_context
def gc_command(ctx: click.Context, intent_ttl: str | None) -> None:
    """Delete registry manifests and blobs that no version or run file references; safe beside running
    logs and runs.

    A dry run that only reports, unless -y/--yes. It says what in-flight logs protect and until when.
    """
    from ..snapshots.gc import collect_garbage, parse_duration

    as_json, yes = settings(ctx)["json"], settings(ctx)["yes"]
    try:
        expiry = None if intent_ttl is None else parse_duration(intent_ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--intent-ttl") from None
    report = collect_garbage(_registry(ctx), yes=yes, intent_expiry=expiry)
    _emit(report.to_json(), as_json, "\n".join(render.gc_lines(report)))


def _add_run_commands() -> None:
    from .cli_runs import restore_command, runs_group, sync_command

    main.add_command(restore_command)
    main.add_command(runs_group)
    main.add_command(sync_command)


def _add_ui_command() -> None:
    from .cli_ui import ui_command

    main.add_command(ui_command)


def _add_cache_commands() -> None:
    from .cli_cache import cache_group

    main.add_command(cache_group)


def _add_lifecycle_commands() -> None:
    for command in (cli_lifecycle.rm_command, cli_lifecycle.retain_command, cli_lifecycle.edit_command):
        main.add_command(command)


_add_run_commands()
_add_lifecycle_commands()
_add_ui_command()
_add_cache_commands()


def run() -> None:
    """Entry point for ``python -m refstore``."""
    main(prog_name="refstore")


if __name__ == "__main__":
    run()
    sys.exit(0)
