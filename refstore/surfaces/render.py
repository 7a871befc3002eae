"""What the command line prints: one JSON shape per version, tables, summaries and manifest trees.

Every command that names a version renders it with :func:`version_json`, so ``--json`` output has the same
shape everywhere (``{"version": {...}, ...}``; ``ls NAME`` gives ``{"versions": [{...}, ...]}``).

What a registry or a manifest says is untrusted text: anyone who can write a shared registry chooses refs,
types, descriptions, metadata, paths and run names. Text output shows each such value through
:func:`printable`, which escapes every control character (C0 and C1 controls, DEL, ``ESC``, ``CR``, line
and paragraph separators, bidirectional overrides), so a value can neither move the cursor, erase a line,
start a line of its own nor reorder what a terminal shows; ``--json`` output is ``json.dumps`` with ASCII
escapes, which escapes all of them too. A backslash is left as it is: escapes stay readable, and a value
that spells an escape out is only as confusing as any other odd name.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from ..core.sizes import human_size

if TYPE_CHECKING:  # not imported at run time: `refstore --help` stays quick (benchmarks/case_import.py)
    from ..core.manifest import ManifestEntry
    from ..core.records import EditRecord
    from ..snapshots.gc import GCReport
    from ..snapshots.version import ArtifactVersion

#: ``show`` lists this many entries in its tree unless asked for all of them.
TREE_LIMIT = 100

_OTHER_CONTROLS = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(rf"[\x00-\x1f{_OTHER_CONTROLS}]")
_UNPRINTABLE_IN_LINES = re.compile(rf"[\x00-\x09\x0b-\x1f{_OTHER_CONTROLS}]")  # all but \n
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` fit for one line of a terminal: control characters escaped as ``\\x1b``, ``\\r``,
    ``\\u202e`` (see the module docstring)."""
    return _UNPRINTABLE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Like :func:`printable`, keeping the line breaks of ``text`` (output already made of lines)."""
    return _UNPRINTABLE_IN_LINES.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def version_json(version: ArtifactVersion) -> dict[str, Any]:
    """A version as JSON: identity, record fields, aliases, lineage and what its manifest holds."""
    manifest = version.manifest
    return {
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
        "tags": version.tags,
        "ttl_seconds": None if version.ttl is None else version.ttl.total_seconds(),
        "expires_at": version.expires_at.isoformat() if version.expires_at else None,
        "edited": edit_json(version.last_edit, with_values=False) if version.last_edit else None,
        "used_by": version.used_by(),
        "entry_count": len(manifest),
        "size": manifest.total_size,
        "schemes": dict(sorted(scheme_counts(manifest.values()).items())),
    }


def edit_json(edit: EditRecord, *, with_values: bool = True) -> dict[str, Any]:
    """An edit of a version's values: when, by whom, how many edits so far, and the values it set."""
    data = {"at": edit.edited_at, "by": edit.edited_by, "edits": edit.seq + 1}
    if with_values:
        data.update(description=edit.description, metadata=edit.metadata, tags=edit.tags)
        data["ttl_seconds"] = edit.ttl_seconds
    return data


def entry_json(entry: ManifestEntry) -> dict[str, Any]:
    return {"path": entry.path, **entry.to_json()}


def scheme_counts(entries: Iterable[ManifestEntry]) -> Counter[str]:
    """How many entries live on each scheme; stored copies count as ``copy``."""
    return Counter((e.ref or "copy").split("://", 1)[0] for e in entries)


def summary(data: Mapping[str, Any]) -> list[str]:
    """The header ``show`` prints above the tree, from :func:`version_json` data: one labelled field a line
    (a multi-line description or several metadata keys continue under the first). Every value is shown
    through :func:`printable`."""
    schemes = ", ".join(f"{s} ({n:,})" for s, n in data["schemes"].items())
    metadata = [f"{key}: {_value(value)}" for key, value in sorted((data["metadata"] or {}).items())]
    description = (data["description"] or "-").replace("\r\n", "\n").split("\n")  # a lone CR is shown
    fields = [
        ("description", description),
        ("digest", [data["digest"]]),
        ("created", [data["created_at"]]),
        ("aliases", [", ".join(data["aliases"]) or "-"]),
        ("entries", [f"{data['entry_count']:,}, {human_size(data['size'])}"]),
        ("schemes", [schemes or "-"]),
        ("lineage", [_lineage(data)]),
        ("metadata", metadata or ["-"]),
        ("tags", [", ".join(data["tags"]) or "-"]),
        ("ttl", [_ttl(data)]),
        ("edited", [_edited(data["edited"])]),
    ]
    lines = [f"{printable(data['qualified_name'])}  ({printable(data['type'])})"]
    for label, values in fields:
        lines += [
            f"  {label if i == 0 else '':<11}  {printable(value)}".rstrip() for i, value in enumerate(values)
        ]
    return lines


def _ttl(data: Mapping[str, Any]) -> str:
    if data["ttl_seconds"] is None:
        return "-"
    span = duration(timedelta(seconds=data["ttl_seconds"]))
    return f"{span} (gc deletes it after {data['expires_at'][:19]})"


