"""The one place that parses the JSON a registry holds: bounded, and every failure an :class:`IntegrityError`.

A registry is shared storage, so its records and manifests are whatever any writer put there. ``json.loads``
of such bytes fails in ways that are not :class:`json.JSONDecodeError`: nesting deeper than the interpreter's
recursion limit raises :class:`RecursionError`, an integer of more than 4,300 digits :class:`ValueError`,
and a record of gigabytes takes as much memory to parse. :func:`parse` bounds all three and turns each into
:class:`IntegrityError` naming the record, so a damaged or hostile record is one line, never a traceback:

- size: records (version, alias, content index, run record, file state, log intent, ``gc.lock``,
  ``storage.json``) at most :data:`RECORD_BYTES`; manifests at most :data:`MANIFEST_BYTES` (about 20
  million entries). The store reads whole objects, so the limit bounds the parse, not the read.
- depth: at most :data:`MAX_DEPTH` levels of arrays and objects, checked on the parsed value (records are
  small, so the walk is cheap). Manifests skip the walk (``max_depth=None``): their reader checks every row
  field by field, so a nested value where a string or a number belongs is refused there, and walking
  millions of rows would cost as much as parsing them; deeper than the recursion limit is caught here.

:func:`check_depth` holds records to the same depth when they are written (``records.seal``), so what
refstore writes it can always read back.
"""

from __future__ import annotations

import json
from typing import Any

from .exceptions import IntegrityError, ManifestError

#: Largest version, alias, run or other small record read (metadata and config included): 16 MiB.
RECORD_BYTES = 16 * 2**20
#: Largest manifest read: 4 GiB.
MANIFEST_BYTES = 4 * 2**30
#: Deepest nesting of arrays and objects in a record (user metadata and run config included).
MAX_DEPTH = 64


def parse(
    data: bytes, source: str, what: str, *, max_bytes: int = RECORD_BYTES, max_depth: int | None = MAX_DEPTH
) -> Any:
    """The JSON value in ``data`` (UTF-8), read from ``source`` as a ``what``; :class:`IntegrityError`
    when it is larger than ``max_bytes``, not JSON, nested deeper than ``max_depth`` or beyond what the
    parser can take (recursion, integer digits)."""
    if len(data) > max_bytes:
        raise IntegrityError(f"{source}: {what} of {len(data):,} bytes, more than the {max_bytes:,} allowed")
    try:
        value = json.loads(data.decode("utf-8"))  # UTF-8 only: json.loads would also guess UTF-16 and 32
    except RecursionError:
        raise IntegrityError(f"{source}: {what} nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{source}: {what} is truncated or not JSON ({exc.msg})") from None
    except ValueError as exc:  # undecodable bytes, an integer of too many digits
        raise IntegrityError(f"{source}: {what} is not readable JSON ({_first_words(exc)})") from None
    if max_depth is not None and depth_exceeds(value, max_depth):
        raise IntegrityError(f"{source}: {what} nested deeper than {max_depth} levels")
    return value


def check_depth(value: Any, what: str, max_depth: int = MAX_DEPTH) -> None:
    """:class:`ManifestError` when ``value`` (about to be written) nests deeper than a reader accepts."""
    if depth_exceeds(value, max_depth):
        raise ManifestError(f"{what}: nested deeper than {max_depth} levels of lists and dicts")


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep (a walk with no recursion,
    one level at a time, that stops at ``limit``)."""
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(limit):
        deeper: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            deeper += [item for item in items if isinstance(item, (list, dict))]
        if not deeper:
            return False
        level = deeper
    return bool(level)


def _first_words(exc: BaseException) -> str:
    return str(exc).split(";")[0][:120]
