"""The local download cache: verified bytes by content hash, and pins that point at them.

Layout under ``$REFSTORE_CACHE_DIR`` (default ``~/.cache/refstore``)::

    blobs/<aa>/<xxh3_128 hex>     bytes, admitted only after they were checked against their pin
    pins/<aa>/<sha256 of pin>     the xxh3_128 hex of the bytes a reference pin resolved to
    tmp/                          downloads in flight (same filesystem, so admission is a rename); what
                                  crashed processes left there is removed at the start of each download

Reads from the cache re-hash the bytes as they are copied out; a corrupted entry is dropped and fetched
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

import xxhash

from .hashing import ALGORITHM
from .manifest import ManifestEntry, canonical_json
from .scratch import remove_stale, scratch_name

_BLOCK = 2**20
_CONTENT_HEX = re.compile(r"[0-9a-f]{32}")


def default_cache_dir() -> Path:
    """``$REFSTORE_CACHE_DIR``, else ``~/.cache/refstore``."""
    configured = os.environ.get("REFSTORE_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "refstore"


class CorruptCacheEntry(Exception):
    """A cached file whose bytes no longer hash to its name (internal: the caller refetches)."""


class Cache:
    """Content-addressed local cache of verified object bytes."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()

    def tmp_dir(self) -> Path:
        """The folder for files in flight, created if needed."""
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def tmp_path(self) -> Path:
        return self.tmp_dir() / scratch_name()

    def remove_stale_tmp(self) -> None:
        """Delete what crashed processes of this machine left in ``tmp/`` (never admitted, never read)."""
        remove_stale(self.root / "tmp")

    def lookup(self, entry: ManifestEntry) -> Path | None:
        """The cached bytes for ``entry``, or ``None``."""
        content = self._content_hash(entry)
        if content is None:
            return None
        blob = self._blob(content)
        return blob if blob.is_file() and blob.stat().st_size == entry.size else None

    def admit(self, entry: ManifestEntry, fetched: Path, content: str) -> Path:
        """Move checked bytes, whose xxh3_128 hex is ``content``, into the cache (consuming ``fetched``)."""
        blob = self._blob(content)
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, blob)
        pin = self._pin_file(entry)
        if pin is not None:
            pin.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp_path()
            tmp.write_text(content)
            os.replace(tmp, pin)
        return blob

    def copy_out(self, entry: ManifestEntry, cached: Path, dest: Path) -> None:
        """Copy cached bytes to ``dest`` while re-hashing them; :class:`CorruptCacheEntry` on mismatch."""
        digest = xxhash.xxh3_128()
        with open(cached, "rb", buffering=0) as src, open(dest, "wb") as out:
            # a buffer no larger than the file: read(1 MiB) would allocate (and fault in) 1 MiB per call
            buffer = bytearray(min(_BLOCK, os.fstat(src.fileno()).st_size + 1))
            view = memoryview(buffer)
            while n := src.readinto(buffer):
                digest.update(view[:n])
                out.write(view[:n])
        if digest.hexdigest() != cached.name:
            self.evict(entry, cached)
            raise CorruptCacheEntry(str(cached))

    def evict(self, entry: ManifestEntry, cached: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            cached.unlink()
        pin = self._pin_file(entry)
        if pin is not None:
            with contextlib.suppress(FileNotFoundError):
                pin.unlink()

    def _content_hash(self, entry: ManifestEntry) -> str | None:
        if entry.digest.startswith(f"{ALGORITHM}:"):
            content = entry.digest.split(":", 1)[1]
        else:
            pin = self._pin_file(entry)
            try:
                content = pin.read_text().strip() if pin is not None else ""
            except (FileNotFoundError, UnicodeDecodeError):
                return None
        return content if _CONTENT_HEX.fullmatch(content) else None  # never a path out of the cache

    def _pin_file(self, entry: ManifestEntry) -> Path | None:
        """Where a reference's pin -> content record lives; ``None`` for entries never cached."""
        if entry.digest.startswith("ref:"):
            return None  # unchecked references: whatever is there at download time
        if entry.digest.startswith(f"{ALGORITHM}:") and entry.ref is None:
            return None  # copies are named by their content hash already
        identity = canonical_json([entry.ref, entry.version_id, entry.etag, entry.size, entry.digest])
        key = hashlib.sha256(identity).hexdigest()
        return self.root / "pins" / key[:2] / key

    def _blob(self, content_hex: str) -> Path:
        return self.root / "blobs" / content_hex[:2] / content_hex
