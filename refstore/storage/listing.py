"""One prefix of an object store listed by several requests at once, with the result of one listing.

A listing is a chain of pages (1,000 keys each on S3 and GCS, 5,000 on Azure), each asking for the next, so
one listing of 10**8 objects is 10**5 requests in a row. :func:`list_in_parallel` lists a prefix as several
streams at once without knowing its shape in advance, over a backend's :class:`PageSource`:

- It starts as one stream over the whole prefix: a prefix that fits one page costs the one request it cost
  before.
- A stream with pages still to come, while fewer than :data:`CONCURRENCY` streams run, is split. Where a
  delimiter listing already named the sub-prefixes of the folder it is in, the last of those it has not
  reached go to new streams, at no cost; otherwise one delimiter listing of that folder, from the key the
  stream reached, names them (only where the stream's page shows sub-prefixes of ten keys or more on
  average: a folder of tiny sub-prefixes would cost as much to name as to list). The stream goes on up to
  the first sub-prefix handed out; the folder's own objects from there on come with the delimiter listing.
- How many streams a split starts follows what the page shows: as many as are free, but no more than the
  sub-prefixes' keys (estimated from the page) fill two pages each, so small remainders are not cut up.
  Sub-prefixes go out in groups that share a beginning (``p1`` for ``p10/`` ... ``p19/``): one stream lists
  the group with that beginning as its prefix, so a group of small sub-prefixes costs the pages its objects
  fill, not one request each. A stream started by a split is split again in turn.

Every key has exactly one owner: a stream takes the keys under its prefix that sort below its bound (the
first sub-prefix handed out from it), and a group's stream takes only keys inside its sub-prefixes (not
the folder's own objects that share the group's beginning). The result is sorted by URL, as one
sequential listing returns it. The request count stays near one per page of objects: each stream wastes at
most the end of its last page, and each delimiter listing costs a page of names. What cannot be split is
a folder of objects with no sub-prefixes: it is listed in one stream, as before.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import operator
import os
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.meta import ObjectMeta

#: Streams (and delimiter listings) in flight at once; ``REFSTORE_LIST_CONCURRENCY`` overrides it.
CONCURRENCY = 16
#: A folder is split by a delimiter listing only where a page of its keys shows sub-prefixes of at least
#: this many keys on average.
KEYS_PER_SUBPREFIX = 10
#: A split starts no more streams than the keys handed out (estimated) fill this many pages each.
PAGES_PER_STREAM = 2.0


@dataclass(slots=True)
class Page:
    """One answer of a listing, in key order."""

    #: ``(key, record)`` of the objects it lists: folder markers and older versions left out.
    entries: list[tuple[str, ObjectMeta]]
    #: The last key it listed, left-out ones included (``None`` when it listed none).
    last_key: str | None
    #: Whether another page follows.
    more: bool
    #: The common prefixes of a delimiter listing (each ending in ``/``).
    prefixes: list[str] = field(default_factory=list)


class PageSource(Protocol):
    """A backend's listing of one bucket or container, page by page."""

    def pages(
        self,
        prefix: str,
        *,
        delimiter: bool = False,
        start_after: str | None = None,
        ahead: Callable[[Page], bool] | None = None,
    ) -> AsyncGenerator[Page, None]:
        """The pages of the keys under ``prefix`` (``/`` as delimiter when asked), in key order; from the
        first key after ``start_after`` where the storage can start there (keys up to it may come too).
        A source may ask for the next page before the consumer has taken one for which ``ahead(page)``
        says it will want the next (S3 does: the server's time for it overlaps the taking)."""
        ...


def concurrency() -> int:
    """:data:`CONCURRENCY`, or ``REFSTORE_LIST_CONCURRENCY`` when set (``1`` lists in one stream)."""
    configured = os.environ.get("REFSTORE_LIST_CONCURRENCY", "")
    return max(1, int(configured)) if configured.isdigit() else CONCURRENCY


#: Makes the error for a listing past ``max_objects``, given the count it went past with.
TooMany = Callable[[int], Exception]


async def list_in_parallel(
    source: PageSource, prefix: str, *, max_objects: int, too_many: TooMany, streams: int | None = None
) -> list[ObjectMeta]:
    """Every object under ``prefix`` (a key prefix ending in ``/``, or ``""``), sorted by URL, listed by up
    to ``streams`` streams at once (default :func:`concurrency`). Past ``max_objects`` it raises
    ``too_many(max_objects + 1)`` (a :class:`~refstore.TooManyObjectsError` naming the prefix), at the end
    of the page that went past."""
    listing = _Listing(source, max_objects, too_many, streams or concurrency())
    return await listing.run(prefix)


