"""Crash safety: ``kill -9`` of ``refstore log`` and ``refstore get`` at random points, over and over.

After every kill: the registry reads without error and holds no half-made version (every record, manifest
and blob it can see is complete and checks out), the destination holds no partial file (only complete
files with the pinned bytes), the cache holds no unverified bytes; then the same command, run again,
completes. Kill points are uniform over the command's measured run time, from a seeded generator.
``--soak`` multiplies the number of kills by ten.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xxhash
from click.testing import CliRunner

import refstore
from refstore.storage.download import blob_path
from refstore.storage.hashing import hash_bytes, hash_file
from refstore.storage.scratch import HOST, OLD_FORM_AGE, remove_stale, scratch_name
from refstore.surfaces.cli import main

#: Runs the CLI once the modules it needs are imported, so that kill points fall inside the command.
_CLI = (
    "import sys, importlib\n"
    "for m in sys.argv[1].split(','): importlib.import_module(m)\n"
    "from refstore.surfaces.cli import main\n"
    "print('ready', flush=True)\n"
    "main(sys.argv[2:], prog_name='refstore')\n"
)
_PRELOAD = (
    "refstore.snapshots.registry,refstore.snapshots.artifact,refstore.storage.download,"
    "refstore.storage.backends.local"
)
_PRELOAD_S3 = _PRELOAD + ",refstore.storage.backends.s3,s3fs"
KILLS = {"log-local": 6, "log-s3": 3, "log-rgw": 3, "get-local": 6, "get-s3": 3, "get-rgw": 3}
#: Files per logged version, objects per downloaded version (S3 ones are fewer: moto is slower).
SIZES = {"local": 30, "s3": 8, "rgw": 8}
#: Where the crash tests run: local files, moto, and Ceph RGW (versioned buckets, where refstore claims
#: keys by their oldest object version).
WHERE = ["local", "s3", pytest.param("rgw", marks=pytest.mark.s3_server("rgw"))]


@dataclass
class Outcome:
    finished: bool
    seconds: float


def run_cli(args: list[str], preload: str, kill_after: float | None = None) -> Outcome:
    """Run ``refstore ARGS``; with ``kill_after``, SIGKILL it that many seconds after it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, preload, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    started = time.monotonic()
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL, this PID only
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            return Outcome(False, time.monotonic() - started)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return Outcome(True, time.monotonic() - started)


def run_again(args: list[str]) -> None:
    """The same command once more, to completion (in this process: no start-up cost)."""
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


class KillClock:
    """Kill delays uniform over the command's run time, as last measured by a run that finished."""

    def __init__(self, seed: str, duration: float) -> None:
        self.rng = random.Random(seed)
        self.duration = duration
        self.killed = 0

    def run(self, args: list[str], preload: str) -> None:
        outcome = run_cli(args, preload, kill_after=self.rng.uniform(0, self.duration))
        if outcome.finished:
            self.duration = outcome.seconds
        self.killed += not outcome.finished


# -- what must hold after a kill ------------------------------------------------------------------------


def assert_registry_sound(root: str) -> refstore.Registry:
    """Everything a reader can see is complete: records, manifests, blobs and aliases all check out."""
    registry = refstore.Registry(root)
    fs, base = registry.store.backend.fs, registry.store.base
    fs.invalidate_cache()
    for path in fs.find(base):
        relative = str(path)[len(base) + 1 :] if str(path).startswith(base) else str(path)
        if ".tmp-" in relative:
            continue  # a writer's temporary file: invisible to readers (Store.list skips it)
        if relative.startswith("manifests/"):
            assert hashlib.sha256(fs.cat_file(path)).hexdigest() == Path(relative).stem, relative
        elif relative.startswith("blobs/"):
            assert xxhash.xxh3_128_hexdigest(fs.cat_file(path)) == Path(relative).name, relative
    for name in registry.artifacts():
        for version in registry.versions(name):  # each record unsealed and checked
            for entry in version.manifest.values():  # each manifest checked against its digest
                if entry.is_copy:
                    assert registry.store.exists(blob_path(entry.digest)), (version, entry.path)
        for alias in registry.store.list(f"artifacts/{name}/aliases"):
            registry.get(f"{name}:{alias.removesuffix('.json')}")
    return registry


