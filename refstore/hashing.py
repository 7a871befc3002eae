"""Content hashes of local files: xxh3_128, streamed, spread over all cores."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import xxhash

ALGORITHM = "xxh3_128"
_BLOCK = 2**20


def hash_file(path: str | os.PathLike[str]) -> str:
    """``"xxh3_128:<hex>"`` of the file's bytes."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return f"{ALGORITHM}:{digest.hexdigest()}"


def hash_bytes(data: bytes) -> str:
    """``"xxh3_128:<hex>"`` of ``data``."""
    return f"{ALGORITHM}:{xxhash.xxh3_128_hexdigest(data)}"


def hash_files(
    paths: Iterable[Path],
    *,
    executor: Executor | None = None,
    on_done: Callable[[Path], None] | None = None,
) -> dict[Path, str]:
    """Hash many files concurrently (xxhash releases the GIL), results keyed by path."""
    items = list(paths)
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 1) * 2))
    try:
        results: dict[Path, str] = {}
        for path, digest in zip(items, pool.map(hash_file, items), strict=True):
            results[path] = digest
            if on_done is not None:
                on_done(path)
        return results
    finally:
        if own:
            pool.shutdown()
