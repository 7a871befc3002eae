"""Manifests: entries, canonical bytes, the content digest and the manifest digest.

Canonical bytes are deterministic JSON (sorted keys, entries keyed by sorted logical path, compact separators,
UTF-8) with a format marker, the same on every machine and Python version. The **content digest** covers each
entry's logical path, size and content digest, not where the bytes live; it decides whether logging makes a
new version. The **manifest digest** is the SHA-256 of the canonical bytes, pins included; it names the
stored manifest and is checked whenever one is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import IntegrityError, ManifestError
from .backends import ObjectMeta
from .names import check_logical_path

FORMAT = "refstore.manifest/1"
_CONTENT_FORMAT = "refstore.content/1"
_FIELDS = ("ref", "size", "digest", "etag", "version_id")
#: An xxh3_128 digest names files in the blob store and the cache: exactly 32 hex digits, nothing else.
_CONTENT_DIGEST = re.compile(r"(?!xxh3_128:).+:.*|xxh3_128:[0-9a-f]{32}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One object of an artifact: where it is (``ref``, ``None`` for a stored copy) and what it is."""

    path: str
    ref: str | None
    size: int
    digest: str
    etag: str | None = None
    version_id: str | None = None

    @property
    def pin(self) -> ObjectMeta:
        """The entry as the backend record that reads it back."""
        return ObjectMeta(
            url=self.ref or "", size=self.size, digest=self.digest, etag=self.etag, version_id=self.version_id
        )

    @property
    def is_copy(self) -> bool:
        """True when the bytes live in the registry's blob store (``add_file`` / ``add_dir``)."""
        return self.ref is None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k in _FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_json(cls, path: str, data: Any) -> ManifestEntry:
        if not isinstance(data, dict):
            raise ManifestError(f"manifest entry {path!r}: not an object")
        try:
            entry = cls(
                path=check_logical_path(path),
                ref=_opt_str(data.get("ref")),
                size=_int(data["size"]),
                digest=_str(data["digest"]),
                etag=_opt_str(data.get("etag")),
                version_id=_opt_str(data.get("version_id")),
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"manifest entry {path!r}: missing or malformed field {exc}") from None
        if entry.size < 0 or not _CONTENT_DIGEST.fullmatch(entry.digest):
            raise ManifestError(f"manifest entry {path!r}: bad size or digest")
        if entry.ref is None and not entry.digest.startswith("xxh3_128:"):
            raise ManifestError(f"manifest entry {path!r}: a stored copy must carry its xxh3_128 digest")
        return entry


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(repr(value))
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(repr(value))
    return value


@dataclass(frozen=True)
class Manifest(Mapping[str, ManifestEntry]):
    """An immutable mapping of logical path to entry."""

    _entries: Mapping[str, ManifestEntry] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[ManifestEntry]) -> Manifest:
        return cls({e.path: e for e in entries})

    def __getitem__(self, path: str) -> ManifestEntry:
        return self._entries[path]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} entries)"

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self._entries.values())

    def to_bytes(self) -> bytes:
        """The canonical bytes."""
        body = {"format": FORMAT, "entries": {p: e.to_json() for p, e in self._entries.items()}}
        return canonical_json(body)

    @property
    def digest(self) -> str:
        """The manifest digest: ``sha256:<hex>`` of the canonical bytes."""
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def content_digest(self) -> str:
        """The content digest: paths, sizes and content digests only."""
        body = {
            "format": _CONTENT_FORMAT,
            "entries": {p: [e.size, e.digest] for p, e in self._entries.items()},
        }
        return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, expected_digest: str | None = None, source: str = "manifest"
    ) -> Manifest:
        """Parse canonical bytes; :class:`IntegrityError` if they do not hash to ``expected_digest``."""
        if expected_digest is not None:
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != expected_digest:
                raise IntegrityError(f"{source}: content hashes to {actual}, expected {expected_digest}")
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(
                f"{source}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
            ) from None
        if (
            not isinstance(body, dict)
            or body.get("format") != FORMAT
            or not isinstance(body.get("entries"), dict)
        ):
            raise ManifestError(f"{source}: not a {FORMAT} manifest")
        return cls({p: ManifestEntry.from_json(p, e) for p, e in body["entries"].items()})


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """What changed between two manifests, as sorted logical paths."""

    added: list[str]
    removed: list[str]
    modified: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    @classmethod
    def between(cls, old: Mapping[str, ManifestEntry], new: Mapping[str, ManifestEntry]) -> ManifestDiff:
        old_paths, new_paths = set(old), set(new)
        modified = [
            p for p in old_paths & new_paths if (old[p].size, old[p].digest) != (new[p].size, new[p].digest)
        ]
        return cls(sorted(new_paths - old_paths), sorted(old_paths - new_paths), sorted(modified))

    def to_json(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified}
