"""``Artifact``: a draft that collects manifest entries until a registry logs it."""

from __future__ import annotations

import hashlib
import os
import posixpath
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..core.bulk import gc_paused
from ..core.exceptions import InvalidURLError, ObjectNotFoundError, RefstoreError
from ..core.loop import gather_limited, run_sync
from ..core.manifest import Manifest, ManifestEntry, new_entry
from ..core.meta import MetaColumns
from ..core.names import check_logical_path, check_name, join_logical_all
from ..core.progress import progress_bar
from ..core.refs import ref_of, refs_of, refs_under
from ..storage.backends import ObjectMeta, ProgressHook, RecordsHook
from ..storage.download import blob_path
from ..storage.exclusion import Exclusion, exclusion_for
from ..storage.hashing import ALGORITHM
from ..storage.locations import Location, resolve
from ..storage.spread_listing import list_on_workers

if TYPE_CHECKING:
    from ..storage.store import Store
    from .verify import VerifyReport
    from .version import ArtifactVersion

DEFAULT_MAX_OBJECTS = 10_000
_CHECK_CONCURRENCY = 16


class Artifact:
    """A draft: references and copies gathered into a manifest, made immutable by ``Registry.log``."""

    def __init__(
        self,
        name: str,
        type: str = "dataset",
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        ttl: timedelta | None = None,
    ) -> None:
        self.name = check_name(name)
        self.type = type
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.tags = list(dict.fromkeys(check_name(t, "tag") for t in tags))
        #: How long after logging gc deletes the version (``Registry.update`` changes it later).
        self.ttl = ttl
        self._entries: dict[str, ManifestEntry] = {}
        #: content digest -> local file whose bytes the registry must store at log time (a Path each is
        #: made by staged_files: 1.5 us apiece, a sixth of a 100,000-file add_dir)
        self._staged: dict[str, str] = {}
        #: the version this draft was last logged as, until the draft changes
        self._logged: ArtifactVersion | None = None
        #: ``name:vN`` at its registry's URL, for a draft ``ArtifactVersion.new_draft`` made
        self._draft_of: str | None = None
        #: paths whose entry came from that version and that an add may still replace
        self._replaceable: set[str] = set()

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, type={self.type!r}, {len(self._entries)} entries)"

    @property
    def manifest(self) -> Manifest:
        """The entries added so far."""
        return Manifest(dict(self._entries))

    @property
    def digest(self) -> str:
        """The content digest, independent of the order of adds."""
        return self.manifest.content_digest

    @property
    def staged_files(self) -> Mapping[str, Path]:
        """Content digest -> local file, for the copies ``add_file``/``add_dir`` made."""
        return {digest: Path(source) for digest, source in self._staged.items()}

    # -- references -------------------------------------------------------------------------------------

    def add_reference(
        self,
        uri: str | os.PathLike[str],
        name: str | None = None,
        *,
        checksum: bool = True,
        max_objects: int = DEFAULT_MAX_OBJECTS,
        storage_options: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
        exclude: Iterable[str] | str | None = None,
        inventory: str | None = None,
    ) -> list[ManifestEntry]:
        """Record the objects at ``uri`` (one object, or every object under a prefix) without copying them.

        With ``checksum=False`` only locations are recorded (no ETag, version or hash): a download then
        fetches whatever is there at that time, unchecked. Local files are hashed on ``executor`` (any
        :class:`concurrent.futures.Executor`, e.g. a Dask cluster's; default: a thread per core); an S3,
        GCS or Azure prefix has its sub-prefixes listed on it, with the records of a listing without it
        (:mod:`refstore.storage.spread_listing`).
        Under a prefix or folder, files matched by an ``exclude`` glob (matched against logical paths) and
        refstore's own folders (the registry, the download cache, the run area) are left out, as
        :mod:`refstore.storage.exclusion` says.

        ``inventory`` (``s3://`` URL of an S3 Inventory report's ``manifest.json``, CSV, Parquet or ORC)
        lists an S3 prefix from the report instead of the bucket: no listing request, the objects as they
        were when the report was made (see the README's "Speed and scale").
        """
        location = resolve(uri, storage_options)
        exclusion = exclusion_for(location.url, exclude, name)
        if inventory is not None:
            return self._add_from_inventory(location, inventory, name, checksum, max_objects, exclusion)
        hashing = not location.backend.lists_metadata
        entries: list[ManifestEntry] = []

        def on_records(records: list[ObjectMeta]) -> None:  # while later files are hashed
            entries.extend(self._entries_for(location, records, True, name, checksum))

        with gc_paused():  # the records of a large listing make no cycles
            with progress_bar(None, f"hashing {location.url}", unit="files", show=hashing) as bar:
                objects, is_folder = run_sync(
                    _list_location, location, max_objects, executor, bar.update, on_records, exclusion
                )
            if not objects:
                what = (
                    "no objects under this prefix"
                    if location.is_folder or exclude
                    else "no such object or prefix"
                )
                raise _nothing_found(location, what, exclude)
            # records the backend returned only at the end
            entries += self._entries_for(location, objects[len(entries) :], is_folder, name, checksum)
            del objects  # freed here: the collection that follows gc_paused need not look at them
            return self._add(entries)

    def _add_from_inventory(
        self,
        location: Location,
        inventory: str,
        name: str | None,
        checksum: bool,
        max_objects: int,
        exclusion: Exclusion,
    ) -> list[ManifestEntry]:
        report = resolve(inventory)
        if report.backend.protocols != location.backend.protocols:
            raise InvalidURLError(
                f"{inventory}: inventory reports are read for S3 references only, from S3 "
                f"(not for {location.url})"
            )
        backend = location.backend
        listed = run_sync(
            backend.inventory_listing, location.path, backend.path(report.url), max_objects=max_objects
        )
        single = [m for m in listed if m.url == location.url]
        is_folder = location.is_folder or not single  # an object at the URL itself is taken alone
        objects = (
            exclusion.keep([m for m in listed if m.url != location.url], location.url)
            if is_folder
            else single
        )
        if not objects:
            raise _nothing_found(location, "no objects under this prefix in the inventory", None)
        return self._add(self._entries_for(location, objects, is_folder, name, checksum))

    def _entries_for(
        self,
        location: Location,
        objects: Sequence[ObjectMeta],
        is_folder: bool,
        name: str | None,
        checksum: bool,
    ) -> list[ManifestEntry]:
        columns = objects if isinstance(objects, MetaColumns) and checksum else None
        if is_folder:
            cut = len(location.url) + 1
            if columns is not None and columns.base == location.url + "/":  # (no URL to cut)
                paths = join_logical_all(name, columns.names)
            else:
                paths = join_logical_all(name, [meta.url[cut:] for meta in objects])
        else:
            paths = [check_logical_path(name or posixpath.basename(location.path))] * len(objects)
        if not checksum:  # (the digest hashes the URL as it always did, so it keeps its value)
            pairs = zip(paths, objects, strict=True)
            return [ManifestEntry(p, ref_of(m.url), m.size, _unchecked(m.url)) for p, m in pairs]
        if columns is not None:  # (files hashed: a digest each; no record made)
            rows = zip(
                paths, refs_under(columns.base, columns.names), columns.sizes, columns.digests, strict=True
            )
            return [new_entry(p, ref, size, digest, None, None) for p, ref, size, digest in rows]
        refs = refs_of([m.url for m in objects])  # refs escape ?, # and % in bucket keys
        return [
            new_entry(p, ref, m.size, m.digest or _hash_by_reading(location, m), m.etag, m.version_id)
            for p, ref, m in zip(paths, refs, objects, strict=True)
        ]

    # -- copies -----------------------------------------------------------------------------------------

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None) -> ManifestEntry:
        """Copy one local file into the artifact (stored in the registry's blob store at log time). Its size
        and digest come from one read (a file that changes while it is read is read again, then refused);
        the bytes stored at log time must still have that digest."""
        path = Path(local_path).expanduser()
        if not path.is_file():
            raise ObjectNotFoundError(f"{path}: no such file")
        logical = check_logical_path(name) if name else check_logical_path(path.name)
        source = path.resolve()
        meta = run_sync(resolve(source).backend.stat, os.fspath(source))
        if meta is None or meta.digest is None:
            raise ObjectNotFoundError(f"{path}: no such file")
        return self._add([self._copy_entry(os.fspath(source), logical, meta)])[0]

    def add_dir(
        self,
        local_path: str | os.PathLike[str],
        name: str | None = None,
        *,
        executor: Executor | None = None,
        exclude: Iterable[str] | str | None = None,
    ) -> list[ManifestEntry]:
        """Copy every file under a local folder, logical paths relative to it (under ``name``); the files
        are hashed on ``executor`` (default: a thread per core). The folder is walked exactly as
        :meth:`add_reference` walks a local folder (:class:`~refstore.storage.backends.local.LocalBackend`
        says what is taken and what is an error): files matched by an ``exclude`` glob and refstore's own
        folders are left out; a folder that cannot be read, a dangling link or a loop of links raises, naming
        it; a folder with no file to take raises :class:`ObjectNotFoundError`, as for :meth:`add_reference`.
        Each file's size and digest come from one read, or, for a file whose stat has not changed since
        this folder was last listed on this machine, from that read (:mod:`refstore.storage.stat_cache`;
        the bytes stored at log time are checked against the digest either way)."""
        root = Path(local_path).expanduser()
        if not root.is_dir():
            raise ObjectNotFoundError(f"{root}: no such directory")
        location = resolve(root)
        exclusion = exclusion_for(location.url, exclude, name)
        with gc_paused():  # the records and entries of a large folder make no cycles
            with progress_bar(None, f"hashing {location.url}", unit="files") as bar:
                objects, _ = run_sync(
                    _list_location, location, sys.maxsize, executor, bar.update, _ignore_records, exclusion
                )
            if not objects:
                raise _nothing_found(location, "no files in this folder", exclude)
            cut = len(location.url) + 1
            backend = location.backend
            paths = join_logical_all(name, [meta.url[cut:] for meta in objects])
            entries = [
                self._copy_entry(backend.path(meta.url), logical, meta)
                for logical, meta in zip(paths, objects, strict=True)
            ]
            del objects  # freed here: the collection that follows gc_paused need not look at them
            return self._add(entries)

    def _copy_entry(self, source: str, logical: str, meta: ObjectMeta) -> ManifestEntry:
        """An entry whose bytes the local file ``source`` holds: its size and digest as one read found them
        (``meta``)."""
        assert meta.digest is not None and meta.digest.startswith(f"{ALGORITHM}:")
        self._staged[meta.digest] = source
        return new_entry(logical, None, meta.size, meta.digest, None, None)

    def _add(self, entries: list[ManifestEntry]) -> list[ManifestEntry]:
        """Take ``entries``. A path already held with another entry is refused (two adds that disagree about
        one path are a mistake), except on a draft of a version (``ArtifactVersion.new_draft``): there the
        first add at a path the version held replaces the version's entry, since re-adding a changed file is
        what a draft is for; a second, different add at that path is refused as in a fresh artifact. An
        add under a folder replaces the entries it names, not the folder: :meth:`remove` it first to drop
        the version's other files there."""
        paths = [entry.path for entry in entries]
        refs = [entry.ref for entry in entries if entry.ref is not None]
        if not ("".join(paths).isascii() and "".join(refs).isascii()):  # (one look for all: the common case)
            for entry in entries:
                if not (entry.path.isascii() and (entry.ref is None or entry.ref.isascii())):
                    _check_utf8(entry)
        held = self._entries.keys() & paths if self._entries else ()
        for entry in entries if held else ():
            existing = self._entries.get(entry.path)
            if existing is not None and existing != entry and entry.path not in self._replaceable:
                raise InvalidURLError(f"{self.name}: logical path {entry.path!r} is already in the artifact")
        self._entries.update(zip(paths, entries, strict=True))
        if self._replaceable:
            self._replaceable.difference_update(paths)
        self._logged = None
        return entries

    def remove(self, path_or_prefix: str) -> int:
        """Remove the entry at the logical path ``path_or_prefix``, or every entry under it as a folder,
        matched at ``/`` boundaries (``train`` or ``train/`` removes ``train/a.bin`` and ``train/x/y``, never
        ``training/z``); returns how many went. Matching no entry raises :class:`ObjectNotFoundError`."""
        folder = check_logical_path(path_or_prefix.removesuffix("/"))
        below = f"{folder}/"
        gone = [path for path in self._entries if path == folder or path.startswith(below)]
        if not gone:
            raise ObjectNotFoundError(
                f"{self.name}: no entry to remove at {folder!r} or under it (a logical path, or a folder "
                "matched at '/' boundaries)"
            )
        for path in gone:
            del self._entries[path]
        self._replaceable.difference_update(gone)
        kept = {e.digest for e in self._entries.values() if e.is_copy}
        self._staged = {d: p for d, p in self._staged.items() if d in kept}  # nothing to upload for them
        self._logged = None
        return len(gone)

    # -- drafts of a version -----------------------------------------------------------------------------

    def _start_from(self, entries: Iterable[ManifestEntry], version: str) -> None:
        """Called by ``ArtifactVersion.new_draft``: hold the entries of ``version`` (``name:vN`` at its
        registry's URL), each replaceable by an add."""
        self._entries = {e.path: e for e in entries}
        self._replaceable = set(self._entries)
        self._draft_of = version

    def _check_copies(self, store: Store) -> None:
        """Refuse to log into ``store`` a stored copy whose bytes this draft does not hold as a local file
        (the copies ``new_draft`` took from a version) and whose blob ``store`` lacks: another registry, or
        a gc that freed it after that version was deleted. One existence check per such copy (``log``
        checks the staged ones the same way); called by ``Registry.log`` after its log intent names the
        blobs, so that a concurrent gc keeps what the check found."""
        unstaged = {e.digest: e for e in self._entries.values() if e.is_copy and e.digest not in self._staged}
        if not unstaged:
            return
        missing = run_sync(_missing_blobs, store, list(unstaged.values()))
        if missing:
            first, source = missing[0], self._draft_of or "a version"
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ObjectNotFoundError(
                f"{self.name}: entry {first.path!r}{more} is a copy stored with {source} and "
                f"{store.url_of(blob_path(first.digest))} does not hold its bytes: log the draft to that "
                "registry, or add the file again (add_file)"
            )

    # -- once logged: the draft acts on its version ------------------------------------------------------

    @property
    def logged_version(self) -> ArtifactVersion | None:
        """The version ``Registry.log``, ``run.log_artifact`` or ``run.use_artifact`` last made or found for
        this draft; ``None`` before, and after an add changed the draft."""
        return self._logged

    @property
    def version(self) -> int:
        """The logged version's number (``mnist:v3`` -> 3)."""
        return int(self._require_logged("version").version)

    @property
    def qualified_name(self) -> str:
        """The logged version's ``name:v<N>``."""
        return self._require_logged("qualified_name").qualified_name

    def download(self, root: str | os.PathLike[str] | None = None, **options: Any) -> Path:
        """Download the logged version (:meth:`ArtifactVersion.download`, same options)."""
        return self._require_logged("download()").download(root, **options)

    def open(self, logical_path: str, mode: str = "rb", **options: Any) -> IO[bytes]:
        """Stream one entry of the logged version (:meth:`ArtifactVersion.open`)."""
        return self._require_logged("open()").open(logical_path, mode, **options)

    def verify(self, *args: Any, **options: Any) -> VerifyReport:
        """Verify the logged version (:meth:`ArtifactVersion.verify`, same arguments)."""
        return self._require_logged("verify()").verify(*args, **options)

    def _logged_as(self, version: ArtifactVersion) -> None:
        """Called by ``Registry.log``: from now on this draft acts on ``version``."""
        self._logged = version

    def _require_logged(self, what: str) -> ArtifactVersion:
        if self._logged is None:
            raise RefstoreError(
                f"artifact {self.name!r} is a draft that is not logged (or changed since): log it first "
                f"(Registry.log, run.log_artifact or run.use_artifact), then call {what}"
            )
        return self._logged


