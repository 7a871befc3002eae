"""Chunked manifests (format ``refstore.manifest/4``): a large version's entries as a tree of immutable,
content-addressed chunks, so that memory, reads and writes follow what is used or changed, not what exists.

The layout (all documents are canonical JSON: sorted keys, compact separators, UTF-8):

- A **chunk** holds consecutive entries in logical-path order, as format 3's rows (refs are URIs with
  percent-escapes in bucket keys): ``{"bases":[...],"entries":[[path,ref,size,digest,etag,version_id],
  ...],"fields":["path","ref","size","digest","etag","version_id"],"format":"refstore.chunk/1"}``. A row's
  ``ref`` may be an index into the chunk's ``bases`` (the ref is ``bases[i] + path``) and its ``digest``
  ``0`` for ``"etag:" + etag``, as in format 2.
- A **chunk ref** is ``[first_path, last_path, count, total_size, "sha256:<hex>"]``; the digest is the
  SHA-256 of the chunk's bytes, and the chunk is stored like a manifest, at
  ``manifests/<hex[:2]>/<hex>.json``.
- The **root** is ``{"chunks":[ref,...],"content_digest":"sha256:...","count":N,"depth":D,
  "format":"refstore.manifest/4","size":S}``. With depth 0 its refs name chunks of entries; with depth 1
  they name **index chunks** ``{"chunks":[ref,...],"format":"refstore.index/1"}`` whose refs name chunks of
  entries (an index ref's first/last/count/size cover every entry beneath it). The manifest digest is the
  SHA-256 of the root's bytes: it covers the whole tree through the chunk digests.
- **Boundaries are content-defined**: a chunk of entries ends after an entry whose path's xxh3_64 (of its
  UTF-8 bytes) has its low 13 bits zero, once the chunk holds ``MIN_ENTRIES``, or at ``MAX_ENTRIES``. So an
  insertion or removal changes only the chunks around it, and versions that share most entries share most
  chunks on disk. Index chunks are cut the same way on their refs' last paths (low 9 bits,
  ``MIN_REFS``/``MAX_REFS``); a root gets an index level when it would hold more than ``ROOT_REFS`` refs.
- The **content digest** is the one every format has (paths, sizes, content digests: see
  :mod:`refstore.core.manifest`), independent of chunking; the root carries it.

Manifests of at most ``SINGLE_LIMIT`` entries stay one document (format 2 or 3). Every chunk read is checked
against its digest and its ref (first and last path, count, size, order): :class:`IntegrityError` otherwise.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import xxhash

from .bounded_json import MANIFEST_BYTES, RECORD_BYTES, parse
from .bulk import gc_paused, without_gc
from .exceptions import IntegrityError, ManifestError
from .manifest import (
    _CONTENT_FORMAT,
    _ROW_FIELDS,
    Manifest,
    ManifestDiff,
    ManifestEntry,
    _dumps,
    _RowReader,
)
from .names import under_prefix

FORMAT_V4 = "refstore.manifest/4"
CHUNK_FORMAT = "refstore.chunk/1"
INDEX_FORMAT = "refstore.index/1"
#: Manifests of at most this many entries stay one document (format 2 or 3).
SINGLE_LIMIT = 20_000
#: A chunk of entries: at least ``MIN_ENTRIES`` (unless it is the last), 8,192 on average, at most
#: ``MAX_ENTRIES``.
MIN_ENTRIES, _ENTRY_MASK, MAX_ENTRIES = 1_024, 2**13 - 1, 65_536
#: An index chunk: at least ``MIN_REFS`` refs (unless it is the last), 512 on average, at most ``MAX_REFS``.
MIN_REFS, _REF_MASK, MAX_REFS = 64, 2**9 - 1, 8_192
#: A root with more chunk refs than this gets a level of index chunks.
ROOT_REFS = 4_096
#: Chunks of entries a reader keeps parsed (least recently used first out).
_KEPT = 4
_CHUNK_BYTES = 256 * 2**20


def _cuts_after(path: str, mask: int) -> bool:
    return xxhash.xxh3_64_intdigest(path.encode("utf-8", "surrogatepass")) & mask == 0


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A chunk: the first and last logical path it holds, how many entries, their total size, its digest."""

    first: str
    last: str
    count: int
    size: int
    digest: str

    def row(self) -> list[Any]:
        return [self.first, self.last, self.count, self.size, self.digest]

    @classmethod
    def checked(cls, row: Any, source: str) -> ChunkRef:
        ok = isinstance(row, list) and len(row) == 5
        if ok:
            first, last, count, size, digest = row
            ok = (
                isinstance(first, str)
                and isinstance(last, str)
                and first <= last
                and type(count) is int
                and count > 0
                and type(size) is int
                and size >= 0
                and isinstance(digest, str)
                and digest.startswith("sha256:")
                and len(digest) == 71
            )
        if not ok:
            raise ManifestError(f"{source}: malformed chunk ref {str(row)[:120]}")
        return cls(first, last, count, size, digest)


