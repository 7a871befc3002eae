"""The local server: aiohttp, GET only, each page built in a worker thread (registry reads block).

Read-only by construction: no route takes a body or writes, and the pages read through the public API.
Bound to 127.0.0.1 by default; there a request whose ``Host`` is not the server's own is refused, so a web
page elsewhere cannot read the registry through a DNS name rebound to this machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from ...core.exceptions import (
    ArtifactNotFoundError,
    InvalidNameError,
    ObjectNotFoundError,
    RefstoreError,
    RunError,
    UnsafePathError,
)
from ...runs.lineage import RUN, VERSION, Node
from . import links as urls
from . import pages
from .links import Links
from .previews import image_bytes
from .rendering import render
from .site import Site

_SITE = web.AppKey("site", Site)
_HOSTS = web.AppKey("hosts", frozenset)
#: Answers of pages whose registry object was not found, or named wrongly.
_NOT_FOUND = (ArtifactNotFoundError, ObjectNotFoundError, RunError, InvalidNameError, UnsafePathError)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    return Path(str(resources.files(__package__ or "refstore.surfaces.ui") / "static"))


def make_app(site: Site, *, host: str = "127.0.0.1", port: int = 0) -> web.Application:
    """The application serving ``site``; ``host`` and ``port`` name the address it is reached at."""
    app = web.Application(middlewares=[_guard])
    app[_SITE] = site
    app[_HOSTS] = frozenset(_allowed_hosts(host, port)) if host in _LOOPBACK else frozenset()
    app.router.add_get("/", _home)
    app.router.add_get(
        "/artifacts", _page(lambda s, r: pages.artifacts_page(s, _links(), r.query.get("q", "")))
    )
    app.router.add_get("/artifacts/{name}", _page(lambda s, r: pages.artifact_page(s, _links(), _name(r))))
    app.router.add_get("/artifacts/{name}/diff", _diff_form)
    app.router.add_get("/artifacts/{name}/diff/{old}/{new}", _page(_diff))
    app.router.add_get("/artifacts/{name}/{label}", _page(_version))
    app.router.add_get("/artifacts/{name}/{label}/files", _files_root)
    app.router.add_get("/artifacts/{name}/{label}/files/{path:.*}", _page(_files))
    app.router.add_get("/artifacts/{name}/{label}/lineage", _page(_version_lineage))
    app.router.add_get("/artifacts/{name}/{label}/raw/{path:.+}", _raw)
    app.router.add_get("/runs", _page(lambda s, r: pages.runs_page(s, _links())))
    app.router.add_get("/runs/{project}/{run_id}", _page(lambda s, r: pages.run_page(s, _links(), _run(r))))
    app.router.add_get("/runs/{project}/{run_id}/lineage", _page(_run_lineage))
    app.router.add_static("/static", static_dir())
    return app


def _allowed_hosts(host: str, port: int) -> set[str]:
    names = {host, *_LOOPBACK, "[::1]"}
    return {f"{n}:{port}" for n in names} | {n for n in names if port == 80}


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    hosts = request.app[_HOSTS]
    if hosts and request.host not in hosts:
        return web.Response(status=421, text=f"refstore ui answers only at {sorted(hosts)[0]}\n")
    response = await handler(request)
    for key, value in _HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def _links() -> Links:
    return Links()


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _run(request: web.Request) -> str:
    return f"{request.match_info['project']}/{request.match_info['run_id']}"


def _page(build: Callable[[Site, web.Request], pages.Page]) -> Handler:
    """A handler that builds and renders the page in a worker thread; registry errors become pages."""

    async def handle(request: web.Request) -> web.StreamResponse:
        site = request.app[_SITE]
        try:
            html = await asyncio.to_thread(_built, site, build, request)
        except pages.Redirect as redirect:
            raise web.HTTPFound(urls.Links().href(redirect.url)) from None
        except _NOT_FOUND as exc:
            return _error(site, 404, "Not found", exc)
        except RefstoreError as exc:
            return _error(site, 502, "The registry could not be read", exc)
        return web.Response(text=html, content_type="text/html")

    return handle


def _built(site: Site, build: Callable[[Site, web.Request], pages.Page], request: web.Request) -> str:
    return render(build(site, request), _links(), site.registry.root)


def _error(site: Site, status: int, heading: str, exc: BaseException) -> web.Response:
    page = pages.Page("error.html", {"title": heading, "heading": heading, "message": str(exc), "crumbs": []})
    return web.Response(
        status=status, text=render(page, _links(), site.registry.root), content_type="text/html"
    )


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(urls.artifacts())


def _label(site: Site, request: web.Request) -> int:
    """The version number of the ``{label}`` segment; an alias (``latest``, ``prod``) redirects to it."""
    label = request.match_info["label"]
    try:
        return site.check_version_number(label)
    except ArtifactNotFoundError:
        version = site.registry.get(f"{_name(request)}:{label}")
        tail = request.path.removeprefix(f"/artifacts/{_name(request)}/{label}")  # "/files/...", or ""
        raise pages.Redirect(urls.version(version.name, version.version) + tail) from None


def _version(site: Site, request: web.Request) -> pages.Page:
    return pages.version_page(
        site, _links(), _name(request), _label(site, request), request.query.get("after")
    )


def _files(site: Site, request: web.Request) -> pages.Page:
    number = _label(site, request)
    path = request.match_info["path"]
    return pages.files_page(site, _links(), _name(request), number, path, request.query.get("after"))


async def _files_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{request.path}/")


def _diff(site: Site, request: web.Request) -> pages.Page:
    old = site.check_version_number(request.match_info["old"])
    new = site.check_version_number(request.match_info["new"])
    return pages.diff_page(site, _links(), _name(request), old, new)


async def _diff_form(request: web.Request) -> web.StreamResponse:
    """The history page's form (``?a=v0&b=v3``) leads to the diff's own URL."""
    name, old, new = _name(request), request.query.get("a", ""), request.query.get("b", "")
    site = request.app[_SITE]
    try:
        numbers = site.check_version_number(old), site.check_version_number(new)
    except ArtifactNotFoundError:
        raise web.HTTPFound(urls.Links().href(urls.artifact(name))) from None
    raise web.HTTPFound(urls.Links().href(urls.diff(name, *numbers)))


def _depth(request: web.Request) -> int:
    text = request.query.get("depth", "")
    return int(text) if text.isascii() and text.isdigit() else pages.DEFAULT_DEPTH


def _version_lineage(site: Site, request: web.Request) -> pages.Page:
    key = f"{_name(request)}:v{_label(site, request)}"
    return pages.lineage_page(site, _links(), Node(VERSION, key), _depth(request))


def _run_lineage(site: Site, request: web.Request) -> pages.Page:
    return pages.lineage_page(site, _links(), Node(RUN, _run(request)), _depth(request))


async def _raw(request: web.Request) -> web.StreamResponse:
    """The pinned bytes of an image entry, for the ``<img>`` of its preview; nothing else is served."""
    site = request.app[_SITE]
    if not site.previews:
        raise web.HTTPNotFound()
    try:
        number = site.check_version_number(request.match_info["label"])
        version = await asyncio.to_thread(site.version, _name(request), number)
        found = await asyncio.to_thread(_image, version, request.match_info["path"])
    except _NOT_FOUND as exc:
        return web.Response(status=404, text=f"{exc}\n")
    except RefstoreError as exc:  # ObjectChangedError: the pinned bytes are gone
        return web.Response(status=409, text=f"{exc}\n")
    if found is None:
        return web.Response(status=404, text="not an image a page shows\n")
    data, media_type = found
    headers = {"Content-Security-Policy": "default-src 'none'; sandbox", "Cache-Control": "no-cache"}
    return web.Response(body=data, content_type=media_type, headers=headers)


def _image(version: Any, path: str) -> tuple[bytes, str] | None:
    if path not in version.manifest:
        raise ObjectNotFoundError(f"{version.qualified_name}: no entry {path!r}")
    return image_bytes(version, path)


async def serve(site: Site, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve ``site`` at ``host:port`` (0: any free port) until cancelled; ``ready`` gets the URL."""
    server_socket = _bound(host, port)
    actual = server_socket.getsockname()[1]
    runner = web.AppRunner(make_app(site, host=host, port=actual), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, server_socket).start()
        ready(f"http://{_url_host(host)}:{actual}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _bound(host: str, port: int) -> Any:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RefstoreError(f"{_url_host(host)}:{port}: cannot listen there ({exc.strerror or exc})") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
