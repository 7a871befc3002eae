"""Validation of artifact names, aliases, references (``name:alias``) and logical paths."""

from __future__ import annotations

import re

from .exceptions import InvalidNameError, UnsafePathError

MAX_NAME_LENGTH = 128
MAX_PATH_LENGTH = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"v(\d+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")
_BAD_SEGMENTS = frozenset(("", ".", ".."))
#: A path every check below accepts, in one C-level match (the common case; manifests hold millions).
_SEGMENT = r"(?!\.\.?(?:/|$))[^/\\\x00-\x1f\x7f]+"
_SAFE_PATH = re.compile(rf"(?![A-Za-z]:){_SEGMENT}(?:/{_SEGMENT})*")
RESERVED_ALIASES = ("latest",)


def check_name(name: str, what: str = "artifact name") -> str:
    """Return ``name`` if it is ``[A-Za-z0-9][A-Za-z0-9._-]*`` of at most 128 characters."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"{what} {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit, "
            f"at most {MAX_NAME_LENGTH} characters"
        )
    return name


def check_alias(alias: str) -> str:
    """A custom alias: a valid name that is neither ``latest`` nor ``v<digits>``."""
    check_name(alias, "alias")
    if alias in RESERVED_ALIASES or _VERSION.fullmatch(alias):
        raise InvalidNameError(f"alias {alias!r} is reserved (latest and v<N> are managed by refstore)")
    return alias


def is_name(value: object) -> bool:
    """Whether ``value`` is a valid artifact name (:func:`check_name` accepts it)."""
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and bool(_NAME.fullmatch(value))


def is_alias(value: object) -> bool:
    """Whether ``value`` is a custom alias (:func:`check_alias` accepts it)."""
    return is_name(value) and value not in RESERVED_ALIASES and not _VERSION.fullmatch(str(value))


def parse_ref(ref: str) -> tuple[str, str]:
    """``"mnist"`` -> ``("mnist", "latest")``; ``"mnist:v3"`` -> ``("mnist", "v3")``."""
    name, sep, selector = ref.partition(":")
    check_name(name)
    if not sep:
        return name, "latest"
    check_name(selector, f"version or alias in {ref!r}")
    return name, selector


def version_number(selector: str) -> int | None:
    """``"v3"`` -> 3; an alias -> None."""
    match = _VERSION.fullmatch(selector)
    return int(match[1]) if match else None


def check_logical_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path; else raise :class:`UnsafePathError`.

    Refused: empty, absolute, ``..`` or ``.`` segments, empty segments, backslashes, NUL and other control
    characters, a drive letter, and paths longer than 1024 characters.
    """
    if type(path) is str and len(path) <= MAX_PATH_LENGTH and _SAFE_PATH.fullmatch(path):
        return path
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"logical path {path!r}: must be a non-empty string")
    if len(path) > MAX_PATH_LENGTH:
        raise UnsafePathError(f"logical path {path[:60]!r}...: longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/") or "\\" in path or _DRIVE.match(path):
        raise UnsafePathError(f"logical path {path!r}: must be relative, with '/' separators")
    if _CONTROL.search(path):
        raise UnsafePathError(f"logical path {path!r}: contains a control character")
    if not _BAD_SEGMENTS.isdisjoint(path.split("/")):
        raise UnsafePathError(f"logical path {path!r}: empty, '.' or '..' segment")
    return path


def join_logical(prefix: str | None, path: str) -> str:
    """``prefix/path`` (or ``path``), validated."""
    if prefix:
        path = f"{prefix.rstrip('/')}/{path}"  # a leading "/" stays refused
    if type(path) is str and len(path) <= MAX_PATH_LENGTH and _SAFE_PATH.fullmatch(path):
        return path  # the common case, without a second call
    return check_logical_path(path)


def join_logical_all(prefix: str | None, paths: list[str]) -> list[str]:
    """:func:`join_logical` of each of ``paths`` (strings): one C-level pass when all are safe, the common
    case (a listing of 100,000 files)."""
    if prefix:
        head = f"{prefix.rstrip('/')}/"
        paths = [head + path for path in paths]
    if all_safe(paths):
        return paths
    return [check_logical_path(path) for path in paths]


#: What no safe path holds, looked for in the paths joined by newlines with one before and after (a newline
#: is a control character, so no path holds one): an empty first, last or middle segment, and "." and ".."
#: segments (looked for only where a segment starts with a dot).
_EMPTY_SEGMENTS = ("\n/", "/\n", "//")
_DOT_SEGMENTS = tuple(f"{before}{dots}{after}" for dots in (".", "..") for before in "\n/" for after in "\n/")
_DRIVE_JOINED = re.compile(r"\n[A-Za-z]:")
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def all_safe(paths: list[str]) -> bool:
    """Whether :func:`check_logical_path` takes every one of ``paths`` (strings) as it is, judged with a few
    C-level scans of their joined text instead of a match per path (``False`` for none: check them one by
    one to name the one at fault)."""
    if not paths or "" in paths or max(map(len, paths)) > MAX_PATH_LENGTH:
        return False
    joined = "\n" + "\n".join(paths) + "\n"
    if joined.isascii():  # (the common case: the bytes' control characters deleted in one C-level pass)
        text = joined.encode()
        if len(text.translate(None, _PRINTABLE_ASCII)) != len(paths) + 1:  # only the newlines are left
            return False
    elif any(map(_CONTROL.search, paths)):
        return False
    if "\\" in joined or any(part in joined for part in _EMPTY_SEGMENTS):
        return False
    if ("\n." in joined or "/." in joined) and any(part in joined for part in _DOT_SEGMENTS):
        return False
    return ":" not in joined or not _DRIVE_JOINED.search(joined)


def under_prefix(path: str, prefix: str | None) -> bool:
    """Whether the logical ``path`` is under ``prefix``, matched at ``/`` boundaries: ``train`` (or
    ``train/``) takes ``train`` itself and ``train/...``, never ``train2/...``; no prefix takes all."""
    folder = (prefix or "").rstrip("/")
    return not folder or path == folder or (path.startswith(folder) and path[len(folder)] == "/")