def chunk_hex(digest: str) -> str:
    """The hex part of a chunk's ``sha256:`` digest."""
    return digest.removeprefix("sha256:")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _chunk_bytes(entries: list[ManifestEntry]) -> bytes:
    """A chunk's canonical bytes: format 2's rows (see :func:`refstore.core.manifest._row`), in two
    passes over the entries rather than a call per entry."""
    cut = [
        e.ref[: -len(e.path)]
        if e.ref is not None and len(e.ref) > len(e.path) and e.ref.endswith(e.path)
        else None
        for e in entries
    ]
    bases = sorted({b for b in cut if b is not None})
    index = {b: i for i, b in enumerate(bases)}
    rows = [
        (
            e.path,
            e.ref if b is None else index[b],
            e.size,
            0 if e.etag is not None and e.digest == "etag:" + e.etag else e.digest,
            e.etag,
            e.version_id,
        )
        for e, b in zip(entries, cut, strict=True)
    ]
    return (
        f'{{"bases":{_dumps(bases)},"entries":{_dumps(rows)},"fields":{_dumps(_ROW_FIELDS)},'
        f'"format":{_dumps(CHUNK_FORMAT)}}}'
    ).encode()


def _index_bytes(refs: list[ChunkRef]) -> bytes:
    return f'{{"chunks":{_dumps([r.row() for r in refs])},"format":{_dumps(INDEX_FORMAT)}}}'.encode()


@dataclass(frozen=True, slots=True)
class ChunkedRoot:
    """What :class:`ChunkWriter` made: the root's bytes and digest, and the figures it holds."""

    data: bytes
    digest: str
    content_digest: str
    count: int
    size: int


@dataclass(frozen=True, slots=True)
class BuiltChunk:
    """A chunk of entries as made: its ref, its bytes, and its entries' part of the content digest."""

    ref: ChunkRef
    data: bytes
    piece: bytes

    @classmethod
    def of(cls, rows: list[ManifestEntry]) -> BuiltChunk:
        data = _chunk_bytes(rows)
        size = sum(e.size for e in rows)
        ref = ChunkRef(rows[0].path, rows[-1].path, len(rows), size, _sha(data))
        return cls(ref, data, _dumps({e.path: (e.size, e.digest) for e in rows})[1:-1].encode())


