"""The local download cache: verified bytes by content hash, and pins that point at them.

Layout under ``$REFSTORE_CACHE_DIR`` (default ``~/.cache/refstore``)::

    blobs/<aa>/<xxh3_128 hex>     bytes, admitted only after they were checked against their pin
    pins/<aa>/<sha256 of pin>     the xxh3_128 hex of the bytes a reference pin resolved to (recorded by
                                  every download, ``skip_cache`` too: it checks files already in place)
    tmp/                          downloads in flight (admission is a rename; a copy and a rename where
                                  ``blobs/`` or ``pins/`` is a link to another filesystem); what crashed
                                  processes left there is removed at the start of each download

Every read from the cache re-hashes the bytes; a corrupted entry is dropped and fetched again. A cached
file that no download holds is handed out as a hard link (no second copy of the bytes on disk); once one
download holds it, further downloads get copies, so two downloads never share a file. Editing a downloaded
file in place can therefore change the cached bytes, which the next read from the cache detects.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import xxhash

from ..core.manifest import ManifestEntry, canonical_json
from .backends import BodyFile
from .dirfd import Spot
from .hashing import ALGORITHM, hash_open_file
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
        self._root = os.fspath(self.root)  # paths are built as strings: a warm download builds 10,000s
        self._tmp = f"{self._root}/tmp"
        self._folders: set[str] = set()  # folders this instance made (or found): one mkdir each

    def tmp_dir(self) -> Path:
        """The folder for files in flight, created if needed."""
        return Path(self._folder(self._tmp))

    def tmp_path(self) -> str:
        return f"{self._folder(self._tmp)}/{scratch_name()}"

    def remove_stale_tmp(self) -> None:
        """Delete what crashed processes of this machine left in ``tmp/`` (never admitted, never read)."""
        remove_stale(Path(self._tmp))

    def lookup(self, entry: ManifestEntry) -> str | None:
        """The cached bytes for ``entry``, or ``None``."""
        content = self._content_hash(entry)
        if content is None:
            return None
        blob = self._blob(content)
        try:
            info = os.stat(blob)
        except OSError:
            return None
        return blob if stat.S_ISREG(info.st_mode) and info.st_size == entry.size else None

    def admit(self, entry: ManifestEntry, fetched: str, content: str) -> str:
        """Move checked bytes, whose xxh3_128 hex is ``content``, into the cache (consuming ``fetched``)."""
        blob = self._blob(content)
        _move(fetched, blob, self._folder(os.path.dirname(blob)))
        self.remember(entry, content)
        return blob

    def remember(self, entry: ManifestEntry, content: str) -> None:
        """Record that the pinned object of ``entry`` holds the bytes whose xxh3_128 hex is ``content``
        (fetched and checked): files already at a destination can then be checked with no request."""
        pin = self._pin_file(entry)
        if pin is not None:
            tmp = self.tmp_path()
            try:
                _write_new(tmp, content.encode())
                _move(tmp, pin, self._folder(os.path.dirname(pin)))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def known_content(self, entry: ManifestEntry) -> str | None:
        """The xxh3_128 hex of ``entry``'s bytes when known without a request: pinned by the entry, or
        recorded by :meth:`remember` when this cache's machine fetched it (the bytes need not be cached)."""
        return self._content_hash(entry)

    def place(self, entry: ManifestEntry, cached: str, dest: Spot, scratch: Spot) -> None:
        """Put cached bytes at ``dest`` (see :func:`install`), re-hashing them first;
        :class:`CorruptCacheEntry` (the entry dropped, ``dest`` untouched) when they fail their name."""
        try:
            fd = os.open(cached, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:  # gone or unreadable since the lookup: fetched again, then replaced
            raise CorruptCacheEntry(str(cached)) from exc
        try:
            linkable = os.fstat(fd).st_nlink == 1
            if linkable:
                self._check(entry, cached, hash_open_file(fd))
                os.lseek(fd, 0, os.SEEK_SET)
            install(
                cached, dest, scratch, lambda path: self._check(entry, cached, _copy_fd(fd, path)), linkable
            )
        finally:
            os.close(fd)

    def _check(self, entry: ManifestEntry, cached: str, digest: str) -> None:
        if digest != os.path.basename(cached):
            self.evict(entry, cached)
            raise CorruptCacheEntry(cached)

    def evict(self, entry: ManifestEntry, cached: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cached)
        pin = self._pin_file(entry)
        if pin is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pin)

    def _content_hash(self, entry: ManifestEntry) -> str | None:
        if entry.digest.startswith(f"{ALGORITHM}:"):
            content = entry.digest.split(":", 1)[1]
        else:
            pin = self._pin_file(entry)
            if pin is None:
                return None
            try:
                content = _read_small(pin).decode("ascii").strip()
            except (OSError, UnicodeDecodeError):
                return None
        return content if _CONTENT_HEX.fullmatch(content) else None  # never a path out of the cache

    def _pin_file(self, entry: ManifestEntry) -> str | None:
        """Where a reference's pin -> content record lives; ``None`` for entries never cached."""
        if entry.digest.startswith("ref:"):
            return None  # unchecked references: whatever is there at download time
        if entry.digest.startswith(f"{ALGORITHM}:") and entry.ref is None:
            return None  # copies are named by their content hash already
        identity = canonical_json([entry.ref, entry.version_id, entry.etag, entry.size, entry.digest])
        key = hashlib.sha256(identity).hexdigest()
        return f"{self._root}/pins/{key[:2]}/{key}"

    def _blob(self, content_hex: str) -> str:
        return f"{self._root}/blobs/{content_hex[:2]}/{content_hex}"

    def _folder(self, folder: str) -> str:
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        return folder


