"""Leases: which processes have a run directory open, so that nothing deletes a run that is still in use.

Every process that opens a run directory (``init``, a resume included) writes a lease file into
``<run dir>/.refstore-run/leases/``, and a daemon thread of that process refreshes it (its mtime) every
:data:`REFRESH` seconds; ending the run removes it. ``refstore sync --clean`` deletes a run directory, and
``refstore sync`` calls a run crashed, only when every lease in it is provably dead:

- a lease of this machine (same host name, same boot, same PID namespace) is dead when no process has its
  pid, or when the process that has it is not the one that wrote the lease (a reused pid: its start time
  differs);
- a lease from elsewhere (another host of a shared file system, another boot, a container's PID namespace)
  names a process nobody here can look at: it is dead only when it has not been refreshed for
  :data:`EXPIRY` (a day), far longer than the refresh period, clock skew between hosts or a short
  suspension. Until then the run is kept: keeping a finished run a day too long costs disk, deleting a
  live one loses its files.

The refresh has a thread of its own, not the sync thread's loop, because one upload of a large file can
keep that loop busy far longer than a refresh period.

Why not ``state.json``: it holds one pid and one host, so a run resumed by a second process took over the
first one's pid (and was ``finished`` when the second one ended while the first ran on), and a run on
another host could never be told alive. Run directories written before leases existed (no ``leases``
folder) are still judged by ``state.json``: alive while their process runs on this machine, and, when it
names another host, until ``state.json`` is :data:`EXPIRY` old.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.local import write_atomic
from .local import INTERNAL_DIR, LocalState, state_path

LEASES = "leases"
#: Seconds between two refreshes of a lease by its process.
REFRESH = 30.0
#: Seconds after its last refresh that a lease from another machine counts as dead.
EXPIRY = 24 * 3600.0


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), ``None`` where unknown."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Holder:
    """The process a lease names: where it runs (host, boot, PID namespace) and which process it is."""

    host: str
    pid: int
    boot: str | None
    pid_ns: str | None
    start: int | None

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        boot = _read("/proc/sys/kernel/random/boot_id")
        return cls(socket.gethostname(), pid, boot, _pid_namespace(), _start_ticks(pid))

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "boot": self.boot,
            "pid_ns": self.pid_ns,
            "start": self.start,
        }

    @classmethod
    def from_json(cls, body: Any) -> Holder | None:
        if not isinstance(body, dict) or not isinstance(body.get("host"), str):
            return None
        if not isinstance(body.get("pid"), int):
            return None
        start = body.get("start")
        return cls(
            body["host"],
            body["pid"],
            body.get("boot") if isinstance(body.get("boot"), str) else None,
            body.get("pid_ns") if isinstance(body.get("pid_ns"), str) else None,
            start if isinstance(start, int) else None,
        )

    def is_local(self, here: Holder) -> bool:
        """Whether this machine can look at the process: same host, same boot, same PID namespace."""
        return (self.host, self.boot, self.pid_ns) == (here.host, here.boot, here.pid_ns)

    def process_alive(self) -> bool:
        """On this machine: whether the process that wrote the lease still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        started = _start_ticks(self.pid)
        return self.start is None or started is None or started == self.start

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True, slots=True)
class LiveLease:
    """A lease that is not provably dead: the reason a run directory is kept."""

    holder: Holder
    refreshed: float  # seconds since the epoch
    local: bool

    def describe(self, now: float | None = None) -> str:
        if self.local:
            return f"in use by {self.holder}"
        age = max(0.0, (now if now is not None else time.time()) - self.refreshed)
        return (
            f"in use by {self.holder} (lease refreshed {_age(age)} ago; "
            f"counted dead after {_age(EXPIRY)} without a refresh)"
        )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


class Lease:
    """This process's lease on one run directory, refreshed by a daemon thread until :meth:`release`."""

    def __init__(self, run_dir: Path) -> None:
        self.holder = Holder.this_process()
        folder = run_dir / INTERNAL_DIR / LEASES
        self.path = folder / f"{self.holder.pid}-{os.urandom(6).hex()}.json"
        self._refresh = REFRESH
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        self._write()
        self._thread = threading.Thread(target=self._keep, name="refstore-run-lease", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        write_atomic(str(self.path), json.dumps(self.holder.to_json(), sort_keys=True).encode())

    def _keep(self) -> None:
        while not self._stop.wait(self._refresh):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                with contextlib.suppress(OSError):
                    self._write()  # removed under us: the run is still alive
            except OSError:
                pass

    def release(self) -> None:
        """Stop refreshing and remove the lease (the run is ended by this process)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def live_leases(run_dir: Path, state: LocalState) -> list[LiveLease]:
    """The leases in ``run_dir`` that are not provably dead (``state``: the directory's state, which
    decides only for a run directory of an older version, without a ``leases`` folder)."""
    here = Holder.this_process()
    now = time.time()
    folder = run_dir / INTERNAL_DIR / LEASES
    if not folder.is_dir():
        return _legacy_live(run_dir, state, here, now)
    live = []
    for path in sorted(folder.glob("*.json")):
        try:
            refreshed = path.stat().st_mtime
            holder = Holder.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            continue  # released while we looked
        except (OSError, ValueError):
            holder = None
        if holder is None:  # unreadable or damaged: judged by its age alone
            if now - refreshed < EXPIRY:
                live.append(LiveLease(Holder("an unknown host", 0, None, None, None), refreshed, False))
            continue
        local = holder.is_local(here)
        if holder == here or (local and holder.process_alive()) or (not local and now - refreshed < EXPIRY):
            live.append(LiveLease(holder, refreshed, local))
    return live


def _legacy_live(run_dir: Path, state: LocalState, here: Holder, now: float) -> list[LiveLease]:
    if state.status != "running":
        return []
    holder = Holder(state.host, state.pid, None, None, None)
    if state.host == here.host:
        return [LiveLease(holder, now, True)] if holder.process_alive() else []
    try:
        mtime = state_path(run_dir).stat().st_mtime
    except OSError:
        mtime = now
    return [LiveLease(holder, mtime, False)] if now - mtime < EXPIRY else []