async def _list_location(
    location: Location,
    max_objects: int,
    executor: Executor | None,
    progress: ProgressHook,
    on_records: RecordsHook,
    exclude: Exclusion,
) -> tuple[Sequence[ObjectMeta], bool]:
    """The objects a URL names (in a folder, those ``exclude`` keeps), and whether it named a folder."""
    if not location.is_folder:
        single = await location.backend.stat(location.path)
        if single is not None:
            return [single], False
        if not location.backend.can_list:
            return [], False
    backend = location.backend
    if executor is not None and backend.pages_listings:  # the sub-prefixes listed on the workers
        with backend.storage_errors(location.url):
            found = await list_on_workers(backend, location.path, max_objects=max_objects, executor=executor)
        return exclude.keep(found, location.url), True
    found = await backend.reference_listing(
        location.path,
        max_objects=max_objects,
        executor=executor,
        progress=progress,
        on_records=on_records,
        exclude=exclude,
    )
    return found, True


async def _missing_blobs(store: Store, entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """The copies among ``entries`` whose blob ``store`` does not hold, in the order given."""

    async def check(entry: ManifestEntry) -> ManifestEntry | None:
        return None if await store.exists_async(blob_path(entry.digest)) else entry

    found = await gather_limited([check(e) for e in entries], _CHECK_CONCURRENCY)
    return [e for e in found if e is not None]


def _ignore_records(records: list[ObjectMeta]) -> None:
    """``add_dir`` makes its entries once the listing is complete."""


def _nothing_found(location: Location, what: str, exclude: Iterable[str] | str | None) -> ObjectNotFoundError:
    """One rule for ``add_reference`` and ``add_dir``: a folder or prefix with nothing to take is an error
    (an unmounted mount point, a mistyped path or prefix), never an empty snapshot."""
    if exclude:
        what += " that the exclude globs leave in"
    return ObjectNotFoundError(f"{location.url}: {what}")


def _check_utf8(entry: ManifestEntry) -> None:
    """Refuse a logical path or ref that cannot be written as UTF-8 (a file name that is not UTF-8)."""
    for text in (entry.path, entry.ref or ""):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(text).decode("utf-8", "backslashreplace")
            raise InvalidURLError(
                f"{shown}: the name is not valid UTF-8 and cannot be a logical path; rename the file"
            ) from None


def _unchecked(url: str) -> str:
    """The digest of an entry recorded with ``checksum=False``: its location only."""
    return "ref:" + hashlib.sha256(url.encode()).hexdigest()


def _hash_by_reading(location: Location, meta: ObjectMeta) -> str:
    """A content hash for an object whose backend gives none (an HTTP server without ETags)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="refstore-hash-") as tmp:
        return f"{ALGORITHM}:{run_sync(location.backend.fetch, meta, Path(tmp, 'object'))}"
