"""Case 4, one process: a manifest of N entries built, written, read back and diffed; prints one JSON line.

Run by ``case_manifest.py`` in a fresh interpreter so that the peak resident memory it reports
(``ru_maxrss``) belongs to these steps alone. Usage: ``python manifest_steps.py N DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

from refstore.manifest import Manifest, ManifestDiff, ManifestEntry


def entries(n: int) -> list[ManifestEntry]:
    """S3-like references: a folder per 1,000 objects, an ETag, a 32-character version id."""
    found = []
    for i in range(n):
        path = f"shard-{i // 1000:04d}/part-{i:07d}.parquet"
        etag = f"{i:032x}"
        found.append(
            ManifestEntry(
                path=path,
                ref=f"s3://bench-bucket/datasets/big/{path}",
                size=1000 + i % 5000,
                digest=f"etag:{etag}",
                etag=etag,
                version_id=f"v{i:031d}",
            )
        )
    return found


def main() -> None:
    n, folder = int(sys.argv[1]), Path(sys.argv[2])
    made = entries(n)
    times: dict[str, float] = {}

    start = time.perf_counter()
    manifest = Manifest.of(made)
    content = manifest.content_digest
    times["build"] = time.perf_counter() - start
    del made

    start = time.perf_counter()
    data = manifest.to_bytes()
    digest = manifest.digest
    (folder / "manifest.bin").write_bytes(data)
    times["write"] = time.perf_counter() - start
    size = len(data)
    del data

    start = time.perf_counter()
    back = Manifest.from_bytes((folder / "manifest.bin").read_bytes(), expected_digest=digest)
    times["read"] = time.perf_counter() - start
    assert len(back) == n and back.content_digest == content

    changed = dict(back.items())
    for path in list(changed)[::100]:
        changed[path] = dataclasses.replace(changed[path], size=changed[path].size + 1, digest="etag:changed")
    other = Manifest(changed)

    start = time.perf_counter()
    diff = ManifestDiff.between(back, other)
    times["diff"] = time.perf_counter() - start
    assert len(diff.modified) == n // 100 and not diff.added and not diff.removed

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"times": times, "bytes": size, "peak_rss": peak}))


if __name__ == "__main__":
    main()
