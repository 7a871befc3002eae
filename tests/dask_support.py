"""An executor that proves work ran on Dask workers: each task notes the worker that ran it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any


@contextlib.contextmanager
def local_cluster(*, processes: bool) -> Iterator[Executor]:
    """The executor of a Dask ``LocalCluster`` of two workers (2 threads each), threads of this process or
    processes of their own; stopped on the way out."""
    import distributed  # in the test extra: a missing package fails the run, it is never skipped

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=processes, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client.get_executor()


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
