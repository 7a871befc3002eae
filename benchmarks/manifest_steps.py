"""Case 4, one process: a manifest of N entries built, written, read back, and diffed against a stored copy
with 1% of its entries changed (two manifests decoded from bytes, as ``Registry.diff`` does); prints one
JSON line.

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

from refstore.core.manifest import Manifest, ManifestDiff, ManifestEntry


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
    peaks: dict[str, int] = {"entries made": _peak()}

    start = time.perf_counter()
    manifest = Manifest.of(made)
    content = manifest.content_digest
    times["build"] = time.perf_counter() - start
    peaks["build"] = _peak()
    del made

    start = time.perf_counter()
    data = manifest.to_bytes()
    digest = manifest.digest
    (folder / "manifest.bin").write_bytes(data)
    times["write"] = time.perf_counter() - start
    peaks["write"] = _peak()
    size = len(data)
    del data

    changed = dict(manifest.items())
    for path in list(changed)[::100]:
        changed[path] = dataclasses.replace(changed[path], size=changed[path].size + 1, digest="etag:changed")
    (folder / "changed.bin").write_bytes(Manifest(changed).to_bytes())
    del manifest, changed  # the writer is done; what follows reads stored manifests, as a diff of two
    # logged versions does

    start = time.perf_counter()
    back = Manifest.from_bytes((folder / "manifest.bin").read_bytes(), expected_digest=digest)
    times["read"] = time.perf_counter() - start
    peaks["read"] = _peak()
    assert len(back) == n and back.content_digest == content

    other = Manifest.from_bytes((folder / "changed.bin").read_bytes())
    start = time.perf_counter()
    diff = ManifestDiff.between(back, other)
    times["diff"] = time.perf_counter() - start
    peaks["diff"] = _peak()
    assert len(diff.modified) == n // 100 and not diff.added and not diff.removed

    print(json.dumps({"times": times, "bytes": size, "peak_rss": _peak(), "peaks": peaks}))


def _peak() -> int:
    """The peak resident memory of this process so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main()
