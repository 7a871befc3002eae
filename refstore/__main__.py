"""``python -m refstore`` is the ``refstore`` command."""

from .cli import run

run()
