"""The pages: each builder reads the registry through the public API and returns a template and its values.

Builders run in worker threads (the server) or in a loop (the export); they never write anything. Every
``href`` comes from :class:`~refstore.surfaces.ui.links.Links`, so the same builders serve both.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...core.chunks import diff as diff_manifests
from ...core.exceptions import ObjectNotFoundError, RefstoreError, RunError
from ...core.sizes import human_size
from ...runs.files import RunFiles
from ...runs.lineage import RUN, VERSION, Node, lineage
from ...runs.listing import run_paths
from ...runs.run import read_record
from . import links as urls
from .folders import PAGE_SIZE, is_folder, list_folder
from .previews import preview

if TYPE_CHECKING:
    from ...runs.records import FileState
    from ...snapshots.version import ArtifactVersion
    from .links import Links
    from .site import Site

#: Paths listed in each part of a diff.
DIFF_LIMIT = 1000
#: Files of a run listed with their states.
RUN_FILE_LIMIT = 500
#: The deepest lineage a page holds; its depth control shows up to this many edges from the start.
MAX_DEPTH = 6
DEFAULT_DEPTH = 2
_THREADS = 8


@dataclass(frozen=True)
class Page:
    template: str
    values: dict[str, Any] = field(default_factory=dict)


class Redirect(Exception):
    """The page lives at another URL (an alias of a version, a folder asked for without its ``/``)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def _crumbs(links: Links, *parts: tuple[str, str | None]) -> list[dict[str, str | None]]:
    return [{"text": text, "href": links.href(url) if url else None} for text, url in parts]


def _when(timestamp: str | None) -> str:
    """An ISO 8601 time as ``2026-03-01 12:00:00`` (UTC as recorded)."""
    return timestamp[:19].replace("T", " ") if timestamp else ""


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _size(size: int) -> dict[str, Any]:
    return {"text": human_size(size), "bytes": size}


# -- artifacts ------------------------------------------------------------------------------------------


def artifacts_page(site: Site, links: Links, query: str = "") -> Page:
    names = site.registry.artifacts()
    needle = query.strip().lower()
    shown = [n for n in names if needle in n.lower()]
    with ThreadPoolExecutor(_THREADS) as pool:
        rows = list(pool.map(lambda n: _artifact_row(site, links, n), shown))
    return Page(
        "artifacts.html",
        {"title": "Artifacts", "rows": rows, "query": query, "total": len(names), "crumbs": []},
    )


def _artifact_row(site: Site, links: Links, name: str) -> dict[str, Any]:
    versions = site.registry.versions(name)
    latest = versions[-1]
    manifest = latest.manifest
    return {
        "name": name,
        "href": links.href(urls.artifact(name)),
        "type": latest.type,
        "versions": len(versions),
        "latest": f"v{latest.version}",
        "latest_href": links.href(urls.version(name, latest.version)),
        "entries": len(manifest),
        "size": _size(manifest.total_size),
        "logged": _when(latest.created_at),
    }


def artifact_page(site: Site, links: Links, name: str) -> Page:
    versions = site.registry.versions(name)
    rows = [_version_row(site, links, v, versions[i - 1] if i else None) for i, v in enumerate(versions)]
    rows.reverse()  # newest first
    labels = [f"v{v.version}" for v in versions]
    return Page(
        "artifact.html",
        {
            "title": name,
            "name": name,
            "type": versions[-1].type,
            "rows": rows,
            "labels": labels,
            "diff_action": links.href(f"{urls.artifact(name)}/diff"),
            "diff_base": links.href(f"{urls.artifact(name)}/diff/"),
            "crumbs": _crumbs(links, ("Artifacts", urls.artifacts()), (name, None)),
        },
    )


def _version_row(
    site: Site, links: Links, version: ArtifactVersion, previous: ArtifactVersion | None
) -> dict[str, Any]:
    manifest = version.manifest
    name, number = version.name, version.version
    return {
        "label": f"v{number}",
        "href": links.href(urls.version(name, number)),
        "aliases": [a for a in version.aliases if a != "latest"]
        + (["latest"] if "latest" in version.aliases else []),
        "entries": len(manifest),
        "size": _size(manifest.total_size),
        "created": _when(version.created_at),
        "run": _run_link(links, version.created_by),
        "description": version.description or "",
        "metadata": [(k, _value(v)) for k, v in sorted(version.metadata.items())],
        "diff_href": links.href(urls.diff(name, previous.version, number)) if previous else None,
        "diff_text": f"v{previous.version} \u2192 v{number}" if previous else None,
    }


