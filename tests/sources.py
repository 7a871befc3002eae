"""One test-side view of each backend: where objects live and how to change them with the raw client.

The conformance suite runs once per :class:`Source`; objects are written with each backend's own client,
never through refstore.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Source:
    """A place objects live, for one test."""

    kind: str
    #: URL of the test's area, no trailing slash; ``url(key)`` appends keys.
    base: str
    #: Overwritten objects can still be read at their old version.
    keeps_versions: bool
    #: Prefixes can be listed (HTTP cannot).
    can_list: bool
    raw: Any
    raw_base: str
    #: Registry root inside this backend, or None when it cannot hold one (HTTP).
    registry_url: str | None

    def url(self, key: str) -> str:
        return f"{self.base}/{key}"

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "local" or self.kind == "http":
            path = Path(self.raw_base, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            before = path.stat().st_mtime_ns if path.exists() else None
            path.write_bytes(data)
            if before is not None:  # make sure an HTTP ETag (mtime + size) changes
                os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))
            return
        self.raw.pipe_file(f"{self.raw_base}/{key}", data)
        self.raw.invalidate_cache()

    def delete(self, key: str) -> None:
        if self.kind in ("local", "http"):
            Path(self.raw_base, key).unlink()
            return
        self.raw.rm_file(f"{self.raw_base}/{key}")
        self.raw.invalidate_cache()


def make_source(kind: str, request: Any, tmp_path: Path) -> Source:
    """Build the Source named ``kind`` from the session's server fixtures."""
    fixture = request.getfixturevalue
    if kind in ("s3", "s3-unversioned", "rgw", "rgw-unversioned"):  # rgw: the test is marked s3_server("rgw")
        versioned = not kind.endswith("-unversioned")
        bucket = fixture("s3_bucket" if versioned else "s3_unversioned_bucket")
        fs = fixture("s3_fs")
        return Source(kind, f"s3://{bucket}", versioned, True, fs, bucket, f"s3://{bucket}/registry")
    if kind in ("gcs", "gcs-unversioned"):
        bucket = fixture("gcs_bucket" if kind == "gcs" else "gcs_unversioned_bucket")
        fs = fixture("gcs_fs")
        return Source(kind, f"gs://{bucket}", kind == "gcs", True, fs, bucket, f"gs://{bucket}/registry")
    if kind == "azure":
        container = fixture("azure_container")
        fs = fixture("azure_fs")
        return Source(kind, f"az://{container}", False, True, fs, container, f"az://{container}/registry")
    if kind == "http":
        site = fixture("http_server")
        return Source(kind, site.base_url, False, False, None, str(site.root), None)
    root = tmp_path / "source"
    root.mkdir()
    return Source("local", str(root), False, True, None, str(root), str(tmp_path / "local-registry"))
