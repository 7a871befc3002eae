"""No silent loss: a failed upload makes finish() raise and keeps the local copy; ``refstore sync`` and
``refstore sync --clean`` afterwards. Each test runs with the registry in a local folder and on moto S3."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from runs_support import FAST, registry_root, run_area, states

import refstore
from refstore import RunError
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def break_storage(registry_root: str, request: pytest.FixtureRequest) -> Callable[[str], Callable[[], None]]:
    """``break_storage(run_path)`` makes uploads of that run fail for real and returns how to repair it.

    Local registry: the registry's ``blobs`` folder (where run files keep their bytes) becomes a file. S3:
    the bucket is deleted (then recreated).
    """

    def local(run_path: str) -> Callable[[], None]:
        blobs = Path(registry_root) / "blobs"
        shutil.rmtree(blobs, ignore_errors=True)
        blobs.parent.mkdir(parents=True, exist_ok=True)
        blobs.write_text("not a folder")
        return blobs.unlink

    def s3(run_path: str) -> Callable[[], None]:
        fs: Any = request.getfixturevalue("s3_fs")
        bucket = registry_root.split("/")[2]
        listing = fs.call_s3("list_object_versions", Bucket=bucket)
        for item in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            fs.call_s3("delete_object", Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
        fs.call_s3("delete_bucket", Bucket=bucket)
        return lambda: fs.call_s3("create_bucket", Bucket=bucket)

    return s3 if registry_root.startswith("s3://") else local


def test_a_failed_upload_makes_finish_raise_and_keeps_the_local_copy(
    registry_root: str, tmp_path: Path, break_storage: Callable[[str], Callable[[], None]]
) -> None:
    (tmp_path / "weights.bin").write_bytes(b"precious")
    run = refstore.init("proj", sync_interval=FAST)
    repair = break_storage(run.path)
    run.save("weights.bin", policy="end")
    with pytest.raises(RunError, match=r"weights\.bin") as caught:
        run.finish()
    assert str(run.dir) in str(caught.value)
    assert (run.dir / "weights.bin").read_bytes() == b"precious"
    assert refstore.run is None
    clean = _cli("sync", "--clean", "--yes")
    assert "kept" in clean.output and "weights.bin" in clean.output and run.dir.exists()
    repair()
    synced = _cli("sync")
    assert synced.exit_code == 0 and f"{run.path}: 1 file(s) uploaded" in synced.output
    assert refstore.restore("weights.bin", run.path, root=tmp_path / "out").read() == b"precious"


def test_sync_clean_deletes_only_fully_synced_run_directories(registry_root: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    with refstore.init("proj", id="synced01") as synced:
        synced.save("a.txt", policy="now")
    with refstore.init("proj", id="pending1") as pending:
        pending.save("a.txt", policy="end")
    (pending.dir / "written-after-finish.txt").write_text("not synced")
    running = refstore.init("proj", id="running1")

    declined = _cli("sync", "--clean", input="n\n")
    assert declined.exit_code == 0 and "Delete 1 synced run directory" in declined.output
    assert "freed 0 B" in declined.output and synced.dir.exists()

    accepted = _cli("sync", "--clean", input="y\n")
    assert not synced.dir.exists() and pending.dir.exists() and running.dir.exists()
    assert f"deleted {synced.dir.name}" in accepted.output and "freed " in accepted.output
    assert "written-after-finish.txt" in accepted.output and "still running" in accepted.output
    assert (tmp_path / "a.txt").read_text() == "a"  # the linked file itself is never deleted

    assert "1 file(s) uploaded" in _cli("sync").output
    assert states(registry_root, pending.path, "written-after-finish.txt") == [0]
    running.finish()
    final = _cli("sync", "--clean", "--yes", "--json")
    assert sorted(Path(p).name for p in refstore_json(final)["deleted"]) == sorted(
        [pending.dir.name, running.dir.name]
    )


def test_a_modified_file_keeps_its_run_directory(registry_root: str, tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("synced bytes")
    with refstore.init("proj") as run:
        run.save("m.txt", policy="now")
    (tmp_path / "m.txt").write_text("changed after the run")  # the run directory links to it
    assert "1 file(s) not synced: m.txt" in _cli("sync", "--clean", "--yes").output
    assert run.dir.exists()


def refstore_json(result: Result) -> Any:
    import json

    assert result.exit_code == 0, result.output
    return json.loads(result.output)
