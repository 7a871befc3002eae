"""One prefix of an object store listed on an executor's workers (a Dask cluster's, or any
:class:`concurrent.futures.Executor`), with the result of one listing.

The driver makes one delimiter listing of the folder (going down while the folder holds nothing but one
sub-prefix): it gives the folder's own objects and names its sub-prefixes. The sub-prefixes go out to the
workers as up to :data:`TASKS` tasks, each a run of consecutive sub-prefixes; a worker lists each
sub-prefix as :meth:`Backend.list_prefix` lists a prefix (several streams at once where it is large, split
further while it is large: :mod:`refstore.storage.listing`), a few at a time. Each sub-prefix costs at
least one request: a folder of many tiny sub-prefixes costs more requests than one listing would.

Every key has one owner (the folder's own objects are the driver's, a key inside a sub-prefix the task's
that holds it), and the driver sorts the merged records by URL: the result is the records a listing
without an executor returns, in the same order. A task is a top-level function with picklable arguments:
the worker makes the backend again from its scheme, URL prefix and storage options, which travel with the
task in memory (credentials included) and are never written anywhere; it sends the records back as
columns (:class:`Records`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..core.exceptions import TooManyObjectsError
from ..core.loop import gather_limited, run_sync
from ..core.meta import ObjectMeta, new_meta
from .backends import Backend
from .listing import PageSource, TooMany, _common_length, list_in_parallel

#: Tasks one listing is cut into at most (runs of consecutive sub-prefixes).
TASKS = 64
#: Sub-prefixes a task lists at once (each by several streams where it is large).
_AT_ONCE = 4
#: How far a delimiter listing goes down through folders that hold only one sub-prefix.
_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a worker needs to make a backend again. ``options`` hold credentials: they travel in memory
    with the task, and are never written."""

    protocol: str
    url_prefix: str
    options: Mapping[str, Any]

    @classmethod
    def of(cls, backend: Backend) -> Recipe:
        return cls(backend.protocol, backend.url_prefix, dict(backend.options))

    def backend(self) -> Backend:
        from .locations import backend_for

        return backend_for(self.protocol, self.options, url_prefix=self.url_prefix)


@dataclass(frozen=True, slots=True)
class Records:
    """Listed records as columns, sent back by a worker: URLs after a common beginning, and a digest only
    where it is not ``etag:<etag>``."""

    base: str
    tails: list[str]
    sizes: list[int]
    digests: list[str | None]
    etags: list[str | None]
    versions: list[str | None]
    modified: list[str | None]

    @classmethod
    def of(cls, records: list[ObjectMeta]) -> Records:
        base = records[0].url[: _common_length(records[0].url, records[-1].url)] if records else ""
        cut = len(base)
        return cls(
            base,
            [m.url[cut:] for m in records],
            [m.size for m in records],
            [None if m.etag is not None and m.digest == f"etag:{m.etag}" else m.digest for m in records],
            [m.etag for m in records],
            [m.version_id for m in records],
            [m.last_modified for m in records],
        )

    def metas(self) -> list[ObjectMeta]:
        base = self.base
        columns = zip(
            self.tails, self.sizes, self.digests, self.etags, self.versions, self.modified, strict=True
        )
        return [
            new_meta(
                base + tail,
                size,
                f"etag:{etag}" if digest is None and etag is not None else digest,
                etag,
                v,
                m,
            )
            for tail, size, digest, etag, v, m in columns
        ]


async def list_on_workers(
    backend: Backend, path: str, *, max_objects: int, executor: Executor
) -> list[ObjectMeta]:
    """Every object under the folder ``path`` of ``backend`` (one that lists page by page), sorted by URL,
    the sub-prefixes listed on ``executor``'s workers. Past ``max_objects`` it raises
    :class:`~refstore.TooManyObjectsError`."""
    found, members = await backend.paged(path, _named)
    too_many = _too_many(backend.url(path), max_objects)
    if len(found) > max_objects:
        raise too_many(max_objects + 1)
    recipe = Recipe.of(backend)
    futures = [executor.submit(list_run, recipe, path, run, max_objects) for run in _runs(members, TASKS)]
    try:
        for records in await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)):
            found += records.metas()
            if len(found) > max_objects:
                raise too_many(max_objects + 1)
    finally:
        for future in futures:
            future.cancel()
    found.sort(key=operator.attrgetter("url"))
    return found


def list_run(recipe: Recipe, path: str, members: list[str], max_objects: int) -> Records:
    """A worker's task: the objects inside ``members`` (key prefixes of sub-folders of the folder
    ``path``)."""
    backend = recipe.backend()
    listing = functools.partial(
        _run_listing,
        members=members,
        max_objects=max_objects,
        too_many=_too_many(backend.url(path), max_objects),
    )
    with backend.storage_errors(backend.url(path)):
        return Records.of(run_sync(backend.paged, path, listing))


async def _named(source: PageSource, prefix: str) -> tuple[list[ObjectMeta], list[str]]:
    """The folder ``prefix`` names, or the deepest one below it that is alone in its parent with no
    object beside it; its own objects (and those of the folders above), and its sub-prefixes."""
    own: list[ObjectMeta] = []
    for _ in range(_DEPTH):
        members: list[str] = []
        async with contextlib.aclosing(source.pages(prefix, delimiter=True)) as pages:
            async for page in pages:
                own += (meta for _, meta in page.entries)
                members += page.prefixes
        members = sorted(set(members))
        if own or len(members) != 1:
            break
        prefix = members[0]
    return own, members


async def _run_listing(
    source: PageSource, _: str, *, members: list[str], max_objects: int, too_many: TooMany
) -> list[ObjectMeta]:
    """The objects inside ``members``, each listed as :meth:`Backend.list_prefix` lists a prefix, up to
    :data:`_AT_ONCE` at a time."""
    found: list[ObjectMeta] = []
    listings = (list_in_parallel(source, m, max_objects=max_objects, too_many=too_many) for m in members)
    for records in await gather_limited(listings, _AT_ONCE):
        found += records
        if len(found) > max_objects:
            raise too_many(max_objects + 1)
    return found


def _runs(members: list[str], count: int) -> list[list[str]]:
    """``members`` cut into at most ``count`` runs of consecutive ones, as even as can be."""
    n = min(count, len(members))
    return [members[len(members) * i // n : len(members) * (i + 1) // n] for i in range(n)]


def _too_many(url: str, max_objects: int) -> TooMany:
    def make(count: int) -> Exception:
        return TooManyObjectsError(
            f"{url}: more than max_objects={max_objects} objects ({count} listed so far); raise "
            "max_objects or reference a narrower prefix"
        )

    return make
