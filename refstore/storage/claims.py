"""Create-only writes that cannot lie, on storage that may ignore them.

A registry trusts create-only writes for version numbers, the content index, log intents and ``gc.lock``:
of two writers of one key, exactly one may succeed. Local files (``O_EXCL``), GCS (``ifGenerationMatch=0``)
and Azure (``If-None-Match: *``) refuse the second write by their API's contract. S3-compatible servers
differ: Ceph RGW ignores ``If-None-Match: *`` in versioned buckets (it stores a new version and answers
200), so trusting it there hands one version number to several writers and loses their records silently.

So a registry on a backend with ``probe_create_only`` is probed once, at its first write: a probe key is
written create-only twice. The answer is kept in the registry (``storage.json``) and read once per
:class:`~refstore.storage.store.Store`:

- ``"refused"``: the second write was refused; create-only writes are trusted as they are.
- ``"oldest-version"``: it was accepted, and the bucket keeps object versions. A create-only write is then a
  plain write followed by a listing of the key's versions: the oldest version since the key was last
  deleted is the one that was created. A writer whose version is not that one deletes its version and gets
  :class:`FileExistsError`, exactly as if the server had refused it; readers of created keys read that
  oldest version (:meth:`CreateOnly.read`), whatever was written after it.
- accepted with no versions kept: no writer can tell that it won, so every write to the registry fails with
  :class:`~refstore.RefstoreError` saying what the server does and what to do (this answer is not kept:
  the next write probes again, so enabling versioning on the bucket fixes it).

Keys written this way are never replaced afterwards (only deleted, like ``gc.lock``). The probe also notes
whether the bucket kept versions; a create-only write that later makes a version in a bucket that kept none
(versioning was turned on since) probes again, and settles that write as a claim if the answer changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..core.bounded_json import parse
from ..core.exceptions import ConflictError, IntegrityError, RefstoreError
from ..core.meta import KeyVersion

if TYPE_CHECKING:
    from .store import Store

__all__ = ["MARKER", "CreateOnly", "claimed_version"]

#: The registry file that keeps the probe's answer.
MARKER = "storage.json"
MARKER_FORMAT = "refstore.storage/1"
PROBES = "probes"
REFUSED = "refused"
OLDEST_VERSION = "oldest-version"


def claimed_version(history: list[KeyVersion]) -> str | None:
    """The version a create-only write made: the oldest since the newest delete marker (``None``: the key
    is deleted or was never written). ``history`` is oldest first."""
    claimed = None
    for entry in history:
        if entry.deleted:
            claimed = None
        elif claimed is None:
            claimed = entry.version_id
    return claimed


@dataclass(frozen=True)
class Answer:
    """What the probe found: the mode, and whether the bucket kept object versions then."""

    mode: str
    versions: bool


class CreateOnly:
    """The create-only writes and reads of one registry store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._answer: Answer | None = None  # kept or probed, for writers and readers
        self._unprobed = False  # a reader found no answer kept: the registry trusted create-only writes
        self._lock = asyncio.Lock()

    async def create(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative`` only if nothing is there; else :class:`FileExistsError`."""
        backend, path = self.store.backend, self.store.full(relative)
        answer = await self._write_answer()
        if answer.mode == REFUSED:
            written = await backend.put_create_only(path, data)
            if written is not None and not answer.versions:
                await self._versioning_changed(relative, written)
            return
        await self._settle_claim(relative, await backend.put_version(path, data))

    async def _settle_claim(self, relative: str, mine: str | None) -> None:
        """Keep the version ``mine`` just written at ``relative`` if it is the key's oldest since its last
        deletion; else delete it and raise :class:`FileExistsError`."""
        backend, path = self.store.backend, self.store.full(relative)
        history = await backend.key_versions(path)
        if mine is None or all(entry.version_id != mine for entry in history):
            raise ConflictError(
                f"{self.store.url_of(relative)}: the version just written is not among the object's "
                "versions; the bucket's versioning changed, or its listings are not consistent"
            )
        if claimed_version(history) == mine:
            return
        with contextlib.suppress(Exception):  # the answer stands even if the cleanup fails
            await backend.delete_version(path, mine)  # the winner's bytes are the latest again
        raise FileExistsError(f"{self.store.url_of(relative)} already exists")

    async def _versioning_changed(self, relative: str, written: str) -> None:
        """A create-only write made an object version in a bucket that kept none when it was probed:
        probe again, and if the server now ignores create-only writes, settle this one as a claim."""
        async with self._lock:
            self._answer = await self._probe_and_keep()
        if self._answer.mode == OLDEST_VERSION:
            await self._settle_claim(relative, written)

    async def read(self, relative: str) -> bytes:
        """The bytes that the create-only write of ``relative`` put there (:class:`FileNotFoundError`
        when there are none)."""
        if await self._read_mode() != OLDEST_VERSION:
            return await self.store.read_async(relative)
        backend, path = self.store.backend, self.store.full(relative)
        claimed = claimed_version(await backend.key_versions(path))
        if claimed is None:
            raise FileNotFoundError(f"{self.store.url_of(relative)}: no such object")
        return await backend.read_version(path, claimed)

    # -- the probe --------------------------------------------------------------------------------------

    async def _read_mode(self) -> str:
        """The kept answer; a registry never probed was written trusting create-only writes."""
        if not self.store.backend.probe_create_only:
            return REFUSED
        async with self._lock:
            if self._answer is None and not self._unprobed:
                self._answer = await self._kept()
                self._unprobed = self._answer is None
        return REFUSED if self._answer is None else self._answer.mode

    async def _write_answer(self) -> Answer:
        if not self.store.backend.probe_create_only:
            return Answer(REFUSED, versions=True)
        async with self._lock:
            if self._answer is None:
                self._answer = await self._kept() or await self._probe_and_keep()
        return self._answer

    async def _probe_and_keep(self) -> Answer:
        answer = await self._probe()
        body = {
            "format": MARKER_FORMAT,
            "create_only": answer.mode,
            "versions": answer.versions,
            "probed_at": _now(),
        }
        await self.store.replace_async(MARKER, json.dumps(body, sort_keys=True).encode())
        return answer

    async def _kept(self) -> Answer | None:
        url = self.store.url_of(MARKER)
        try:
            body = parse(await self.store.read_async(MARKER), url, "storage record")
            mode, versions = body["create_only"], body.get("versions", False)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # IntegrityError included
            reason = str(exc) if isinstance(exc, IntegrityError) else f"{url}: unreadable ({exc})"
            raise IntegrityError(f"{reason}; delete it to probe again") from None
        if mode not in (REFUSED, OLDEST_VERSION):
            raise RefstoreError(f"{self.store.url_of(MARKER)}: unknown create_only {mode!r}; delete it")
        return Answer(str(mode), versions=versions is True)

    async def _probe(self) -> Answer:
        """Write a probe key create-only twice: is the second write refused, and if not, are versions kept?"""
        backend = self.store.backend
        relative = f"{PROBES}/create-only-{uuid.uuid4().hex}"
        path = self.store.full(relative)
        first = await backend.put_create_only(path, b"first")
        try:
            await backend.put_create_only(path, b"second")
        except FileExistsError:
            await self._remove_probe(relative)
            return Answer(REFUSED, versions=first is not None)
        history = await backend.key_versions(path)
        try:
            if len(history) == 2 and await backend.read_version(path, history[0].version_id) == b"first":
                return Answer(OLDEST_VERSION, versions=True)
        finally:
            await self._remove_probe(relative)
        raise RefstoreError(
            f"{self.store.url}: this storage accepts a second create-only write of one object "
            "(PUT If-None-Match: * overwrote it) and keeps no object versions, so concurrent writers would "
            "silently replace each other's versions; enable versioning on the bucket (refstore then claims "
            "each key by its oldest object version) or use a server that honours If-None-Match"
        )

    async def _remove_probe(self, relative: str) -> None:
        """Delete the probe key, every version of it where the bucket keeps versions."""
        backend, path = self.store.backend, self.store.full(relative)
        history = await backend.key_versions(path)
        for entry in history:
            await backend.delete_version(path, entry.version_id)
        if not history:
            await self.store.delete_async(relative)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