def _run_link(links: Links, run_path: str | None) -> dict[str, str] | None:
    return {"text": run_path, "href": links.href(urls.run(run_path))} if run_path else None


# -- one version and its files ----------------------------------------------------------------------------


def version_page(site: Site, links: Links, name: str, number: int, after: str | None = None) -> Page:
    version = site.version(name, number)
    manifest = version.manifest
    values = {
        "title": version.qualified_name,
        "name": name,
        "label": f"v{number}",
        "type": version.type,
        "digest": version.digest,
        "created": _when(version.created_at),
        "aliases": version.aliases,
        "description": version.description or "",
        "metadata": [(k, _value(v)) for k, v in sorted(version.metadata.items())],
        "entries": len(manifest),
        "size": _size(manifest.total_size),
        "run": _run_link(links, version.created_by),
        "users": [_run_link(links, r) for r in version.used_by()],
        "lineage_href": links.href(urls.version_lineage(name, number)),
        "files_href": links.href(urls.files(name, number)),
        "previous_diff": _previous_diff(site, links, version),
        "crumbs": _crumbs(
            links, ("Artifacts", urls.artifacts()), (name, urls.artifact(name)), (f"v{number}", None)
        ),
    }
    values.update(_listing(site, links, version, "", after, 1))
    return Page("version.html", values)


def _previous_diff(site: Site, links: Links, version: ArtifactVersion) -> dict[str, str] | None:
    numbers = [v.version for v in site.registry.versions(version.name)]
    older = [n for n in numbers if n < version.version]
    if not older:
        return None
    return {
        "href": links.href(urls.diff(version.name, older[-1], version.version)),
        "text": f"v{older[-1]} \u2192 v{version.version}",
    }


def files_page(
    site: Site, links: Links, name: str, number: int, path: str, after: str | None = None, page: int = 1
) -> Page:
    """A folder (``path`` empty or ending in ``/``) or a file of ``name:v<number>``."""
    version = site.version(name, number)
    if path and not path.endswith("/"):
        if path in version.manifest:
            return _file_page(site, links, version, path)
        if is_folder(site.paths(version), path):
            raise Redirect(urls.files(name, number, path))
        raise ObjectNotFoundError(f"{version.qualified_name}: no file or folder {path!r}")
    folder = path.strip("/")
    if folder and not is_folder(site.paths(version), folder):
        raise ObjectNotFoundError(f"{version.qualified_name}: no folder {folder!r}")
    values = {
        "title": f"{version.qualified_name}/{folder}",
        "name": name,
        "label": f"v{number}",
        "crumbs": _path_crumbs(links, version, folder, last_is_file=False),
    }
    values.update(_listing(site, links, version, folder, after, page))
    return Page("folder.html", values)


def _path_crumbs(links: Links, version: ArtifactVersion, path: str, *, last_is_file: bool) -> list[Any]:
    name, number = version.name, version.version
    parts: list[tuple[str, str | None]] = [
        ("Artifacts", urls.artifacts()),
        (name, urls.artifact(name)),
        (f"v{number}", urls.version(name, number)),
        ("files", urls.files(name, number) if path else None),
    ]
    segments = path.split("/") if path else []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        parts.append((segment, None if last else urls.files(name, number, "/".join(segments[: i + 1]))))
    return _crumbs(links, *parts)


