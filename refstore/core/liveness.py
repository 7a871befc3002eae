"""Whether the process that wrote a lock is certainly gone, so that its lock can be taken over at once.

A lock names its holder by host name and pid, plus what makes a pid mean one process: the kernel's boot id
(``/proc/sys/kernel/random/boot_id``: the same machine, not rebooted since), the PID namespace
(``/proc/self/ns/pid``: containers on one host share a boot id and may share a host name, not a PID
namespace) and the process's start time (``/proc/<pid>/stat``: a pid reused by a later process has
another). A holder is dead only when all of these say so: same host, boot and namespace, and its pid runs no
process, or runs a zombie, or runs another process than the one that started then. Anything else (another
machine, a reboot, a lock written before these fields, a system without ``/proc``) is not known to be dead,
and the caller falls back to its expiry.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any


def identity() -> dict[str, Any]:
    """This process, as a lock records it."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "boot_id": _boot_id(),
        "pid_ns": _pid_namespace(),
        "started": stat[1] if stat else None,
    }


def pid_running(pid: int) -> bool:
    """Whether some process of this PID namespace has ``pid`` (the old pid-only rule; where no probe is
    safe, as on Windows, it answers True so that nothing is taken for dead)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user runs under that pid
    return True


def is_dead(holder: Mapping[str, Any]) -> bool:
    """True when the process ``holder`` (an :func:`identity`) names is certainly no longer running."""
    pid = holder.get("pid")
    boot, namespace = _boot_id(), _pid_namespace()
    if type(pid) is not int or pid <= 0 or boot is None or namespace is None:
        return False
    if (holder.get("host"), holder.get("boot_id"), holder.get("pid_ns")) != (
        socket.gethostname(),
        boot,
        namespace,
    ):
        return False
    if not pid_running(pid):
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    return state == "Z" or (holder.get("started") is not None and started != holder.get("started"))


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """The state and start time (clock ticks after boot) of ``pid`` from ``/proc``; ``None`` when unknown,
    or when ``/proc`` belongs to another PID namespace than this process (its pids would mean others)."""
    try:
        with open("/proc/self/stat") as handle:
            if int(handle.read().split(maxsplit=1)[0]) != os.getpid():
                return None
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None
