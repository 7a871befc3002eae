"""``init`` starts (or resumes) a run; a :class:`Run` saves files, records lineage and finishes.

A run is ``runs/<project>/<id>/`` in a registry (record, synced files, code state) and a local run
directory. The newest unfinished run is the current one (``refstore.run``); every run still open when the
interpreter exits is finished then, as ``failed`` when the process ends on an uncaught exception.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from ..core.exceptions import RefstoreError, RunError
from ..core.names import check_name
from ..core.places import run_area
from ..snapshots.artifact import Artifact
from ..snapshots.registry import Registry
from ..snapshots.version import ArtifactVersion
from ..storage.backends.local import write_atomic
from . import code_state, status
from .files import RunFiles, short_name
from .globs import is_ignored, run_relative
from .lease import Lease
from .local import INTERNAL_DIR, LINK_SCRATCH, LOCAL_RECORD, LocalState, find_run_dir, new_run_dir
from .naming import check_run_name, new_run_id, readable_name
from .records import RunRecord
from .settings import ignore_globs
from .sync import Syncer, check_policy

DEFAULT_SYNC_INTERVAL = 1.0

_active: list[Run] = []
_active_lock = threading.Lock()
_exit_hook_installed = False


class Run:
    """One run: a local run directory whose files are synced to ``runs/<project>/<id>/`` in a registry."""

    def __init__(
        self, record: RunRecord, registry: Registry, run_dir: Path, syncer: Syncer, lease: Lease
    ) -> None:
        self._record = record
        self.registry = registry
        self.dir = run_dir
        self._syncer = syncer
        self._lease = lease
        self._finished = False
        self._finish_lock = threading.Lock()

    id = property(lambda self: self._record.id)
    project = property(lambda self: self._record.project)

    @property
    def name(self) -> str:
        """A readable name: ``init(name=...)``, else ``<adjective>-<noun>-<N>`` for the project's N-th run.
        Setting it (while the run is open) writes it to the run's record in the registry."""
        return self._record.name

    @name.setter
    def name(self, value: str) -> None:
        with self._finish_lock:  # never beside finish(), which writes the record too
            self._check_open()
            self._record = replace(self._record, name=check_run_name(value))
            self.registry.store.replace(record_path(self.path), self._record.to_bytes())
            keep_record(self.dir, self._record)
            self._syncer.set_name(self._record.name)

    @property
    def path(self) -> str:
        """``project/id``: what ``restore`` and lineage call this run."""
        return self._record.path

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._record.config)

    @property
    def code(self) -> code_state.CodeState | None:
        """The git state the run started from, if it started inside a repository."""
        return self._record.code

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def state(self) -> str:
        """``running``, then ``finished`` or ``failed`` (with :attr:`error`)."""
        return self._record.state

    @property
    def error(self) -> str | None:
        """``Type: message`` of the exception a failed run ended on, credentials removed."""
        return self._record.error

    def __repr__(self) -> str:
        return f"Run({self.path!r}, name={self.name!r}, dir={str(self.dir)!r})"

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end(exc if status.is_failure(exc) else None)

    def save(
        self, glob_str: str | os.PathLike[str], base_path: str | None = None, policy: str = "live"
    ) -> list[str]:
        """Link the files matching ``glob_str`` now into the run directory and sync them by ``policy``.

        Returns their paths relative to the run directory. The pattern is remembered: a file written into
        the run directory later that matches it is synced with the same policy.
        """
        self._check_open()
        check_policy(policy)
        pattern = os.path.abspath(os.fspath(glob_str))
        targets = self._targets(sorted(glob.glob(pattern, recursive=True)), base_path)
        for relpath, source in targets.items():
            link_into(Path(source), self.dir / relpath)
        self._syncer.save(list(targets), run_relative(pattern, base_path, str(self.dir)), policy)
        return list(targets)

    def _targets(self, sources: list[str], base_path: str | None) -> dict[str, str]:
        """Run-relative path -> source file, ignored files left out; two files may not share a path."""
        targets: dict[str, str] = {}
        for source in filter(os.path.isfile, sources):
            relpath = run_relative(source, base_path, str(self.dir))
            if relpath.split("/")[0] == INTERNAL_DIR or is_ignored(relpath, self._syncer.ignore):
                continue
            if relpath in targets:
                raise RunError(
                    f"{targets[relpath]} and {source} would both be saved as {relpath}; "
                    "pass base_path to keep their folders"
                )
            targets[relpath] = source
        return targets

    def use_artifact(self, ref: str | ArtifactVersion | Artifact) -> ArtifactVersion:
        """The version ``ref`` names, recorded as an input of this run (``v.used_by()``).

        ``ref`` may be a draft :class:`Artifact`: it is logged first (a new version only when its content
        changed, the run as ``created_by`` of a new one), and the draft then acts on that version
        (``artifact.download()``).
        """
        self._check_open()
        if isinstance(ref, Artifact):
            ref = self.registry.log(ref, created_by=self.path)
        name = ref.qualified_name if isinstance(ref, ArtifactVersion) else ref
        return self.registry.record_use(name, self.path)

    def log_artifact(self, artifact: Artifact, aliases: Iterable[str] = ()) -> ArtifactVersion:
        """Log ``artifact`` as an output of this run (``v.created_by`` is the run's path)."""
        self._check_open()
        return self.registry.log(artifact, aliases, created_by=self.path)

    def finish(self) -> None:
        """Upload what is pending, wait for it, and mark the run finished (a second call does nothing).

        Raises :class:`RunError` naming every file that could not be uploaded; their local copies stay.
        """
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        """Finish the run, as ``failed`` with ``error`` when one is given."""
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
        _forget(self)
        try:
            problems = [str(f) for f in self._syncer.close()]
            state = status.FAILED if error is not None else status.FINISHED
            described = status.describe(error) if error is not None else None
            self._syncer.state.status, self._syncer.state.error = state, described
            self._syncer.state.save(self.dir)
            try:
                self._record = replace(self._record, state=state, finished_at=_now(), error=described)
                keep_record(self.dir, self._record)
                self.registry.store.replace(record_path(self.path), self._record.to_bytes())
            except Exception as exc:
                problems.append(f"the run record ({exc})")
        finally:
            self._lease.release()  # last: until here, this process may still write into the directory
        if problems:
            raise RunError(
                f"run {self.path}: not synced to {self.registry.root}, the local copies stay in {self.dir}: "
                + "; ".join(problems)
            )

    def _check_open(self) -> None:
        if self._finished:
            raise RunError(f"run {self.path} is finished")


