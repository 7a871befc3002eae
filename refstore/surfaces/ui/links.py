"""The address of every page, as the server answers it and as the static export writes it.

A page has one URL path (``/artifacts/mnist/v3/files/train/part-0.parquet``); the server links to it as
it is, the export to the file it writes for it, relative to the page that links (so the site works from
any folder, and from ``file://``). Folders end in ``/``; every path segment is percent-encoded.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote

#: Export file names a file page must not take: a folder's listing pages.
_LISTING_NAME = re.compile(r"index(-\d+)?")


def artifacts() -> str:
    return "/artifacts"


def artifact(name: str) -> str:
    return f"/artifacts/{name}"


def version(name: str, number: int) -> str:
    return f"/artifacts/{name}/v{number}"


def files(name: str, number: int, path: str = "", *, folder: bool = True) -> str:
    """A folder's page (``folder``) or a file's page."""
    tail = f"{path.strip('/')}/" if folder and path.strip("/") else path
    return f"{version(name, number)}/files/{tail}"


def raw(name: str, number: int, path: str) -> str:
    return f"{version(name, number)}/raw/{path}"


def diff(name: str, old: int, new: int) -> str:
    return f"/artifacts/{name}/diff/v{old}/v{new}"


def version_lineage(name: str, number: int) -> str:
    return f"{version(name, number)}/lineage"


def runs() -> str:
    return "/runs"


def run(run_path: str) -> str:
    return f"/runs/{run_path}"


def run_lineage(run_path: str) -> str:
    return f"/runs/{run_path}/lineage"


def static(name: str) -> str:
    return f"/static/{name}"


def export_file(url: str, page: int = 1) -> str:
    """The file of the static export that holds the page at ``url`` (relative to the export's folder).

    Pages become ``<url>/index.html``; inside ``files/``, a folder's later pages ``index-<N>.html`` and a
    file's page ``<path>.html`` (``<path>.entry.html`` for a file named like a listing page, ``index``);
    static files and image bytes keep their own name."""
    path = url.lstrip("/")
    if path.startswith("static/") or "/raw/" in path:
        return path
    if "/files/" in path and not path.endswith("/"):
        stem = posixpath.basename(path)
        return f"{path}.entry.html" if _LISTING_NAME.fullmatch(stem) else f"{path}.html"
    name = "index.html" if page == 1 else f"index-{page}.html"
    return f"{path.rstrip('/')}/{name}"


class Links:
    """Turns URL paths into ``href`` values for one page: absolute for the server, relative files for
    the export (``here`` is the URL of the page being written)."""

    def __init__(self, here: str | None = None) -> None:
        self.export = here is not None
        self._folder = posixpath.dirname(export_file(here)) if here is not None else ""

    def href(self, url: str, *, page: int = 1, after: str | None = None) -> str:
        """The link to ``url``; a folder's later page by ``page`` (export) or ``after`` (server)."""
        if not self.export:
            query = f"?after={quote(after, safe='')}" if after else ""
            return quote(url) + query
        target = export_file(url, page)
        return quote(posixpath.relpath(target, self._folder or "."))
