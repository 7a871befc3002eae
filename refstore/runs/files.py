"""A run's files in the registry: every synced state, its bytes in the registry's blob store.

Layout::

    blobs/<aa>/<hex>                                   the bytes of a state, by xxh3_128 (uploaded first,
                                                       atomically), shared with artifact copies
    runs/<project>/<id>/files/<quoted path>/<N>.json   state N of a file (a create-only claim, written
                                                       after its bytes)
    runs/<project>/<id>/blobs/<hex>                    where runs made before the shared store keep their
                                                       bytes (still read)

The bytes of a state are checked again once its record is written and put back if a concurrent gc took
them meanwhile: see :mod:`refstore.snapshots.run_refs` for why that keeps them safe.

``<quoted path>`` is the run-relative path with every ``/`` percent-encoded, so one listing names every
file. A reader only ever sees states whose bytes are complete.

Percent-encoding makes a name up to three times longer (nine bytes for some characters), and file systems
take at most 255 bytes per name, so a path whose encoding is longer than :data:`MAX_NAME` gets a name that
fits: the start of its encoding, then ``%~`` and a SHA-256 of the path (``%~`` never occurs in an encoding,
so a short name never looks like a long one). The name is computed from the path, so restoring a file finds
it the same way; listing the run's files reads the path back from the state records of such names.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

from ..core.exceptions import ConflictError, IntegrityError, RunError
from ..core.loop import run_sync
from ..snapshots.intents import TRASH
from ..storage.backends import ObjectMeta
from ..storage.backends._base import BatchedWrites, call_fs
from ..storage.download import blob_path
from ..storage.hashing import hash_file
from ..storage.quarantine import check_copy
from ..storage.store import Store
from .records import FileState

_MAX_CLAIM_ATTEMPTS = 1000
_REMOTE_PUSHES = 8
#: Longest folder name for a file, in bytes (all ASCII): well within the 255 bytes of common file systems.
MAX_NAME = 200
#: Marks a name shortened with a hash (never in a percent-encoding: ``%`` is always followed by hex digits).
_HASHED = "%~"
_HEAD = MAX_NAME - len(_HASHED) - 32


def encode_path(relpath: str) -> str:
    """One folder name for a run-relative path, at most :data:`MAX_NAME` bytes (``.tmp-`` escaped: the
    store hides such names)."""
    name = quote(relpath, safe="").replace(".tmp-", "%2Etmp-")
    if len(name) <= MAX_NAME:
        return name
    head = name[:_HEAD]
    escape = head.rfind("%", len(head) - 2)
    if escape >= 0:  # never cut an escape in two
        head = head[:escape]
    return f"{head}{_HASHED}{hashlib.sha256(relpath.encode()).hexdigest()[:32]}"


def decode_path(name: str) -> str | None:
    """The path ``name`` encodes; ``None`` for a shortened name (its state records tell the path)."""
    return None if _HASHED in name else unquote(name)


def short_name(name: str, limit: int = 100) -> str:
    """``name`` cut to at most ``limit`` UTF-8 bytes: a scratch name built on it stays a valid name."""
    return name.encode()[:limit].decode(errors="ignore")


class RunFiles:
    """The synced files of the run ``project/run_id`` in a registry's store."""

    def __init__(self, store: Store, run_path: str) -> None:
        self.store = store
        self.run_path = run_path
        self.base = f"runs/{run_path}"
        #: On a local registry: writes fsynced per batch (:meth:`make_durable`), not one by one.
        self._batched = store.backend.batched_writes()

    @property
    def parallel_pushes(self) -> int:
        """How many pushes to run at once: one into a local registry, where a push is a few system calls
        that threads only slow down by contending for the interpreter (10,000 files: 4.7 s with one
        thread, 7.4 s with eight, on tmpfs), and several where each push waits on the network."""
        return 1 if self._batched is not None else _REMOTE_PUSHES

    def staging_path(self, folder: Path) -> Path:
        """A new name for a private copy of a file about to be pushed: beside the registry's blobs on a
        local registry (the push then links it into place, no second copy), else in ``folder``."""
        if self._batched is not None:
            return Path(self._batched.staging_path(self.store.full("blobs")))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / os.urandom(8).hex()

    def push(
        self, relpath: str, staged: Path, digest: str, size: int, policy: str, after: int | None = None
    ) -> FileState:
        """Upload the bytes of ``staged`` (unless the registry has them), claim the file's next state, and
        then make sure the bytes are still there (a gc may have taken them for garbage meanwhile).

        ``after``: the newest state of the file this process knows of (``-1``: none). The usual push is one
        trip to the IO loop (many files are pushed from several threads at once): the bytes, a claim of
        state ``after + 1``, the check; only when that number is taken are the file's states listed. Into a
        local registry the push runs in the calling thread and fsyncs nothing: call :meth:`make_durable`
        before reporting the state synced.
        """
        if self._batched is not None:  # in this thread: no trips to the IO loop
            claimed = self._push_batched(self._batched, relpath, staged, digest, size, policy, after)
        else:
            claimed = run_sync(self._push, relpath, staged, digest, size, policy, after)
        if claimed is not None:
            return claimed
        record = self._claim(relpath, digest, size, policy)
        if self._batched is not None:
            self._put_bytes(self._batched, staged, digest)
        else:
            run_sync(self._upload_missing, staged, digest)
        return record

    def _push_batched(
        self,
        batched: BatchedWrites,
        relpath: str,
        staged: Path,
        digest: str,
        size: int,
        policy: str,
        after: int | None,
    ) -> FileState | None:
        """:meth:`_push` into a local registry, made durable later by :meth:`make_durable`."""
        self._put_bytes(batched, staged, digest)
        if after is None:
            return None
        record = FileState(relpath, after + 1, digest, size, policy, _now())
        relative = self._state(relpath, record.state)
        try:
            with self.store.failures(relative):
                batched.create_only(self.store.full(relative), record.to_bytes())
        except FileExistsError:
            return None
        self._put_bytes(batched, staged, digest)  # after the record: still there, or there again
        return record

    def _put_bytes(self, batched: BatchedWrites, staged: Path, digest: str) -> None:
        """Link ``staged`` in as the blob of ``digest`` unless the blob is there (one system call)."""
        blob = blob_path(digest)
        with self.store.failures(blob):
            batched.put_staged(str(staged), self.store.full(blob))

    async def _push(
        self, relpath: str, staged: Path, digest: str, size: int, policy: str, after: int | None
    ) -> FileState | None:
        await self._upload_missing(staged, digest)
        if after is None:
            return None
        record = FileState(relpath, after + 1, digest, size, policy, _now())
        try:
            await self.store.create_async(self._state(relpath, record.state), record.to_bytes())
        except FileExistsError:
            return None
        await self._upload_missing(staged, digest)  # after the record: still there, or there again
        return record

    async def _upload_missing(self, staged: Path, digest: str) -> None:
        blob = blob_path(digest)
        if not await self.store.exists_async(blob):
            with self.store.failures(blob):
                await self.store.backend.upload(staged, self.store.full(blob))

    def make_durable(self) -> None:
        """Make every state pushed so far survive a crash (on a local registry its bytes and record are
        written without fsync, and fsynced here in one batch). Call it before reporting them synced."""
        if self._batched is not None:
            self._batched.make_durable()

    def _claim(self, relpath: str, digest: str, size: int, policy: str) -> FileState:
        number = self._next_state(relpath)
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            synced_at = _now()
            record = FileState(relpath, number, digest, size, policy, synced_at)
            try:
                self.store.create(self._state(relpath, number), record.to_bytes())
                return record
            except FileExistsError:  # a concurrent process of the same (resumed) run took it
                number = max(number + 1, self._next_state(relpath))
        raise ConflictError(f"{self.run_path}/{relpath}: could not claim a state after many tries")

    def names(self) -> list[str]:
        """Run-relative paths of every file with at least one synced state."""
        found = []
        for name in self.store.list(f"{self.base}/files"):
            path = decode_path(name)
            if path is None:
                path = self._path_of(name)
            if path is not None:
                found.append(path)
        return sorted(found)

    def _path_of(self, name: str) -> str | None:
        """The path of the shortened name ``name``, from its newest state record (checked against it)."""
        numbers = self._numbers(name)
        if not numbers:
            return None
        relative = f"{self.base}/files/{name}/{numbers[-1]}.json"
        record = FileState.from_bytes(self.store.read_created(relative), self.store.url_of(relative))
        if encode_path(record.path) != name:
            raise IntegrityError(f"{self.store.url_of(relative)}: record names {record.path}")
        return record.path

    def states(self, relpath: str) -> list[int]:
        """The state numbers synced for ``relpath``, oldest first."""
        return self._numbers(encode_path(relpath))

    def _numbers(self, name: str) -> list[int]:
        names = self.store.list(f"{self.base}/files/{name}")
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def has(self, relpath: str, state: int) -> bool:
        return self.store.exists(self._state(relpath, state))

    def newest(self, relpath: str) -> FileState | None:
        """The newest synced state of ``relpath``, checked; ``None`` when it has none."""
        for number in reversed(self.states(relpath)):
            # an empty record: a crash cut it short, and it was never reported synced
            if self.store.read_created(self._state(relpath, number)):
                return self.state(relpath, number)
        return None

    def state(self, relpath: str, number: int) -> FileState:
        relative = self._state(relpath, number)
        return self._checked(self.store.read_created(relative), relpath, number)

    def history(self, relpath: str) -> list[FileState]:
        """Every synced state of ``relpath``, oldest first, each record read once (one a crash left empty,
        never reported synced, is passed over)."""
        found = []
        for number in self.states(relpath):
            data = self.store.read_created(self._state(relpath, number))
            if data:
                found.append(self._checked(data, relpath, number))
        return found

    def _checked(self, data: bytes, relpath: str, number: int) -> FileState:
        source = self.store.url_of(self._state(relpath, number))
        record = FileState.from_bytes(data, source)
        if (record.path, record.state) != (relpath, number):
            raise IntegrityError(f"{source}: record names {record.path} {record.state}")
        return record

    def download(self, state: FileState, dest: Path) -> None:
        """Write the bytes of ``state`` to ``dest`` by atomic rename, checked against their digest."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.with_name(f".{short_name(dest.name)}.refstore-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            blob = self._fetch(state, staging)
            if hash_file(staging) != state.digest:
                self._check_blob(state, blob, staging)
            os.replace(staging, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()

    def _fetch(self, state: FileState, target: Path) -> str:
        """Fetch the bytes of ``state`` to ``target``; the registry-relative path they came from: the blob
        store, else the run's own blobs (a run made before the shared store), else ``trash/`` (a gc is
        moving them back, or was killed before it could), else the blob store again (moved back since)."""
        shared = blob_path(state.digest)
        for relative in (
            shared,
            f"{self.base}/blobs/{shared.rsplit('/', 1)[1]}",
            f"{TRASH}/{shared}",
            shared,
        ):
            with contextlib.suppress(FileNotFoundError):
                run_sync(call_fs, self.store.backend.fs, "get_file", self.store.full(relative), str(target))
                return relative
        raise RunError(f"{self.store.url_of(shared)}: the bytes of {state.path} are missing")

    def _check_blob(self, state: FileState, blob: str, staging: Path) -> None:
        """Bytes fetched from ``blob`` did not match ``state``: a blob of the blob store whose stored bytes
        are wrong goes to ``quarantine/`` (:mod:`refstore.storage.quarantine`, as for artifact copies) and
        the read fails; bytes damaged on the way are fetched once more."""
        mismatch = IntegrityError(f"{self.store.url_of(blob)}: bytes do not match {state.digest}")
        if blob != blob_path(state.digest):
            raise mismatch
        pin = ObjectMeta(url=self.store.url_of(blob), size=state.size, digest=state.digest)
        check_copy(self.store, blob, pin, f"{staging}.check", mismatch)
        run_sync(call_fs, self.store.backend.fs, "get_file", self.store.full(blob), str(staging))
        if hash_file(staging) != state.digest:
            raise mismatch

    def _next_state(self, relpath: str) -> int:
        numbers = self.states(relpath)
        return numbers[-1] + 1 if numbers else 0

    def _state(self, relpath: str, number: int) -> str:
        return f"{self.base}/files/{encode_path(relpath)}/{number}.json"


def _now() -> str:
    """The time a file state is recorded (UTC, ISO 8601)."""
    return datetime.now(timezone.utc).isoformat()
