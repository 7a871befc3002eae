"""The local file a ranged download writes, hashed while its ranges arrive (issues 13 and 18).

Ranges arrive in any order, in chunks of about :data:`RANGE_CHUNK`; each chunk is written at its offset
(``os.pwrite``) on a worker thread, and, when the object's ETag is the MD5 of its upload parts and the
ranges follow those parts, added to its range's MD5 there too: the MD5s of a multipart object are computed
on every core as the bytes come in. One more thread hashes the bytes in order as they become contiguous
(xxh3_128 for the cache, and the MD5 of the whole object, or of parts that do not follow the ranges), from
the chunks themselves, handed to it as they arrive; only chunks that arrive too far ahead of it
(:data:`_AHEAD`), or while the process already holds :data:`_HELD_MAX` bytes of such chunks, are read back
from the page cache instead (into one reused buffer). hashlib, xxhash and ``os.pwrite`` release the GIL on
large buffers, so none of this waits for the event loop, nor the loop for it.

Measured on the 2-core benchmark machine against Ceph RGW (1 GiB object, 8 ranges in flight): chunks of
1 MiB took 1.2-1.3 s of CPU, 4 MiB chunks 3.1 s and whole 8 MiB ranges 2.4 s (fresh large buffers fault
their pages in and fall out of the CPU cache before they are written).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import xxhash

#: The size of the chunks a range is read in (obstore's ``min_chunk_size``).
RANGE_CHUNK = 2**20
#: The in-order hashing reads the file back in blocks of this size, into one buffer.
_BLOCK = 2**20
#: Bytes handed to a worker thread at a time, at least: smaller chunks (aiohttp, under s3fs, hands over
#: what the socket held, tens of KiB) are gathered first, up to this many.
_HOP = 512 * 2**10
_MAX_PIECES = 256
#: Bytes per ``os.pwrite`` (a whole chunk). Under load, a plain obstore loop on RGW had taken 1.4-1.6 s of
#: system time for 1 GiB in 64 KiB writes and 3.2-3.6 s in 1 MiB writes; on a quiet machine, refstore's own
#: 1 GiB multipart download was faster with 1 MiB writes in 13 of 13 alternating pairs (3.3-4.1 s against
#: 3.8-4.4 s, less system time in each pair), and the same with either for a single-PUT object.
_WRITE = 2**20
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
#: Chunks that end at most this far past the bytes hashed so far are kept for the in-order hashing...
_AHEAD = 96 * 2**20
#: ... while all the files of the process keep fewer bytes than this; others are read back from the file.
_HELD_MAX = 512 * 2**20
_held = 0
_held_lock = threading.Lock()


def _hold(size: int) -> bool:
    """Reserve ``size`` bytes of the process's budget of kept chunks (``False``: the budget is spent)."""
    global _held
    with _held_lock:
        if _held + size > _HELD_MAX:
            return False
        _held += size
        return True


def _release(size: int) -> None:
    global _held
    with _held_lock:
        _held -= size


