"""Run ids (8 characters, lower-case letters and digits) and readable run names (``quiet-river-7``)."""

from __future__ import annotations

import secrets
import string

from ..core.exceptions import RunError

_ID_ALPHABET = string.ascii_lowercase + string.digits
#: Longest run name, in characters.
MAX_NAME = 128


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ADJECTIVES = _words(
    "amber bold brisk calm clever crisp dark eager fancy gentle golden happy hidden icy jolly keen "
    "lively lucky misty noble polar proud quiet rapid silent smooth solar steady swift vivid warm wild"
)
_NOUNS = _words(
    "breeze brook canyon cedar cloud comet dawn delta dune ember field forest frost glade harbor lake "
    "meadow moon ocean pine planet prairie rain river sea sky snow star stone sun valley wave"
)


def new_run_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def readable_name(number: int) -> str:
    """``<adjective>-<noun>-<number>``; ``number`` is the run's rank in its project."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{number}"


def check_run_name(name: object) -> str:
    """``name`` when it can name a run: text of 1 to :data:`MAX_NAME` printable characters, not blank at
    either end; :class:`RunError` otherwise."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise RunError(f"run name {name!r}: use 1 to {MAX_NAME} characters")
    if not name.isprintable() or name != name.strip():
        raise RunError(f"run name {name!r}: printable characters only, no blanks at either end")
    return name
