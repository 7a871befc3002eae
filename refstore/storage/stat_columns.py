"""The stats the stat cache compares, for many files at once, on two cores when there are many.

An unchanged tree referenced again reads no file, and what is left is one ``stat`` per file, mostly time in
the kernel. Threads do not help (each stat hands the interpreter lock over twice), so for a large tree a
second interpreter (this file run as a script: ``python -I -S stat_columns.py``, standard library only,
started in milliseconds) is started before the walk and stats a share of the folders as the walk hands them
over, while this process walks and stats the rest (:class:`TreeStats`); it hands its five columns back
through a pipe at the end. Anything wrong with that interpreter (it cannot start, it dies, its answer is
short) and this process stats its share itself: the result never depends on it.

Protocol: the parent writes runs, encoded as ``os.fsencode`` does: a folder's path, NUL, its names joined
by NUL, and two NULs to end the run (no path or name is empty or holds a NUL). The child stats each run as
it arrives and, at the end of its input, writes the five columns (:data:`TYPECODES`), each one 64-bit
integer per file in the machine's byte order.
"""

from __future__ import annotations

import array
import operator
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

#: The columns, as in :func:`refstore.storage.stat_cache.new_columns`: size, mtime_ns and ctime_ns
#: (signed), inode and device (unsigned), 64-bit.
TYPECODES = ("q", "q", "q", "Q", "Q")
#: A tree expected to hold fewer files than this is stat'ed here alone (a second interpreter costs more
#: than it saves).
PARALLEL_FROM = 20_000
#: The second interpreter's share of the files: more than half, since this one also walks the tree and
#: reads the stat cache meanwhile.
SHARE = 0.65
#: Runs go to one interpreter or the other in blocks of about this many files.
BLOCK = 256

_FIELDS = tuple(
    operator.attrgetter(name) for name in ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")
)
#: How ``os.fsencode`` and ``os.fsdecode`` turn names into bytes and back, for many names in one call.
_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
#: How a folder is opened to stat or open its files relative to it (here and in :mod:`.hashing`).
FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)

Columns = list["array.array[int]"]


def new_columns() -> Columns:
    """Five empty stat columns: size, mtime_ns and ctime_ns (signed), inode and device (unsigned 64-bit)."""
    return [array.array(code) for code in TYPECODES]


def stat_into(folder: str, names: Sequence[str], columns: Columns) -> None:
    """Append to the five ``columns`` what the stat cache compares of each file's ``os.stat`` (links
    followed), each looked up by name in its open folder; a size of ``-1`` (and zeros) for a file that
    cannot be stat'ed (no record matches it: hashing it then says why)."""
    found: list[os.stat_result | None]
    try:
        fd = os.open(folder, FOLDER_FLAGS)
    except OSError:
        found = [None] * len(names)
    else:
        try:
            found = [os.stat(name, dir_fd=fd) for name in names]
        except OSError:  # one of them: one by one
            found = [_stat_or_none(name, fd) for name in names]
        finally:
            os.close(fd)
    if all(found):  # (no None: the common case)
        for column, field in zip(columns, _FIELDS, strict=True):
            column.extend(map(field, found))
    else:
        for column, field, missing in zip(columns, _FIELDS, (-1, 0, 0, 0, 0), strict=True):
            column.extend([missing if info is None else field(info) for info in found])


def _stat_or_none(name: str, fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd)
    except OSError:
        return None


Runs = Sequence[tuple[str, Sequence[str]]]


