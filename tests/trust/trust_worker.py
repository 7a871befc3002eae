"""Worker processes for the trust tests: ``python trust_worker.py COMMAND ...``, one JSON line per result.

Each worker prints ``ready`` once imported, then waits for the file ``GO`` so that all workers start their
race at the same moment.

- ``log ROOT NAME WORKER COUNT WORKDIR GO``: log COUNT versions of NAME, each with content no other
  worker logs, alias ``w<WORKER>`` on each; prints ``{"worker", "i", "version", "digest"}`` per log.
- ``alias ROOT NAME WORKER COUNT VERSIONS GO``: move the alias ``prod`` COUNT times to random versions
  below VERSIONS; prints ``{"moved": [...]}``.
- ``read ROOT NAME VERSIONS STOP GO``: read ``NAME:prod`` and ``NAME`` until the file STOP exists; prints
  ``{"reads": n, "errors": [...]}`` (an error is a read that raised or named a version that does not exist).

Lifecycle churn (one artifact whose v0 is never deleted; numbers picked at random among those claimed):

- ``churn_log ROOT NAME WORKER COUNT WORKDIR GO``: log COUNT new versions, each moving ``prod``;
  prints ``{"logged": [...]}``.
- ``churn_alias ROOT NAME WORKER COUNT GO``: point ``prod`` or ``staging`` at COUNT versions (a deleted
  one is refused); prints ``{"moved": [...], "refused": n}``.
- ``churn_delete ROOT NAME WORKER COUNT STOP GO``: delete COUNT versions other than v0, every other one
  with ``force`` and the one ``prod`` or ``staging`` points at; then, once STOP exists, the versions they
  point at, with ``force``; prints ``{"deleted": [...], "refused": n}``.
- ``churn_edit ROOT NAME WORKER COUNT GO``: COUNT edits of v0, each adding a tag and a metadata key.
- ``churn_read ROOT NAME STOP GO``: read ``NAME`` (must never fail) and ``NAME:prod`` until STOP exists;
  prints ``{"reads": n, "errors": [...]}``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import refstore


def wait_for(go: str) -> None:
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)


def log(root: str, name: str, worker: int, count: int, workdir: str, go: str) -> None:
    registry = refstore.Registry(root)
    folder = Path(workdir, f"w{worker}")
    folder.mkdir(parents=True, exist_ok=True)
    wait_for(go)
    for i in range(count):
        source = folder / f"v{i}.txt"
        source.write_text(f"worker {worker} version {i}\n" * (1 + i))
        artifact = refstore.Artifact(name, metadata={"worker": worker, "i": i})
        artifact.add_file(source, name="data.txt")
        version = registry.log(artifact, aliases=[f"w{worker}"])
        print(json.dumps({"worker": worker, "i": i, "version": version.version, "digest": version.digest}))


def alias(root: str, name: str, worker: int, count: int, versions: int, go: str) -> None:
    registry = refstore.Registry(root)
    rng = random.Random(worker)
    wait_for(go)
    moved = []
    for _ in range(count):
        target = rng.randrange(versions)
        registry.alias(f"{name}:v{target}", "prod")
        moved.append(target)
    print(json.dumps({"moved": moved}))


def read(root: str, name: str, versions: int, stop: str, go: str) -> None:
    registry = refstore.Registry(root)
    wait_for(go)
    reads, errors = 0, []
    while not Path(stop).exists():
        for ref in (f"{name}:prod", name):
            try:
                found = registry.get(ref).version
                if not 0 <= found < versions:
                    errors.append(f"{ref} -> v{found}")
            except refstore.RefstoreError as exc:
                errors.append(f"{ref}: {type(exc).__name__}: {exc}")
            reads += 1
        time.sleep(0.002)  # leave the server some room for the writers
    print(json.dumps({"reads": reads, "errors": errors}))


def _picked(registry: refstore.Registry, name: str, rng: random.Random, lowest: int) -> int:
    """A version number at random from ``lowest`` to the highest claimed so far (deleted ones too)."""
    claimed = len(registry.store.list(f"artifacts/{name}/versions"))
    return rng.randint(lowest, max(lowest, claimed - 1))


def churn_log(root: str, name: str, worker: int, count: int, workdir: str, go: str) -> None:
    registry = refstore.Registry(root)
    folder = Path(workdir, f"churn{worker}")
    folder.mkdir(parents=True, exist_ok=True)
    wait_for(go)
    logged = []
    for i in range(count):
        source = folder / "data.txt"
        source.write_text(f"churn worker {worker} log {i}\n")
        artifact = refstore.Artifact(name)
        artifact.add_file(source)
        logged.append(registry.log(artifact, aliases=["prod"]).version)
    print(json.dumps({"logged": logged}))


def churn_alias(root: str, name: str, worker: int, count: int, go: str) -> None:
    registry = refstore.Registry(root)
    rng = random.Random(1000 + worker)
    wait_for(go)
    moved, refused = [], 0
    for i in range(count):
        target = _picked(registry, name, rng, 0)
        try:
            registry.alias(f"{name}:v{target}", "prod" if i % 2 else "staging")
            moved.append(target)
        except refstore.ArtifactNotFoundError:  # deleted (before, or while the alias moved)
            refused += 1
    print(json.dumps({"moved": moved, "refused": refused}))


def churn_delete(root: str, name: str, worker: int, count: int, stop: str, go: str) -> None:
    registry = refstore.Registry(root)
    rng = random.Random(2000 + worker)
    wait_for(go)
    deleted, refused = [], 0

    def delete(target: int, force: bool) -> None:
        nonlocal refused
        try:
            deleted.append(registry.delete(f"{name}:v{target}", force=force).version)
        except (refstore.ArtifactNotFoundError, refstore.AliasedVersionError):
            refused += 1

    for i in range(count):
        target = _picked(registry, name, rng, 1)  # v0 stays, so `latest` must always name a version
        if i % 2:  # every other time, what an alias points at, with force: its aliases must go with it
            target = _aliased(registry, name, "staging" if i % 4 == 1 else "prod") or target
        delete(target, force=bool(i % 2))
    while not Path(stop).exists():  # the other writers are done: the last word is a forced delete
        time.sleep(0.01)
    for alias in ("prod", "staging"):
        if target := _aliased(registry, name, alias):
            delete(target, force=True)
    print(json.dumps({"deleted": deleted, "refused": refused}))


def _aliased(registry: refstore.Registry, name: str, alias: str) -> int:
    """The version ``alias`` points at (0 when none)."""
    try:
        return registry.get(f"{name}:{alias}").version
    except refstore.ArtifactNotFoundError:
        return 0


def churn_edit(root: str, name: str, worker: int, count: int, go: str) -> None:
    registry = refstore.Registry(root)
    wait_for(go)
    for i in range(count):
        registry.update(f"{name}:v0", add_tags=[f"w{worker}-{i}"], set_metadata={f"w{worker}": i})
    print(json.dumps({"edits": count}))


def churn_read(root: str, name: str, stop: str, go: str) -> None:
    registry = refstore.Registry(root)
    wait_for(go)
    reads, errors = 0, []
    while not Path(stop).exists():
        try:
            registry.get(name)  # v0 is never deleted: latest always names a version
        except refstore.RefstoreError as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        try:
            registry.get(f"{name}:prod")
        except refstore.ArtifactNotFoundError:
            pass  # removed with the version it pointed at
        except refstore.RefstoreError as exc:
            errors.append(f"{name}:prod: {type(exc).__name__}: {exc}")
        reads += 1
        time.sleep(0.002)
    print(json.dumps({"reads": reads, "errors": errors}))


COMMANDS = {
    "log": log,
    "alias": alias,
    "read": read,
    "churn_log": churn_log,
    "churn_alias": churn_alias,
    "churn_delete": churn_delete,
    "churn_edit": churn_edit,
    "churn_read": churn_read,
}

if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    converted = [int(a) if a.isdigit() else a for a in args]
    COMMANDS[command](*converted)
