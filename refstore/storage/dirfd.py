"""Destination folders held open by file descriptor while a download writes into them.

A download checks once, before writing, that no destination path leads out of its folder; a folder swapped
for a link after that check must not redirect what follows. So every file is created, linked and renamed
relative to an open descriptor of its folder (``openat``, ``linkat``, ``renameat`` through ``dir_fd=``),
and each folder is opened one component at a time from the download folder with
``O_NOFOLLOW | O_DIRECTORY`` (made with ``mkdirat`` when missing): no component is ever a link followed
blindly, and once a folder is open, renaming or replacing any path above it changes nothing about where
the files go. A link inside the download folder that resolves inside it (there before the download, and
accepted by the up-front check) is followed by opening its resolved path from the download folder, again
one component at a time without following links: a race can make the download fail
(:class:`~refstore.UnsafePathError`), never write elsewhere. The download folder itself may be a link: the
user named it.

Platforms without ``dir_fd`` support (Windows) use plain paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from ..core.exceptions import UnsafePathError

#: Whether this platform creates, links and renames relative to folder descriptors.
SUPPORTED = {os.open, os.link, os.rename, os.mkdir, os.stat, os.unlink} <= os.supports_dir_fd and hasattr(
    os, "O_NOFOLLOW"
)
_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_CHILD = _FOLDER | getattr(os, "O_NOFOLLOW", 0)
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
#: Folder descriptors one :class:`Folders` keeps open at most (then it closes them all and starts again).
_MAX_OPEN = 64
#: How many times a folder that changes while it is opened is looked at before the download fails.
_TRIES = 5


@dataclass(frozen=True)
class Spot:
    """A file: ``name`` in the open folder ``fd``, or the plain path ``name`` when ``fd`` is ``None``."""

    fd: int | None
    name: str

    def link_from(self, source: str) -> None:
        """Hard-link the file at the path ``source`` here (:class:`FileExistsError` when taken)."""
        os.link(source, self.name, dst_dir_fd=self.fd)

    def links(self) -> int:
        """How many names the file here has (this link not followed)."""
        return os.stat(self.name, dir_fd=self.fd, follow_symlinks=False).st_nlink

    def create(self) -> int:
        """A new file here, opened for writing (never through a link, never over a file)."""
        return os.open(self.name, _NEW, 0o666, dir_fd=self.fd)

    def move_to(self, target: Spot) -> None:
        """Rename this file onto ``target`` in one step (replacing what was there)."""
        os.replace(self.name, target.name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def discard(self) -> None:
        """Remove this file if it is there."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.fd)

    def __str__(self) -> str:
        return self.name


class Folders:
    """Open descriptors of the folders under one download folder ``root``, made when missing. Used by one
    thread at a time; :meth:`close` when done."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._fds: dict[str, int] = {}

    def __enter__(self) -> Folders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spot(self, logical_path: str) -> Spot:
        """The file at ``logical_path`` (relative, ``/``-separated), its folder opened (and made)."""
        folder, _, name = logical_path.rpartition("/")
        if not SUPPORTED:
            path = os.path.join(self.root, *logical_path.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return Spot(None, path)
        return Spot(self.folder(folder), name)

    def folder(self, folder: str) -> int:
        """The descriptor of the logical ``folder`` (``""``: the root)."""
        fd = self._fds.get(folder)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN:
                self.close()
            fd = self._fds[folder] = self._open(folder, links=True)
        return fd

    def close(self) -> None:
        fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)

    def _open(self, folder: str, *, links: bool) -> int:
        """Open ``folder`` from the root, one component at a time, never following a link (``links``: a
        link that resolves inside the root is opened by its resolved path, once)."""
        fd = os.open(self.root, _FOLDER)
        done: list[str] = []
        try:
            for part in folder.split("/") if folder else ():
                done.append(part)
                child = _open_child(fd, part, self._path(done))
                if child is None:  # a link
                    if not links:
                        raise UnsafePathError(
                            f"{self._path(done)}: a link appeared while a download wrote there"
                        )
                    child = self._open(self._inside("/".join(done)), links=False)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _inside(self, folder: str) -> str:
        """The logical path, under the root, that the linked ``folder`` resolves to; refused when outside."""
        real_root = os.path.realpath(self.root)
        try:
            real = os.path.realpath(self._path(folder.split("/")))
        except OSError as exc:  # a link swapped back for a folder between realpath's lstat and readlink
            raise UnsafePathError(
                f"{self._path(folder.split('/'))}: changed while it was looked at ({exc.strerror}); nothing "
                "is written through it (was a folder swapped for a link during the download?)"
            ) from exc
        if real == real_root or not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise UnsafePathError(
                f"{self._path(folder.split('/'))}: a link to {real}, outside {self.root}; nothing is written "
                "through it (was a folder swapped for a link during the download?)"
            )
        return os.path.relpath(real, real_root).replace(os.sep, "/")

    def _path(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)


def _open_child(fd: int, name: str, where: str) -> int | None:
    """Open the folder ``name`` (at the path ``where``) in the folder ``fd``, made if missing; ``None``
    when it is a link. A file or a folder swapped meanwhile is looked at again, a few times."""
    for _ in range(_TRIES):
        try:
            return os.open(name, _CHILD, dir_fd=fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            continue
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                return None
            if not stat.S_ISDIR(mode):
                raise
    raise UnsafePathError(
        f"{where}: changed {_TRIES} times while a download opened it; nothing is written there"
    )
