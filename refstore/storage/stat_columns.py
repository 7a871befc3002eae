"""The stats the stat cache compares, for many files at once, on two cores when there are many.

An unchanged tree referenced again reads no file, and what is left is one ``stat`` per file, mostly time in
the kernel. Threads do not help (each stat hands the interpreter lock over twice), so for a large tree a
second interpreter (this file run as a script: ``python -I -S stat_columns.py``, standard library only,
started in milliseconds) stats the second half of the folders while this process stats the first half,
and hands its five columns back through a pipe. Anything wrong with that interpreter (it cannot start, it
dies, its answer is short) and this process stats its half itself: the result never depends on it.

Protocol: the parent writes the folders and their file names, ``os.fsencode``\\ d: per folder its path, NUL,
its names joined by NUL; folders joined by two NULs (no path or name is empty or holds a NUL). The child
reads to the end, stats, and writes the five columns (:data:`TYPECODES`), each one 64-bit integer per file
in the machine's byte order.
"""

from __future__ import annotations

import array
import operator
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

#: The columns, as in :func:`refstore.storage.stat_cache.new_columns`: size, mtime_ns and ctime_ns
#: (signed), inode and device (unsigned), 64-bit.
TYPECODES = ("q", "q", "q", "Q", "Q")
#: Fewer files than this are stat'ed here alone (a second interpreter costs more than it saves).
PARALLEL_FROM = 20_000

_FIELDS = tuple(
    operator.attrgetter(name) for name in ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")
)
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)

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
        fd = os.open(folder, _FOLDER_FLAGS)
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


def stat_runs(runs: Runs) -> Columns:
    """The five columns of every file of ``runs`` (a folder's path ending in ``/``, and names in it), in
    order: the second half of the files stat'ed by a second interpreter at the same time when there are
    many and more than one core."""
    columns = new_columns()
    total = sum(len(names) for _, names in runs)
    child = None
    mine, theirs = _halves(runs, total // 2)
    if total >= PARALLEL_FROM and theirs and _cores() > 1:
        child = _start(theirs)
    if child is None:
        mine, theirs = runs, []
    try:
        for folder, names in mine:
            stat_into(folder, names, columns)
        if child is not None:
            answer = _answer(child, total - total // 2)
            if answer is None:  # (the second interpreter failed: this one does its work)
                for folder, names in theirs:
                    stat_into(folder, names, columns)
            else:
                for column, more in zip(columns, answer, strict=True):
                    column.extend(more)
    finally:
        if child is not None:
            _stop(child[0])
    return columns


def _halves(runs: Runs, count: int) -> tuple[Runs, Runs]:
    """``runs`` cut after their first ``count`` files (a folder's names cut in two where the cut falls in
    it), without empty runs."""
    seen = 0
    for i, (folder, names) in enumerate(runs):
        if seen + len(names) > count:
            cut = count - seen
            head, tail = names[:cut], names[cut:]
            return [*runs[:i], *([(folder, head)] if head else [])], [(folder, tail), *runs[i + 1 :]]
        seen += len(names)
    return runs, []


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


Child = tuple["subprocess.Popen[bytes]", threading.Thread]


def _start(runs: Runs) -> Child | None:
    """The second interpreter, its input being written by a thread (so that this one goes on); ``None``
    when it cannot start."""
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
    data = b"\0\0".join(
        os.fsencode(folder) + b"\0" + b"\0".join(map(os.fsencode, names)) for folder, names in runs
    )
    feeder = threading.Thread(target=_feed, args=(process, data), name="refstore-stat-feed", daemon=True)
    feeder.start()
    return process, feeder


def _feed(process: subprocess.Popen[bytes], data: bytes) -> None:
    assert process.stdin is not None
    try:
        with process.stdin:
            process.stdin.write(data)
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
    """Run as a script: the columns of the folders and names read from stdin, written to stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops this one
    columns = new_columns()
    data = sys.stdin.buffer.read()
    for run in data.split(b"\0\0") if data else ():
        folder, *names = run.split(b"\0")
        stat_into(os.fsdecode(folder), [os.fsdecode(name) for name in names], columns)
    out = sys.stdout.buffer
    for column in columns:
        out.write(column.tobytes())
    out.flush()


if __name__ == "__main__":
    _child()
