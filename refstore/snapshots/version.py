"""``ArtifactVersion``: an immutable, logged version and what can be done with it."""

from __future__ import annotations

import copy
import enum
import os
from collections.abc import Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..core.chunks import diff as diff_manifests
from ..core.chunks import entries_under
from ..core.exceptions import ObjectChangedError, ObjectNotFoundError
from ..core.manifest import Manifest, ManifestDiff, ManifestEntry
from ..core.names import check_logical_path
from ..core.records import EditRecord, Tombstone, Values, VersionRecord
from ..storage.download import DownloadedPath, Downloader, blob_path
from ..storage.quarantine import check_copy
from . import edits
from .artifact import Artifact
from .verify import VerifyReport, verify_entries, verify_folder

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["UNREAD", "ArtifactVersion", "VerifyReport"]


class Unread(enum.Enum):
    UNREAD = "unread"


#: A version's newest edit not read yet: it is read on first use of an editable value.
UNREAD = Unread.UNREAD


class ArtifactVersion:
    """One immutable version of an artifact, as a registry holds it. Its manifest and digests never change;
    its description, metadata, tags and TTL are the current ones (``Registry.update`` edits them), read
    once, on first use."""

    def __init__(
        self,
        registry: Registry,
        record: VersionRecord,
        *,
        created: bool = False,
        edit: EditRecord | Unread | None = UNREAD,
        deleted: Tombstone | None = None,
    ) -> None:
        self._registry = registry
        self._record = record
        self._created = created
        self._edit = edit
        self._deleted = deleted

    def __repr__(self) -> str:
        return f"ArtifactVersion({self.qualified_name!r}, {self.digest[:19]}...)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactVersion) and (
            (self.name, self.version, self.digest) == (other.name, other.version, other.digest)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.version))

    name = property(lambda self: self._record.name)
    version = property(lambda self: self._record.version)
    type = property(lambda self: self._record.type)
    description = property(lambda self: self._values.description)
    created_at = property(lambda self: self._record.created_at)
    created_by = property(lambda self: self._record.created_by)

    @property
    def created(self) -> bool:
        """True when the ``log`` that returned this version made it; False when the logged content equalled
        the latest version's, which came back unchanged (and for versions read from a registry)."""
        return self._created

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._values.metadata)

    @property
    def tags(self) -> list[str]:
        return list(self._values.tags)

    @property
    def ttl(self) -> timedelta | None:
        """How long after ``created_at`` gc deletes the version; None: never."""
        seconds = self._values.ttl_seconds
        return None if seconds is None else timedelta(seconds=seconds)

    @property
    def expires_at(self) -> datetime | None:
        """When the TTL runs out (gc deletes the version then, unless an alias points at it)."""
        ttl = self.ttl
        return None if ttl is None else datetime.fromisoformat(self.created_at) + ttl

    @property
    def last_edit(self) -> EditRecord | None:
        """The newest edit of the version's values (who, when); None when it was never edited."""
        if self._edit is UNREAD:
            self._edit = edits.newest(self._registry.store, self._record)
        return self._edit

    def history(self) -> list[EditRecord]:
        """Every edit of the version's values, oldest first."""
        return edits.history(self._registry.store, self._record)

    @property
    def deleted(self) -> Tombstone | None:
        """When, by whom and why the version was deleted (``Registry.versions(name, deleted=True)``,
        ``Registry.delete``); None for a version that was not deleted when it was read."""
        return self._deleted

    @property
    def record(self) -> VersionRecord:
        """The sealed version record, as logged."""
        return self._record

    @property
    def _values(self) -> Values:
        return edits.values_of(self._record, self.last_edit)

    @property
    def qualified_name(self) -> str:
        """``name:v<N>``."""
        return f"{self.name}:v{self.version}"

    @property
    def digest(self) -> str:
        """The content digest."""
        return self._record.content_digest

    @property
    def manifest_digest(self) -> str:
        return self._record.manifest_digest

    @property
    def manifest(self) -> Manifest:
        """The entries, read from the registry and checked against the manifest digest."""
        return self._registry.manifest(self._record.manifest_digest)

    @property
    def aliases(self) -> list[str]:
        """Aliases pointing at this version now (``latest`` when it is the newest)."""
        return self._registry.aliases_of(self.name, self.version)

    def used_by(self) -> list[str]:
        """Run paths (``project/run_id``) that used this version."""
        return self._registry.users_of(self.name, self.version)

    def new_draft(self) -> Artifact:
        """A draft of the next version: an :class:`Artifact` with this version's name and type, its current
        description, metadata (a copy), tags and TTL, holding every entry of its manifest. Remove entries
        (:meth:`Artifact.remove`) and add others (the first add at a path this version holds replaces its
        entry), then log it; logged unchanged, it gives back the latest version if that is this content.

        Stored copies (``add_file``, ``add_dir``) come over as entries: their bytes stay in this registry's
        blob store and are not read. Logged to this registry, the log relies on those blobs as it does on
        any it reuses (its log intent names them, so a concurrent gc keeps them). A registry whose blob store
        lacks one refuses the log with :class:`~refstore.ObjectNotFoundError` naming the entry, before any
        version is claimed (:meth:`Artifact._check_copies`), rather than copy the blobs across: that would
        read every copied byte through this machine unasked (``add_file`` copies a file again)."""
        draft = Artifact(
            self.name,
            self.type,
            description=self.description,
            metadata=copy.deepcopy(self.metadata),
            tags=self.tags,
            ttl=self.ttl,
        )
        draft._start_from(self.manifest.values(), f"{self.qualified_name} in {self._registry.root}")
        return draft

    def diff(self, other: ArtifactVersion) -> ManifestDiff:
        """What changed from this version to ``other``."""
        return diff_manifests(self.manifest, other.manifest)

    def download(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        path_prefix: str | None = None,
        skip_cache: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
        overwrite: bool = False,
        clean: bool = False,
        allow_local_refs: bool = False,
    ) -> DownloadedPath:
        """Fetch exactly the pinned bytes to ``root`` (default ``./artifacts/<name>:v<N>/``).

        Never destroys local work: files already there with the pinned bytes are kept (not fetched again);
        a file with other bytes makes the download refuse, before writing anything, with
        :class:`~refstore.LocalChangesError` naming it, unless ``overwrite=True``. Files the version does
        not hold are left alone and listed in the returned path's ``extra``; ``clean=True`` removes them
        (never following links) and lists them in ``removed``. A download that fails half-way says how many
        entries are in place; running it again completes it. ``path_prefix`` names a folder (matched at
        ``/`` boundaries: ``train`` takes ``train/...``, never ``train2/...``) or one file exactly; one
        matching no entry is :class:`~refstore.ObjectNotFoundError`.

        Fetches run on ``executor`` when given (any :class:`concurrent.futures.Executor`, e.g. a Dask
        cluster's ``client.get_executor()``), in batches; what the local cache holds is copied here.

        A version from a registry that is not on this machine's disk may name local files (``file://``)
        only with their content hash: one logged with ``checksum=False`` is refused with
        :class:`~refstore.StorageAccessError` before anything is written, unless ``allow_local_refs=True``
        (whoever can write that registry could otherwise make you copy any file you can read). The same
        holds for :meth:`open` and :meth:`verify`.
        """
        target = Path(root) if root is not None else Path("artifacts") / self.qualified_name
        entries = list(entries_under(self.manifest, path_prefix))  # a chunked one: only the chunks on it
        if path_prefix is not None and not entries:
            raise ObjectNotFoundError(
                f"{self.qualified_name}: no entry is under the prefix {path_prefix!r} "
                "(a folder, matched at '/' boundaries, or one file's path)"
            )
        downloader = Downloader(
            self._registry.store,
            skip_cache=skip_cache,
            storage_options=storage_options,
            executor=executor,
            allow_local_refs=allow_local_refs,
        )
        return downloader.download(
            entries,
            target,
            description=self.qualified_name,
            overwrite=overwrite,
            clean=clean,
            prefix=path_prefix,
        )

    def open(
        self,
        logical_path: str,
        mode: str = "rb",
        *,
        storage_options: Mapping[str, Any] | None = None,
        allow_local_refs: bool = False,
    ) -> IO[bytes]:
        """A read-only stream of the pinned bytes of one entry, without a full download
        (``allow_local_refs``: see :meth:`download`)."""
        if mode != "rb":
            raise ValueError(f"{self.qualified_name}/{logical_path}: versions are read-only, open with 'rb'")
        entry = self._entry(logical_path)
        downloader = Downloader(
            self._registry.store, storage_options=storage_options, allow_local_refs=allow_local_refs
        )
        backend, pin = downloader.source(entry)
        try:
            return backend.open_pinned(pin)
        except ObjectChangedError as exc:
            if entry.is_copy:  # a corrupt blob is moved to quarantine/ (see refstore.storage.quarantine)
                check_copy(
                    self._registry.store, blob_path(entry.digest), pin, downloader.cache.tmp_path(), exc
                )
            raise

    def verify(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        allow_local_refs: bool = False,
    ) -> VerifyReport:
        """Without ``root``: check every entry against live storage from metadata alone (listings where
        cheaper, no bodies); entries that drifted are then probed for their pinned version, so that
        ``report.retrievable`` says whether the version can still be downloaded.

        With ``root``: check a downloaded folder against the manifest, with no request to the source;
        ``report.extra`` lists the files the version does not hold, ``report.unverified`` the files whose
        bytes cannot be checked without the source (see :mod:`refstore.storage.local_folder`).

        ``allow_local_refs``: see :meth:`download` (a folder check reads no source and needs none).
        """
        downloader = Downloader(
            self._registry.store, storage_options=storage_options, allow_local_refs=allow_local_refs
        )
        if root is not None:
            return verify_folder(self.manifest.values(), Path(root), downloader)
        return verify_entries(self.manifest.values(), downloader)

    def _entry(self, logical_path: str) -> ManifestEntry:
        check_logical_path(logical_path)
        try:
            return self.manifest[logical_path]
        except KeyError:
            raise ObjectNotFoundError(f"{self.qualified_name}: no entry {logical_path!r}") from None
