"""How a run ended, told truthfully: ``finished``, ``failed`` or ``crashed``.

- ``failed``: the ``with`` block raised, or the process is ending on an uncaught exception. The record
  keeps the exception as one line, ``Type: message``, with credentials taken out (see :func:`redact`): an
  error message may quote a signed URL, a connection string or a variable the user printed.
- ``crashed``: the process died with the run open (``kill -9``, out of memory, power loss), so nothing
  could write an ending. Only a later look can tell: the run directory's state still says ``running`` while
  its process is gone. ``refstore sync`` then records ``crashed`` in the registry.
"""

from __future__ import annotations

import os
import re
import sys

RUNNING, FINISHED, FAILED, CRASHED = "running", "finished", "failed", "crashed"
#: The states a run ends in.
ENDED = (FINISHED, FAILED, CRASHED)
#: Longest message kept in a run record.
_MAX_MESSAGE = 500
_REDACTED = "***"

_URL_USERINFO = re.compile(r"(\b[A-Za-z][\w+.-]*://)[^/\s@]*@")
_URL_QUERY = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s?#]*)[?#][^\s'\")\]>]*")
_SECRET_WORDS = (
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|account[_-]?key"
    r"|credential|signature|sig|sas"
)
_ASSIGNED_SECRET = re.compile(
    rf"(?i)\b([\w.-]*(?:{_SECRET_WORDS})[\w.-]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]{8,}")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}")
_SECRET_VARIABLE = re.compile(r"(?i)secret|token|password|passwd|key|credential|connection_string|sas")


def redact(text: str) -> str:
    """``text`` without credentials: URL ``user:password@`` parts and query strings, ``name=value`` pairs
    whose name says secret, bearer tokens, AWS key ids and the value of any secret-looking environment
    variable."""
    text = redact_environment(text)
    text = _URL_USERINFO.sub(r"\1", text)
    text = _URL_QUERY.sub(r"\1", text)
    text = _ASSIGNED_SECRET.sub(rf"\1\2{_REDACTED}", text)
    text = _BEARER.sub(rf"\1 {_REDACTED}", text)
    return _AWS_KEY_ID.sub(_REDACTED, text)


def redact_environment(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable replaced by ``***``."""
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_VARIABLE.search(name) and value in text:
            text = text.replace(value, _REDACTED)
    return text


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, credentials removed, at most a few hundred characters."""
    message = redact(" ".join(str(error).split()))
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    kind = type(error).__qualname__
    return f"{kind}: {message}" if message else kind


def is_failure(error: BaseException | None) -> bool:
    """Whether leaving a run with ``error`` is a failure (``sys.exit(0)`` and ``sys.exit()`` are not)."""
    if error is None:
        return False
    return not (isinstance(error, SystemExit) and error.code in (0, None))


def uncaught_exception() -> BaseException | None:
    """The exception ending this process, when it ends on one (called while the interpreter shuts down).

    Python stores an uncaught exception in ``sys.last_exc`` / ``sys.last_value`` before it prints it,
    whatever ``sys.excepthook`` is. An interactive session (the prompt, IPython, a notebook kernel) stores
    there every error of a line or cell, which ends nothing: there it does not count.
    """
    if hasattr(sys, "ps1") or sys.flags.interactive or _in_ipython():
        return None
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return error if isinstance(error, BaseException) else None


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return callable(get_ipython) and get_ipython() is not None