class PartsFile:
    """``with PartsFile(dest, size, range_size, md5, part_size) as out:`` then, per range ``i``,
    ``sink = out.range(i)``, ``await sink.write(chunk)`` for its bytes in order and
    ``await sink.done()``; then ``await out.digests()``.

    ``md5``: ``None``, ``"whole"`` (the MD5 of the whole file) or ``"parts"`` (the MD5 of each part of
    ``part_size`` bytes: computed per range as the bytes arrive when ``part_size == range_size``, else in
    order)."""

    def __init__(
        self,
        dest: str | os.PathLike[str],
        size: int,
        range_size: int,
        md5: str | None = None,
        part_size: int | None = None,
    ) -> None:
        self.dest = dest
        self.size = size
        self.range_size = range_size
        self.ranges = max(1, -(-size // range_size))
        self.md5 = md5
        self.part_size = part_size or range_size
        #: Whether each range's MD5 is a part's, computed as its bytes arrive.
        self.per_range = md5 == "parts" and self.part_size == range_size
        self.range_md5s: list[str | None] = [None] * self.ranges
        self._fd = -1
        self._pool: ThreadPoolExecutor | None = None
        #: ``(offset, size, chunks)``: bytes written (``chunks`` None: read them back) or held to hash.
        self._queue: queue.SimpleQueue[tuple[int, int, list[memoryview] | None] | None] = queue.SimpleQueue()
        #: How far the in-order hashing got, and the bytes of chunks this file holds for it.
        self._position = 0
        self._held = 0
        self._thread: threading.Thread | None = None
        self._result: tuple[str, list[str]] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()

    def __enter__(self) -> PartsFile:
        self._fd = os.open(self.dest, _NEW_FILE, 0o666)  # read back to hash
        os.ftruncate(self._fd, self.size)
        self._pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="refstore-write")
        self._thread = threading.Thread(target=self._hash_in_order, name="refstore-hash-parts", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)  # stops the hashing thread if it still waits for ranges
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # no write outlives the file
        if self._thread is not None:
            self._thread.join()
        with _held_lock:  # what the hashing never reached (a failed transfer)
            held, self._held = self._held, 0
        _release(held)
        os.close(self._fd)

    def range(self, index: int) -> RangeSink:
        """Where range ``index`` (bytes ``index * range_size`` on) is written."""
        start = index * self.range_size
        return RangeSink(self, index, start, min(start + self.range_size, self.size))

    async def digests(self) -> tuple[str, list[str]]:
        """xxh3_128 hex of the whole file, and the MD5 hex of the whole (one item) or of each part."""
        await asyncio.to_thread(self._done.wait)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        if self.per_range:
            return self._result[0], [str(h) for h in self.range_md5s]
        return self._result

    def md5_of_parts(self, part_size: int) -> list[str]:
        """The MD5 hex of each part of ``part_size`` bytes, read back from the file (blocking)."""
        md5s = []
        buffer = bytearray(_BLOCK)
        for start in range(0, self.size, part_size):
            part = hashlib.md5(usedforsecurity=False)
            for data in self._read(buffer, start, min(start + part_size, self.size)):
                part.update(data)
            md5s.append(part.hexdigest())
        return md5s

    def _read(self, buffer: bytearray, start: int, end: int) -> Any:
        """The bytes ``[start, end)`` of the file, as views of ``buffer`` (each valid until the next)."""
        view = memoryview(buffer)
        while start < end:
            n = os.preadv(self._fd, [view[: min(len(buffer), end - start)]], start)
            if n <= 0:
                raise OSError(f"{self.dest}: short read at {start} while hashing")
            yield view[:n]
            start += n

    def _keep(self, offset: int, size: int) -> bool:
        """Whether the chunks of ``[offset, offset + size)`` are handed to the hashing as they are (else it
        reads them back from the file once they are written)."""
        if offset + size - self._position > _AHEAD or not _hold(size):
            return False
        with _held_lock:
            self._held += size
        return True

    def _hash_in_order(self) -> None:
        try:
            digest, whole = xxhash.xxh3_128(), hashlib.md5(usedforsecurity=False)
            in_order_parts = self.md5 == "parts" and not self.per_range
            part, part_md5s = hashlib.md5(usedforsecurity=False), []
            part_end = min(self.part_size, self.size)
            buffer = bytearray(_BLOCK)
            waiting: dict[int, tuple[int, list[memoryview] | None]] = {}
            position = 0

            def hash_(data: memoryview) -> None:
                nonlocal part, part_end
                digest.update(data)
                if self.md5 == "whole":
                    whole.update(data)
                elif in_order_parts:
                    at = position
                    while data:
                        piece = data[: part_end - at]
                        part.update(piece)
                        data, at = data[len(piece) :], at + len(piece)
                        if at == part_end:
                            part_md5s.append(part.hexdigest())
                            part = hashlib.md5(usedforsecurity=False)
                            part_end = min(part_end + self.part_size, self.size)

            while position < self.size:
                item = self._queue.get()
                if item is None:
                    return
                waiting[item[0]] = item[1:]
                while position in waiting:
                    size, chunks = waiting.pop(position)
                    held = chunks is not None
                    # not kept: read back in blocks, each a view of the buffer, valid until the next
                    source = chunks if chunks is not None else self._read(buffer, position, position + size)
                    for data in source:
                        hash_(data)
                        position += len(data)
                    if held:
                        with _held_lock:
                            self._held -= size
                        _release(size)
                    self._position = position
            # per range: the ranges' own, set by their sinks (read by digests())
            md5s = [whole.hexdigest()] if self.md5 == "whole" else part_md5s
            self._result = (str(digest.hexdigest()), md5s)
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()


class RangeSink:
    """One range of a :class:`PartsFile`: its bytes written in order from ``start``; those past ``end``
    are dropped (the caller counts what arrived). Chunks go to a worker thread :data:`_HOP` bytes or more
    at a time (small ones, aiohttp's under s3fs, together, without a copy)."""

    def __init__(self, file: PartsFile, index: int, start: int, end: int) -> None:
        self.file = file
        self.index = index
        self.start = start
        self.end = end
        #: Where the next byte goes (the chunks gathered, not written yet, end here).
        self.offset = start
        self._md5 = hashlib.md5(usedforsecurity=False) if file.per_range else None
        self._pieces: list[memoryview] = []
        self._gathered = 0

    async def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)[: max(0, self.end - self.offset)]
        self._pieces.append(view)
        self._gathered += len(view)
        self.offset += len(view)
        if self._gathered >= _HOP or self.offset == self.end or len(self._pieces) >= _MAX_PIECES:
            await self._flush()

    async def done(self) -> None:
        """Every byte of the range arrived (and is written, and handed to the in-order hashing)."""
        await self._flush()
        if self._md5 is not None:
            self.file.range_md5s[self.index] = self._md5.hexdigest()

    async def _flush(self) -> None:
        if not self._gathered:
            self._pieces.clear()
            return
        pieces, offset = self._pieces, self.offset - self._gathered
        self._pieces, self._gathered = [], 0
        assert self.file._pool is not None, "PartsFile used outside its with block"
        await asyncio.get_running_loop().run_in_executor(self.file._pool, self._put, pieces, offset)

    def _put(self, pieces: list[memoryview], offset: int) -> None:
        size = sum(len(piece) for piece in pieces)
        kept = self.file._keep(offset, size)
        if kept:  # hashed in order while they are written
            self.file._queue.put((offset, size, pieces))
        for piece in pieces:
            while piece:
                written = os.pwrite(self.file._fd, piece[:_WRITE], offset)
                if self._md5 is not None:
                    self._md5.update(piece[:written])  # still in the CPU cache
                piece, offset = piece[written:], offset + written
        if not kept:
            self.file._queue.put((offset - size, size, None))