@dataclass(slots=True, eq=False)
class _Stream:
    """One sequential listing of ``node``; with a ``folder``, only of keys inside its sub-prefixes."""

    node: str
    folder: str | None = None
    #: Keys from this one on belong to other streams.
    bound: str | None = None
    #: The last key listed so far.
    last: str = ""
    done: bool = False
    #: A delimiter listing for it is in flight.
    splitting: bool = False


class _Listing:
    def __init__(self, source: PageSource, max_objects: int, too_many: TooMany, streams: int) -> None:
        self.source = source
        self.max_objects = max_objects
        self.too_many = too_many
        self.streams = streams
        self.slots = asyncio.Semaphore(streams)
        self.found: list[ObjectMeta] = []
        #: folder -> its sub-prefixes after the key its delimiter listing started from, sorted
        self.children: dict[str, list[str]] = {}
        #: folder -> its own objects after that key, by key
        self.own: dict[str, list[tuple[str, ObjectMeta]]] = {}
        self.asked: set[str] = set()  # folders whose delimiter listing was started
        self.active = 0  # streams and delimiter listings started and not finished
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, prefix: str) -> list[ObjectMeta]:
        self._start(self._stream(_Stream(prefix)))
        try:
            while self.tasks:
                done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self.tasks.discard(task)
                    task.result()
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.found.sort(key=operator.attrgetter("url"))
        return self.found

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        self.active += 1
        self.tasks.add(asyncio.ensure_future(work))

    def room(self) -> int:
        return self.streams - self.active

    # -- streams ----------------------------------------------------------------------------------------

    async def _stream(self, stream: _Stream) -> None:
        def wanted(page: Page) -> bool:  # whether the stream will want the page after this one
            last = page.last_key if page.last_key is not None else stream.last
            return stream.bound is None or last < stream.bound

        try:
            listing = self.source.pages(stream.node, ahead=wanted)
            async with self.slots, contextlib.aclosing(listing) as pages:
                async for page in pages:
                    if self._take(stream, page):
                        break
                    if page.more and not stream.splitting and self.room() > 0:
                        self._split(stream, page)
        finally:
            stream.done = True
            self.active -= 1

    def _take(self, stream: _Stream, page: Page) -> bool:
        """Keep the page's records that are the stream's; whether it has reached its bound."""
        bound, folder = stream.bound, stream.folder
        cut = len(folder) if folder is not None else 0
        for key, meta in page.entries:
            if bound is not None and key >= bound:
                continue
            if folder is not None and key.find("/", cut) < 0:
                continue  # an object of the folder itself: its delimiter listing's
            self.found.append(meta)
        self._check_count()
        if page.last_key is not None:
            stream.last = page.last_key
        return bound is not None and stream.last >= bound

    def _check_count(self) -> None:
        if len(self.found) > self.max_objects:
            raise self.too_many(self.max_objects + 1)  # the first object past the limit

    # -- splitting --------------------------------------------------------------------------------------

    def _split(self, stream: _Stream, page: Page) -> None:
        """Hand out part of what ``stream`` has not reached: known sub-prefixes of the folder it is in, else
        those a delimiter listing of that folder will name."""
        last = stream.last
        folder = stream.folder if stream.folder is not None else stream.node
        #: the folders on the way down whose own objects the stream takes (not a group's folder)
        owned: list[str] = [] if stream.folder is not None else [folder]
        while (members := self.children.get(folder)) is not None:
            at = bisect.bisect_right(members, last)
            current = members[at - 1] if at and last.startswith(members[at - 1]) else None
            ahead = []
            for member in members[at:]:
                if not member.startswith(stream.node) or (
                    stream.bound is not None and member >= stream.bound
                ):
                    break
                ahead.append(member)
            if ahead:
                sample = _Sample.of(folder, page)
                first = self._hand_out(folder, ahead, last, stream.bound, sample) if sample else None
                if first is not None:
                    self._give_up(stream, owned, first)
                return
            if current is None:
                return  # the folder's own objects are left, or sub-prefixes already handed out
            folder = current
            owned.append(folder)
        sample = _Sample.of(folder, page)
        if folder not in self.asked and sample is not None and sample.per_member >= KEYS_PER_SUBPREFIX:
            self.asked.add(folder)
            stream.splitting = True
            self._start(self._name_children(stream, owned, sample))

    def _give_up(self, stream: _Stream, owned: list[str], first: str) -> None:
        """``stream`` stops at ``first`` (a sub-prefix just handed out): the own objects of the folders in
        ``owned`` from there up to its old bound (its folder's, and those after the sub-prefix it is in, in
        each folder above) come from their delimiter listings."""
        for folder in owned:
            self._take_own(folder, first, stream.bound)
        stream.bound = first

    async def _name_children(self, stream: _Stream, owned: list[str], sample: _Sample) -> None:
        """A delimiter listing of ``owned[-1]``, the folder ``stream`` is in, from the key it reached; part
        of its sub-prefixes after the key ``stream`` reached by then go to new streams."""
        folder = owned[-1]
        prefixes: list[str] = []
        own: list[tuple[str, ObjectMeta]] = []
        try:
            async with self.slots:
                listing = self.source.pages(folder, delimiter=True, start_after=stream.last)
                async with contextlib.aclosing(listing) as pages:
                    async for page in pages:
                        if stream.done:
                            return
                        prefixes += page.prefixes
                        own += page.entries
            if stream.done:
                return
            last, bound = stream.last, stream.bound
            self.children[folder] = sorted(set(prefixes))
            self.own[folder] = sorted(own, key=operator.itemgetter(0))
            ahead = [p for p in self.children[folder] if p > last and (bound is None or p < bound)]
            first = self._hand_out(folder, ahead, last, bound, sample) if ahead else None
            if first is not None:
                self._give_up(stream, owned, first)
        finally:
            stream.splitting = False
            self.active -= 1

    def _take_own(self, folder: str, start: str, bound: str | None) -> None:
        """Keep the folder's own objects (from its delimiter listing) from ``start`` up to ``bound``: a
        stream that took them gave up those keys."""
        own = self.own[folder]
        at = bisect.bisect_left(own, (start,))
        for key, meta in own[at:]:
            if bound is not None and key >= bound:
                break
            self.found.append(meta)
        self._check_count()

    def _hand_out(
        self, folder: str, members: list[str], last: str, bound: str | None, sample: _Sample
    ) -> str | None:
        """Start streams for the last of ``members`` (sorted sub-prefixes of ``folder``, all after
        ``last``, keys from ``bound`` on not theirs): as many as free streams, and as the members' keys,
        estimated from ``sample``, fill two pages each. Returns the first member handed out, if any.

        Members go out in groups that share a beginning no key up to ``last`` has (so a group's prefix
        holds no key that is not its own), cut finer, largest first, while there are too few."""
        pages = len(members) * sample.per_member / sample.page_keys
        wanted = min(self.room(), int(pages / PAGES_PER_STREAM))
        if wanted < 1:
            return None
        runs: list[list[str]] = []
        i = 0
        while i < len(members):
            first = members[i]
            beginning = first[: _common_length(first, last) + 1]
            j = i + 1
            while j < len(members) and members[j].startswith(beginning):
                j += 1
            runs.append(members[i:j])
            i = j
        while len(runs) <= wanted:
            largest = max(range(len(runs)), key=lambda r: len(runs[r]))
            if len(runs[largest]) < 2:
                break
            runs[largest : largest + 1] = _finer(runs[largest])
        handed = runs[-wanted:]
        for run in handed:
            if len(run) == 1:
                self._start(self._stream(_Stream(run[0], bound=bound)))
            else:
                beginning = run[0][: _common_length(run[0], run[-1])]
                self._start(self._stream(_Stream(beginning, folder, bound)))
        return handed[0][0]


@dataclass(frozen=True, slots=True)
class _Sample:
    """What one page says about a folder's sub-prefixes: their keys on average, and keys per page."""

    per_member: float
    page_keys: int

    @classmethod
    def of(cls, folder: str, page: Page) -> _Sample | None:
        """From the page's keys inside sub-prefixes of ``folder``; ``None`` when it has none."""
        cut = len(folder)
        subs = [
            key[: end + 1]
            for key, _ in page.entries
            if key.startswith(folder) and (end := key.find("/", cut)) >= 0
        ]
        if not subs:
            return None
        return cls(len(subs) / len(set(subs)), max(1, len(page.entries)))


def _common_length(a: str, b: str) -> int:
    """The length of the longest common beginning of ``a`` and ``b``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _finer(run: list[str]) -> list[list[str]]:
    """A group of sub-prefixes (sorted, two or more) cut by the character after their common beginning."""
    cut = _common_length(run[0], run[-1])
    out: list[list[str]] = []
    for member in run:
        if out and out[-1][0][cut] == member[cut]:
            out[-1].append(member)
        else:
            out.append([member])
    return out
