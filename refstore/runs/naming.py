"""Run ids (8 characters, lower-case letters and digits) and readable run names (``quiet-river-7``)."""

from __future__ import annotations

import secrets
import string

_ID_ALPHABET = string.ascii_lowercase + string.digits


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