def assert_destination_complete_files_only(dest: Path, expected: dict[str, bytes]) -> set[str]:
    """Every file at ``dest`` is an entry with exactly its bytes: nothing partial, nothing else."""
    found = set()
    for folder, _, names in os.walk(dest):
        for name in names:
            relative = Path(folder, name).relative_to(dest).as_posix()
            assert relative in expected, f"unexpected file {relative} at the destination"
            assert Path(folder, name).read_bytes() == expected[relative], f"{relative} is not complete"
            found.add(relative)
    return found


def assert_cache_verified(cache: Path) -> None:
    """Cached blobs hash to their names; pins name a content hash; tmp/ holds only scratch files."""
    for blob in (cache / "blobs").rglob("*"):
        if blob.is_file():
            assert xxhash.xxh3_128_hexdigest(blob.read_bytes()) == blob.name, blob
    hexdigits = set("0123456789abcdef")
    for pin in (cache / "pins").rglob("*"):
        if pin.is_file() and pin.parent.name == "packs":  # one line per pin: "<pin key> <content hex>"
            for line in pin.read_text().splitlines():
                key, _, content = line.partition(" ")
                assert len(key) == 64 and len(content) == 32 and set(key + content) <= hexdigits, pin
        elif pin.is_file():
            text = pin.read_text()
            assert len(text) == 32 and set(text) <= hexdigits, pin
    for scratch in (cache / "tmp").glob("*") if (cache / "tmp").exists() else ():
        assert scratch.name.endswith(".part"), scratch


# -- log --------------------------------------------------------------------------------------------------


