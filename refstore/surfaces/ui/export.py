"""``refstore ui --export DIR``: the same pages as the server, written as a static site.

Every artifact, version, folder (page by page), file, the diff of each version with the one before, each
lineage graph (its depth control works in the page), the runs and each run. Source bytes are read only
with ``previews``: then file pages hold their previews and image entries are written beside them. Each
file appears whole (written to a scratch name, then renamed); links are relative, so the folder can be
published anywhere or opened from disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...runs.lineage import RUN, VERSION, Node
from ...runs.listing import run_paths
from . import links as urls
from . import pages
from .folders import all_folders, list_folder
from .links import Links, export_file
from .previews import image_bytes
from .rendering import render
from .server import static_dir
from .site import Site

if TYPE_CHECKING:
    from ...snapshots.registry import Registry
    from ...snapshots.version import ArtifactVersion


class _Export:
    def __init__(self, registry: Registry, target: Path, previews: bool, note: Callable[[str], None]) -> None:
        self.site = Site(registry, previews=previews, export=True)
        self.target = target
        self.note = note
        self.pages = 0

    def page(self, url: str, build: Callable[..., pages.Page], *args: Any, number: int = 1) -> pages.Page:
        """Write ``build(site, links, *args)`` as page ``number`` of ``url``."""
        links = Links(url)  # a folder's later pages sit beside its first: the same relative links
        page = build(self.site, links, *args)
        self.write(export_file(url, number), render(page, links, self.site.registry.root).encode())
        self.pages += 1
        return page

    def write(self, relative: str, data: bytes) -> None:
        path = self.target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name[:100]}.refstore-{os.getpid()}-{os.urandom(4).hex()}")
        scratch.write_bytes(data)
        os.replace(scratch, path)

    def run(self) -> int:
        shutil.copytree(static_dir(), self.target / "static", dirs_exist_ok=True)
        registry = self.site.registry
        self.page(urls.artifacts(), pages.artifacts_page)
        for name in registry.artifacts():
            self.page(urls.artifact(name), pages.artifact_page, name)
            versions = registry.versions(name)
            for older, version in zip([None, *versions], versions, strict=False):
                self.version(version)
                if older is not None:
                    old, new = older.version, version.version
                    self.page(urls.diff(name, old, new), pages.diff_page, name, old, new)
        self.page(urls.runs(), pages.runs_page)
        for run_path in run_paths(registry):
            self.page(urls.run(run_path), pages.run_page, run_path)
            self.page(urls.run_lineage(run_path), pages.lineage_page, Node(RUN, run_path))
        return self.pages

    def version(self, version: ArtifactVersion) -> None:
        name, number = version.name, version.version
        self.note(f"{version.qualified_name}: {len(version.manifest):,} entries")
        self.page(urls.version(name, number), pages.version_page, name, number)
        self.page(
            urls.version_lineage(name, number), pages.lineage_page, Node(VERSION, version.qualified_name)
        )
        paths = self.site.paths(version)
        for folder in all_folders(paths):
            url, after, page = urls.files(name, number, folder), None, 1
            while True:
                path = f"{folder}/" if folder else ""
                self.page(url, pages.files_page, name, number, path, after, page, number=page)
                after = list_folder(paths, folder, after=after).next_after
                if after is None:
                    break
                page += 1
        for path in paths:
            shown = self.page(
                urls.files(name, number, path, folder=False), pages.files_page, name, number, path
            )
            found = shown.values.get("preview")
            if found is not None and found.kind == "image":
                self.image(version, path)

    def image(self, version: ArtifactVersion, path: str) -> None:
        from ...core.exceptions import RefstoreError

        try:
            found = image_bytes(version, path)
        except RefstoreError as exc:  # moved on since the page was written: the page says so next time
            self.note(f"{version.qualified_name}/{path}: {exc}")
            return
        if found is not None:
            self.write(export_file(urls.raw(version.name, version.version, path)), found[0])


def export_site(
    registry: Registry,
    target: str | os.PathLike[str],
    *,
    previews: bool = False,
    note: Callable[[str], None] = print,
) -> int:
    """Write the site of ``registry`` into ``target`` (made if missing); the number of pages written."""
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    return _Export(registry, folder, previews, note).run()