class TreeStats:
    """The five columns of the files of runs added one at a time (:meth:`add`, in the walk's order), got
    in that order from :meth:`finish`. For a tree expected to hold :data:`PARALLEL_FROM` files or more, on
    more than one core, a second interpreter started at once takes :data:`SHARE` of them while this one
    walks and takes the rest: runs go to one side or the other in blocks of about :data:`BLOCK` files, a
    run of more than twice that is cut where the shares fall. Use it as a context manager: leaving it stops
    the second interpreter."""

    def __init__(self, expected: int) -> None:
        self._mine = new_columns()
        self._parts: list[list[int]] = []  # [1 if the child's else 0, files], in order
        self._theirs: list[tuple[str, Sequence[str]]] = []  # the child's runs (if it fails: done here)
        self._seen = self._given = 0
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._child = _start(self._queue) if expected >= PARALLEL_FROM and _cores() > 1 else None

    def __enter__(self) -> TreeStats:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            self._queue.put(None)
            _stop(self._child[0])

    def add(self, folder: str, names: Sequence[str]) -> None:
        """Stat the files ``names`` of ``folder`` (a path ending in ``/``), or hand them to the child."""
        count = len(names)
        if self._child is None:
            stat_into(folder, names, self._mine)
            return
        self._seen += count
        behind = SHARE * self._seen - self._given  # how many files the child is owed
        if count > 2 * BLOCK:
            theirs = min(count, max(0, round(behind)))
        elif self._parts and self._parts[-1][0] == 1:
            theirs = count if behind > -BLOCK else 0  # the child goes on until it is a block ahead
        else:
            theirs = count if behind > BLOCK else 0
        if count - theirs:
            stat_into(folder, names[: count - theirs], self._mine)
            self._part(0, count - theirs)
        if theirs:
            part = names[count - theirs :]
            self._theirs.append((folder, part))
            self._queue.put("\0".join([folder, *part, "\0"]).encode(*_FS_CODEC))  # (one call, not one a name)
            self._given += theirs
            self._part(1, theirs)

    def _part(self, side: int, count: int) -> None:
        if self._parts and self._parts[-1][0] == side:
            self._parts[-1][1] += count
        else:
            self._parts.append([side, count])

    def finish(self) -> Columns:
        """The columns of every file added, in order (the child's answer, or this process's stats of its
        files if the child failed)."""
        if self._child is None or not self._given:
            return self._mine
        self._queue.put(None)
        answer = _answer(self._child, self._given)
        if answer is None:  # (the second interpreter failed: this one does its work)
            answer = new_columns()
            for folder, names in self._theirs:
                stat_into(folder, names, answer)
        columns = new_columns()
        offsets = [0, 0]
        sources = (self._mine, answer)
        for side, count in self._parts:
            start, source = offsets[side], sources[side]
            for column, more in zip(columns, source, strict=True):
                column.extend(more[start : start + count])
            offsets[side] = start + count
        return columns


def stat_runs(runs: Runs) -> Columns:
    """The five columns of every file of ``runs`` (a folder's path ending in ``/``, and names in it), in
    order, through :class:`TreeStats`."""
    with TreeStats(sum(len(names) for _, names in runs)) as stats:
        for folder, names in runs:
            stats.add(folder, names)
        return stats.finish()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


Child = tuple["subprocess.Popen[bytes]", threading.Thread]


def _start(feed: queue.SimpleQueue[bytes | None]) -> Child | None:
    """The second interpreter, and a thread writing to it what is put in ``feed`` (until ``None``), so
    that this one goes on; ``None`` when it cannot start."""
    if not sys.executable:
        return None
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    feeder = threading.Thread(target=_feed, args=(process, feed), name="refstore-stat-feed", daemon=True)
    feeder.start()
    return process, feeder


def _feed(process: subprocess.Popen[bytes], feed: queue.SimpleQueue[bytes | None]) -> None:
    assert process.stdin is not None
    try:
        with process.stdin:
            while (data := feed.get()) is not None:
                process.stdin.write(data)
                process.stdin.flush()
    except OSError:  # it died: its answer will be short
        pass


def _answer(child: Child, count: int) -> Columns | None:
    """The child's five columns of ``count`` files, or ``None`` if its answer is not that."""
    process, feeder = child
    assert process.stdout is not None
    try:
        data = process.stdout.read()
    except OSError:
        return None
    feeder.join()
    if process.wait() != 0 or len(data) != 8 * len(TYPECODES) * count:
        return None
    width = 8 * count
    columns = new_columns()
    for i, column in enumerate(columns):
        column.frombytes(data[i * width : (i + 1) * width])
    return columns


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:  # (interrupted, or this one failed first)
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _child() -> None:
    """Run as a script: the columns of the runs read from stdin (stat'ed as they arrive), written to stdout
    at its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops this one
    columns = new_columns()
    pending = b""
    while data := os.read(0, 1 << 20):
        *runs, pending = (pending + data).split(b"\0\0")
        for run in runs:
            folder, *names = run.decode(*_FS_CODEC).split("\0")
            stat_into(folder, names, columns)
    out = sys.stdout.buffer
    for column in columns:
        out.write(column.tobytes())
    out.flush()


if __name__ == "__main__":
    _child()
