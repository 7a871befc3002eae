"""The Jinja2 environment of the pages: autoescaping on for every template, so a name, path, description
or metadata value from a registry is always shown as text, never read as markup."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import links as urls

if TYPE_CHECKING:
    import jinja2

    from .links import Links
    from .pages import Page


@functools.cache
def environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(__package__ or "refstore.surfaces.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(page: Page, links: Links, root: str) -> str:
    """The HTML of ``page``, with the links every page has (sections, stylesheet, scripts)."""
    template = environment().get_template(page.template)
    return template.render(
        page.values,
        nav={"artifacts": links.href(urls.artifacts()), "runs": links.href(urls.runs())},
        static=lambda name: links.href(urls.static(name)),
        root=root,
        export=links.export,
    )
