"""``python -m refstore`` is the ``refstore`` command."""

from .surfaces.cli import run

run()
