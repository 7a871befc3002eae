"""The local download cache: verified bytes by content hash, and pins that point at them.

Layout under ``$REFSTORE_CACHE_DIR`` (default ``~/.cache/refstore``)::

    blobs/<aa>/<xxh3_128 hex>     bytes, admitted only after they were checked against their pin
    pins/packs/<name>.pins        which bytes reference pins resolved to, one line ``<sha256 of pin>
                                  <xxh3_128 hex>`` per pin, one pack per download (recorded by every
                                  download, ``skip_cache`` too: it checks files already in place)
    pins/<aa>/<sha256 of pin>     the same, one file per pin, as refstore wrote them before packs (read)
    tmp/                          downloads in flight (admission is a rename; a copy and a rename where
                                  ``blobs/`` or ``pins/`` is a link to another filesystem); what crashed
                                  processes left there is removed at the start of each download

A download writes its pins as one pack when it ends (every :data:`PACK_PINS` pins before that), not a file
per object: a new file is the costliest step of a small object's download on some file systems (ext4
without a journal). Pins are a record that saves requests, never a source of bytes: a pin lost (a download
killed before it wrote its pack) only means the next download checks that file by fetching it again. Packs
are merged into one once more than :data:`MAX_PACKS` pile up.

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
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import xxhash

from ..core.manifest import ManifestEntry, canonical_json
from .backends import BodyFile
from .dirfd import Spot
from .hashing import ALGORITHM, hash_open_file
from .scratch import remove_stale, scratch_name

_BLOCK = 2**20
_CONTENT_HEX = re.compile(r"[0-9a-f]{32}")
#: Pins one :class:`Cache` holds in memory before it writes them as a pack.
PACK_PINS = 4096
#: Packs that may pile up in ``pins/packs/`` before a download merges them into one.
MAX_PACKS = 64
PACK_SUFFIX = ".pins"
_PACK_LINE = re.compile(r"^([0-9a-f]{64}) ([0-9a-f]{32})$", re.MULTILINE)


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
        self._pins_lock = threading.Lock()
        self._writing = threading.Lock()
        self._unwritten: dict[str, str] = {}  # pin key -> content hex, remembered but not in a pack yet
        self._packed: dict[str, str] | None = None  # the packs on disk, read on first need

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
        (fetched and checked): files already at a destination can then be checked with no request. Kept in
        memory (this instance reads it at once) until :meth:`write_pins`, or :data:`PACK_PINS` of them."""
        key = self._pin_key(entry)
        if key is None:
            return
        with self._pins_lock:
            self._unwritten[key] = content
            full = len(self._unwritten) >= PACK_PINS
        if full:
            self.write_pins()

    def write_pins(self) -> None:
        """Write the pins remembered since the last call as one pack (a scratch file renamed into
        ``pins/packs/``), then merge the packs if too many piled up. A pack that cannot be written (a full
        disk) is given up: pins only save requests."""
        with self._writing:  # one pack at a time; pins remembered meanwhile go in the next one
            with self._pins_lock:
                pins = dict(self._unwritten)
            if not pins:
                return
            with contextlib.suppress(OSError):
                self.write_pack(pins.items())
                self._packed = None  # read again when next needed (not kept: a million pins are 150 MB)
                self._merge_packs()
            with self._pins_lock:
                for key, content in pins.items():
                    if self._unwritten.get(key) == content:
                        del self._unwritten[key]

    def _packs_dir(self) -> str:
        return f"{self._root}/pins/packs"

    def write_pack(self, pins: Iterable[tuple[str, str]]) -> None:
        """One new pack of ``pins`` (key, content hex), written under a scratch name and renamed."""
        tmp = self.tmp_path()
        try:
            _write_new(tmp, "".join(f"{key} {content}\n" for key, content in pins).encode())
            folder = self._folder(self._packs_dir())
            _move(tmp, f"{folder}/{scratch_name()[: -len('.part')]}{PACK_SUFFIX}", folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def pack_files(self) -> list[str]:
        """The paths of the packs in ``pins/packs/`` now."""
        folder = self._packs_dir()
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [f"{folder}/{name}" for name in names if name.endswith(PACK_SUFFIX)]

    def _merge_packs(self) -> None:
        """Replace the packs by one when more than :data:`MAX_PACKS` piled up: the merged pack is written
        before the packs it merges are deleted, so no pin is lost (two processes merging at once leave
        two packs)."""
        packs = self.pack_files()
        if len(packs) <= MAX_PACKS:
            return
        merged: dict[str, str] = {}
        for path in packs:
            merged.update(read_pack(path))
        self.write_pack(merged.items())
        for path in packs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _packed_pins(self) -> dict[str, str]:
        """The pins of every pack on disk, read once per instance (packs written later by other processes
        are not seen: their files are then checked by a fetch, as with no pin)."""
        if self._packed is None:
            packed: dict[str, str] = {}
            for path in self.pack_files():
                with contextlib.suppress(OSError):
                    packed.update(read_pack(path))
            self._packed = packed
        return self._packed

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
        key = self._pin_key(entry)
        if key is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pin_path(key))
            with self._pins_lock:
                self._unwritten.pop(key, None)
            self._packed_pins().pop(key, None)  # (a pack's line stays: it names bytes no longer cached)

    def _content_hash(self, entry: ManifestEntry) -> str | None:
        if entry.digest.startswith(f"{ALGORITHM}:"):
            content: str | None = entry.digest.split(":", 1)[1]
        else:
            key = self._pin_key(entry)
            if key is None:
                return None
            content = self._unwritten.get(key)
            if content is None:
                try:
                    content = _read_small(self._pin_path(key)).decode("ascii").strip()
                except FileNotFoundError:
                    content = self._packed_pins().get(key)
                except (OSError, UnicodeDecodeError):
                    return None
        return content if content and _CONTENT_HEX.fullmatch(content) else None  # never a path out of it

    def _pin_key(self, entry: ManifestEntry) -> str | None:
        """The key of a reference's pin -> content record (sha256 hex of the pin); ``None`` for entries
        never cached."""
        if entry.digest.startswith("ref:"):
            return None  # unchecked references: whatever is there at download time
        if entry.digest.startswith(f"{ALGORITHM}:") and entry.ref is None:
            return None  # copies are named by their content hash already
        identity = canonical_json([entry.ref, entry.version_id, entry.etag, entry.size, entry.digest])
        return hashlib.sha256(identity).hexdigest()

    def _pin_path(self, key: str) -> str:
        """Where the one-file-per-pin record of ``key`` is (as written before packs)."""
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


def read_pack(path: str) -> dict[str, str]:
    """The pins of one pack: pin key -> content hex (lines that are not whole pins are left out)."""
    with open(path, "rb") as handle:
        text = handle.read().decode("ascii", "replace")
    return dict(_PACK_LINE.findall(text))


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
