"""Aliases as records: each alias of an artifact is a sequence of create-only records, the newest says where
it points.

Layout under ``artifacts/<name>/aliases/``::

    <alias>/<seq>.json    seq 0, 1, 2, ...: the version the alias points at from then on (``null``: removed)
    <alias>.json          what registries written before kept: one pointer, replaced in place; read while
                          the alias has no records, superseded by the first one

Why a sequence of records rather than one pointer replaced in place. A pointer cannot be changed "only if it
still points at v3", and deleting v3 has to remove exactly the aliases that point at it: read-then-replace
would wipe out a move to v5 that another process made in between. A record is never replaced. A change
claims the number after the newest record it read with a create-only write (see
:mod:`refstore.storage.claims`), so of two concurrent changes one gets ``seq + 1`` and the other reads again
and decides again. That makes every change a compare-and-swap on object storage without a lock; the
records also keep who changed the alias and when.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from ..core.exceptions import ConflictError, IntegrityError
from ..core.names import check_alias, is_alias
from ..core.records import AliasRecord, actor, record_number, record_numbers
from ..storage.store import Store
from .intents import listing

__all__ = ["head", "heads", "point", "remove"]

MAX_ATTEMPTS = 1000


def folder(name: str) -> str:
    return f"artifacts/{name}/aliases"


def head(store: Store, name: str, alias: str) -> AliasRecord | None:
    """The newest record of ``alias`` (a removal too), else the pointer of an older registry, else None."""
    numbers = record_numbers(store.list(f"{folder(name)}/{alias}"))
    return _read(store, name, alias, numbers[-1]) if numbers else _pointer(store, name, alias)


def heads(store: Store, name: str) -> dict[str, AliasRecord]:
    """Every alias of ``name`` that points at a version, with its newest record (one recursive listing)."""
    base = folder(name) + "/"
    newest: dict[str, int] = {}
    pointers: set[str] = set()
    for path in listing(store, [folder(name)]):
        parts = path.removeprefix(base).split("/")
        if len(parts) == 1 and parts[0].endswith(".json"):
            pointers.add(parts[0].removesuffix(".json"))
        elif len(parts) == 2 and (number := record_number(parts[1])) is not None:
            newest[parts[0]] = max(number, newest.get(parts[0], -1))
    found = {}
    for alias in sorted(set(newest) | pointers):
        if not is_alias(alias):
            continue
        record = _read(store, name, alias, newest[alias]) if alias in newest else _pointer(store, name, alias)
        if record is not None and record.version is not None:
            found[alias] = record
    return found


def point(store: Store, name: str, alias: str, version: int) -> AliasRecord:
    """Point ``alias`` at ``version``: a new record, whatever the alias pointed at before."""
    claimed = _claim(store, name, alias, version, lambda current: True)
    assert claimed is not None  # nothing refuses an unconditional change
    return claimed[1]


def remove(store: Store, name: str, alias: str, *, only_from: int | None = None) -> AliasRecord | None:
    """Remove ``alias`` (a record without a version); the record that it replaced. None, and nothing
    written, when the alias points nowhere, or (``only_from``) at another version than ``only_from``."""

    def wanted(current: AliasRecord | None) -> bool:
        pointing = current is not None and current.version is not None
        return pointing and (only_from is None or current.version == only_from)  # type: ignore[union-attr]

    claimed = _claim(store, name, alias, None, wanted)
    return claimed[0] if claimed is not None else None


def _claim(
    store: Store,
    name: str,
    alias: str,
    version: int | None,
    wanted: Callable[[AliasRecord | None], bool],
) -> tuple[AliasRecord | None, AliasRecord] | None:
    """Write the record after the newest one if ``wanted(newest)``: ``(newest, written)``; ``None`` when not
    wanted. A concurrent change that claimed the number first makes it read and decide again."""
    check_alias(alias)
    for _ in range(MAX_ATTEMPTS):
        current = head(store, name, alias)
        if not wanted(current):
            return None
        seq = current.seq + 1 if current is not None and current.seq is not None else 0
        record = AliasRecord(name, alias, version, seq, _now(), actor())
        try:
            store.create(f"{folder(name)}/{alias}/{seq}.json", record.to_bytes())
        except FileExistsError:
            continue
        return current, record
    raise ConflictError(f"{name}:{alias}: could not change the alias after {MAX_ATTEMPTS} tries")


def _read(store: Store, name: str, alias: str, seq: int) -> AliasRecord:
    relative = f"{folder(name)}/{alias}/{seq}.json"
    record = AliasRecord.from_bytes(store.read_created(relative), store.url_of(relative))
    if (record.name, record.alias, record.seq) != (name, alias, seq):
        raise IntegrityError(
            f"{store.url_of(relative)}: record names {record.name}:{record.alias} #{record.seq}"
        )
    return record


def _pointer(store: Store, name: str, alias: str) -> AliasRecord | None:
    """The pointer an older registry kept (``aliases/<alias>.json``), or None."""
    relative = f"{folder(name)}/{alias}.json"
    data = store.read_if_there(relative)
    if data is None:
        return None
    record = AliasRecord.from_bytes(data, store.url_of(relative))
    if (record.name, record.alias, record.seq) != (name, alias, None) or record.version is None:
        raise IntegrityError(f"{store.url_of(relative)}: record names {record.name}:{record.alias}")
    return record


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