def _write_source(folder: Path, cycle: int, files: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(files):
        (folder / f"part-{i:03d}.bin").write_bytes(
            f"cycle {cycle if i == 0 else 0} file {i}\n".encode() * 2000
        )


def _source_digest(folder: Path) -> str:
    artifact = refstore.Artifact("probe")
    artifact.add_dir(folder)
    return artifact.digest


@pytest.mark.parametrize("where", WHERE)
def test_kill_9_during_log(where: str, request: pytest.FixtureRequest, tmp_path: Path, soak: bool) -> None:
    if where in ("s3", "rgw"):
        root, preload = f"s3://{request.getfixturevalue('s3_bucket')}/registry", _PRELOAD_S3
    else:
        root, preload = str(tmp_path / "registry"), _PRELOAD
    kills = KILLS[f"log-{where}"] * (10 if soak else 1)
    source = tmp_path / "source"
    command = ["--root", root, "log", "data", str(source), "--copy", "--alias", "prod"]
    _write_source(source, 0, files=SIZES[where])
    clock = KillClock(f"log-{where}-{kills}", run_cli(command, preload).seconds)
    digests = [_source_digest(source)]
    for cycle in range(1, kills + 1):
        _write_source(source, cycle, files=SIZES[where])
        clock.run(command, preload)
        assert_registry_sound(root)
        run_again(command)
        digests.append(_source_digest(source))
        registry = assert_registry_sound(root)
        versions = registry.versions("data")
        assert [v.digest for v in versions] == digests, f"cycle {cycle}: a version is missing or doubled"
        assert registry.get("data:prod") == versions[-1] == registry.get("data")
    assert clock.killed >= kills // 2, f"only {clock.killed} of {kills} runs were killed before the end"


# -- download ----------------------------------------------------------------------------------------------


def _version_of_copies(tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """12 MB in 40 files: writing them is most of the command's run time, where kills matter most."""
    source = tmp_path / "source"
    source.mkdir()
    data = {f"d{i // 10}/f{i:03d}.bin": os.urandom(300_000 + i) for i in range(40)}
    for relative, content in data.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(content)
    artifact = refstore.Artifact("data")
    artifact.add_dir(source)
    root = str(tmp_path / "registry")
    refstore.Registry(root).log(artifact)
    return root, data


def _version_of_s3_objects(tmp_path: Path, s3_fs: Any, bucket: str) -> tuple[str, dict[str, bytes]]:
    data = {f"d{i // 10}/f{i:03d}.bin": os.urandom(100_000 + i) for i in range(2 * SIZES["s3"])}
    s3_fs.pipe({f"{bucket}/data/{k}": v for k, v in data.items()})
    s3_fs.invalidate_cache()
    artifact = refstore.Artifact("data")
    artifact.add_reference(f"s3://{bucket}/data")
    root = str(tmp_path / "registry")
    refstore.Registry(root).log(artifact)
    return root, data


@pytest.mark.parametrize("where", WHERE)
def test_kill_9_during_download(
    where: str, request: pytest.FixtureRequest, tmp_path: Path, soak: bool
) -> None:
    if where in ("s3", "rgw"):
        s3_fs, bucket = request.getfixturevalue("s3_fs"), request.getfixturevalue("s3_bucket")
        (root, data), preload = _version_of_s3_objects(tmp_path, s3_fs, bucket), _PRELOAD_S3
    else:
        (root, data), preload = _version_of_copies(tmp_path), _PRELOAD
    kills = KILLS[f"get-{where}"] * (10 if soak else 1)
    dest, cache = tmp_path / "dest", Path(os.environ["REFSTORE_CACHE_DIR"])
    command = ["--root", root, "get", "data:v0", str(dest)]
    clock = KillClock(f"get-{where}-{kills}", run_cli(command, preload).seconds)  # cold run
    for cycle in range(kills):
        shutil.rmtree(dest)
        if cycle % 2 == 0:
            shutil.rmtree(cache)  # cold and warm downloads alternate
        clock.run(command, preload)
        if dest.exists():
            assert_destination_complete_files_only(dest, data)
        assert_cache_verified(cache)
        run_again(command)
        assert assert_destination_complete_files_only(dest, data) == set(data), f"cycle {cycle}"
        assert_cache_verified(cache)
        assert not list((cache / "tmp").iterdir()), "the next download removes what a killed one left"
    assert all(hash_file(dest / p) == hash_bytes(b) for p, b in data.items())
    assert clock.killed >= kills // 2, f"only {clock.killed} of {kills} runs were killed before the end"


# -- the narrow windows, deterministically ---------------------------------------------------------------


def test_a_version_claimed_but_never_indexed_is_reused(tmp_path: Path) -> None:
    """A writer killed between claiming ``v0`` and indexing its content: logging it again makes no ``v1``."""
    (tmp_path / "f.txt").write_text("content")
    artifact = refstore.Artifact("data")
    artifact.add_file(tmp_path / "f.txt")
    registry = refstore.Registry(tmp_path / "registry")
    first = registry.log(artifact)
    for index in (tmp_path / "registry" / "artifacts" / "data" / "digests").iterdir():
        index.unlink()
    assert registry.log(artifact) == first
    assert [v.version for v in registry.versions("data")] == [0]


def test_scratch_files_of_dead_processes_are_removed_and_no_others(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "tmp"
    folder.mkdir()
    machine, pid, started, _ = scratch_name().split("-")  # this machine, boot and PID namespace
    other = "f" * 8 if machine != "f" * 8 else "e" * 8
    names = {
        "dead": f"{machine}-{dead.pid}-{started}-{'0' * 16}.part",
        "dead-sibling": f".refstore-{machine}-{dead.pid}-{started}-{'1' * 16}.part",
        "alive": f"{machine}-{pid}-{started}-{'2' * 16}.part",
        "pid-reused": f"{machine}-{pid}-{int(started) + 1}-{'4' * 16}.part",  # this pid, another process
        "other-host-or-namespace": f"{other}-{dead.pid}-{started}-{'3' * 16}.part",
        "not-ours": f"data-{dead.pid}.part",
        "old-form-fresh": f"{HOST}-{dead.pid}-{'5' * 16}.part",  # cannot tell namespaces: kept a day
        "old-form-old": f"{HOST}-{dead.pid}-{'6' * 16}.part",
    }
    for name in names.values():
        (folder / name).write_bytes(b"partial")
    os.utime(folder / names["old-form-old"], (time.time() - 2 * OLD_FORM_AGE,) * 2)
    remove_stale(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        names[k] for k in ("alive", "other-host-or-namespace", "not-ours", "old-form-fresh")
    )
