"""Manifests: entries, canonical bytes, the content digest and the manifest digest.

Canonical bytes are deterministic JSON (sorted keys, entries keyed by sorted logical path, compact separators,
UTF-8) with a format marker, the same on every machine and Python version. The **content digest** covers each
entry's logical path, size and content digest, not where the bytes live; it decides whether logging makes a
new version. The **manifest digest** is the SHA-256 of the canonical bytes, pins included; it names the
stored manifest and is checked whenever one is read.

Format ``refstore.manifest/2`` is compact: one array per entry in path order,
``[path, ref, size, digest, etag, version_id]``, where ``ref`` may be the index of a shared base
(``bases[i] + path``) and ``digest`` may be ``0`` for ``"etag:" + etag``; 1,000,000 S3 entries take about
half the bytes of format 1. Format ``refstore.manifest/1`` (entries keyed by path) is still read, and a
manifest read from it keeps format 1, so its digest - the name it is stored under - never changes.

Refs are URIs: a bucket key's ``%``, ``?`` and ``#`` are percent-encoded (:func:`refstore.core.refs.ref_of`
says why), in memory as in format ``refstore.manifest/3``, which is format 2's layout with such refs. Formats
1 and 2 hold keys verbatim (a ``%`` there means itself); their refs are escaped on read and written back
verbatim, so a manifest keeps its format and its digest. A new manifest is written as format 2 when no ref
has a ``%``, ``?`` or ``#`` in a bucket key, byte for byte what earlier versions wrote (and read), else as
format 3, which earlier versions refuse rather than misread.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .bounded_json import MANIFEST_BYTES, parse
from .bulk import fast_constructor, without_gc
from .exceptions import IntegrityError, ManifestError
from .meta import ObjectMeta
from .names import check_logical_path
from .refs import ref_of, url_of_ref

FORMAT = "refstore.manifest/2"
FORMAT_V1 = "refstore.manifest/1"
#: Format 2's layout, refs with percent-escapes in bucket keys (see the module's doc).
FORMAT_V3 = "refstore.manifest/3"
_ROW_FORMATS = {2: FORMAT, 3: FORMAT_V3}
_CONTENT_FORMAT = "refstore.content/1"
_FIELDS = ("ref", "size", "digest", "etag", "version_id")
_ROW_FIELDS = ["path", *_FIELDS]

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
        """The entry as the backend record that reads it back (its URL with the key unescaped)."""
        url = url_of_ref(self.ref) if self.ref else ""
        return ObjectMeta(
            url=url, size=self.size, digest=self.digest, etag=self.etag, version_id=self.version_id
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
            size, digest = data["size"], data["digest"]
        except KeyError as exc:
            raise ManifestError(f"manifest entry {path!r}: missing or malformed field {exc}") from None
        return cls.checked(path, data.get("ref"), size, digest, data.get("etag"), data.get("version_id"))

    @classmethod
    def checked(
        cls, path: Any, ref: Any, size: Any, digest: Any, etag: Any, version_id: Any
    ) -> ManifestEntry:
        """An entry from untrusted values (a manifest read from storage), every field checked."""
        try:
            entry = cls(
                check_logical_path(path),
                _opt_str(ref),
                _int(size),
                _str(digest),
                _opt_str(etag),
                _opt_str(version_id),
            )
        except TypeError as exc:
            raise ManifestError(f"manifest entry {path!r}: missing or malformed field {exc}") from None
        if entry.size < 0 or not _CONTENT_DIGEST.fullmatch(entry.digest):
            raise ManifestError(f"manifest entry {path!r}: bad size or digest")
        if entry.ref is None and not entry.digest.startswith("xxh3_128:"):
            raise ManifestError(f"manifest entry {path!r}: a stored copy must carry its xxh3_128 digest")
        return entry


#: ``ManifestEntry(...)`` at a third of the cost, for values already checked (see :mod:`refstore.core.bulk`).
new_entry = fast_constructor(ManifestEntry)


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
    #: The format :meth:`to_bytes` writes: the one it was read from, else (0) 2 or 3 as its refs need.
    _format: int = field(default=0, compare=False)

    @classmethod
    @without_gc
    def of(cls, entries: Iterable[ManifestEntry]) -> Manifest:
        return cls({e.path: e for e in entries})

    def __getitem__(self, path: str) -> ManifestEntry:
        return self._entries[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    @functools.cached_property
    def _paths(self) -> list[str]:
        """Logical paths in order, sorted once."""
        return sorted(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def paths(self) -> list[str]:
        """The logical paths in order, as a list to search (shared: do not change it)."""
        return self._paths

    def values(self) -> Iterator[ManifestEntry]:  # type: ignore[override]
        """The entries in path order (one C-level lookup each, not a ``__getitem__`` call)."""
        return map(self._entries.__getitem__, self._paths)

    def items(self) -> Iterator[tuple[str, ManifestEntry]]:  # type: ignore[override]
        """``(path, entry)`` in path order."""
        return zip(self._paths, self.values(), strict=True)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} entries)"

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self._entries.values())

    @without_gc
    def to_bytes(self) -> bytes:
        """The canonical bytes."""
        return b"".join(self._pieces())

    @functools.cached_property
    def _escaped(self) -> bool:
        """Whether a ref has ``%``, ``?`` or ``#`` in a bucket key: format 2 (keys verbatim, escaped on
        read) could not give it back as it is, format 3 can."""
        return any(e.ref is not None and ref_of(e.ref) != e.ref for e in self._entries.values())

    def _pieces(self) -> Iterator[bytes]:
        """The canonical bytes in pieces of ``_CHUNK`` entries (never all rows in memory at once)."""
        fmt = self._format or (3 if self._escaped else 2)
        verbatim = fmt < 3 and self._escaped  # formats 1 and 2 hold keys verbatim
        if fmt == 1:
            yield canonical_json(
                {"format": FORMAT_V1, "entries": {p: _v1_json(e, verbatim) for p, e in self._entries.items()}}
            )
            return
        entries = [self._entries[p] for p in self._paths]
        refs = [url_of_ref(e.ref) if verbatim and e.ref else e.ref for e in entries]
        bases = sorted({b for b in map(_base_of, entries, refs) if b is not None})
        index = {b: i for i, b in enumerate(bases)}
        yield f'{{"bases":{_dumps(bases)},"entries":['.encode()
        for start in range(0, len(entries), _CHUNK):
            end = start + _CHUNK
            rows = _dumps(
                [_row(e, r, index) for e, r in zip(entries[start:end], refs[start:end], strict=True)]
            )
            yield (f",{rows[1:-1]}" if start else rows[1:-1]).encode()
        yield f'],"fields":{_dumps(_ROW_FIELDS)},"format":{_dumps(_ROW_FORMATS[fmt])}}}'.encode()

    @functools.cached_property
    @without_gc
    def digest(self) -> str:
        """The manifest digest: ``sha256:<hex>`` of the canonical bytes."""
        digest = hashlib.sha256()
        for piece in self._pieces():
            digest.update(piece)
        return f"sha256:{digest.hexdigest()}"

    @functools.cached_property
    @without_gc
    def content_digest(self) -> str:
        """The content digest: paths, sizes and content digests only.

        The SHA-256 of ``{"entries":{path:[size,digest],...},"format":"refstore.content/1"}`` (canonical
        JSON), fed in pieces.
        """
        digest = hashlib.sha256(b'{"entries":{')
        paths = self._paths
        for start in range(0, len(paths), _CHUNK):
            chunk = _dumps(
                {p: (self._entries[p].size, self._entries[p].digest) for p in paths[start : start + _CHUNK]}
            )
            digest.update(f",{chunk[1:-1]}".encode() if start else chunk[1:-1].encode())
        digest.update(f'}},"format":{_dumps(_CONTENT_FORMAT)}}}'.encode())
        return f"sha256:{digest.hexdigest()}"

    @classmethod
    @without_gc
    def from_bytes(
        cls, data: bytes, *, expected_digest: str | None = None, source: str = "manifest"
    ) -> Manifest:
        """Parse canonical bytes; :class:`IntegrityError` if they do not hash to ``expected_digest``."""
        if expected_digest is not None:
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != expected_digest:
                raise IntegrityError(f"{source}: content hashes to {actual}, expected {expected_digest}")
        if len(data) > MANIFEST_BYTES:
            raise IntegrityError(f"{source}: {len(data):,} bytes, more than the {MANIFEST_BYTES:,} allowed")
        try:
            manifest = _read_canonical(data, source)
            if manifest is None:  # not in canonical form: parse it whole
                manifest = _read_body(_parse(data, source), source)
        except RecursionError:  # a message quoting a deeply nested field
            raise IntegrityError(f"{source}: manifest nested too deeply to read") from None
        if expected_digest is not None:
            manifest.__dict__["digest"] = expected_digest  # just checked: no need to serialise again
        return manifest


_CHUNK = 10_000
_PIECE = 2**20
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode


def _base_of(e: ManifestEntry, ref: str | None) -> str | None:
    """The part of ``ref`` (``e``'s, as written) before its logical path, when the ref ends with it."""
    if ref is not None and len(ref) > len(e.path) and ref.endswith(e.path):
        return ref[: -len(e.path)]
    return None


def _row(e: ManifestEntry, ref: str | None, index: Mapping[str, int]) -> tuple[Any, ...]:
    """One entry as a format-2 row (``ref`` as written): a shared base by index, an ETag digest as 0."""
    base = _base_of(e, ref)
    written: str | int | None = ref if base is None else index[base]
    digest: str | int = 0 if e.etag is not None and e.digest == "etag:" + e.etag else e.digest
    return (e.path, written, e.size, digest, e.etag, e.version_id)


def _v1_json(e: ManifestEntry, verbatim: bool) -> dict[str, Any]:
    """One entry of a format-1 manifest (keys verbatim in refs)."""
    body = e.to_json()
    if verbatim and e.ref is not None:
        body["ref"] = url_of_ref(e.ref)
    return body


def _legacy(entry: ManifestEntry) -> ManifestEntry:
    """An entry read from format 1 or 2, whose ref holds a bucket key verbatim, with its ref escaped."""
    if entry.ref is None:
        return entry
    ref = ref_of(entry.ref)
    return entry if ref == entry.ref else replace(entry, ref=ref)


def _read_canonical(data: bytes, source: str) -> Manifest | None:
    """A format-2 manifest in its canonical form, parsed a piece of rows at a time (never a parse tree
    of every row, nor a decoded copy of all bytes); ``None`` when ``data`` is laid out any other way.

    Rows are cut at a ``],[`` near each ``_PIECE`` bytes. A cut inside a string cannot parse (canonical
    JSON escapes every ``"`` inside a string, so the piece would end in an open string); such a piece
    sends the whole document to the plain parser instead.
    """
    head, mark = b'{"bases":', b'],"entries":['
    tails = {
        f'],"fields":{_dumps(_ROW_FIELDS)},"format":{_dumps(f)}}}'.encode(): n
        for n, f in _ROW_FORMATS.items()
    }
    tail = next((t for t in tails if data.endswith(t)), b"")
    bases_end = data.find(mark, len(head))  # holds unescaped quotes: cannot occur inside a string
    if not data.startswith(head) or bases_end < 0 or not tail:
        return None
    try:
        reader = _RowReader(_parse(data[len(head) : bases_end + 1], source), source, tails[tail])
        position, stop = bases_end + len(mark), len(data) - len(tail)
        while position < stop:
            cut = data.rfind(b"],[", position, position + _PIECE) + 1 if stop - position > _PIECE else stop
            if cut <= position:
                cut = data.find(b"],[", position + _PIECE, stop) + 1 or stop
            for row in _parse(b"[" + data[position:cut] + b"]", source):
                reader.add(row)
            position = cut + 1
    except IntegrityError:  # a cut inside a string, or bytes the plain parser will name
        return None
    return Manifest(reader.entries, reader.format)


def _parse(data: bytes, source: str) -> Any:
    """Manifest bytes parsed within bounds; no depth walk: each row is checked field by field instead
    (see :mod:`refstore.core.bounded_json`)."""
    return parse(data, source, "manifest", max_bytes=MANIFEST_BYTES, max_depth=None)


def _read_body(body: Any, source: str) -> Manifest:
    """A manifest of either format from its parsed JSON."""
    fmt = body.get("format") if isinstance(body, dict) else None
    number = next((n for n, name in _ROW_FORMATS.items() if name == fmt), None)
    if number is not None:
        if body.get("fields") != _ROW_FIELDS or not isinstance(body.get("entries"), list):
            raise ManifestError(f"{source}: malformed {fmt} manifest")
        reader = _RowReader(body.get("bases"), source, number)
        for row in body["entries"]:
            reader.add(row)
        return Manifest(reader.entries, number)
    if fmt == FORMAT_V1 and isinstance(body.get("entries"), dict):
        return Manifest({p: _legacy(ManifestEntry.from_json(p, e)) for p, e in body["entries"].items()}, 1)
    raise ManifestError(f"{source}: not a {FORMAT_V3}, {FORMAT} or {FORMAT_V1} manifest")


class _RowReader:
    """Format-2 rows into entries, every field checked (the bytes may come from anywhere)."""

    def __init__(self, bases: Any, source: str, fmt: int) -> None:
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ManifestError(f"{source}: malformed {_ROW_FORMATS[fmt]} manifest (bases)")
        self.bases: list[str] = bases
        self.source = source
        self.format = fmt
        self.entries: dict[str, ManifestEntry] = {}

    def add(self, row: Any) -> None:
        if not isinstance(row, list) or len(row) != len(_ROW_FIELDS):
            raise ManifestError(f"{self.source}: malformed entry {str(row)[:80]}")
        path, ref, size, digest, etag, version_id = row
        if type(ref) is int:
            if not (0 <= ref < len(self.bases) and isinstance(path, str)):
                raise ManifestError(f"{self.source}: entry {path!r}: no base {ref}")
            ref = self.bases[ref] + path
        if type(digest) is int:
            if digest != 0 or not isinstance(etag, str):
                raise ManifestError(f"{self.source}: entry {path!r}: bad digest")
            digest = "etag:" + etag
        if type(ref) is str and ("%" in ref or "?" in ref or "#" in ref):
            ref = self._ref(path, ref)
        entry = ManifestEntry.checked(path, ref, size, digest, etag, version_id)
        if self.entries.setdefault(entry.path, entry) is not entry:
            raise ManifestError(f"{self.source}: entry {path!r} appears twice")

    def _ref(self, path: Any, ref: str) -> str:
        """A ref as held in memory: escaped if read from format 2 (keys verbatim), checked if from 3."""
        if self.format < 3:
            return ref_of(ref)
        try:
            url_of_ref(ref)
        except ValueError as exc:
            raise ManifestError(f"{self.source}: entry {path!r}: {exc}") from None
        return ref


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
    @without_gc
    def between(cls, old: Mapping[str, ManifestEntry], new: Mapping[str, ManifestEntry]) -> ManifestDiff:
        old, new = _plain(old), _plain(new)
        removed: list[str] = []
        modified: list[str] = []
        find = new.get
        for path, before in old.items():  # in storage order, one lookup each: cache-friendly at 10^6
            after = find(path)
            if after is None:
                removed.append(path)
            elif after is not before and (after.size != before.size or after.digest != before.digest):
                modified.append(path)
        added = [path for path in new if path not in old]
        return cls(sorted(added), sorted(removed), sorted(modified))

    def to_json(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified}


def _plain(mapping: Mapping[str, ManifestEntry]) -> Mapping[str, ManifestEntry]:
    """The dict inside a :class:`Manifest` (its lookups are C calls, not Python ones)."""
    return mapping._entries if isinstance(mapping, Manifest) else mapping
