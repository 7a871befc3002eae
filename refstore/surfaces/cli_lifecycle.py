"""``refstore rm``, ``retain`` and ``edit``, and the options of ``log``/``ls``/``alias`` that belong to them:
deleting versions, retention and editable metadata (:mod:`refstore.snapshots.lifecycle`,
:mod:`refstore.snapshots.edits`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from . import render
from .cli_options import complete_ref, global_options, settings
from .cli_options import registry_of as _registry
from .render import emit as _emit

if TYPE_CHECKING:
    from ..snapshots.version import ArtifactVersion

SET_HELP = (
    "Set a metadata key; VALUE is read as JSON when it parses (3, true, [1,2]), else as text (repeatable)."
)
TTL_HELP = "Delete the version this long after it was logged (refstore gc does): 30d, 12h, 2w."


def metadata_pairs(pairs: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``["lr=0.1", "split=train"]`` -> ``{"lr": 0.1, "split": "train"}``: a value is JSON if it parses."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: use KEY=VALUE", param_hint=option)
        try:
            found[key] = json.loads(text)
        except ValueError:
            found[key] = text
    return found


def parse_ttl(text: str | None) -> timedelta | None:
    """A ``--ttl`` value (``30d``, ``12h``); None when not given."""
    from ..snapshots.gc import parse_duration

    try:
        return None if text is None else parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None


def deletion_json(version: ArtifactVersion) -> dict[str, Any]:
    tombstone = version.deleted
    return {
        "qualified_name": version.qualified_name,
        "name": version.name,
        "version": version.version,
        "deleted_at": tombstone.deleted_at if tombstone else None,
        "deleted_by": tombstone.deleted_by if tombstone else None,
        "reason": tombstone.reason if tombstone else None,
        "aliases_removed": list(tombstone.aliases) if tombstone else [],
    }


def _deleted_lines(deleted: list[ArtifactVersion]) -> list[str]:
    lines = []
    for version in deleted:
        removed = version.deleted.aliases if version.deleted else []
        note = f" (removed {', '.join(removed)})" if removed else ""
        lines.append(f"deleted  {version.qualified_name}{note}")
    if deleted:
        lines.append("refstore gc --yes frees the bytes that only they held")
    return lines


@click.command("rm")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--force", is_flag=True, help="Also remove the aliases (other than latest) that point at it.")
@click.option(
    "--all", "everything", is_flag=True, help="Delete every version of the artifact NAME, and its aliases."
)
@global_options()
@click.pass_context
def rm_command(ctx: click.Context, ref: str, force: bool, everything: bool) -> None:
    """Delete the version REF (NAME:vN or NAME:ALIAS); with --all, every version of the artifact NAME.

    Refuses while aliases other than latest point at the version, naming them (--force removes them too).
    latest then names the highest version left; version numbers are never used again; runs that used the
    version still list it, as deleted. The bytes only it held are freed by the next `refstore gc --yes`.
    Asks first unless -y/--yes.
    """
    from ..core.names import parse_ref

    config = settings(ctx)
    registry = _registry(ctx)
    name = parse_ref(ref)[0]
    if everything and ":" in ref:
        raise click.UsageError(f"{ref}: --all takes an artifact NAME, not a version")
    if not everything and ":" not in ref:
        raise click.UsageError(
            f"{ref}: name a version (NAME:vN or NAME:ALIAS), or pass --all for every version"
        )
    if everything:
        count = len(registry.versions(name))
        question = f"Delete all {count} version{'s' if count != 1 else ''} of {name} and its aliases?"
    else:
        version = registry.get(ref)
        pointing = [a for a in version.aliases if a != "latest"]
        if pointing and not force:
            registry.delete(ref)  # refuses, naming the aliases, and writes nothing
        question = f"Delete {version.qualified_name}" + (
            f" and its aliases {', '.join(pointing)}?" if pointing else "?"
        )
    if not config["yes"]:
        click.confirm(render.printable(question), abort=True, err=True)
    deleted = registry.delete_artifact(name) if everything else [registry.delete(ref, force=force)]
    _emit(
        {"deleted": [deletion_json(v) for v in deleted]}, config["json"], "\n".join(_deleted_lines(deleted))
    )


@click.command("retain")
@click.argument("name", shell_complete=complete_ref)
@click.option(
    "--keep-last", type=click.IntRange(min=0), default=None, metavar="N", help="Keep the N newest versions."
)
@click.option(
    "--older-than",
    metavar="DURATION",
    default=None,
    help="Delete only versions logged longer ago than this: 30d, 12h, 2w.",
)
@click.option(
    "--keep-aliased/--no-keep-aliased",
    default=True,
    show_default=True,
    help="Keep every version an alias points at, latest included (--no-keep-aliased deletes them too, and "
    "their aliases).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@global_options()
@click.pass_context
def retain_command(
    ctx: click.Context,
    name: str,
    keep_last: int | None,
    older_than: str | None,
    keep_aliased: bool,
    dry_run: bool,
) -> None:
    """Delete the versions of NAME that a retention policy does not keep, printing them first.

    `refstore retain mnist --keep-last 5 --older-than 30d` deletes every version that is not among the 5
    newest, was logged more than 30 days ago and that no alias points at. Asks first unless -y/--yes.
    """
    from ..snapshots.gc import parse_duration
    from ..snapshots.lifecycle import RETENTION, delete_each

    config = settings(ctx)
    if keep_last is None and older_than is None:
        raise click.UsageError("give --keep-last N, --older-than DURATION or both")
    try:
        age = None if older_than is None else parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    registry = _registry(ctx)
    plan = registry.retain(name, keep_last=keep_last, keep_aliased=keep_aliased, older_than=age, dry_run=True)
    verb = "would delete" if dry_run else "delete"
    lines = [
        f"{verb}  {v.qualified_name}  (logged {v.created_at[:19]}, {', '.join(v.aliases) or 'no aliases'})"
        for v in plan
    ]
    if dry_run or not plan:
        lines.append(
            f"{name}: {len(plan)} version(s) to delete" + ("; nothing deleted (dry run)" if dry_run else "")
        )
        _emit(
            {"dry_run": dry_run, "deleted": [], "plan": [v.qualified_name for v in plan]},
            config["json"],
            "\n".join(lines),
        )
        return
    if not config["json"]:
        click.echo(render.printable_lines("\n".join(lines)))
    if not config["yes"]:
        click.confirm(f"Delete {len(plan)} version(s) of {name}?", abort=True, err=True)
    deleted = delete_each(registry, plan, force=not keep_aliased, reason=RETENTION)
    skipped = [v.qualified_name for v in plan if v not in deleted]
    text = _deleted_lines(deleted) + [f"kept  {q}  (changed since it was planned)" for q in skipped]
    _emit(
        {
            "dry_run": False,
            "deleted": [deletion_json(v) for v in deleted],
            "plan": [v.qualified_name for v in plan],
        },
        config["json"],
        "\n".join(text),
    )


@click.command("edit")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--description", default=None, help="Replace the description ('' removes it).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Remove a metadata key (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Add a tag (repeatable).")
@click.option("--untag", "untags", multiple=True, metavar="TAG", help="Remove a tag (repeatable).")
@click.option("--ttl", default=None, metavar="DURATION", help=TTL_HELP + " 'none' removes it.")
@global_options()
@click.pass_context
def edit_command(
    ctx: click.Context,
    ref: str,
    description: str | None,
    assignments: Sequence[str],
    unset: Sequence[str],
    tags: Sequence[str],
    untags: Sequence[str],
    ttl: str | None,
) -> None:
    """Edit the description, metadata, tags or TTL of the version REF; its files and digests never change.

    Every edit is kept, with who made it and when: `refstore show REF` prints the current values and the
    last edit, `refstore show REF --json` the whole history.
    """
    config = settings(ctx)
    if description is None and not (assignments or unset or tags or untags or ttl):
        raise click.UsageError(
            "nothing to change: give --description, --set, --unset, --tag, --untag or --ttl"
        )
    version = _registry(ctx).update(
        ref,
        description=description,
        set_metadata=metadata_pairs(assignments),
        unset_metadata=unset,
        add_tags=tags,
        remove_tags=untags,
        ttl=False if ttl is not None and ttl.strip().lower() == "none" else parse_ttl(ttl),
    )
    data = render.version_json(version)
    _emit({"version": data}, config["json"], "\n".join(render.summary(data)))
