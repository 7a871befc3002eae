"""``Registry``: artifacts, versions and aliases in a folder on any fsspec URL, with no server.

Layout under the root::

    .refstore-registry                      marker: this folder is a registry (``refstore init``, any log)
    manifests/<aa>/<hex>.json              immutable, create-only, named by the manifest digest
    blobs/<aa>/<hex>                        copies made by add_file / add_dir (and the bytes of run files),
                                            by xxh3_128 content hash
    artifacts/<name>/versions/<N>.json      version records, claimed with create-only writes
    artifacts/<name>/digests/<hex>.json     content digest -> the first version holding it (create-only);
                                            a return to that content reuses its stored manifest
    artifacts/<name>/aliases/<alias>/<S>.json   alias records, create-only: the newest says where the
                                            alias points (see :mod:`.aliases`; older registries kept one
                                            pointer, ``<alias>.json``, replaced in place)
    artifacts/<name>/deleted/<N>.json       tombstones of deleted versions, create-only (:mod:`.lifecycle`)
    artifacts/<name>/edits/<N>/<S>.json     edits of a version's description, metadata, tags and TTL,
                                            create-only (see :mod:`.edits`)
    artifacts/<name>/lineage/<N>/...        run paths that used a version

Nothing under ``artifacts/`` is ever replaced or removed: every change is a new create-only record.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from ..core.bounded_json import MAX_DEPTH, check_depth, parse
from ..core.chunks import PendingManifest, chunked, read_manifest
from ..core.chunks import diff as diff_manifests
from ..core.exceptions import (
    ArtifactNotFoundError,
    ArtifactTypeError,
    ConflictError,
    DeletedVersionError,
    IntegrityError,
    ManifestError,
    RefstoreError,
)
from ..core.loop import gather_limited, run_sync
from ..core.manifest import Manifest, ManifestDiff, canonical_json
from ..core.names import check_alias, check_name, is_name, parse_ref, version_number
from ..core.records import EditRecord, Tombstone, VersionRecord
from ..storage.exclusion import note_registry
from ..storage.quarantine import quarantined_blobs
from ..storage.store import REGISTRY_MARKER, Store
from . import aliases as _aliases
from . import edits, lifecycle
from .artifact import Artifact
from .intents import load_chunk, log_intent, manifest_path, recover_manifest
from .version import UNREAD, ArtifactVersion, Unread

_MAX_CLAIM_ATTEMPTS = 1000
#: Logs of one artifact made again when the version they made or found is deleted meanwhile.
_LOG_ATTEMPTS = 3
_UPLOAD_CONCURRENCY = 16


_MARKER_BYTES = canonical_json({"format": "refstore.registry/1"})
#: What only a registry holds at its top (registries made before the marker have no marker).
_REGISTRY_ENTRIES = frozenset({"artifacts", "manifests", "blobs", "runs", "intents", "gc.lock"})


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


class Registry:
    """A registry of artifacts rooted at ``root``: default ``$REFSTORE_ROOT``, else the nearest registry in
    the current folder or its parents (a ``.refstore`` folder, or the folder itself where ``refstore init
    .`` made one; as git finds ``.git``), else ``./.refstore``, which the first write makes. The root is
    fixed when the registry is made; nothing is read until it is used."""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.store = Store(root, storage_options)
        self._manifests: dict[str, Manifest] = {}
        self._marked = False
        note_registry(self.store.url)  # a snapshot of a folder that holds it leaves it out

    @property
    def root(self) -> str:
        """The registry's root URL."""
        return self.store.url

    def __repr__(self) -> str:
        return f"Registry({self.root!r})"

    # -- writing ----------------------------------------------------------------------------------------

    def log(
        self,
        artifact: Artifact,
        aliases: Iterable[str] = (),
        *,
        created_by: str | None = None,
        executor: Executor | None = None,
    ) -> ArtifactVersion:
        """Make an immutable version of ``artifact``, so that ``latest`` is always what was logged last.

        Content equal to the latest version's returns that version (``.created`` is False). Any other
        content, an older version's included, gets the next version number (``.created`` is True); a
        manifest the registry already holds is not written again. A ``type`` other than the latest
        version's is refused with :class:`ArtifactTypeError`.

        A manifest of more than 20,000 entries is stored as chunks; with an ``executor`` (any
        :class:`concurrent.futures.Executor`, e.g. a Dask cluster's ``client.get_executor()``) they are
        made (encoded and digested) on its workers, the same chunks byte for byte, and written from here.
        """
        aliases = [check_alias(a) for a in aliases]
        check_depth(artifact.metadata, f"{artifact.name}: metadata", MAX_DEPTH - 1)  # inside its record
        edits.Change(tags=list(artifact.tags), ttl=artifact.ttl).check(artifact.name)  # before any write
        for attempt in range(_LOG_ATTEMPTS):
            record, created = self._log_once(artifact, created_by, executor)
            try:
                for alias in aliases:
                    lifecycle.point_alias(self.store, record.name, record.version, alias)
                break
            except DeletedVersionError:  # deleted under this log: log again, as a new version
                if attempt == _LOG_ATTEMPTS - 1:
                    raise
        version = self._version(record, created=created)
        artifact._logged_as(version)  # the draft now downloads, opens and verifies this version
        return version

    def _log_once(
        self, artifact: Artifact, created_by: str | None, executor: Executor | None
    ) -> tuple[VersionRecord, bool]:
        manifest = chunked(artifact.manifest, executor)  # a large one as the chunks it is stored in
        with log_intent(self.store, manifest):  # a concurrent gc keeps what this log relies on
            numbers, live = self._numbers(artifact.name)
            latest = self._record(artifact.name, live[-1]) if live else None
            if latest is not None and latest.type != artifact.type:
                raise ArtifactTypeError(
                    f"{artifact.name}: type {artifact.type!r} differs from {latest.type!r}, the type of "
                    f"{artifact.name}:v{latest.version}; log it under another name"
                )
            if latest is not None and latest.content_digest == manifest.content_digest:
                record, created = latest, False
                self._restore_quarantined(artifact.staged_files)
            else:
                artifact._check_copies(self.store)  # a draft's copies: their blobs must be here
                self._mark()
                self._store_blobs(artifact.staged_files)
                earlier = self._version_with_content(artifact.name, manifest.content_digest)
                if earlier is None or earlier.manifest_digest != manifest.digest:
                    self._store_manifest(manifest)
                first = numbers[-1] + 1 if numbers else 0
                record, created = self._claim_version(artifact, manifest, created_by, first)
                if created:
                    self._remember_content(record)
        return record, created

    def create(self) -> bool:
        """Make a registry at the root unless one is there (``refstore init``); True when it made one."""
        existed = self.exists()
        self._mark()
        return not existed

    def _mark(self) -> None:
        """Write the marker that names the root a registry (once per instance; a folder snapshot of a
        folder that holds a registry leaves it out, see :mod:`refstore.storage.exclusion`)."""
        if not self._marked:
            with contextlib.suppress(FileExistsError):  # already there
                self.store.create(REGISTRY_MARKER, _MARKER_BYTES)
            self._marked = True

    def alias(self, ref: str, alias: str) -> ArtifactVersion:
        """Add ``alias`` to the version ``ref`` names, or move it there (:class:`DeletedVersionError` if
        the version is deleted, before or while the alias moves)."""
        check_alias(alias)
        record = self._resolve(ref)
        lifecycle.point_alias(self.store, record.name, record.version, alias)
        return self._version(record)

    # -- lifecycle (see refstore.snapshots.lifecycle and .edits) ---------------------------------------

    def delete(self, ref: str, *, force: bool = False) -> ArtifactVersion:
        """Delete the version ``ref`` names: it can no longer be read (:class:`DeletedVersionError`),
        ``latest`` names the highest version left, its number is never used again, and the next
        ``gc`` frees the bytes only it held. Refused with :class:`AliasedVersionError` while aliases
        other than ``latest`` point at it, unless ``force``, which removes them too. Returns the deleted
        version (``.deleted`` says when, by whom, and the aliases removed)."""
        return lifecycle.delete(self, ref, force=force)

    def delete_artifact(self, name: str) -> list[ArtifactVersion]:
        """Delete every version of ``name`` and remove its aliases (``refstore rm NAME --all``); the
        versions deleted. A later log of ``name`` goes on numbering after the last one."""
        return lifecycle.delete_artifact(self, name)

    def unalias(self, name: str, alias: str) -> ArtifactVersion:
        """Remove ``alias`` from ``name``; the version it pointed at."""
        return lifecycle.unalias(self, name, alias)

    def retain(
        self,
        name: str,
        *,
        keep_last: int | None = None,
        keep_aliased: bool = True,
        older_than: timedelta | None = None,
        dry_run: bool = False,
    ) -> list[ArtifactVersion]:
        """Delete the versions of ``name`` that the policy does not keep (the ``keep_last`` newest, with
        ``keep_aliased`` those an alias points at, ``latest`` included, and with ``older_than`` those logged
        more recently); the versions deleted, or with ``dry_run`` those it would delete."""
        return lifecycle.retain(
            self, name, keep_last=keep_last, keep_aliased=keep_aliased, older_than=older_than, dry_run=dry_run
        )

    def update(
        self,
        ref: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        ttl: timedelta | Literal[False] | None = None,
        set_metadata: Mapping[str, Any] | None = None,
        unset_metadata: Iterable[str] = (),
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
    ) -> ArtifactVersion:
        """Edit the version's description, metadata, tags or TTL; its manifest and digests never change.

        ``None`` leaves a field as it is; ``metadata`` and ``tags`` replace the field, ``set_metadata``,
        ``unset_metadata``, ``add_tags`` and ``remove_tags`` change keys and tags one by one; ``ttl=False``
        removes the TTL, an empty ``description`` the description. Each edit is kept, with who made it and
        when (``v.history()``); concurrent edits never lose one another's changes (see :mod:`.edits`).
        """
        change = edits.Change(
            description=description,
            metadata=None if metadata is None else dict(metadata),
            tags=None if tags is None else list(tags),
            ttl=ttl,
            set_metadata=dict(set_metadata or {}),
            unset_metadata=tuple(unset_metadata),
            add_tags=tuple(add_tags),
            remove_tags=tuple(remove_tags),
        )
        change.check(ref)
        record = self._resolve(ref)
        return self._version(record, edit=edits.edit(self.store, record, change.apply))

    def find(
        self,
        *,
        type: str | None = None,
        tag: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> list[ArtifactVersion]:
        """The versions (deleted ones left out) of the given ``type``, holding ``tag``, whose metadata holds
        every key and value of ``metadata`` (of the artifact ``name`` only, if given); by artifact name,
        then version."""
        return edits.find(self, type=type, tag=tag, metadata=metadata, name=name)

    def versions_used_by(self, run_path: str) -> list[ArtifactVersion]:
        """The versions the run ``run_path`` used (lineage), deleted ones included (``.deleted`` set)."""
        return lifecycle.used_by_run(self, run_path)

    def _restore_quarantined(self, staged: Mapping[str, Path]) -> None:
        """Upload again the staged copies whose blobs a reader found corrupt and moved to ``quarantine/``
        (:mod:`refstore.storage.quarantine`); one listing, nothing else when nothing is quarantined. Any other
        log uploads them anyway: :meth:`_store_blobs` skips only blobs that exist."""
        if staged and (names := quarantined_blobs(self.store)):
            self._store_blobs({d: p for d, p in staged.items() if _hex(d) in names})

    def _store_blobs(self, staged: Mapping[str, Path]) -> None:
        async def upload(digest: str, local: Path) -> None:
            relative = f"blobs/{_hex(digest)[:2]}/{_hex(digest)}"
            if await self.store.exists_async(relative):
                return
            await self.store.backend.upload_checked(local, self.store.full(relative), digest)

        if staged:
            run_sync(gather_limited, [upload(d, p) for d, p in staged.items()], _UPLOAD_CONCURRENCY)

    def _store_manifest(self, manifest: Manifest) -> None:
        """Store ``manifest``: a chunked one's chunks first (those the registry lacks), its root last, so
        that a stored root never names a missing chunk."""
        if isinstance(manifest, PendingManifest):

            async def put(digest: str, data: bytes) -> None:
                relative = manifest_path(digest)
                if not await self.store.exists_async(relative):
                    with contextlib.suppress(FileExistsError):  # a concurrent twin
                        await self.store.create_async(relative, data)

            jobs = [put(d, b) for d, b in manifest.pending.items()]
            run_sync(gather_limited, jobs, _UPLOAD_CONCURRENCY)
        relative = manifest_path(manifest.digest)
        with contextlib.suppress(FileExistsError):  # already there: same bytes, or a concurrent twin
            self.store.create(relative, manifest.to_bytes())
        if not isinstance(manifest, PendingManifest):
            self._manifests[manifest.digest] = manifest

    def _claim_version(
        self, artifact: Artifact, manifest: Manifest, created_by: str | None, number: int
    ) -> tuple[VersionRecord, bool]:
        """The record of the version number claimed for ``manifest`` (create-only, the loser of a race
        tries the next number) and True; or the newest version and False when a concurrent log of the same
        content claimed it first."""
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            record = VersionRecord(
                name=artifact.name,
                version=number,
                type=artifact.type,
                manifest_digest=manifest.digest,
                content_digest=manifest.content_digest,
                created_at=datetime.now(timezone.utc).isoformat(),
                description=artifact.description,
                metadata=artifact.metadata,
                created_by=created_by,
                tags=list(artifact.tags),
                ttl_seconds=edits.ttl_seconds(artifact.ttl),
            )
            relative = f"artifacts/{artifact.name}/versions/{number}.json"
            try:
                self.store.create(relative, record.to_bytes())
                return record, True
            except FileExistsError:
                if self._written_by_us(relative, record):
                    return record, True
                numbers = self._version_numbers(artifact.name)
                twin = self._newest_of(artifact.name, numbers)
                if twin is not None and (twin.content_digest, twin.type) == (
                    record.content_digest,
                    record.type,
                ):
                    return twin, False
                number = max(number + 1, numbers[-1] + 1 if numbers else 0)
        raise ConflictError(
            f"{artifact.name}: could not claim a version number after {_MAX_CLAIM_ATTEMPTS} tries"
        )

    def _written_by_us(self, relative: str, record: VersionRecord) -> bool:
        """Whether the record refused at ``relative`` is ``record`` itself, byte for byte: a write that
        landed but whose answer was lost, so that the client sent it again and the server refused the
        copy. Its creation time (microseconds) and author make it no other writer's."""
        try:
            return self.store.read_created(relative) == record.to_bytes()
        except FileNotFoundError as exc:
            if isinstance(exc, RefstoreError):
                raise
            return False

    def _newest_of(self, name: str, numbers: list[int]) -> VersionRecord | None:
        """The record of the highest of ``numbers``; ``None`` when there is none (a listing that lags)."""
        try:
            return self._record(name, numbers[-1]) if numbers else None
        except ArtifactNotFoundError:
            return None

    def _remember_content(self, record: VersionRecord) -> None:
        relative = f"artifacts/{record.name}/digests/{_hex(record.content_digest)}.json"
        with contextlib.suppress(FileExistsError):  # already there: same bytes, or a concurrent twin
            self.store.create(relative, str(record.version).encode())

    def _version_with_content(self, name: str, content_digest: str) -> VersionRecord | None:
        """A version that holds this content, from the content index (the first one logged); ``None``
        when the index has none, or names a version that is gone or holds other content.

        The index is not sealed: it is a hint, and what it names is used only after the version's own
        (sealed) record shows this content digest. A damaged entry, edited or unreadable, costs a manifest
        write that was not needed, never a wrong version."""
        relative = f"artifacts/{name}/digests/{_hex(content_digest)}.json"
        try:
            number = parse(self.store.read_created(relative), self.store.url_of(relative), "content index")
            if not (type(number) is int and number >= 0):
                return None
            record = self._record(name, number)
        except (FileNotFoundError, ManifestError, ArtifactNotFoundError):
            return None  # not indexed, or a stale or damaged index entry (IntegrityError included)
        if lifecycle.tombstone_of(self.store, name, number) is not None:
            return None  # deleted: a gc may have freed its manifest
        return record if record.content_digest == content_digest else None

    # -- reading ----------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether a registry is at the root: its marker, or (made before markers) any of its folders."""
        if self.store.exists(REGISTRY_MARKER):
            return True
        return any(n in _REGISTRY_ENTRIES for n in self.store.list(""))

    def get(self, ref: str) -> ArtifactVersion:
        """``"name"``, ``"name:latest"``, ``"name:v3"`` or ``"name:<alias>"``."""
        return self._version(self._resolve(ref))

    def versions(self, name: str, *, deleted: bool = False) -> list[ArtifactVersion]:
        """Every version of ``name`` that is not deleted, oldest first; with ``deleted``, the deleted ones
        too (their ``.deleted`` says when, by whom and why)."""
        check_name(name)
        numbers, live = self._numbers(name)
        if not numbers:
            raise self._unknown(name)
        if not deleted:
            if not live:
                raise self._all_deleted(name)
            return [self._version(self._record(name, n)) for n in live]
        gone = set(numbers) - set(live)
        return [
            self._version(
                self._record(name, n),
                deleted=lifecycle.tombstone_of(self.store, name, n) if n in gone else None,
            )
            for n in numbers
        ]

    def artifacts(self, *, deleted: bool = False) -> list[str]:
        """The names of every artifact with at least one version that is not deleted; with ``deleted``,
        also those whose every version is deleted (a folder whose name breaks the naming rules holds none)."""
        names = [n for n in self.store.list("artifacts") if is_name(n)]
        return [n for n in names if self._numbers(n)[0 if deleted else 1]]

    def diff(self, a: str, b: str) -> ManifestDiff:
        """What changed from version ``a`` to version ``b``."""
        return diff_manifests(self.get(a).manifest, self.get(b).manifest)

    def aliases_of(self, name: str, version: int) -> list[str]:
        """The aliases that point at a version now, ``latest`` included; none for a deleted version."""
        live = self._numbers(name)[1]
        if version not in live:
            return []
        found = [a for a, r in _aliases.heads(self.store, name).items() if r.version == version]
        return sorted([*found, *(["latest"] if live[-1] == version else [])])

    def manifest(self, digest: str) -> Manifest:
        """The stored manifest with that digest, checked against it. One that a gc moved to ``trash/`` (a
        gc that was killed, or one still running beside the log of this version) is read from there and
        put back, with the stored copies it names (:func:`refstore.snapshots.gc.recover_manifest`)."""
        cached = self._manifests.get(digest)
        if cached is None:
            relative = manifest_path(digest)
            try:
                data = self.store.read(relative)
            except FileNotFoundError:
                recovered = recover_manifest(self.store, digest)
                if recovered is None:
                    url = self.store.url_of(relative)
                    raise ArtifactNotFoundError(f"{url}: manifest is missing") from None
                cached = recovered
            else:
                source = self.store.url_of(relative)
                cached = read_manifest(data, digest, self._load_chunk, source=source)
            self._manifests[digest] = cached
        return cached

    def _load_chunk(self, digest: str) -> bytes:
        return load_chunk(self.store, digest)

    def record_use(self, ref: str, run_path: str) -> ArtifactVersion:
        """Note that the run ``run_path`` used the version ``ref`` names (lineage)."""
        record = self._resolve(ref)
        relative = f"artifacts/{record.name}/lineage/{record.version}/{run_path.replace('/', '~')}"
        with contextlib.suppress(FileExistsError):  # already there: same bytes, or a concurrent twin
            self.store.create(relative, run_path.encode())
        return self._version(record)

    def users_of(self, name: str, version: int) -> list[str]:
        """Run paths that used ``name:v<version>``."""
        return sorted(n.replace("~", "/") for n in self.store.list(f"artifacts/{name}/lineage/{version}"))

    def _unknown(self, name: str) -> ArtifactNotFoundError:
        """``name: no such artifact``, naming the closest existing ones (a typo, most often)."""
        close = difflib.get_close_matches(name, self.store.list("artifacts"), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return ArtifactNotFoundError(f"{name}: no such artifact in {self.root}{hint}")

    def _resolve(self, ref: str) -> VersionRecord:
        """The record of the version ``ref`` names; :class:`DeletedVersionError` for a deleted one (an alias
        left on a deleted version by a process that died reads as no alias at all)."""
        name, selector = parse_ref(ref)
        if selector == "latest":
            numbers, live = self._numbers(name)
            if not live:
                raise self._all_deleted(name) if numbers else self._unknown(name)
            return self._record(name, live[-1])
        number = version_number(selector)
        if number is None:
            pointer = _aliases.head(self.store, name, selector)
            if pointer is None or pointer.version is None:
                raise ArtifactNotFoundError(f"{name}:{selector}: no such version or alias in {self.root}")
            number = pointer.version
        record = self._record(name, number)
        tombstone = lifecycle.tombstone_of(self.store, name, number)
        if tombstone is not None:
            what = f"{name}:v{number}" if selector == f"v{number}" else f"{name}:{selector} (v{number})"
            raise DeletedVersionError(
                f"{what} was deleted at {tombstone.deleted_at} by {tombstone.deleted_by} ({tombstone.reason})"
            )
        return record

    def _numbers(self, name: str) -> tuple[list[int], list[int]]:
        """Every claimed version number of ``name``, and those not deleted. The tombstones are listed first:
        a version that is not deleted when this starts is never left out (see :mod:`.lifecycle`)."""
        deleted = lifecycle.deleted_numbers(self.store, name)
        numbers = self._version_numbers(name)
        return numbers, [n for n in numbers if n not in deleted]

    def _all_deleted(self, name: str) -> DeletedVersionError:
        return DeletedVersionError(f"{name}: every version of {name} is deleted in {self.root}")

    def _record(self, name: str, number: int) -> VersionRecord:
        relative = f"artifacts/{name}/versions/{number}.json"
        try:
            data = self.store.read_created(relative)
        except FileNotFoundError as exc:
            if isinstance(exc, RefstoreError):  # a missing bucket, named by the backend
                raise
            raise ArtifactNotFoundError(f"{name}:v{number}: no such version in {self.root}") from None
        record = VersionRecord.from_bytes(data, self.store.url_of(relative))
        if (record.name, record.version) != (name, number):
            raise IntegrityError(
                f"{self.store.url_of(relative)}: record names {record.name}:v{record.version}"
            )
        return record

    def _version_numbers(self, name: str) -> list[int]:
        names = self.store.list(f"artifacts/{name}/versions")
        stems = (n.removesuffix(".json") for n in names if n.endswith(".json"))
        return sorted(int(s) for s in stems if s.isascii() and s.isdigit() and str(int(s)) == s)

    def _version(
        self,
        record: VersionRecord,
        *,
        created: bool = False,
        edit: EditRecord | Unread | None = UNREAD,
        deleted: Tombstone | None = None,
    ) -> ArtifactVersion:
        return ArtifactVersion(self, record, created=created, edit=edit, deleted=deleted)
