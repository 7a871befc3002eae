"""The ``refstore`` command line: one-line errors, ``--json`` on every command that prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ._exceptions import RefstoreError
from ._version import __version__


class _Main(click.Group):
    """Turns refstore errors into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (RefstoreError, OSError) as exc:
            click.echo(f"refstore: error: {_one_line(exc)}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("refstore: interrupted", err=True)
            ctx.exit(130)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _registry(ctx: click.Context) -> Any:
    from .registry import Registry

    return Registry(ctx.obj["root"])


def _emit(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(text)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="REFSTORE_ROOT", default=None, help="Registry URL (default ./.refstore).")
@click.version_option(__version__, prog_name="refstore")
@click.pass_context
def main(ctx: click.Context, root: str | None) -> None:
    """Immutable, versioned snapshots of data anywhere fsspec reaches, without copying it."""
    ctx.ensure_object(dict)
    ctx.obj["root"] = root


@main.command("log")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@click.option("--type", "type_", default="dataset", show_default=True, help="Artifact type.")
@click.option("--alias", "aliases", multiple=True, help="Alias to point at the version (repeatable).")
@click.option("--description", default=None, help="A description stored with the version.")
@click.option("--max-objects", default=10_000, show_default=True, help="Refuse prefixes with more objects.")
@click.option("--no-checksum", is_flag=True, help="Record locations only; downloads fetch them unchecked.")
@click.option("--copy", is_flag=True, help="Store copies of local files instead of referencing them.")
@json_option
@click.pass_context
def log_command(
    ctx: click.Context,
    name: str,
    sources: Sequence[str],
    type_: str,
    aliases: Sequence[str],
    description: str | None,
    max_objects: int,
    no_checksum: bool,
    copy: bool,
    as_json: bool,
) -> None:
    """Snapshot SOURCES (URLs or local paths) as a new version of NAME."""
    from .artifact import Artifact

    artifact = Artifact(name, type_, description=description)
    for source in sources:
        folder = _source_name(source) if len(sources) > 1 else None
        if copy:
            _add_copy(artifact, source, folder)
        else:
            artifact.add_reference(source, folder, checksum=not no_checksum, max_objects=max_objects)
    version = _registry(ctx).log(artifact, aliases=aliases)
    _emit(_version_json(version), as_json, f"{version.qualified_name} {version.digest}")


def _source_name(source: str) -> str:
    return os.path.basename(source.rstrip("/")) or source


def _add_copy(artifact: Any, source: str, folder: str | None) -> None:
    path = Path(source).expanduser()
    if "://" in source:
        raise click.UsageError(f"{source}: --copy takes local paths only")
    if path.is_dir():
        artifact.add_dir(path, folder)
    else:
        artifact.add_file(path, folder)


@main.command("ls")
@click.argument("name", required=False)
@json_option
@click.pass_context
def ls_command(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List artifacts, or the versions of NAME."""
    registry = _registry(ctx)
    if name is None:
        names = registry.artifacts()
        rows = [[n] for n in names]
        _emit({"artifacts": names}, as_json, _table(["ARTIFACT"], rows) if rows else "(no artifacts)")
        return
    versions = registry.versions(name)
    data = [_version_json(v, with_counts=False) for v in versions]
    rows = [[v["qualified_name"], v["type"], v["created_at"][:19], ",".join(v["aliases"])] for v in data]
    _emit({"versions": data}, as_json, _table(["VERSION", "TYPE", "CREATED", "ALIASES"], rows))


@main.command("show")
@click.argument("ref")
@json_option
@click.pass_context
def show_command(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a version: summary and entries."""
    version = _registry(ctx).get(ref)
    data = _version_json(version)
    data["entries"] = [
        {"path": e.path, **e.to_json()} for e in (version.manifest[p] for p in version.manifest)
    ]
    lines = [
        f"{version.qualified_name}  ({version.type})",
        f"  digest     {version.digest}",
        f"  created    {version.created_at}" + (f" by {version.created_by}" if version.created_by else ""),
        f"  aliases    {', '.join(data['aliases']) or '-'}",
        f"  entries    {data['entry_count']}   size {_human(data['size'])}",
        f"  schemes    {', '.join(data['schemes']) or '-'}",
    ]
    if data["used_by"]:
        lines.append(f"  used by    {', '.join(data['used_by'])}")
    lines += [f"  {e['path']}  {_human(e['size'])}  {e.get('ref') or '(copy)'}" for e in data["entries"]]
    _emit(data, as_json, "\n".join(lines))


@main.command("get")
@click.argument("ref")
@click.argument("dest", required=False)
@click.option("--prefix", default=None, help="Only entries whose logical path starts with this.")
@click.option("--skip-cache", is_flag=True, help="Fetch from the source even when cached.")
@json_option
@click.pass_context
def get_command(
    ctx: click.Context, ref: str, dest: str | None, prefix: str | None, skip_cache: bool, as_json: bool
) -> None:
    """Download the pinned bytes of REF to DEST (default ./artifacts/NAME:vN)."""
    version = _registry(ctx).get(ref)
    path = version.download(dest, path_prefix=prefix, skip_cache=skip_cache)
    _emit({"version": version.qualified_name, "path": str(path)}, as_json, str(path))


@main.command("diff")
@click.argument("ref_a")
@click.argument("ref_b")
@json_option
@click.pass_context
def diff_command(ctx: click.Context, ref_a: str, ref_b: str, as_json: bool) -> None:
    """What changed from REF_A to REF_B."""
    diff = _registry(ctx).diff(ref_a, ref_b)
    lines = [f"+ {p}" for p in diff.added] + [f"- {p}" for p in diff.removed]
    lines += [f"M {p}" for p in diff.modified]
    _emit(diff.to_json(), as_json, "\n".join(lines) or "(no differences)")


@main.command("alias")
@click.argument("ref")
@click.argument("alias")
@json_option
@click.pass_context
def alias_command(ctx: click.Context, ref: str, alias: str, as_json: bool) -> None:
    """Point ALIAS at the version REF names."""
    version = _registry(ctx).alias(ref, alias)
    _emit(
        _version_json(version, with_counts=False),
        as_json,
        f"{version.name}:{alias} -> {version.qualified_name}",
    )


@main.command("verify")
@click.argument("ref")
@json_option
@click.pass_context
def verify_command(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Check REF against live storage from metadata alone; exit 1 on drift."""
    version = _registry(ctx).get(ref)
    report = version.verify()
    lines = [f"changed  {p}" for p in report.changed] + [f"missing  {p}" for p in report.missing]
    summary = f"{version.qualified_name}: {len(report.ok)} ok, {len(report.changed)} changed, "
    summary += f"{len(report.missing)} missing"
    _emit({"version": version.qualified_name, **report.to_json()}, as_json, "\n".join([*lines, summary]))
    if not report:
        ctx.exit(1)


def _version_json(version: Any, *, with_counts: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": version.name,
        "version": version.version,
        "qualified_name": version.qualified_name,
        "type": version.type,
        "description": version.description,
        "metadata": version.metadata,
        "digest": version.digest,
        "manifest_digest": version.manifest_digest,
        "created_at": version.created_at,
        "created_by": version.created_by,
        "aliases": version.aliases,
    }
    if with_counts:
        manifest = version.manifest
        data["entry_count"] = len(manifest)
        data["size"] = manifest.total_size
        data["schemes"] = sorted({(e.ref or "copy").split("://", 1)[0] for e in manifest.values()})
        data["used_by"] = version.used_by()
    return data


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def run() -> None:
    """Entry point for ``python -m refstore``."""
    main(prog_name="refstore")


if __name__ == "__main__":
    run()
    sys.exit(0)
