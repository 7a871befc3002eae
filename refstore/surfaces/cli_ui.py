"""``refstore ui``: the registry in a web page, served locally or exported as a static site."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .cli_options import global_options, registry_of, settings
from .render import emit

if TYPE_CHECKING:
    from ..snapshots.registry import Registry


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--export", "export_dir", default=None, metavar="DIR", help="Write the pages as a static site into DIR."
)
@click.option(
    "--previews", is_flag=True, help="With --export: read source bytes for previews (images, tables, text)."
)
@global_options()
@click.pass_context
def ui_command(ctx: click.Context, host: str, port: int, export_dir: str | None, previews: bool) -> None:
    """Browse the registry in a web page: artifacts, versions, files with previews, diffs, lineage, runs.

    Serves read-only pages at http://HOST:PORT/ until Ctrl-C; with --export DIR, writes them as a static
    site instead (source bytes only with --previews). Needs the ui extra: pip install 'refstore[ui]'.
    """
    from .ui import require

    require()
    as_json = settings(ctx)["json"]
    if previews and export_dir is None:
        raise click.UsageError("--previews goes with --export (the server always shows previews)")
    registry = registry_of(ctx)
    if export_dir is not None:
        from .ui.export import export_site

        count = export_site(registry, export_dir, previews=previews, note=lambda line: None)
        emit({"dir": export_dir, "pages": count}, as_json, f"wrote {count:,} pages to {export_dir}")
        return
    _serve(registry, host, port, as_json)


def _serve(registry: Registry, host: str, port: int, as_json: bool) -> None:
    import asyncio

    from .ui.server import serve
    from .ui.site import Site

    def ready(url: str) -> None:
        emit(
            {"url": url, "root": registry.root},
            as_json,
            f"refstore ui: {url} ({registry.root}); Ctrl-C stops it",
        )

    try:
        asyncio.run(serve(Site(registry), host, port, ready))
    except KeyboardInterrupt:
        if not as_json:
            click.echo("refstore ui: stopped", err=True)
