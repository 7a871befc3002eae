"""Worker processes for per-file work that threads cannot spread: many small files.

Hashing a small file is a few system calls and a little Python, and two threads doing that contend for the
GIL at every call (measured on the 2-core benchmark machine: 100,000 files of 0.5-4 KiB take 3x longer on
two threads than on one). Processes do not contend. :class:`ProcessExecutor` is a
:class:`concurrent.futures.Executor` over child interpreters running :func:`serve`, fed pickled tasks
through pipes. They are started as plain subprocesses, not by :mod:`multiprocessing`, so the caller's
``__main__`` is never imported again in a child and an unguarded script is safe. Children get their own
session (Ctrl-C reaches only the caller, which cancels what has not started) and exit when their pipe
closes, also when the caller is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import IO, Any, TypeVar

from ..core.exceptions import RefstoreError

T = TypeVar("T")
_Task = tuple[Future[Any], bytes]

_HEADER = struct.Struct("<Q")
#: Tasks written ahead into each child's pipe, so that it never idles while the caller holds the GIL.
_IN_FLIGHT = 3
#: What a child runs: the folder holding this refstore goes on ``sys.path`` unless it is there already.
_BOOT = (
    "import sys; root = sys.argv[1]; root in sys.path or sys.path.insert(0, root); "
    "from refstore.storage.workers import serve; serve()"
)
#: Set to ``0`` to keep all hashing in the calling process.
ENV_SWITCH = "REFSTORE_HASH_PROCESSES"

#: Seconds a new pool's children get to start and answer a first task.
_BOOT_TIMEOUT = 60.0

_shared: ProcessExecutor | None = None
_shared_lock = threading.Lock()
_unusable = False


def shared_executor() -> ProcessExecutor | None:
    """The process-wide pool of one worker per core, started on first use and kept for later calls (a
    broken one is replaced); ``None`` where it cannot help or run: one core, ``REFSTORE_HASH_PROCESSES=0``,
    no ``sys.executable``, or children that do not start (then with one warning, and not tried again)."""
    global _shared, _unusable
    workers = os.cpu_count() or 1
    if workers < 2 or _unusable or os.environ.get(ENV_SWITCH, "1") == "0" or not sys.executable:
        return None
    with _shared_lock:
        if _shared is None or _shared.failure is not None:
            if _shared is not None:
                _shared.shutdown(wait=False, cancel_futures=True)
            _shared = None
            try:
                pool = ProcessExecutor(workers)
            except OSError as exc:
                _give_up(exc)
                return None
            try:
                pool.submit(os.getpid).result(timeout=_BOOT_TIMEOUT)  # the children import and answer
            except Exception as exc:
                pool.kill()
                _give_up(exc)
                return None
            _shared = pool
            atexit.register(pool.shutdown, cancel_futures=True)
        return _shared


def _give_up(exc: BaseException) -> None:
    global _unusable
    _unusable = True
    warnings.warn(
        f"refstore: worker processes could not start ({exc!r}); hashing small files on the calling thread "
        f"(set {ENV_SWITCH}=0 to skip trying)",
        RuntimeWarning,
        stacklevel=3,
    )


class ProcessExecutor(Executor):
    """Runs picklable top-level functions in ``workers`` child processes, first submitted first run.

    If a child dies, the executor is broken: the task it ran and every task not yet run fail with a
    :class:`~refstore.RefstoreError` that names the child, and so do later submissions.
    """

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._closed = False
        #: Why the executor is broken, once a child has died.
        self.failure: RefstoreError | None = None
        try:
            for _ in range(workers):
                self._workers.append(_Worker(self))
        except OSError:
            self.shutdown()
            raise

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("cannot submit to a ProcessExecutor after shutdown")
        future: Future[T] = Future()
        if self.failure is not None:
            future.set_exception(self.failure)
        else:
            self._tasks.put((future, pickle.dumps((fn, args, kwargs), pickle.HIGHEST_PROTOCOL)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if cancel_futures:
            self._fail_queued(None)
        for _ in self._workers:
            self._tasks.put(None)  # one stop mark per worker
        if wait:
            for worker in self._workers:
                worker.join()

    def kill(self) -> None:
        """Stop at once: kill the children and fail or cancel what they had not finished."""
        for worker in self._workers:
            worker.kill()
        self.shutdown(wait=False, cancel_futures=True)

    def next_task(self) -> _Task | None:
        """The next task for a worker, or ``None`` when it is to stop."""
        return self._tasks.get()

    def broke(self, error: RefstoreError) -> None:
        """A child died: fail everything not yet run, now and later."""
        with self._lock:
            self.failure = self.failure or error
        self._fail_queued(self.failure)

    def _fail_queued(self, error: RefstoreError | None) -> None:
        """Cancel (or fail with ``error``) every queued task; stop marks stay queued."""
        marks = 0
        while True:
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                break
            if item is None:
                marks += 1
            elif error is None:
                item[0].cancel()
            elif item[0].set_running_or_notify_cancel():
                item[0].set_exception(error)
        for _ in range(marks):
            self._tasks.put(None)


class _Worker:
    """One child process, a thread that writes it tasks and a thread that reads its replies."""

    def __init__(self, executor: ProcessExecutor) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)  # this very refstore, also from a checkout
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, package_root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._executor = executor
        self._slots = threading.Semaphore(_IN_FLIGHT)
        self._sent: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="refstore-worker-in", daemon=True)
        self._reader = threading.Thread(target=self._read, name="refstore-worker-out", daemon=True)
        self._writer.start()
        self._reader.start()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._process.kill()

    def join(self) -> None:
        self._writer.join()
        self._reader.join()

    def _write(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while True:
                self._slots.acquire()
                item = self._executor.next_task()
                if item is None:
                    return
                future, task = item
                if not future.set_running_or_notify_cancel():
                    self._slots.release()
                    continue
                failure = self._executor.failure
                if failure is not None:
                    future.set_exception(failure)
                    self._slots.release()
                    continue
                self._sent.put(future)
                with contextlib.suppress(OSError):  # the child died: the reader fails what it was sent
                    _send(stdin, task)
        finally:
            self._sent.put(None)
            with contextlib.suppress(OSError):
                stdin.close()

    def _read(self) -> None:
        process = self._process
        assert process.stdout is not None
        try:
            while (future := self._sent.get()) is not None:
                try:
                    ok, value = pickle.loads(_receive(process.stdout))
                except (OSError, EOFError, pickle.UnpicklingError) as exc:
                    self._died(future, exc)
                    return
                self._slots.release()
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        finally:
            process.wait()
            process.stdout.close()

    def _died(self, held: Future[Any], exc: BaseException) -> None:
        process = self._process
        process.kill()
        code = process.wait()
        error = RefstoreError(f"refstore worker process {process.pid} died (exit code {code}): {exc}")
        self._executor.broke(error)
        future: Future[Any] | None = held
        while future is not None:  # what this child held, and what its writer still sends it
            future.set_exception(error)
            self._slots.release()
            future = self._sent.get()


def _send(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the pipe closed")
    (length,) = _HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("the pipe closed mid-message")
    return data


def serve() -> None:
    """The child's loop: read a task, run it, write ``(ok, result or exception)``, until the pipe closes."""
    tasks = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a task's prints must not corrupt the replies
    while True:
        try:
            task = _receive(tasks)
        except EOFError:
            return
        try:
            fn, args, kwargs = pickle.loads(task)
            reply = (True, fn(*args, **kwargs))
        except BaseException as exc:  # every failure goes back to the caller
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception
            data = pickle.dumps((False, RefstoreError(f"worker result cannot be sent back: {exc!r}")))
        _send(replies, data)
