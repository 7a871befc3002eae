"""Version and alias records: small canonical JSON documents that carry their own digest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .bounded_json import RECORD_BYTES, check_depth, parse
from .exceptions import IntegrityError, InvalidNameError, ManifestError
from .manifest import canonical_json
from .names import check_name

VERSION_FORMAT = "refstore.version/1"
ALIAS_FORMAT = "refstore.alias/1"
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

    def to_bytes(self) -> bytes:
        return seal({"format": VERSION_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> VersionRecord:
        record = unseal_as(cls, data, source, VERSION_FORMAT, "version record")
        well_formed = (
            _valid_name(record.name)
            and _valid_number(record.version)
            and all(isinstance(v, str) for v in (record.type, record.created_at))
            and all(_SHA256.fullmatch(str(d)) for d in (record.manifest_digest, record.content_digest))
            and isinstance(record.metadata, dict)
            and all(v is None or isinstance(v, str) for v in (record.description, record.created_by))
        )
        if not well_formed:
            raise ManifestError(f"{source}: malformed version record")
        return record


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """What ``artifacts/<name>/aliases/<alias>.json`` says: the version it points to."""

    name: str
    alias: str
    version: int

    def to_bytes(self) -> bytes:
        return seal({"format": ALIAS_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> AliasRecord:
        record = unseal_as(cls, data, source, ALIAS_FORMAT, "alias record")
        if not (_valid_name(record.name) and _valid_name(record.alias) and _valid_number(record.version)):
            raise ManifestError(f"{source}: malformed alias record")
        return record


def _valid_name(value: Any) -> bool:
    try:
        check_name(value)
    except InvalidNameError:
        return False
    return True


def _valid_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
