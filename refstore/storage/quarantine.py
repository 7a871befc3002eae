"""Blobs of the registry's blob store found corrupt on read: moved aside to ``quarantine/``, never deleted.

A copy entry's bytes live at ``blobs/<aa>/<hex>``, named by their xxh3_128 hash. When a read (a download,
``open``) finds bytes that do not match that name, the blob is fetched once more, to rule out damage in
transit; if the stored bytes are wrong again, it is moved to ``quarantine/blobs/<aa>/<hex>.<UTC time>``
and the read fails with :class:`CorruptBlobError` naming both (an :class:`~refstore.IntegrityError`, and
the :class:`~refstore.ObjectChangedError` that reads of altered bytes raised before). Kept, not deleted:
a corrupt blob may be the only trace of what went wrong (a disk, a tool writing into the registry), and
a blob taken for corrupt by mistake (a path that damages every transfer alike) can be moved back. With
the name free again, the next log of a file holding those bytes uploads them anew (logs skip only blobs
that exist), and the versions that use it download again. gc never deletes ``quarantine/``; it lists what
is there (``GCReport.quarantined``) so that someone looks at it.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path

from ..core.exceptions import CorruptBlobError, ObjectChangedError
from ..core.loop import run_sync
from .backends import ObjectMeta
from .backends._base import call_fs
from .hashing import ALGORITHM
from .store import Store

QUARANTINE = "quarantine"


async def quarantine_if_corrupt(store: Store, relative: str, pin: ObjectMeta, scratch: str) -> str | None:
    """Fetch the blob at ``relative`` (pinned by ``pin``) again to ``scratch``; when its bytes still do
    not hash to its name, move it to ``quarantine/`` and return where it went (``None``: the blob is fine,
    or already gone: another reader moved it first)."""
    try:
        try:
            content = await store.backend.fetch(pin, Path(scratch))
        except ObjectChangedError:
            content = None
        except FileNotFoundError:  # another reader quarantined it first
            return None
        if content is not None and pin.digest == f"{ALGORITHM}:{content}":
            return None  # damaged on the way, not in the store
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = f"{QUARANTINE}/{relative}.{stamp}"
    try:
        await store.backend.move(store.full(relative), store.full(target))
    except FileNotFoundError:
        return None
    return target


def quarantined_blobs(store: Store) -> set[str]:
    """The names (content hex) of the blobs in ``quarantine/``."""
    base = store.full(f"{QUARANTINE}/blobs")
    store.backend.fs.invalidate_cache(base)
    try:
        found = run_sync(call_fs, store.backend.fs, "find", base)
    except FileNotFoundError:
        return set()
    return {str(path).rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0] for path in found}


def corrupt_blob_error(store: Store, relative: str, moved: str, cause: Exception) -> CorruptBlobError:
    """The error a read that found the blob ``relative`` corrupt (and moved it to ``moved``) fails with."""
    return CorruptBlobError(
        f"{store.url_of(relative)}: stored bytes do not hash to the blob's name ({cause}); moved to "
        f"{store.url_of(moved)}, never deleted; log a file with these bytes again to restore the blob"
    )


def check_copy(store: Store, relative: str, pin: ObjectMeta, scratch: str, cause: Exception) -> None:
    """:func:`quarantine_if_corrupt` from synchronous code; raises the :class:`IntegrityError` when it
    moved the blob."""
    moved = run_sync(quarantine_if_corrupt, store, relative, pin, scratch)
    if moved is not None:
        raise corrupt_blob_error(store, relative, moved, cause) from cause
