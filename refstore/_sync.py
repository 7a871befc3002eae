"""The one bridge from refstore's sync surface to its async core, on fsspec's IO loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run ``await func(*args, **kwargs)`` on fsspec's shared IO loop and return its result."""
    from fsspec.asyn import get_loop, sync

    result: T = sync(get_loop(), func, *args, **kwargs)
    return result


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Await every coroutine with at most ``limit`` in flight; the first error cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(coro: Awaitable[T]) -> T:
        async with semaphore:
            return await coro

    tasks = [asyncio.ensure_future(bounded(c)) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