def install(
    blob: str, dest: Spot, scratch: Spot, copy: Callable[[Spot], object], linkable: bool = True
) -> None:
    """Make ``dest`` hold the checked bytes of ``blob`` in one step: a hard link when nothing but the
    cache holds ``blob`` (made at ``dest`` itself, or at ``scratch`` and renamed over what ``dest`` was),
    else ``copy(scratch)`` renamed onto ``dest``. Files in a destination are made relative to their open
    folder (:mod:`refstore.storage.dirfd`)."""
    if linkable:
        try:
            if _link_alone(blob, dest):
                return
        except FileExistsError:
            if _link_alone(blob, scratch):
                scratch.move_to(dest)
                return
    copy(scratch)
    scratch.move_to(dest)


def _link_alone(blob: str, spot: Spot) -> bool:
    """Hard-link ``blob`` to the new ``spot`` if no other path links it; ``False`` (nothing made) when one
    does or the filesystem refuses (another device, no hard links, no permission). :class:`FileExistsError`
    when ``spot`` exists."""
    try:
        if os.stat(blob).st_nlink != 1:
            return False
        spot.link_from(blob)
    except FileExistsError:
        raise
    except OSError:
        return False
    if spot.links() == 2:
        return True
    spot.discard()  # another download linked it at the same moment: both copy
    return False


def _move(source: str, target: str, folder: str) -> None:
    """Rename ``source`` onto ``target`` (in ``folder``); across filesystems (``blobs/`` or ``tmp/`` a link
    to another one: ``EXDEV``) a copy to a scratch file in ``folder``, renamed onto ``target``. ``source``
    is consumed either way."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    scratch = Spot(None, f"{folder}/{scratch_name()}")
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            _copy_fd(fd, scratch)
        finally:
            os.close(fd)
        scratch.move_to(Spot(None, target))
    except BaseException:
        scratch.discard()
        raise
    os.unlink(source)


def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 256)
    finally:
        os.close(fd)


def _write_new(path: str, data: bytes) -> None:
    with BodyFile(path) as out:
        out.write(data)


def _buffer(fd: int) -> bytearray:
    # no larger than the file: a 1 MiB buffer per small file would be allocated (and faulted in) each time
    return bytearray(min(_BLOCK, os.fstat(fd).st_size + 1))


def _copy_fd(fd: int, dest: Spot) -> str:
    """Copy the open file ``fd`` to the new file ``dest``, hashing it on the way; the xxh3_128 hex."""
    buffer = _buffer(fd)
    view = memoryview(buffer)
    digest = xxhash.xxh3_128()
    out = dest.create()
    try:
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
            chunk = view[:n]
            while chunk:
                chunk = chunk[os.write(out, chunk) :]
    finally:
        os.close(out)
    return str(digest.hexdigest())


def copy_file(source: str, dest: Spot) -> None:
    """Copy the file at ``source`` to the new file ``dest`` (in the kernel where it can)."""
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        out = dest.create()
        try:
            _copy_plain(fd, out, os.fstat(fd).st_size)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _copy_plain(fd: int, out: int, size: int) -> None:
    offset = 0
    if hasattr(os, "sendfile"):
        try:
            while offset < size and (sent := os.sendfile(out, fd, offset, size - offset)):
                offset += sent
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or offset:
                raise
    os.lseek(fd, offset, os.SEEK_SET)
    while chunk := os.read(fd, _BLOCK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view) :]
