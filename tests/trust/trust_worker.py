"""Worker processes for the trust tests: ``python trust_worker.py COMMAND ...``, one JSON line per result.

Each worker prints ``ready`` once imported, then waits for the file ``GO`` so that all workers start their
race at the same moment.

- ``log ROOT NAME WORKER COUNT WORKDIR GO``: log COUNT versions of NAME, each with content no other
  worker logs, alias ``w<WORKER>`` on each; prints ``{"worker", "i", "version", "digest"}`` per log.
- ``alias ROOT NAME WORKER COUNT VERSIONS GO``: move the alias ``prod`` COUNT times to random versions
  below VERSIONS; prints ``{"moved": [...]}``.
- ``read ROOT NAME VERSIONS STOP GO``: read ``NAME:prod`` and ``NAME`` until the file STOP exists; prints
  ``{"reads": n, "errors": [...]}`` (an error is a read that raised or named a version that does not exist).
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


COMMANDS = {"log": log, "alias": alias, "read": read}

if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    converted = [int(a) if a.isdigit() else a for a in args]
    COMMANDS[command](*converted)
