"""Leases: which processes have a run directory open, so that nothing deletes a run that is still in use.

Every process that opens a run directory (``init``, a resume included) writes a lease file into
``<run dir>/.refstore-run/leases/``, and a daemon thread of that process refreshes it (its mtime) every
:data:`REFRESH` seconds; ending the run removes it. ``refstore sync --clean`` deletes a run directory, and
``refstore sync`` calls a run crashed, only when every lease in it is provably dead:

- a lease of this machine (same host name, same boot, same PID namespace) is dead when
  :func:`refstore.core.liveness.is_dead` says so: no process has its pid, or a zombie, or a later process that
  reused the pid (its start time differs);
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import liveness
from ..storage.backends.local import write_atomic
from .local import INTERNAL_DIR, LocalState, state_path

LEASES = "leases"
#: Seconds between two refreshes of a lease by its process.
REFRESH = 30.0
#: Seconds after its last refresh that a lease from another machine counts as dead.
EXPIRY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Holder:
    """The process a lease names (a :func:`refstore.core.liveness.identity`): host, pid, boot, PID namespace
    and start time."""

    identity: dict[str, Any]

    @classmethod
    def this_process(cls) -> Holder:
        return cls(liveness.identity())

    @property
    def host(self) -> str:
        return str(self.identity.get("host"))

    @property
    def pid(self) -> object:
        return self.identity.get("pid")

    def is_local(self, here: Holder) -> bool:
        """Whether this machine can look at the process: same host, same boot, same PID namespace."""
        keys = ("host", "boot_id", "pid_ns")
        mine = [here.identity.get(k) for k in keys]
        return None not in mine and [self.identity.get(k) for k in keys] == mine

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
        self.path = folder / f"{os.getpid()}-{os.urandom(6).hex()}.json"
        self._refresh = REFRESH
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        self._write()
        self._thread = threading.Thread(target=self._keep, name="refstore-run-lease", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        write_atomic(str(self.path), json.dumps(self.holder.identity, sort_keys=True).encode())

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
            body = json.loads(path.read_bytes())
        except FileNotFoundError:
            continue  # released while we looked
        except (OSError, ValueError):
            body = None
        if not isinstance(body, dict):  # unreadable or damaged: judged by its age alone
            body = {"host": "an unknown host", "pid": None}
        holder = Holder(body)
        local = holder.is_local(here)
        if local:
            alive = holder.identity == here.identity or not liveness.is_dead(holder.identity)
        else:
            alive = now - refreshed < EXPIRY
        if alive:
            live.append(LiveLease(holder, refreshed, local))
    return live


def _legacy_live(run_dir: Path, state: LocalState, here: Holder, now: float) -> list[LiveLease]:
    if state.status != "running":
        return []
    holder = Holder({"host": state.host, "pid": state.pid})
    if state.host == here.host:  # as older versions judged it: by the pid alone
        return [LiveLease(holder, now, True)] if liveness.pid_running(state.pid) else []
    try:
        mtime = state_path(run_dir).stat().st_mtime
    except OSError:
        mtime = now
    return [LiveLease(holder, mtime, False)] if now - mtime < EXPIRY else []
