"""Registry records: small canonical JSON documents that carry their own digest (versions, aliases,
tombstones of deleted versions, edits of a version's values, synced states of run files)."""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .bounded_json import RECORD_BYTES, check_depth, parse
from .exceptions import IntegrityError, ManifestError
from .manifest import canonical_json
from .names import check_logical_path, is_name

VERSION_FORMAT = "refstore.version/1"
ALIAS_FORMAT = "refstore.alias/1"
FILE_STATE_FORMAT = "refstore.runfile/1"
TOMBSTONE_FORMAT = "refstore.tombstone/1"
EDIT_FORMAT = "refstore.edit/1"
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def seal(body: dict[str, Any]) -> bytes:
    """Canonical bytes of ``body`` plus a ``record_digest`` over everything else; :class:`ManifestError`
    when a reader would refuse them (see :mod:`refstore.core.bounded_json`: too deep or too large)."""
    what = f"{body.get('format', 'a')} record (its metadata or config)"
    check_depth(body, what)
    digest = "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
    data = canonical_json({**body, "record_digest": digest})
    if len(data) > RECORD_BYTES:
        raise ManifestError(f"{what}: {len(data):,} bytes, more than the {RECORD_BYTES:,} a reader accepts")
    return data


def unseal(data: bytes, source: str, expected_format: str) -> dict[str, Any]:
    """The body of a sealed record; :class:`IntegrityError` if it was altered, truncated, or is not
    readable within bounds (see :mod:`refstore.core.bounded_json`)."""
    body = parse(data, source, f"{expected_format} record")
    if not isinstance(body, dict) or body.get("format") != expected_format:
        raise ManifestError(f"{source}: not a {expected_format} record")
    claimed = body.pop("record_digest", None)
    actual = "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
    if claimed != actual:
        raise IntegrityError(f"{source}: record does not match its digest (tampered or corrupted)")
    return body


