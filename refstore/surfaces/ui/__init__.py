"""``refstore ui``: a read-only web page over a registry, served locally or exported as a static site.

Pages (every one at a stable URL, plain HTML that works without JavaScript except the lineage graph):
``/artifacts`` (with a search by name), ``/artifacts/<name>`` (the version history; any two versions can be
diffed at ``/artifacts/<name>/diff/v<A>/v<B>``), ``/artifacts/<name>/v<N>`` and its files under
``/artifacts/<name>/v<N>/files/<path>`` with previews of the pinned bytes, the lineage graph at
``/artifacts/<name>/v<N>/lineage`` and ``/runs/<project>/<id>/lineage``, ``/runs`` and
``/runs/<project>/<id>``.

The pages read the registry through the public API only (:class:`~refstore.Registry`,
:class:`~refstore.ArtifactVersion`, the run records) and never write to it or to a source. Templates,
stylesheet and scripts (the graph layout is the vendored ``@dagrejs/dagre``) ship inside the package.
Jinja2 and Pillow (and PyArrow, for Parquet previews) come with the ``ui`` extra.
"""

from __future__ import annotations

from ...core.exceptions import RefstoreError

INSTALL_HINT = "pip install 'refstore[ui]'"


def require() -> None:
    """Raise :class:`RefstoreError` naming the extra to install when a package the pages need is missing."""
    import importlib.util

    missing = [name for name in ("jinja2", "PIL") if importlib.util.find_spec(name) is None]
    if missing:
        packages = ", ".join({"jinja2": "Jinja2", "PIL": "Pillow"}[m] for m in missing)
        raise RefstoreError(f"refstore ui needs {packages}: {INSTALL_HINT}")
