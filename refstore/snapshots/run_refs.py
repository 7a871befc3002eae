"""The blobs that runs rely on: gc keeps every blob a run file state names (see :mod:`refstore.snapshots.gc`).

A run stores the bytes of each synced state in the registry's blob store, ``blobs/<aa>/<hex>``, which
artifact copies use too (the same checkpoint saved by a run and logged as an artifact is stored once), and
records the state in ``runs/<project>/<id>/files/<name>/<N>.json``. Those records are the run's
references. A record is create-only and never changes once written, so :class:`RunReferences` reads each
one once however often gc marks. A record left empty (a crash cut it short: it was never reported synced)
references nothing.

Why a run never loses a blob to a concurrent gc. A push writes the bytes (or finds them there), then the
record, and **then checks that the bytes are still there**, uploading them again if not
(:mod:`refstore.runs.files`). gc moves garbage to ``trash/`` first and **then** reads the records again
before it deletes anything. Each side writes, then reads what the other writes: if gc's second reading
missed the record (or found it half-written), the record was completed after that reading, so the run's
check came after the move to the trash, found the bytes gone and put them back; if gc saw the record, gc
moves the blob back itself. No clock and no expiry is involved, and an old orphan blob a push reuses is as
safe as one it uploads. A reader that finds a record whose blob is in ``trash/`` meanwhile reads it there.
"""

from __future__ import annotations

import asyncio
import re

from ..core.exceptions import IntegrityError, ManifestError
from ..core.records import FileState
from ..storage.download import blob_path
from ..storage.store import Store
from .intents import listing, run_all

_STATE_RECORD = re.compile(r"runs/[^/]+/[^/]+/files/[^/]+/\d+\.json")
#: A record read while its writer was still writing it (a local registry) reads whole a moment later.
_REREAD_AFTER = 0.2


class RunReferences:
    """The blobs the run file states of one registry name; records read once, remembered after."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._digests: dict[str, str] = {}

    def blobs(self) -> set[str]:
        """Registry-relative paths of the blobs every run file state names now (one listing of ``runs/``,
        and a read of each record not read before)."""
        records = [p for p in listing(self.store, ["runs"]) if _STATE_RECORD.fullmatch(p)]
        run_all(self._read(p) for p in records if p not in self._digests)
        return {blob_path(self._digests[p]) for p in records if p in self._digests}

    async def _read(self, relative: str) -> None:
        for attempt in range(2):
            try:
                data = await self.store.read_async(relative)
            except FileNotFoundError:
                return  # its run was deleted since the listing
            if not data:
                return  # cut short by a crash: never reported synced, references nothing
            try:
                self._digests[relative] = FileState.from_bytes(data, self.store.url_of(relative)).digest
                return
            except ManifestError as exc:  # IntegrityError included
                if attempt:
                    raise IntegrityError(f"{exc}; gc stops") from None
            await asyncio.sleep(_REREAD_AFTER)