def _listing(
    site: Site, links: Links, version: ArtifactVersion, folder: str, after: str | None, page: int
) -> dict[str, Any]:
    """A page of ``folder``'s children, with the links to the next page."""
    name, number = version.name, version.version
    listing = list_folder(site.paths(version), folder, after=after)
    manifest = version.manifest
    children = []
    for child in listing.children:
        if child.folder:
            children.append(
                {
                    "name": child.name,
                    "href": links.href(urls.files(name, number, child.path)),
                    "folder": True,
                    "entries": child.entries,
                }
            )
            continue
        entry = manifest[child.path]
        children.append(
            {
                "name": child.name,
                "href": links.href(urls.files(name, number, child.path, folder=False)),
                "folder": False,
                "size": _size(entry.size),
                "source": entry.ref or "stored copy",
                "version_id": entry.version_id or "",
            }
        )
    folder_url = urls.files(name, number, folder)
    following = None
    if listing.next_after is not None:
        following = links.href(folder_url, page=page + 1, after=listing.next_after)
    return {
        "folder": folder,
        "children": children,
        "folder_entries": listing.entries,
        "page": page,
        "page_size": PAGE_SIZE,
        "next_href": following,
        "first_href": links.href(folder_url) if page > 1 or after else None,
    }


def _file_page(site: Site, links: Links, version: ArtifactVersion, path: str) -> Page:
    entry = version.manifest[path]
    name, number = version.name, version.version
    shown = preview(version, entry) if site.previews else None
    return Page(
        "file.html",
        {
            "title": f"{version.qualified_name}/{path}",
            "name": name,
            "label": f"v{number}",
            "path": path,
            "basename": path.rsplit("/", 1)[-1],
            "entry": entry,
            "size": _size(entry.size),
            "preview": shown,
            "previews_off": not site.previews,
            "raw_href": links.href(urls.raw(name, number, path)),
            "crumbs": _path_crumbs(links, version, path, last_is_file=True),
        },
    )


# -- diff ---------------------------------------------------------------------------------------------------


def diff_page(site: Site, links: Links, name: str, old: int, new: int) -> Page:
    before, after = site.version(name, old), site.version(name, new)
    old_manifest, new_manifest = before.manifest, after.manifest
    changes = diff_manifests(old_manifest, new_manifest)

    def rows(paths: list[str], *, in_old: bool, in_new: bool) -> list[dict[str, Any]]:
        found = []
        for path in paths[:DIFF_LIMIT]:
            at, number = (new_manifest, new) if in_new else (old_manifest, old)
            found.append(
                {
                    "path": path,
                    "href": links.href(urls.files(name, number, path, folder=False)),
                    "old_size": _size(old_manifest[path].size) if in_old else None,
                    "new_size": _size(new_manifest[path].size) if in_new else None,
                    "entry": at[path],
                }
            )
        return found

    sections = [
        ("Added", changes.added, rows(changes.added, in_old=False, in_new=True)),
        ("Removed", changes.removed, rows(changes.removed, in_old=True, in_new=False)),
        ("Modified", changes.modified, rows(changes.modified, in_old=True, in_new=True)),
    ]
    return Page(
        "diff.html",
        {
            "title": f"{name}: v{old} \u2192 v{new}",
            "name": name,
            "old": {"label": f"v{old}", "href": links.href(urls.version(name, old))},
            "new": {"label": f"v{new}", "href": links.href(urls.version(name, new))},
            "sections": [{"title": t, "count": len(p), "rows": r, "shown": len(r)} for t, p, r in sections],
            "limit": DIFF_LIMIT,
            "crumbs": _crumbs(
                links,
                ("Artifacts", urls.artifacts()),
                (name, urls.artifact(name)),
                (f"v{old} \u2192 v{new}", None),
            ),
        },
    )


# -- lineage ------------------------------------------------------------------------------------------------