class ChunkWriter:
    """Cuts entries, given in strictly increasing logical-path order, into chunks as they come: each chunk
    is handed to ``put(digest, bytes)`` once complete (memory holds one chunk at a time); :meth:`finish`
    makes the index levels and returns the root. ``put`` may skip a digest the store already holds."""

    def __init__(self, put: Callable[[str, bytes], None]) -> None:
        self._put = put
        self._rows: list[ManifestEntry] = []
        self._refs: list[ChunkRef] = []
        self._content = hashlib.sha256(b'{"entries":{')
        self._last: str | None = None
        self.count = 0
        self.size = 0

    def add(self, entry: ManifestEntry) -> None:
        if self._last is not None and entry.path <= self._last:
            raise ManifestError(f"manifest entries out of order or repeated at {entry.path!r}")
        self._last = entry.path
        self._rows.append(entry)
        n = len(self._rows)
        if n >= MAX_ENTRIES or (n >= MIN_ENTRIES and _cuts_after(entry.path, _ENTRY_MASK)):
            self._flush()

    def add_all(self, entries: Iterable[ManifestEntry]) -> None:
        """:meth:`add` each entry, in one loop (a million entries: no call per entry)."""
        rows, last = self._rows, self._last
        for entry in entries:
            path = entry.path
            if last is not None and path <= last:
                raise ManifestError(f"manifest entries out of order or repeated at {path!r}")
            last = path
            rows.append(entry)
            n = len(rows)
            if n >= MIN_ENTRIES and (n >= MAX_ENTRIES or _cuts_after(path, _ENTRY_MASK)):
                self._flush()
                rows = self._rows
        self._last = last

    def _flush(self) -> None:
        rows = self._rows
        if not rows:
            return
        self._rows = []
        self._take(BuiltChunk.of(rows))

    def _take(self, chunk: BuiltChunk) -> None:
        """Take a complete chunk of the next entries (none may be open)."""
        ref = chunk.ref
        self._put(ref.digest, chunk.data)
        self._content.update(b"," + chunk.piece if self.count else chunk.piece)
        self._refs.append(ref)
        self._last = ref.last
        self.count += ref.count
        self.size += ref.size

    def finish(self) -> ChunkedRoot:
        self._flush()
        refs, depth = self._refs, 0
        if len(refs) > ROOT_REFS:
            refs, depth = self._index_level(refs), 1
        self._content.update(f'}},"format":{_dumps(_CONTENT_FORMAT)}}}'.encode())
        content = "sha256:" + self._content.hexdigest()
        data = (
            f'{{"chunks":{_dumps([r.row() for r in refs])},"content_digest":{_dumps(content)},'
            f'"count":{self.count},"depth":{depth},"format":{_dumps(FORMAT_V4)},"size":{self.size}}}'
        ).encode()
        return ChunkedRoot(data, _sha(data), content, self.count, self.size)

    def _index_level(self, refs: list[ChunkRef]) -> list[ChunkRef]:
        level: list[ChunkRef] = []
        group: list[ChunkRef] = []
        for ref in refs:
            group.append(ref)
            if len(group) >= MAX_REFS or (len(group) >= MIN_REFS and _cuts_after(ref.last, _REF_MASK)):
                level.append(self._put_index(group))
                group = []
        if group:
            level.append(self._put_index(group))
        return level

    def _put_index(self, group: list[ChunkRef]) -> ChunkRef:
        data = _index_bytes(group)
        digest = _sha(data)
        self._put(digest, data)
        count, size = sum(r.count for r in group), sum(r.size for r in group)
        return ChunkRef(group[0].first, group[-1].last, count, size, digest)


def is_chunked_root(data: bytes) -> bool:
    """Whether stored manifest bytes are a format-4 root (canonical JSON starts with its first key)."""
    return data.startswith(b'{"chunks":')


