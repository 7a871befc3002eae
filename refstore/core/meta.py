"""The one record of what a stored object is, whatever its scheme: what manifests pin and backends list."""

from __future__ import annotations

from dataclasses import dataclass

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
