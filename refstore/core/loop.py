"""The one bridge from refstore's sync surface to its async core, on fsspec's IO loop.

Ctrl-C (``KeyboardInterrupt`` in the calling thread) cancels the coroutine on the loop and waits for its
``finally`` blocks, so interrupted work removes its scratch files before the exception reaches the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long an interrupted call waits for its coroutine to clean up.
CANCEL_GRACE = 30.0


def run_sync(func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run ``await func(*args, **kwargs)`` on fsspec's shared IO loop and return its result."""
    from fsspec.asyn import get_loop

    loop = get_loop()
    try:
        if asyncio.get_running_loop() is loop:
            raise NotImplementedError("run_sync() called from within fsspec's IO loop")
    except RuntimeError:
        pass
    finished = threading.Event()
    future = asyncio.run_coroutine_threadsafe(_tracked(func(*args, **kwargs), finished), loop)
    try:
        while not future.done():
            concurrent.futures.wait([future], timeout=1.0)  # short waits: a signal is handled promptly
        return future.result()
    except BaseException:
        if not future.done():
            future.cancel()  # cancels the task on the loop
            finished.wait(CANCEL_GRACE)
        raise


async def _tracked(coro: Awaitable[T], finished: threading.Event) -> T:
    try:
        return await coro
    finally:
        finished.set()


async def finish_in_thread(func: Callable[..., T], *args: Any) -> T:
    """``await asyncio.to_thread(func, *args)``, but a cancelled caller still waits for the thread to end
    before the cancellation goes on: a thread cannot be stopped, and one that writes files must not be
    left writing after the call that started it has returned (or raised)."""
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the caller sees the cancellation
        raise


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Await every coroutine with at most ``limit`` in flight, results in order; the first error cancels
    the rest. ``limit`` workers pull from the list, so a million items never make a million tasks."""
    items = list(coros)
    results: list[Any] = [None] * len(items)
    indices = iter(range(len(items)))

    async def worker() -> None:
        for i in indices:
            results[i] = await items[i]

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(items)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for i in indices:  # never started: close them so that Python does not warn
            item = items[i]
            if isinstance(item, Coroutine):
                item.close()
        raise
    return results