class ChunkedManifest(Manifest):
    """A format-4 manifest, read lazily: the root is parsed at once, chunks when an entry in them is
    needed (a lookup reads the chunks on the way to its path; iteration streams them, keeping a few)."""

    def __init__(
        self, root: bytes, digest: str, load: Callable[[str], bytes], *, source: str = "manifest"
    ) -> None:
        if _sha(root) != digest:
            raise IntegrityError(f"{source}: content hashes to {_sha(root)}, expected {digest}")
        body = parse(root, source, "manifest", max_bytes=RECORD_BYTES * 8, max_depth=None)
        if (
            not isinstance(body, dict)
            or body.get("format") != FORMAT_V4
            or not isinstance(body.get("chunks"), list)
            or body.get("depth") not in (0, 1)
            or type(body.get("count")) is not int
            or type(body.get("size")) is not int
            or not isinstance(body.get("content_digest"), str)
        ):
            raise ManifestError(f"{source}: malformed {FORMAT_V4} manifest")
        refs = [ChunkRef.checked(r, source) for r in body["chunks"]]
        _check_sequence(refs, source, body["count"], body["size"])
        object.__setattr__(self, "_entries", _Entries(self))
        object.__setattr__(self, "_format", 4)
        self.__dict__.update(digest=digest, content_digest=body["content_digest"])
        self._root = root
        self._refs = refs
        self._depth: int = body["depth"]
        self._count: int = body["count"]
        self._size: int = body["size"]
        self._load = load
        self._source = source
        self._kept: collections.OrderedDict[str, dict[str, ManifestEntry]] = collections.OrderedDict()
        self._index: dict[str, list[ChunkRef]] = {}
        #: How many chunks (index chunks included) were read from the loader: what lookups cost.
        self.chunks_read = 0

    # -- the mapping ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        for ref in self.leaf_refs():
            yield from self._chunk(ref)

    def __getitem__(self, path: str) -> ManifestEntry:
        if not isinstance(path, str):
            raise KeyError(path)
        ref = self._leaf_for(path)
        if ref is None:
            raise KeyError(path)
        return self._chunk(ref)[path]

    def __contains__(self, path: object) -> bool:
        try:
            self[path]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def items(self) -> Iterator[tuple[str, ManifestEntry]]:  # type: ignore[override]
        for ref in self.leaf_refs():
            yield from self._chunk(ref).items()

    def values(self) -> Iterator[ManifestEntry]:  # type: ignore[override]
        for ref in self.leaf_refs():
            yield from self._chunk(ref).values()

    def keys(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self)

    def __repr__(self) -> str:
        return f"ChunkedManifest({self._count} entries)"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkedManifest):
            return self.digest == other.digest
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def total_size(self) -> int:
        return self._size

    def to_bytes(self) -> bytes:
        """The root's bytes (the chunks are stored under their own digests)."""
        return self._root

    def _pieces(self) -> Iterator[bytes]:
        yield self._root

    @without_gc
    def paths(self) -> list[str]:
        """The logical paths in order, read chunk by chunk without making entries (each chunk still
        checked against its digest and its ref): a million paths in a fraction of a full read."""
        found: list[str] = []
        for ref in self.leaf_refs():
            kept = self._kept.get(ref.digest)
            if kept is not None:
                found += kept
                continue
            data = self._read_bytes(ref, "chunk")
            paths = _scanned_paths(data)
            if paths is None or not _holds(paths, ref):  # not laid out as the writer lays it out
                paths = self._parsed_paths(data, ref)
            found += paths
        return found

    def _parsed_paths(self, data: bytes, ref: ChunkRef) -> list[str]:
        body = self._parse(data, ref, "chunk")
        rows = body.get("entries") if isinstance(body, dict) else None
        try:
            paths = [row[0] for row in rows]  # type: ignore[union-attr]
        except (TypeError, IndexError, KeyError):
            raise ManifestError(f"{self._source}: chunk {ref.digest} is malformed") from None
        if not all(type(p) is str for p in paths) or not _holds(paths, ref):
            raise IntegrityError(f"{self._source}: chunk {ref.digest} does not hold what its ref says")
        return paths

    # -- the tree ---------------------------------------------------------------------------------------

    def leaf_refs(self, low: str = "", high: str | None = None) -> Iterator[ChunkRef]:
        """The refs of the chunks of entries whose path range meets ``[low, high]`` (all by default), in
        order; index chunks are read as needed."""
        for ref in _meeting(self._refs, low, high):
            if self._depth == 0:
                yield ref
            else:
                yield from _meeting(self._index_chunk(ref), low, high)

    def chunk_digests(self) -> Iterator[str]:
        """Every stored chunk the root relies on, index chunks included (for gc and log intents)."""
        for ref in self._refs:
            yield ref.digest
            if self._depth == 1:
                yield from (r.digest for r in self._index_chunk(ref))

    def entries_under(self, prefix: str | None) -> Iterator[ManifestEntry]:
        """The entries under ``prefix`` (at ``/`` boundaries), reading only the chunks that cover it."""
        folder = (prefix or "").rstrip("/")
        if not folder:
            yield from self.values()
            return
        for ref in self.leaf_refs(folder, folder + "/\U0010ffff"):
            for path, entry in self._chunk(ref).items():
                if under_prefix(path, folder):
                    yield entry

    def _leaf_for(self, path: str) -> ChunkRef | None:
        refs = self._refs
        if self._depth == 1:
            top = _covering(refs, path)
            if top is None:
                return None
            refs = self._index_chunk(top)
        return _covering(refs, path)

    def _read(self, ref: ChunkRef, what: str) -> Any:
        return self._parse(self._read_bytes(ref, what), ref, what)

    def _read_bytes(self, ref: ChunkRef, what: str) -> bytes:
        data = self._load(ref.digest)
        self.chunks_read += 1
        if _sha(data) != ref.digest:
            raise IntegrityError(f"{self._source}: {what} {ref.digest} hashes to {_sha(data)}")
        return data

    def _parse(self, data: bytes, ref: ChunkRef, what: str) -> Any:
        return parse(
            data,
            f"{self._source} ({what} {chunk_hex(ref.digest)[:12]})",
            what,
            max_bytes=_CHUNK_BYTES,
            max_depth=None,
        )

    def _index_chunk(self, ref: ChunkRef) -> list[ChunkRef]:
        refs = self._index.get(ref.digest)
        if refs is None:
            body = self._read(ref, "index chunk")
            if not isinstance(body, dict) or body.get("format") != INDEX_FORMAT:
                raise ManifestError(f"{self._source}: index chunk {ref.digest} is malformed")
            refs = [ChunkRef.checked(r, self._source) for r in body.get("chunks") or []]
            _check_sequence(refs, self._source, ref.count, ref.size, ref)
            self._index[ref.digest] = refs
        return refs

    def _chunk(self, ref: ChunkRef) -> dict[str, ManifestEntry]:
        kept = self._kept.get(ref.digest)
        if kept is not None:
            self._kept.move_to_end(ref.digest)
            return kept
        with gc_paused():
            body = self._read(ref, "chunk")
            if (
                not isinstance(body, dict)
                or body.get("format") != CHUNK_FORMAT
                or body.get("fields") != _ROW_FIELDS
                or not isinstance(body.get("entries"), list)
            ):
                raise ManifestError(f"{self._source}: chunk {ref.digest} is malformed")
            reader = _RowReader(body.get("bases"), self._source, 3)
            previous = None
            for row in body["entries"]:
                reader.add(row)
                path = row[0]
                if previous is not None and path <= previous:
                    raise IntegrityError(f"{self._source}: chunk {ref.digest} is out of order at {path!r}")
                previous = path
            entries = reader.entries
        paths = list(entries)
        if (
            not paths
            or paths[0] != ref.first
            or paths[-1] != ref.last
            or len(paths) != ref.count
            or sum(e.size for e in entries.values()) != ref.size
        ):
            raise IntegrityError(f"{self._source}: chunk {ref.digest} does not hold what its ref says")
        self._kept[ref.digest] = entries
        if len(self._kept) > _KEPT:
            self._kept.popitem(last=False)
        return entries


