"""The one record of what a stored object is, whatever its scheme: what manifests pin and backends list."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from .bulk import fast_constructor


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What one stored object is, whatever the backend.

    ``url`` is the object's URI without any version; ``digest`` is ``"<alg>:<hex>"`` (``etag:``, ``md5:``,
    ``crc32c:``, ``xxh3_128:``) or ``None`` when the backend gives none; ``version_id`` is the backend's
    version (S3 VersionId, GCS generation, Azure version id) or ``None``.
    """

    url: str
    size: int
    digest: str | None = None
    etag: str | None = None
    version_id: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One stored version of one key: its id, and whether it is a delete marker."""

    version_id: str
    deleted: bool = False


#: ``ObjectMeta(...)`` at a third of the cost, for listings of many objects (see :mod:`refstore.core.bulk`).
new_meta = fast_constructor(ObjectMeta)


class MetaColumns(Sequence[ObjectMeta]):
    """The records of many objects under one URL prefix (``base``, ending in ``/``), kept as columns: each
    object's name after the prefix, size and digest. A listing of 100,000 local files hands them on this
    way, and :class:`ObjectMeta` records are made only for whoever reads them one by one."""

    __slots__ = ("base", "digests", "names", "sizes")

    def __init__(self, base: str, names: list[str], sizes: Sequence[int], digests: list[str]) -> None:
        self.base, self.names, self.sizes, self.digests = base, names, sizes, digests

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> ObjectMeta: ...

    @overload
    def __getitem__(self, index: slice) -> MetaColumns: ...

    def __getitem__(self, index: int | slice) -> ObjectMeta | MetaColumns:
        if isinstance(index, slice):
            return MetaColumns(self.base, self.names[index], self.sizes[index], self.digests[index])
        return new_meta(self.base + self.names[index], self.sizes[index], self.digests[index])

    def __iter__(self) -> Iterator[ObjectMeta]:
        base = self.base
        for name, size, digest in zip(self.names, self.sizes, self.digests, strict=True):
            yield new_meta(base + name, size, digest)