def link_into(source: Path, dest: Path) -> None:
    """Make ``dest`` a symbolic link to ``source`` (a copy where links are not allowed), atomically."""
    if os.path.abspath(source) == os.path.abspath(dest):
        return
    if _link_new(os.path.abspath(source), dest):
        return
    temporary = dest.with_name(f".{short_name(dest.name)}{LINK_SCRATCH}{os.urandom(4).hex()}")
    try:
        os.symlink(os.path.abspath(source), temporary)
    except OSError:
        shutil.copy2(source, temporary)
    os.replace(temporary, dest)


def _link_new(target: str, dest: Path) -> bool:
    """Make ``dest`` a new link to ``target`` in one call where nothing is there yet (the common case: a
    temporary link and a rename cost two more calls per saved file); ``False`` when something is."""
    try:
        os.symlink(target, dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _link_new(target, dest) if dest.parent.is_dir() else False
    except OSError:
        return False
    return True


def record_path(run_path: str) -> str:
    return f"runs/{run_path}/run.json"


def keep_record(run_dir: Path, record: RunRecord) -> None:
    """Keep a copy of the run record in the run directory, so ``refstore sync`` can publish it again."""
    write_atomic(str(run_dir / INTERNAL_DIR / LOCAL_RECORD), record.to_bytes())


def republish_record(reg: Registry, run_dir: Path) -> None:
    """Publish the run directory's copy of the record where the registry lost it or missed the finish."""
    kept = run_dir / INTERNAL_DIR / LOCAL_RECORD
    if not kept.is_file():
        return
    record = RunRecord.from_bytes(kept.read_bytes(), str(kept))
    try:
        published = read_record(reg, record.path)
    except RunError:
        reg.store.create(record_path(record.path), record.to_bytes())
        return
    if published.state == status.RUNNING and record.state in status.ENDED:
        reg.store.replace(record_path(record.path), record.to_bytes())


def init(
    project: str = "default",
    *,
    dir: str | os.PathLike[str] | None = None,
    id: str | None = None,
    name: str | None = None,
    resume: bool = False,
    registry: Registry | str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    sync_interval: float = DEFAULT_SYNC_INTERVAL,
) -> Run:
    """Start run ``id`` (default: a new 8-character id) of ``project``, or continue it with ``resume=True``.

    Its directory is ``<dir or $REFSTORE_DIR or .>/refstore-runs/run-YYYYmmdd_HHMMSS-<id>``; its record goes
    to ``registry`` (a :class:`Registry` or URL; default ``$REFSTORE_ROOT``, else ``./.refstore``). With
    ``resume=True`` an existing run continues (in its local directory when this machine has it) and a
    missing one is started. Inside a git repository the commit, branch, remote, upstream commit and the
    patches to the working tree (``diff.patch``, ``upstream.patch``: :mod:`refstore.runs.code_state`) are
    recorded. ``sync_interval`` is how often live files are checked, in seconds.
    """
    check_name(project, "project")
    run_id = check_name(id, "run id") if id is not None else new_run_id()
    if name is not None:
        check_run_name(name)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    area = run_area(dir)
    ignore = ignore_globs(area)
    captured = code_state.capture(Path.cwd())
    record, resumed = _claim_record(reg, project, run_id, name, _checked_config(config), captured, ignore)
    if resumed:
        if not resume:
            raise RunError(f"run {record.path} already exists in {reg.root}; pass resume=True to continue it")
        record = _resume_record(reg, record, name, config)
    run_dir = (find_run_dir(area, run_id) if resumed else None) or new_run_dir(area, run_id)
    saved = record.code.patch_names() if captured and record.code and not resumed else []
    patches = {name: captured[1][name] for name in saved} if captured else {}
    run = _start(record, reg, run_dir, ignore, sync_interval, patches)
    _remember(run)
    return run


def _start(
    record: RunRecord,
    reg: Registry,
    run_dir: Path,
    ignore: tuple[str, ...],
    interval: float,
    patches: Mapping[str, bytes],
) -> Run:
    """Take a lease on the run directory, set it up, start its watcher and save the code ``patches`` (file
    name -> bytes) with policy now."""
    lease = Lease(run_dir).acquire()
    try:
        state = _local_state(run_dir, record, reg)
        syncer = Syncer(run_dir, state, RunFiles(reg.store, record.path), ignore, interval)
        state.save(run_dir)
        keep_record(run_dir, record)
    except BaseException:
        lease.release()  # no run came of it
        raise
    syncer.start()
    for name, patch in patches.items():
        (run_dir / name).write_bytes(patch)
    if patches:
        syncer.save(list(patches), None, "now")
    return Run(record, reg, run_dir, syncer, lease)


def _claim_record(
    reg: Registry,
    project: str,
    run_id: str,
    name: str | None,
    config: dict[str, Any],
    captured: tuple[code_state.CodeState, dict[str, bytes]] | None,
    ignore: tuple[str, ...],
) -> tuple[RunRecord, bool]:
    """Create the run record (create-only); ``(existing record, True)`` when the run exists."""
    code = captured[0] if captured else None
    if code is not None and is_ignored(code_state.PATCH_NAME, ignore):
        code = replace(code, patch=False)
    if code is not None and is_ignored(code_state.UPSTREAM_PATCH_NAME, ignore):
        code = replace(code, upstream_patch=False)
    number = len(reg.store.list(f"runs/{project}")) + 1
    fresh = RunRecord(project, run_id, name or readable_name(number), _now(), config=config, code=code)
    try:
        reg.store.create(record_path(fresh.path), fresh.to_bytes())
        return fresh, False
    except FileExistsError:
        return read_record(reg, fresh.path), True


def _resume_record(
    reg: Registry, record: RunRecord, name: str | None, config: Mapping[str, Any] | None
) -> RunRecord:
    merged = {**record.config, **_checked_config(config)}
    resumed = replace(
        record, name=name or record.name, state=status.RUNNING, finished_at=None, config=merged, error=None
    )
    reg.store.replace(record_path(record.path), resumed.to_bytes())
    return resumed


def read_record(reg: Registry, run_path: str) -> RunRecord:
    """The record of ``run_path``; :class:`RunError` when the registry has no such run. A registry that
    is not there at all (a missing bucket or container: :class:`~refstore.ObjectNotFoundError`, also a
    :class:`FileNotFoundError`) is told as such, never as a missing run."""
    relative = record_path(run_path)
    try:
        data = reg.store.read(relative)
    except FileNotFoundError as exc:
        if isinstance(exc, RefstoreError):  # the backend named what is missing: the bucket
            raise
        raise RunError(f"no run {run_path} in {reg.root}") from None
    return RunRecord.from_bytes(data, reg.store.url_of(relative))


def _local_state(run_dir: Path, record: RunRecord, reg: Registry) -> LocalState:
    (run_dir / INTERNAL_DIR).mkdir(parents=True, exist_ok=True)
    try:
        state = LocalState.load(run_dir)
    except RunError:
        return LocalState(record.project, record.id, record.name, reg.root)
    state.name, state.root, state.pid, state.status = record.name, reg.root, os.getpid(), status.RUNNING
    state.error = None
    return state


def _checked_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(config or {})
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise RunError(f"config must be JSON-serialisable: {exc}") from None
    return data


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# -- the current run and interpreter exit ---------------------------------------------------------------


def current_run() -> Run | None:
    """The newest run of this process that is not finished."""
    with _active_lock:
        return _active[-1] if _active else None


def _remember(run: Run) -> None:
    with _active_lock:
        _active.append(run)
    _install_exit_hook()


def _forget(run: Run) -> None:
    with _active_lock:
        if run in _active:
            _active.remove(run)


def _install_exit_hook() -> None:
    """Finish forgotten runs at exit, before ``concurrent.futures`` stops taking work (uploads need it).

    ``threading._register_atexit`` hooks run at the start of interpreter shutdown, ahead of the executors'
    own hook; plain ``atexit`` hooks run after it, too late for threaded uploads.
    """
    global _exit_hook_installed
    if _exit_hook_installed:
        return
    register = getattr(threading, "_register_atexit", atexit.register)
    register(_finish_open_runs)
    _exit_hook_installed = True


def _forget_all() -> None:
    """In a forked child (a data loader worker, say): the parent's runs are the parent's to finish."""
    global _active_lock
    _active.clear()
    _active_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)


def _finish_open_runs() -> None:
    """At exit: finish every open run, as ``failed`` when the process ends on an uncaught exception."""
    error = status.uncaught_exception()
    while (run := current_run()) is not None:
        try:
            run._end(error)
        except Exception as exc:
            print(f"refstore: {exc}", file=sys.stderr)


def save(glob_str: str | os.PathLike[str], base_path: str | None = None, policy: str = "live") -> list[str]:
    """``save`` on the current run."""
    return _require_current().save(glob_str, base_path, policy)


def finish() -> None:
    """Finish the current run, if there is one."""
    run = current_run()
    if run is not None:
        run.finish()


def _require_current() -> Run:
    run = current_run()
    if run is None:
        raise RunError("no current run: call refstore.init() first")
    return run