def _scanned_paths(data: bytes) -> list[str] | None:
    """A chunk's paths cut out of its bytes without parsing its rows, where the writer's layout makes
    that exact: rows ``["path",...]`` joined by ``],[``, and no backslash anywhere (so no ``"`` inside a
    string). ``None`` otherwise; a string that holds ``],["`` cuts a row too many, which the caller's
    count check sends to the parser."""
    head, tail = b'"entries":[["', b'],"fields":'
    start, end = data.find(head), data.rfind(tail)
    if start < 0 or end < start or b"\\" in data:
        return None
    rows = data[start + len(head) : end - 1].split(b'],["')
    try:
        return b"\n".join([row[: row.index(b'"')] for row in rows]).decode("utf-8").split("\n")
    except ValueError:
        return None


def _holds(paths: list[str], ref: ChunkRef) -> bool:
    """Whether ``paths`` are in increasing order and are the count, first and last path ``ref`` names."""
    return (
        len(paths) == ref.count
        and bool(paths)
        and paths[0] == ref.first
        and paths[-1] == ref.last
        and all(map(str.__lt__, paths, paths[1:]))
    )


class _Entries(Mapping[str, ManifestEntry]):
    """A chunked manifest seen as the plain mapping :class:`Manifest` keeps (lookups through the tree)."""

    def __init__(self, manifest: ChunkedManifest) -> None:
        self._manifest = manifest

    def __getitem__(self, path: str) -> ManifestEntry:
        return self._manifest[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._manifest)

    def __len__(self) -> int:
        return len(self._manifest)

    def values(self) -> Iterator[ManifestEntry]:  # type: ignore[override]
        return self._manifest.values()

    def items(self) -> Iterator[tuple[str, ManifestEntry]]:  # type: ignore[override]
        return self._manifest.items()


def _check_sequence(
    refs: list[ChunkRef], source: str, count: int, size: int, parent: ChunkRef | None = None
) -> None:
    """Refs in strictly increasing, disjoint path order whose counts and sizes add up (to the parent's)."""
    for before, after in itertools.pairwise(refs):
        if not before.last < after.first:
            raise IntegrityError(f"{source}: chunk refs overlap or are out of order at {after.first!r}")
    ok = sum(r.count for r in refs) == count and sum(r.size for r in refs) == size
    if parent is not None:
        ok = ok and bool(refs) and refs[0].first == parent.first and refs[-1].last == parent.last
    if not ok:
        raise IntegrityError(f"{source}: chunk refs do not add up to what their parent says")


