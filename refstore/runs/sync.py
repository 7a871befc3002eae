"""Syncing a run directory by policy, with a cheap polling watcher for ``live`` files.

Policies: ``now`` uploads once, at once; ``live`` uploads at once and again after each change (every state
is kept); ``end`` uploads at finish. A file written into the run directory later takes the policy of the
newest saved pattern it matches, and ``end`` when it matches none. Ignored files are never uploaded.

The watcher is one daemon thread that wakes every ``interval`` seconds: it ``stat``s the live files (and
walks the run directory when patterns were saved) and uploads a file once its size and mtime changed and
then held still for one tick, so a file caught mid-write is not synced half-written. Each upload stages a
copy first (hashed while copied), so the bytes sent are the bytes hashed.

The run directory's state (``state.json``) is written at most once per :data:`STATE_SAVE_INTERVAL` while
files are saved and uploaded: rewriting (and
fsyncing) the whole state after every file made saving N files quadratic, and so did writing it after every
batch of uploads (a ``save`` per file makes a batch per file). It is always written when all is uploaded
(:meth:`Syncer.flush`, at finish). The registry, not this state, is what says a file is synced: a state lost
in a crash only makes ``refstore sync`` check (hash) those files again and upload any it cannot match. On a
local registry the bytes and records of uploads are fsynced in one batch (:meth:`RunFiles.make_durable`)
right before each write of the state, not one by one: a synced state is written down only once it is
durable.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..core.exceptions import ObjectNotFoundError, RunError
from ..storage.hashing import ALGORITHM, hash_file
from .files import RunFiles
from .globs import is_ignored, matches
from .local import INTERNAL_DIR, LocalState, Signature, SyncedFile, files_in

POLICIES = ("live", "now", "end")
_BLOCK = 2**20
#: Seconds between two writes of the run directory's state while work goes on.
STATE_SAVE_INTERVAL = 1.0
_log = logging.getLogger("refstore.runs")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise RunError(f"policy {policy!r}: use one of {', '.join(POLICIES)}")
    return policy


@dataclass(frozen=True, slots=True)
class UploadFailure:
    """A file that did not reach the registry; its local copy stays at ``local``."""

    path: str
    local: Path
    error: str

    def __str__(self) -> str:
        return f"{self.path} ({self.local}): {self.error}"


class Syncer:
    """Uploads the files of one run directory to the run's storage."""

    def __init__(
        self, run_dir: Path, state: LocalState, files: RunFiles, ignore: tuple[str, ...], interval: float
    ) -> None:
        self.run_dir = run_dir
        self.state = state
        self.files = files
        self.ignore = ignore
        self.interval = interval
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: set[str] = set()
        self._seen: dict[str, Signature | None] = {}
        self._failed: dict[str, tuple[Signature | None, str]] = {}
        self._patterns = set(state.patterns)
        #: Newest saved patterns without wildcards, by the path each names: (rank, policy).
        self._literal: dict[str, tuple[int, str]] = {}
        #: Saved patterns with wildcards, oldest first, and their ranks.
        self._globs: dict[tuple[str, str], int] = {}
        self._rank = 0
        for pattern, policy in state.patterns:
            self._index(pattern, policy)
        self._dirty = False
        self._saved_at = 0.0
        self._next_scan = 0.0
        #: Files whose bytes this syncer sent as a new state (a re-hash that found them unchanged is not one).
        self.uploaded: set[str] = set()

    # -- what the run asks for ---------------------------------------------------------------------------

    def save(self, relpaths: list[str], pattern: str | None, policy: str) -> None:
        """Track ``relpaths`` with ``policy`` and remember ``pattern`` (if any) for files written later."""
        with self._lock:
            if pattern is not None:
                self._remember(pattern, policy)
            for relpath in relpaths:
                self.state.tracked[relpath] = policy
                if policy != "end":
                    self._queue.add(relpath)
            self._changed_state()
        self._wake.set()

    def _remember(self, pattern: str, policy: str) -> None:
        """Keep ``pattern`` as the newest saved pattern (once: saving it again moves it to the end)."""
        entry = (pattern, policy)
        if entry in self._patterns:
            self.state.patterns.remove(entry)
        self._patterns.add(entry)
        self.state.patterns.append(entry)
        self._index(pattern, policy)

    def _index(self, pattern: str, policy: str) -> None:
        """Rank ``pattern`` newest: a path is looked up among literal patterns, globs are matched."""
        self._rank += 1
        if glob.has_magic(pattern):
            self._globs.pop((pattern, policy), None)
            self._globs[(pattern, policy)] = self._rank
        else:
            self._literal[pattern] = (self._rank, policy)

    def _changed_state(self, *, now: bool = False) -> None:
        """Note that the state changed; write it when ``now`` or when the last write is old enough.
        Call with the lock held."""
        self._dirty = True
        if now or time.monotonic() - self._saved_at >= STATE_SAVE_INTERVAL:
            self.files.make_durable()  # nothing is written down as synced before it would survive a crash
            self.state.save(self.run_dir)
            self._dirty, self._saved_at = False, time.monotonic()

    def save_state(self) -> None:
        """Write the state now if anything in it is not written yet."""
        with self._lock:
            if self._dirty:
                self._changed_state(now=True)

    def set_name(self, name: str) -> None:
        """Keep the run's new name in the run directory's state."""
        with self._lock:
            self.state.name = name
            self._changed_state(now=True)

    def mark_synced(self, relpath: str, digest: str, size: int, state: int) -> None:
        """Note that ``relpath`` holds a state already synced (a file restored into the run directory)."""
        signature = Signature.of(self.run_dir / relpath)
        if signature is not None:
            with self._lock:
                self.state.synced[relpath] = SyncedFile.of(digest, size, signature, state, time.time_ns())
                self._changed_state(now=True)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._watch, name=f"refstore-sync-{self.state.id}", daemon=True
        )
        self._thread.start()

    def close(self) -> list[UploadFailure]:
        """Stop watching, upload everything still pending and return what could not be uploaded."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        return self.flush()

    def flush(self) -> list[UploadFailure]:
        """Upload every pending file (failed ones again) and return the failures."""
        with self._lock:
            self._discover()
            pending = {p for p in files_in(self.run_dir) if self._pending(p)}
            lost = {p for p in self.state.tracked if p not in self.state.synced and p not in pending}
        self._upload_all(sorted({*pending, *lost}))
        self.save_state()
        with self._lock:
            return [UploadFailure(p, self.run_dir / p, why) for p, (_, why) in sorted(self._failed.items())]

    # -- the watcher -------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the work: a save() during it wakes the next round at once
            try:
                self._upload_all(self._due())
            except Exception:  # the final flush redoes the work; keep watching
                _log.warning("refstore: watching %s failed", self.run_dir, exc_info=True)
            self._wake.wait(max(0.0, self._next_scan - time.monotonic()))

    def _due(self) -> list[str]:
        """Queued files, and (once per tick, however often ``save`` wakes the watcher) watched files that
        changed and then held still for one tick. The folder walk and the ``stat`` calls happen without the
        lock, so a ``save`` never waits for them."""
        with self._lock:
            due = set(self._queue)
            self._queue.clear()
            if time.monotonic() < self._next_scan:
                return sorted(due)
            self._next_scan = time.monotonic() + self.interval
        self._discover()
        with self._lock:
            watched = self._watched()
        signatures = {relpath: Signature.of(self.run_dir / relpath) for relpath in watched}
        with self._lock:
            for relpath, signature in signatures.items():
                held_still = signature == self._seen.get(relpath)
                if signature is not None and held_still and self._changed(relpath, signature):
                    due.add(relpath)
                self._seen[relpath] = signature
            return sorted(due)

    def _watched(self) -> list[str]:
        tracked = self.state.tracked.items()
        return [
            p for p, policy in tracked if policy == "live" or (policy == "now" and p not in self.state.synced)
        ]

    def _discover(self) -> None:
        """Track files written into the run directory that match a saved pattern (the walk holds no lock)."""
        if not self.state.patterns:
            return
        found = files_in(self.run_dir)
        with self._lock:
            for relpath in found:
                if relpath not in self.state.tracked and not is_ignored(relpath, self.ignore):
                    policy = self._pattern_policy(relpath)
                    if policy is not None:
                        self.state.tracked[relpath] = policy

    def _pattern_policy(self, relpath: str) -> str | None:
        """The policy of the newest saved pattern that matches ``relpath``."""
        best = self._literal.get(relpath)
        for (pattern, policy), rank in reversed(self._globs.items()):
            if matches(relpath, pattern):
                if best is None or rank > best[0]:
                    best = (rank, policy)
                break
        return best[1] if best is not None else None

    def _changed(self, relpath: str, signature: Signature) -> bool:
        failed = self._failed.get(relpath)
        if failed is not None and failed[0] == signature:
            return False  # retried at finish, or as soon as the file changes again
        synced = self.state.synced.get(relpath)
        return synced is None or not synced.matches(signature)

    def _pending(self, relpath: str) -> bool:
        """Whether the final pass must upload ``relpath``."""
        if is_ignored(relpath, self.ignore):
            return False
        policy = self.state.tracked.get(relpath) or self._pattern_policy(relpath) or "end"
        synced = self.state.synced.get(relpath)
        if synced is not None and policy == "now":
            return False
        signature = Signature.of(self.run_dir / relpath)
        return signature is not None and (synced is None or not synced.matches(signature))

    # -- uploads -----------------------------------------------------------------------------------------

    def _upload_all(self, relpaths: list[str]) -> None:
        if len(relpaths) <= 1:
            for relpath in relpaths:
                self._upload_one(relpath)
        else:
            with ThreadPoolExecutor(min(self.files.parallel_pushes, len(relpaths))) as pool:
                list(pool.map(self._upload_one, relpaths))
        with self._lock:
            if self._dirty:
                self._changed_state()

    def _upload_one(self, relpath: str) -> None:
        signature = Signature.of(self.run_dir / relpath)
        try:
            synced, pushed = self._upload(relpath, signature)
        except Exception as exc:
            with self._lock:
                self._failed[relpath] = (signature, " ".join(str(exc).split()) or type(exc).__name__)
            return
        with self._lock:
            self._failed.pop(relpath, None)
            self.state.synced[relpath] = synced
            if pushed:
                self.uploaded.add(relpath)
            self._changed_state()

    def _upload(self, relpath: str, signature: Signature | None) -> tuple[SyncedFile, bool]:
        """The file's synced state now, and whether its bytes were sent as a new state."""
        if signature is None:
            raise ObjectNotFoundError(f"{self.run_dir / relpath}: the file is gone; it was never synced")
        with self._lock:
            previous = self.state.synced.get(relpath)
            policy = self.state.tracked.get(relpath, "end")
        read_ns = time.time_ns()
        if previous is not None and previous.signature == signature:  # a racy re-check: hash, no copy
            digest = hash_file(self.run_dir / relpath)
            if digest == previous.digest:
                return SyncedFile.of(digest, previous.size, signature, previous.state, read_ns), False
        staged, digest, size = self._stage(self.run_dir / relpath)
        try:
            if previous is not None and previous.digest == digest:  # touched, not changed
                return SyncedFile.of(digest, size, signature, previous.state, read_ns), False
            after = previous.state if previous is not None else -1
            record = self.files.push(relpath, staged, digest, size, policy, after)
            return SyncedFile.of(digest, size, signature, record.state, read_ns), True
        finally:
            staged.unlink()

    def _stage(self, source: Path) -> tuple[Path, str, int]:
        """A private copy of ``source``, its digest and size (the bytes hashed are the bytes sent)."""
        staged = self.files.staging_path(self.run_dir / INTERNAL_DIR / "staging")
        digest, size = xxhash.xxh3_128(), 0
        try:
            with open(source, "rb") as src, open(staged, "xb") as dst:
                while chunk := src.read(_BLOCK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged, f"{ALGORITHM}:{digest.hexdigest()}", size