def actor() -> str:
    """Who writes a record: ``user@host`` (deletions, alias changes and edits keep it)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def record_number(filename: str) -> int | None:
    """``"12.json"`` -> 12: the number of a record file named by its number; None for any other name."""
    stem = filename.removesuffix(".json")
    if filename.endswith(".json") and stem.isascii() and stem.isdigit() and str(int(stem)) == stem:
        return int(stem)
    return None


def record_numbers(filenames: Iterable[str]) -> list[int]:
    """The numbers of the record files among ``filenames``, sorted."""
    return sorted(n for n in map(record_number, filenames) if n is not None)


@dataclass(frozen=True, slots=True)
class Values:
    """The fields of a version that can be edited after it was logged (its manifest and digests cannot)."""

    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    #: Time to live from ``created_at``, in seconds: gc deletes the version once it has passed.
    ttl_seconds: int | None = None

    def well_formed(self) -> bool:
        return (
            (self.description is None or isinstance(self.description, str))
            and isinstance(self.metadata, dict)
            and isinstance(self.tags, list)
            and all(_valid_name(t) for t in self.tags)
            and (self.ttl_seconds is None or _valid_number(self.ttl_seconds))
        )


R = TypeVar("R")


def unseal_as(cls: Callable[..., R], data: bytes, source: str, expected_format: str, what: str) -> R:
    """A sealed record (see :func:`unseal`) as ``cls(**body)``; :class:`ManifestError` if it does not fit."""
    body = unseal(data, source, expected_format)
    body.pop("format")
    try:
        return cls(**body)
    except TypeError as exc:
        raise ManifestError(f"{source}: malformed {what} ({exc})") from None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """What ``artifacts/<name>/versions/<N>.json`` says."""

    name: str
    version: int
    type: str
    manifest_digest: str
    content_digest: str
    created_at: str
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None
    tags: list[str] = field(default_factory=list)
    ttl_seconds: int | None = None

    @property
    def values(self) -> Values:
        """The editable fields as logged (edits may have changed them since: see snapshots/edits.py)."""
        return Values(self.description, dict(self.metadata), list(self.tags), self.ttl_seconds)

    def to_bytes(self) -> bytes:
        body = asdict(self)
        for key, empty in (("tags", []), ("ttl_seconds", None)):
            if body[key] == empty:
                del body[key]  # a record without them reads (and hashes) as before they existed
        return seal({"format": VERSION_FORMAT, **body})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> VersionRecord:
        record = unseal_as(cls, data, source, VERSION_FORMAT, "version record")
        well_formed = (
            _valid_name(record.name)
            and _valid_number(record.version)
            and all(isinstance(v, str) for v in (record.type, record.created_at))
            and all(_SHA256.fullmatch(str(d)) for d in (record.manifest_digest, record.content_digest))
            and Values(record.description, record.metadata, record.tags, record.ttl_seconds).well_formed()
            and (record.created_by is None or isinstance(record.created_by, str))
        )
        if not well_formed:
            raise ManifestError(f"{source}: malformed version record")
        return record


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """What ``artifacts/<name>/aliases/<alias>/<seq>.json`` says: the version the alias points at from this
    record on (``None``: removed), who changed it and when. Registries written before kept one pointer per
    alias, ``aliases/<alias>.json``, with no ``seq``, ``set_at`` or ``set_by``."""

    name: str
    alias: str
    version: int | None
    seq: int | None = None
    set_at: str | None = None
    set_by: str | None = None

    def to_bytes(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if v is not None or k == "version"}
        return seal({"format": ALIAS_FORMAT, **body})  # a pointer's bytes are what they were

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> AliasRecord:
        record = unseal_as(cls, data, source, ALIAS_FORMAT, "alias record")
        well_formed = (
            _valid_name(record.name)
            and _valid_name(record.alias)
            and (_valid_number(record.version) or (record.version is None and record.seq is not None))
            and (record.seq is None or _valid_number(record.seq))
            and all(t is None or isinstance(t, str) for t in (record.set_at, record.set_by))
        )
        if not well_formed:
            raise ManifestError(f"{source}: malformed alias record")
        return record


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What ``artifacts/<name>/deleted/<N>.json`` says: the version is deleted, since when, by whom, why
    (``deleted``, ``artifact removed``, ``retention``, ``ttl``), and the aliases that pointed at it then."""

    name: str
    version: int
    deleted_at: str
    deleted_by: str
    reason: str
    aliases: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return seal({"format": TOMBSTONE_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str, name: str, version: int) -> Tombstone:
        """The tombstone in ``data``, which must be the one of ``name:v<version>``."""
        record = unseal_as(cls, data, source, TOMBSTONE_FORMAT, "tombstone")
        texts = (record.deleted_at, record.deleted_by, record.reason)
        if not (all(isinstance(t, str) for t in texts) and isinstance(record.aliases, list)):
            raise ManifestError(f"{source}: malformed tombstone")
        if (record.name, record.version) != (name, version):
            raise IntegrityError(f"{source}: record names {record.name}:v{record.version}")
        return record


@dataclass(frozen=True, slots=True)
class EditRecord:
    """What ``artifacts/<name>/edits/<N>/<seq>.json`` says: every editable field of the version from this
    edit on (not only the ones it changed), who made the edit and when."""

    name: str
    version: int
    seq: int
    edited_at: str
    edited_by: str
    description: str | None
    metadata: dict[str, Any]
    tags: list[str]
    ttl_seconds: int | None

    @property
    def values(self) -> Values:
        return Values(self.description, dict(self.metadata), list(self.tags), self.ttl_seconds)

    def to_bytes(self) -> bytes:
        return seal({"format": EDIT_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> EditRecord:
        record = unseal_as(cls, data, source, EDIT_FORMAT, "edit record")
        well_formed = (
            _valid_name(record.name)
            and _valid_number(record.version)
            and _valid_number(record.seq)
            and all(isinstance(t, str) for t in (record.edited_at, record.edited_by))
            and Values(record.description, record.metadata, record.tags, record.ttl_seconds).well_formed()
        )
        if not well_formed:
            raise ManifestError(f"{source}: malformed edit record")
        return record


@dataclass(frozen=True, slots=True)
class FileState:
    """One synced state of a run file: ``runs/<project>/<id>/files/<quoted path>/<state>.json``.

    The bytes are in the registry's blob store, ``blobs/<aa>/<hex of digest>`` (shared with artifact
    copies; runs made before that keep them in ``runs/<project>/<id>/blobs/<hex>``), uploaded before this
    record is written. Here, below runs, because gc counts these records as references to blobs.
    """

    path: str
    state: int
    digest: str
    size: int
    policy: str
    synced_at: str

    def to_bytes(self) -> bytes:
        return seal({"format": FILE_STATE_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> FileState:
        record = unseal_as(cls, data, source, FILE_STATE_FORMAT, "file state")
        check_logical_path(record.path)
        numbers_ok = all(_valid_number(n) for n in (record.state, record.size))
        texts_ok = all(isinstance(t, str) for t in (record.digest, record.policy, record.synced_at))
        if not (numbers_ok and texts_ok and ":" in record.digest):
            raise ManifestError(f"{source}: malformed file state")
        return record


def _valid_name(value: Any) -> bool:
    return is_name(value)


def _valid_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