def _meeting(refs: list[ChunkRef], low: str, high: str | None) -> Iterator[ChunkRef]:
    start = bisect.bisect_left(refs, low, key=lambda r: r.last) if low else 0
    for ref in refs[start:]:
        if high is not None and ref.first > high:
            return
        yield ref


def _covering(refs: list[ChunkRef], path: str) -> ChunkRef | None:
    i = bisect.bisect_left(refs, path, key=lambda r: r.last)
    return refs[i] if i < len(refs) and refs[i].first <= path else None


# -- making one -----------------------------------------------------------------------------------------


def chunked(manifest: Manifest, executor: Executor | None = None) -> Manifest:
    """``manifest`` as it is stored: itself up to ``SINGLE_LIMIT`` entries (or if already chunked), else a
    :class:`ChunkedManifest` whose chunks wait in :attr:`PendingManifest.pending` to be written. With an
    ``executor`` (a Dask cluster's, or any :class:`concurrent.futures.Executor`) the chunks are made on its
    workers, the same chunks byte for byte (:func:`_stitch`)."""
    if isinstance(manifest, ChunkedManifest) or len(manifest) <= SINGLE_LIMIT:
        return manifest
    pending: dict[str, bytes] = {}
    writer = ChunkWriter(pending.__setitem__)
    with gc_paused():
        if executor is None:
            writer.add_all(manifest.values())
        else:
            _stitch(writer, list(manifest.values()), executor)
    root = writer.finish()
    return PendingManifest(root.data, root.digest, pending, manifest)


#: Entries a worker cuts into chunks per task, when chunks are made on an executor.
SEGMENT_ENTRIES = 2**18


def _stitch(writer: ChunkWriter, entries: list[ManifestEntry], executor: Executor) -> None:
    """Hand ``entries`` (sorted) to ``writer`` with their chunks made on ``executor``'s workers: each task
    cuts a segment of :data:`SEGMENT_ENTRIES` entries as if it began a manifest (:func:`cut_segment`),
    and the driver takes a worker's chunk as it is wherever its own cuts, made with every entry before,
    end just where that chunk begins: the cutter decides from the entries since its last cut only, so from
    that point both cut alike up to the worker's last cut. Elsewhere (from the start of a segment until its
    cuts meet the worker's, usually within a chunk or two, and after a worker's last cut) the driver cuts the
    entries itself. So the chunks are the ones :meth:`ChunkWriter.add_all` makes, byte for byte."""
    starts = range(0, len(entries), SEGMENT_ENTRIES)
    futures = [executor.submit(cut_segment, entries[a : a + SEGMENT_ENTRIES]) for a in starts]
    done = 0  # entries handed to the writer
    try:
        for start, future in zip(starts, futures, strict=True):
            for chunk in future.result():
                if start >= done:
                    writer.add_all(entries[done:start])
                    done = start
                    if not writer._rows:  # the driver cut just before this chunk: the same chunk
                        writer._take(chunk)
                        done += chunk.ref.count
                start += chunk.ref.count
        writer.add_all(entries[done:])
    finally:
        for future in futures:
            future.cancel()


def cut_segment(entries: list[ManifestEntry]) -> list[BuiltChunk]:
    """A worker's task: the chunks :class:`ChunkWriter` makes of ``entries`` (sorted) as the beginning of
    a manifest, up to its last cut (the entries after it are left to the driver)."""
    writer = _Segment()
    with gc_paused():
        writer.add_all(entries)
    return writer.made


class _Segment(ChunkWriter):
    """A writer that keeps the chunks it cuts (no content digest, no store)."""

    def __init__(self) -> None:
        super().__init__(lambda digest, data: None)
        self.made: list[BuiltChunk] = []

    def _take(self, chunk: BuiltChunk) -> None:
        self.made.append(chunk)


class PendingManifest(ChunkedManifest):
    """A chunked manifest made in memory: its chunks (``pending``, digest -> bytes) are not stored yet.
    Its entries are read from the manifest it was made from (no chunk is parsed back)."""

    def __init__(self, root: bytes, digest: str, pending: dict[str, bytes], made_from: Manifest) -> None:
        super().__init__(root, digest, pending.__getitem__, source="new manifest")
        self.pending = pending
        self._made_from = made_from

    def __iter__(self) -> Iterator[str]:
        return iter(self._made_from)

    def __getitem__(self, path: str) -> ManifestEntry:
        return self._made_from[path]

    def items(self) -> Iterator[tuple[str, ManifestEntry]]:  # type: ignore[override]
        return iter(self._made_from.items())

    def values(self) -> Iterator[ManifestEntry]:  # type: ignore[override]
        return iter(self._made_from.values())

    def paths(self) -> list[str]:
        return self._made_from.paths()


