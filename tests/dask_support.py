"""An executor that proves work ran on Dask workers: each task notes the worker that ran it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

#: (task, worker) of each task run by an :class:`OnWorkers`. The ``dask_threads`` cluster's workers are
#: threads of this process, so what they note here is seen here (task arguments are copied on their way).
RAN: list[tuple[str, str]] = []


class OnWorkers(Executor):
    """A Dask executor whose tasks note the worker that ran them (:attr:`ran`); a task run anywhere else
    fails (``distributed.get_worker`` raises outside a worker)."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        RAN.clear()

    @property
    def ran(self) -> list[tuple[str, str]]:
        return list(RAN)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.inner.submit(_noted, fn, *args, **kwargs)


def _noted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import distributed

    RAN.append((fn.__name__, str(distributed.get_worker().address)))
    return fn(*args, **kwargs)