def lineage_page(site: Site, links: Links, start: Node, depth: int = DEFAULT_DEPTH) -> Page:
    """The lineage around a version or a run: every node within :data:`MAX_DEPTH` edges goes into the
    page with its distance, and the page's depth control shows those within the chosen depth."""
    if start.kind == VERSION:
        name, _, label = start.key.partition(":")
        site.version(name, site.check_version_number(label))  # an unknown version is a 404
    else:
        read_record(site.registry, start.key)
    graph = lineage(site.lineage_index(), start, MAX_DEPTH)
    nodes = [
        {
            "id": node.id,
            "kind": node.kind,
            "label": node.key,
            "href": links.href(_node_url(node)),
            "distance": distance,
        }
        for node, distance in sorted(graph.distances.items(), key=lambda item: (item[1], item[0]))
    ]
    edges = [{"source": a.id, "target": b.id} for a, b in graph.edges]
    by_id = {n["id"]: n for n in nodes}
    depth = max(1, min(depth, MAX_DEPTH))
    data = {"start": start.id, "depth": depth, "max_depth": MAX_DEPTH, "nodes": nodes, "edges": edges}
    crumbs: list[tuple[str, str | None]]
    if start.kind == VERSION:
        name = start.key.partition(":")[0]
        crumbs = [("Artifacts", urls.artifacts()), (name, urls.artifact(name))]
        crumbs += [(start.key.partition(":")[2], _node_url(start)), ("lineage", None)]
    else:
        crumbs = [("Runs", urls.runs()), (start.key, _node_url(start)), ("lineage", None)]
    return Page(
        "lineage.html",
        {
            "title": f"Lineage of {start.key}",
            "start": by_id[start.id],
            "data": data,
            "depth": depth,
            "depths": list(range(1, MAX_DEPTH + 1)),
            "edge_rows": [{"source": by_id[e["source"]], "target": by_id[e["target"]]} for e in edges],
            "truncated": graph.truncated,
            "crumbs": _crumbs(links, *crumbs),
        },
    )


def _node_url(node: Node) -> str:
    if node.kind == RUN:
        return urls.run(node.key)
    name, _, label = node.key.partition(":")
    return urls.version(name, int(label[1:]))


# -- runs ---------------------------------------------------------------------------------------------------


def runs_page(site: Site, links: Links) -> Page:
    with ThreadPoolExecutor(_THREADS) as pool:
        rows = list(pool.map(lambda p: _run_row(site, links, p), run_paths(site.registry)))
    found = sorted((r for r in rows if r is not None), key=lambda r: r["created"], reverse=True)
    return Page("runs.html", {"title": "Runs", "rows": found, "crumbs": []})


def _run_row(site: Site, links: Links, run_path: str) -> dict[str, Any] | None:
    try:
        record = read_record(site.registry, run_path)
    except RunError:  # a run whose record is not written yet
        return None
    return {
        "path": record.path,
        "href": links.href(urls.run(record.path)),
        "name": record.name,
        "state": record.state,
        "created": _when(record.created_at),
        "finished": _when(record.finished_at),
    }


def _file_states(files: RunFiles, name: str) -> list[FileState]:
    """Every readable synced state of one run file (a record that a crash left empty was never synced)."""
    found = []
    for number in files.states(name):
        with contextlib.suppress(RefstoreError):
            found.append(files.state(name, number))
    return found


def run_page(site: Site, links: Links, run_path: str) -> Page:
    record = read_record(site.registry, run_path)
    files = RunFiles(site.registry.store, record.path)
    names = files.names()
    with ThreadPoolExecutor(_THREADS) as pool:
        states = list(pool.map(lambda n: _file_states(files, n), names[:RUN_FILE_LIMIT]))
    index = site.lineage_index()

    def version_links(keys: list[str]) -> list[dict[str, str]]:
        return [{"text": k, "href": links.href(_node_url(Node(VERSION, k)))} for k in sorted(set(keys))]

    return Page(
        "run.html",
        {
            "title": f"Run {record.path}",
            "record": record,
            "created": _when(record.created_at),
            "finished": _when(record.finished_at),
            "config": [(k, _value(v)) for k, v in sorted(record.config.items())],
            "code": record.code,
            "files": [
                {
                    "path": name,
                    "states": [
                        {
                            "state": s.state,
                            "size": _size(s.size),
                            "synced": _when(s.synced_at),
                            "policy": s.policy,
                            "digest": s.digest,
                        }
                        for s in found
                    ],
                }
                for name, found in zip(names, states, strict=False)
            ],
            "file_count": len(names),
            "file_limit": RUN_FILE_LIMIT,
            "used": version_links(index.used.get(record.path, [])),
            "logged": version_links(index.logged.get(record.path, [])),
            "lineage_href": links.href(urls.run_lineage(record.path)),
            "crumbs": _crumbs(links, ("Runs", urls.runs()), (record.path, None)),
        },
    )
