"""Edits of a version's description, metadata, tags and TTL: an append-only history of create-only records.

Layout under ``artifacts/<name>/edits/``::

    <N>/<seq>.json    seq 0, 1, 2, ...: every editable field of version N from that edit on, who made the
                      edit and when

The version record is never rewritten: it is sealed and claimed create-only, and its manifest and content
digests name what was logged, so they stay as they were (and so do the first values it holds). An edit
claims the number after the newest record it read, create-only, with the values it computed from that
record: two processes editing at once never lose a change, since the one that loses the claim reads the
winner's record and applies its change to that (the compare-and-swap of :mod:`.aliases`). The newest record
holds the current values; a version never edited has its record's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..core.bounded_json import MAX_DEPTH, check_depth
from ..core.exceptions import ConflictError, IntegrityError
from ..core.names import check_name
from ..core.records import EditRecord, Values, VersionRecord, actor, record_number, record_numbers
from ..storage.store import Store
from .intents import listing

if TYPE_CHECKING:
    from .registry import Registry
    from .version import ArtifactVersion

__all__ = ["Change", "edit", "find", "history", "newest", "newest_edits", "newest_from", "values_of"]

MAX_ATTEMPTS = 1000


@dataclass(frozen=True, slots=True)
class Change:
    """What an edit does to a version's values; applied again to newer values when another edit won the race.

    ``None`` leaves a field as it is. ``metadata`` and ``tags`` replace the whole field; ``set_metadata``,
    ``unset_metadata``, ``add_tags`` and ``remove_tags`` change single keys and tags. ``ttl`` is a
    :class:`~datetime.timedelta`, or ``False`` to remove the TTL. An empty ``description`` removes it.
    """

    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    ttl: timedelta | bool | None = None
    set_metadata: dict[str, Any] = field(default_factory=dict)
    unset_metadata: tuple[str, ...] = ()
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()

    def check(self, what: str) -> None:
        """Refuse, before anything is written, a change that a record could not hold."""
        for tag in [*(self.tags or ()), *self.add_tags]:
            check_name(tag, "tag")
        if self.ttl is True or (isinstance(self.ttl, timedelta) and self.ttl < timedelta(0)):
            raise ValueError(f"{what}: ttl must be a non-negative timedelta, or False to remove it")
        for metadata in (self.metadata, self.set_metadata):
            check_depth(metadata, f"{what}: metadata", MAX_DEPTH - 2)  # inside an edit record

    def apply(self, values: Values) -> Values:
        metadata = dict(values.metadata if self.metadata is None else self.metadata)
        metadata.update(self.set_metadata)
        for key in self.unset_metadata:
            metadata.pop(key, None)
        tags = list(values.tags if self.tags is None else self.tags)
        tags += [t for t in self.add_tags if t not in tags]
        tags = list(dict.fromkeys(t for t in tags if t not in self.remove_tags))
        description = values.description if self.description is None else (self.description or None)
        return Values(description, metadata, tags, self._ttl_seconds(values))

    def _ttl_seconds(self, values: Values) -> int | None:
        if self.ttl is None or self.ttl is True:
            return values.ttl_seconds
        return None if self.ttl is False else ttl_seconds(self.ttl)


def ttl_seconds(ttl: timedelta | None) -> int | None:
    """A TTL as whole seconds (rounded up: a version never expires before its TTL)."""
    if ttl is None:
        return None
    seconds = ttl.total_seconds()
    return int(seconds) + (seconds > int(seconds))


def folder(name: str, version: int) -> str:
    return f"artifacts/{name}/edits/{version}"


def newest(store: Store, record: VersionRecord) -> EditRecord | None:
    """The version's newest edit (its values are the current ones); None when it was never edited."""
    numbers = record_numbers(store.list(folder(record.name, record.version)))
    return _read(store, record, numbers[-1]) if numbers else None


def history(store: Store, record: VersionRecord) -> list[EditRecord]:
    """Every edit of the version, oldest first."""
    return [_read(store, record, n) for n in record_numbers(store.list(folder(record.name, record.version)))]


def newest_edits(store: Store, name: str) -> dict[int, int]:
    """Version number -> the number of its newest edit, for every edited version of ``name`` (one
    recursive listing)."""
    base = f"artifacts/{name}/edits"
    found: dict[int, int] = {}
    for path in listing(store, [base]):
        folder_name, _, filename = path.removeprefix(base + "/").partition("/")
        version, seq = record_number(folder_name + ".json"), record_number(filename)
        if version is not None and seq is not None:
            found[version] = max(seq, found.get(version, -1))
    return found


def newest_from(store: Store, record: VersionRecord, found: dict[int, int]) -> EditRecord | None:
    """Like :func:`newest`, from what :func:`newest_edits` found (no listing)."""
    seq = found.get(record.version)
    return None if seq is None else _read(store, record, seq)


def values_of(record: VersionRecord, edit: EditRecord | None) -> Values:
    """The values the version has with ``edit`` as its newest edit."""
    return record.values if edit is None else edit.values


def find(
    registry: Registry,
    *,
    type: str | None = None,
    tag: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> list[ArtifactVersion]:
    """The versions that are not deleted, of ``type``, holding ``tag`` and every key and value of
    ``metadata``; by artifact name, then version. One listing of edits per artifact."""
    wanted = dict(metadata or {})
    found = []
    for artifact in registry.artifacts() if name is None else [name]:
        edited = newest_edits(registry.store, artifact)
        for version in registry.versions(artifact):
            if type is not None and version.type != type:
                continue
            edit = newest_from(registry.store, version.record, edited)
            values = values_of(version.record, edit)
            if tag is not None and tag not in values.tags:
                continue
            if any(k not in values.metadata or values.metadata[k] != v for k, v in wanted.items()):
                continue
            found.append(registry._version(version.record, edit=edit))
    return found


def edit(store: Store, record: VersionRecord, change: Callable[[Values], Values]) -> EditRecord | None:
    """Apply ``change`` to the version's current values as one edit; the newest edit after it (None: never
    edited). Nothing is written when nothing changes; ``change`` runs again on newer values when another
    edit claims the next number first."""
    for _ in range(MAX_ATTEMPTS):
        numbers = record_numbers(store.list(folder(record.name, record.version)))
        current = _read(store, record, numbers[-1]) if numbers else None
        after = change(values_of(record, current))
        if after == values_of(record, current):
            return current
        seq = numbers[-1] + 1 if numbers else 0
        written = EditRecord(
            name=record.name,
            version=record.version,
            seq=seq,
            edited_at=datetime.now(timezone.utc).isoformat(),
            edited_by=actor(),
            description=after.description,
            metadata=after.metadata,
            tags=after.tags,
            ttl_seconds=after.ttl_seconds,
        )
        try:
            store.create(f"{folder(record.name, record.version)}/{seq}.json", written.to_bytes())
        except FileExistsError:
            continue
        return written
    raise ConflictError(
        f"{record.name}:v{record.version}: could not record the edit after {MAX_ATTEMPTS} tries"
    )


def _read(store: Store, record: VersionRecord, seq: int) -> EditRecord:
    relative = f"{folder(record.name, record.version)}/{seq}.json"
    edit = EditRecord.from_bytes(store.read_created(relative), store.url_of(relative))
    if (edit.name, edit.version, edit.seq) != (record.name, record.version, seq):
        raise IntegrityError(
            f"{store.url_of(relative)}: record names {edit.name}:v{edit.version} #{edit.seq}"
        )
    return edit