def _edited(edited: Mapping[str, Any] | None) -> str:
    if not edited:
        return "-"
    count = _count(edited["edits"], "edit")
    return f"{edited['at'][:19]} by {edited['by']} ({count}; show --json lists them all)"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _lineage(data: Mapping[str, Any]) -> str:
    parts = [f"logged by run {data['created_by']}"] if data["created_by"] else []
    parts += [f"used by {', '.join(data['used_by'])}"] if data["used_by"] else []
    return "; ".join(parts) or "-"


def tree(entries: Iterable[ManifestEntry], *, limit: int | None = TREE_LIMIT, title: str = "") -> list[str]:
    """Logical paths drawn as a folder tree with sizes and sources, under ``title`` when given; at most
    ``limit`` entries, and then it says so above and below the tree."""
    listed = sorted(entries, key=lambda e: e.path)
    shown = listed if limit is None else listed[:limit]
    cut = len(shown) < len(listed)
    lines = _branch(_nest(shown), "")
    if cut:
        lines.append(f"... {len(listed) - len(shown):,} more entries (--all lists them)")
    if title:
        note = f"  (the first {len(shown):,} of {len(listed):,} entries; --all lists them all)" if cut else ""
        lines.insert(0, title + note)
    return lines


def _nest(entries: Iterable[ManifestEntry]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for entry in entries:
        *folders, name = entry.path.split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder + "/", {})
        node[name] = entry
    return root


def _branch(node: Mapping[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    names = sorted(node)
    for index, name in enumerate(names):
        last = index == len(names) - 1
        child = node[name]
        shown = printable(name)
        if not isinstance(child, dict):  # a leaf: an entry
            where = printable(child.ref or "(copy)")
            lines.append(f"{indent}{'└── ' if last else '├── '}{shown}  {human_size(child.size)}  {where}")
        else:
            lines.append(f"{indent}{'└── ' if last else '├── '}{shown}")
            lines += _branch(child, indent + ("    " if last else "│   "))
    return lines


def gc_lines(report: GCReport) -> list[str]:
    """One line per object gc deleted (or would delete), then what it came to."""
    verb = "would delete" if report.dry_run else "deleted"
    lines = [f"{verb}  {printable(v)}  (its TTL has passed)" for v in report.expired]
    lines += [
        f"kept  {printable(v)}  (its TTL has passed, but aliases point at it)" for v in report.expired_aliased
    ]
    lines += [f"{verb}  {printable(p)}" for p in [*report.manifests, *report.blobs]]
    lines += [f"restored  {printable(p)}  (a concurrent log needs it)" for p in report.restored]
    for log in report.in_flight:
        until, started = (
            log.expires_at.isoformat(timespec="seconds"),
            log.created_at.isoformat(timespec="seconds"),
        )
        lines.append(
            f"in flight  {printable(log.intent)}: a log started {started} "
            f"protects {_count(len(log.paths), 'path')} until {until}"
        )
        lines += [
            f"kept  {printable(p)}  (only this in-flight log relies on it, until {until})" for p in log.kept
        ]
    expiry = duration(report.intent_expiry)
    for intent in report.expired_intents:
        done = "would delete" if report.dry_run else "deleted"
        lines.append(
            f"{done}  {printable(intent)}  (a log intent older than {expiry}: its log is taken as crashed)"
        )
    for temp in report.temp_files:
        done = "would delete" if report.dry_run else "deleted"
        lines.append(f"{done}  {printable(temp)}  (a temporary file unchanged for a day: its writer died)")
    for blob in report.quarantined:
        lines.append(f"kept  {printable(blob)}  (a blob found corrupt on read: gc never deletes it)")
    if report.in_flight or report.expired_intents:
        lines.append(f"log intents protect their paths for {expiry} (REFSTORE_INTENT_TTL or gc --intent-ttl)")
    counts = f"{_count(len(report.manifests), 'manifest')} and {_count(len(report.blobs), 'blob')}"
    if report.leftovers:
        lines.append(f"{len(report.leftovers)} objects in trash/ from an interrupted gc (--yes settles them)")
    if report.dry_run:
        lines.append(f"dry run: {counts} ({human_size(report.size)}) unreferenced; --yes deletes them")
    else:
        lines.append(f"deleted {counts} ({human_size(report.size)})")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def duration(span: timedelta) -> str:
    """``timedelta(days=7)`` -> ``"7 days"``, ``timedelta(hours=36)`` -> ``"36 hours"``."""
    seconds = span.total_seconds()
    for noun, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return _count(int(seconds // size), noun)
    return _count(int(seconds), "second") if seconds == int(seconds) else f"{seconds:g} seconds"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; every cell shown through :func:`printable`."""
    rows = [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [headers, *rows]
    )


def emit(data: Any, as_json: bool, text: str) -> None:
    """``data`` as JSON (ASCII escapes: no control character reaches the terminal), else ``text`` with
    its control characters escaped (values inside a line are escaped where the line is made, see
    :func:`printable`)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(printable_lines(text))