# -- comparing two --------------------------------------------------------------------------------------


def diff_chunked(old: ChunkedManifest, new: ChunkedManifest) -> ManifestDiff:
    """The diff of two chunked manifests, skipping the chunks (and index chunks) with equal digests:
    content-defined boundaries line up again right after a change; only one changed stretch is in
    memory at a time."""
    added: list[str] = []
    removed: list[str] = []
    modified: list[str] = []
    if old._depth == new._depth == 1:
        stretches: Iterable[tuple[list[ChunkRef], list[ChunkRef]]] = (
            (_below(old, top_a), _below(new, top_b)) for top_a, top_b in _unequal(old._refs, new._refs)
        )
    else:
        stretches = [(list(old.leaf_refs()), list(new.leaf_refs()))]
    for leaves_a, leaves_b in stretches:
        for group_a, group_b in _unequal(leaves_a, leaves_b):
            before = {p: e for ref in group_a for p, e in old._chunk(ref).items()}
            after = {p: e for ref in group_b for p, e in new._chunk(ref).items()}
            part = ManifestDiff.between(before, after)
            added += part.added
            removed += part.removed
            modified += part.modified
    return ManifestDiff(sorted(added), sorted(removed), sorted(modified))


def _below(manifest: ChunkedManifest, index_refs: list[ChunkRef]) -> list[ChunkRef]:
    return [leaf for ref in index_refs for leaf in manifest._index_chunk(ref)]


def _unequal(a: list[ChunkRef], b: list[ChunkRef]) -> Iterator[tuple[list[ChunkRef], list[ChunkRef]]]:
    """The stretches of two ref sequences that differ, each pair covering the same path range: a pair with
    equal digests at a point where both sequences start a chunk is skipped."""
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and j < len(b) and a[i].digest == b[j].digest:
            i, j = i + 1, j + 1
            continue
        group_a: list[ChunkRef] = []
        group_b: list[ChunkRef] = []
        if i < len(a):
            group_a.append(a[i])
            i += 1
        if j < len(b):
            group_b.append(b[j])
            j += 1
        while group_a and group_b and group_a[-1].last != group_b[-1].last:
            if group_a[-1].last < group_b[-1].last:
                if i == len(a):
                    break
                group_a.append(a[i])
                i += 1
            else:
                if j == len(b):
                    break
                group_b.append(b[j])
                j += 1
        yield group_a, group_b


def entries_under(manifest: Mapping[str, ManifestEntry], prefix: str | None) -> Iterator[ManifestEntry]:
    """The entries under ``prefix`` at ``/`` boundaries; a chunked manifest reads only the chunks on it."""
    if isinstance(manifest, ChunkedManifest):
        return manifest.entries_under(prefix)
    return (e for p, e in manifest.items() if under_prefix(p, prefix))


def stored_digests(manifest: Manifest) -> list[str]:
    """The digests of everything stored for ``manifest``: its root (or single document) and its chunks."""
    digests = [manifest.digest]
    if isinstance(manifest, ChunkedManifest):
        digests += manifest.chunk_digests()
    return digests


def read_manifest(
    data: bytes, digest: str, load: Callable[[str], bytes], *, source: str = "manifest"
) -> Manifest:
    """Stored manifest bytes of any format, checked against ``digest``; ``load`` reads a chunk by digest."""
    if is_chunked_root(data):
        if len(data) > MANIFEST_BYTES:
            raise IntegrityError(f"{source}: {len(data):,} bytes, more than the {MANIFEST_BYTES:,} allowed")
        return ChunkedManifest(data, digest, load, source=source)
    return Manifest.from_bytes(data, expected_digest=digest, source=source)


def diff(old: Manifest, new: Manifest) -> ManifestDiff:
    """What changed from ``old`` to ``new``; two chunked manifests skip the chunks they share."""
    if isinstance(old, ChunkedManifest) and isinstance(new, ChunkedManifest):
        return diff_chunked(old, new)
    return ManifestDiff.between(old, new)
