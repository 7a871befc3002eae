"""Log intents, and getting back from gc's trash what a version relies on.

A log first writes an intent naming the manifest and blobs it is about to rely on (``intents/<uuid>.json``),
then checks and writes them, then withdraws the intent: a gc running at the same time keeps everything an
intent names (see :mod:`refstore.snapshots.gc`). A reader that finds a version's manifest in ``trash/``
(a gc was killed between moving it there and putting it back) puts it back with the copies it names.
Both the registry and gc use this module; it uses neither.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Coroutine, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from ..core.chunks import read_manifest, stored_digests
from ..core.exceptions import ArtifactNotFoundError, RefstoreError
from ..core.loop import gather_limited, run_sync
from ..core.manifest import Manifest, canonical_json
from ..storage.backends._base import call_fs
from ..storage.download import blob_path
from ..storage.store import Store

INTENT_FORMAT = "refstore.intent/1"
TRASH = "trash"
CONCURRENCY = 16


def manifest_path(digest: str) -> str:
    """Where the manifest ``digest`` names is stored, registry-relative."""
    hex_digest = digest.split(":", 1)[1]
    return f"manifests/{hex_digest[:2]}/{hex_digest}.json"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@contextlib.contextmanager
def log_intent(store: Store, manifest: Manifest) -> Iterator[None]:
    """Announce what a log is about to rely on before it checks or writes anything; withdraw it after."""
    paths = [*map(manifest_path, stored_digests(manifest)), *copy_paths(manifest)]
    body = {"format": INTENT_FORMAT, "created_at": _now().isoformat(), "paths": sorted(set(paths))}
    relative = f"intents/{uuid.uuid4().hex}.json"
    store.create(relative, canonical_json(body))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # left behind, it only protects its paths until it expires
            store.delete(relative)


def recover_manifest(store: Store, digest: str) -> Manifest | None:
    """The manifest ``digest`` names, from ``trash/`` where an interrupted (or still running) gc moved it,
    checked against ``digest``; ``None`` when it is not there. It is put back, with every stored copy it
    names that is in the trash too: a version relies on them. Putting back is best effort (a reader may
    not be allowed to write); the manifest is returned either way."""
    relative = manifest_path(digest)
    trashed = f"{TRASH}/{relative}"
    try:
        data = store.read(trashed)
    except FileNotFoundError:
        return None
    manifest = read_manifest(data, digest, lambda d: load_chunk(store, d), source=store.url_of(trashed))
    needed = {relative, *map(manifest_path, stored_digests(manifest)), *copy_paths(manifest)}
    with contextlib.suppress(OSError, RefstoreError):
        run_all(_put_back(store, p) for p in sorted(needed.intersection(trash_leftovers(store))))
    return manifest


def copy_paths(manifest: Manifest) -> Iterator[str]:
    """The blob-store paths of the stored copies ``manifest`` names."""
    return (blob_path(e.digest) for e in manifest.values() if e.is_copy)


def load_chunk(store: Store, digest: str) -> bytes:
    """The stored chunk ``digest`` of a chunked manifest (:mod:`refstore.core.chunks`), put back from
    ``trash/`` if a gc moved it there; the caller checks it against ``digest``."""
    relative = manifest_path(digest)
    try:
        return store.read(relative)
    except FileNotFoundError:
        pass
    try:
        data = store.read(f"{TRASH}/{relative}")
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"{store.url_of(relative)}: manifest chunk is missing") from None
    with contextlib.suppress(OSError, RefstoreError):
        run_all([_put_back(store, relative)])
    return data


async def _put_back(store: Store, relative: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # another reader or gc put it back first
        await restore(store, relative)


def trash_leftovers(store: Store) -> list[str]:
    """What an interrupted gc left in ``trash/``, by the path it came from."""
    return sorted(p.removeprefix(f"{TRASH}/") for p in listing(store, [TRASH]))


async def restore(store: Store, relative: str) -> None:
    if await store.exists_async(relative):
        await remove(store, f"{TRASH}/{relative}")
    else:
        await store.backend.move(store.full(f"{TRASH}/{relative}"), store.full(relative))


async def remove(store: Store, relative: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        await call_fs(store.backend.fs, "rm_file", store.full(relative))


def run_all(jobs: Iterable[Coroutine[Any, Any, None]]) -> None:
    pending = list(jobs)
    if pending:
        run_sync(gather_limited, pending, CONCURRENCY)


def listing(store: Store, folders: Iterable[str]) -> dict[str, int]:
    """Every object under the registry folders, by relative path, with its size."""
    found: dict[str, int] = {}
    for folder in folders:
        base = store.full(folder)
        store.backend.fs.invalidate_cache(base)
        try:
            infos = run_sync(call_fs, store.backend.fs, "find", base, detail=True)
        except FileNotFoundError:
            continue
        for path, info in infos.items():
            relative = f"{folder}/{str(path).rstrip('/')[len(base) + 1 :]}"
            if info.get("type", "file") == "file" and ".tmp-" not in relative:
                found[relative] = int(info.get("size") or 0)
    return found
