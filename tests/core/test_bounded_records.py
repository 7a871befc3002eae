"""Every record read from a registry is bounded: deeply nested JSON, a 5000-digit integer or an oversized
record is an IntegrityError naming the record, never a RecursionError or ValueError traceback (issue 14
item 8). The content index is a hint checked against the sealed version record it names."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import refstore
from refstore.core.bounded_json import MAX_DEPTH, RECORD_BYTES
from refstore.core.manifest import canonical_json
from refstore.core.records import VERSION_FORMAT, VersionRecord
from refstore.surfaces.cli import main

DEEP = b"[" * 100_000 + b"]" * 100_000
LONG_INT = b'{"format":"refstore.version/1","version":' + b"9" * 5000 + b"}"


def _nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"x": value}
    return value


def _sealed(body: dict[str, Any]) -> bytes:
    """A record sealed by hand (``records.seal`` refuses what readers refuse)."""
    digest = "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
    return canonical_json({**body, "record_digest": digest})


def _too_deep_version(registry: refstore.Registry) -> bytes:
    v0 = registry.get("data:v0")
    record = VersionRecord(
        "data", 0, "dataset", v0.manifest_digest, v0.digest, "2026-01-01", metadata=_nested(MAX_DEPTH + 5)
    )
    return _sealed({"format": VERSION_FORMAT, **{f: getattr(record, f) for f in record.__slots__}})


PAYLOADS: dict[str, Callable[[refstore.Registry], bytes]] = {
    "deeply nested": lambda _: DEEP,
    "5000-digit integer": lambda _: LONG_INT,
    "oversized": lambda _: b'{"format":"' + b"x" * (RECORD_BYTES + 1) + b'"}',
    "sealed but too deep": _too_deep_version,
    "not UTF-8": lambda _: b'{"format":"\xff\xfe"}',
}


@pytest.fixture
def registry(tmp_path: Path) -> refstore.Registry:
    (tmp_path / "f.txt").write_text("content")
    artifact = refstore.Artifact("data")
    artifact.add_file(tmp_path / "f.txt")
    registry = refstore.Registry(tmp_path / "registry")
    registry.log(artifact, aliases=["prod"])
    return registry


def _cli(registry: refstore.Registry, *args: str) -> Any:
    return CliRunner().invoke(main, ["--root", registry.root, *args])


def _one_line_naming(result: Any, name: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and name in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("record", ["versions/0.json", "aliases/prod/0.json"])
def test_a_damaged_version_or_alias_record_is_an_integrity_error(
    registry: refstore.Registry, tmp_path: Path, payload: str, record: str
) -> None:
    path = tmp_path / "registry" / "artifacts" / "data" / record
    path.write_bytes(PAYLOADS[payload](registry))
    ref = "data:v0" if record.startswith("versions") else "data:prod"
    with pytest.raises(refstore.IntegrityError, match=record.replace(".", r"\.")):
        refstore.Registry(tmp_path / "registry").get(ref)
    _one_line_naming(_cli(registry, "show", ref), record)


@pytest.mark.parametrize("payload", ["deeply nested", "5000-digit integer", "not UTF-8"])
def test_a_hostile_manifest_named_by_a_forged_version_is_an_integrity_error(
    registry: refstore.Registry, tmp_path: Path, payload: str
) -> None:
    """A writer can store any manifest under its own digest and seal a version record naming it."""
    data = PAYLOADS[payload](registry)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    manifest = tmp_path / "registry" / "manifests" / digest[7:9] / f"{digest[7:]}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_bytes(data)
    v0 = registry.get("data:v0")
    body = {"format": VERSION_FORMAT, "name": "data", "version": 1, "type": "dataset"}
    body |= {"manifest_digest": digest, "content_digest": v0.digest, "created_at": "2026-01-01"}
    body |= {"description": None, "metadata": {}, "created_by": None}
    (tmp_path / "registry" / "artifacts" / "data" / "versions" / "1.json").write_bytes(_sealed(body))
    with pytest.raises(refstore.IntegrityError, match=digest[7:]):
        _ = refstore.Registry(tmp_path / "registry").get("data:v1").manifest
    _one_line_naming(_cli(registry, "show", "data:v1"), digest[7:])


@pytest.mark.parametrize("payload", ["deeply nested", "5000-digit integer", "oversized"])
def test_a_damaged_content_index_entry_is_ignored_and_the_log_stays_right(
    registry: refstore.Registry, tmp_path: Path, payload: str
) -> None:
    v0 = registry.get("data:v0")
    (tmp_path / "g.txt").write_text("other")
    other = refstore.Artifact("data")
    other.add_file(tmp_path / "g.txt", "f.txt")
    registry.log(other)
    index = tmp_path / "registry" / "artifacts" / "data" / "digests" / f"{v0.digest[7:]}.json"
    index.write_bytes(PAYLOADS[payload](registry))
    again = refstore.Artifact("data")
    again.add_file(tmp_path / "f.txt")
    returned = registry.log(again, aliases=["back"])
    assert (returned.version, returned.digest, returned.created) == (2, v0.digest, True)
    assert registry.get("data:back").version == 2
    assert (returned.download(tmp_path / "out") / "f.txt").read_text() == "content"


@pytest.mark.parametrize("payload", ["deeply nested", "5000-digit integer"])
def test_a_damaged_run_record_is_an_integrity_error(
    registry: refstore.Registry, tmp_path: Path, payload: str
) -> None:
    record = tmp_path / "registry" / "runs" / "p" / "r1" / "run.json"
    record.parent.mkdir(parents=True)
    record.write_bytes(PAYLOADS[payload](registry))
    _one_line_naming(_cli(registry, "runs", "show", "p/r1", "--dir", str(tmp_path)), "run.json")


@pytest.mark.parametrize("payload", ["deeply nested", "5000-digit integer"])
def test_a_damaged_log_intent_stops_gc_naming_it(
    registry: refstore.Registry, tmp_path: Path, payload: str
) -> None:
    intents = tmp_path / "registry" / "intents"
    intents.mkdir(exist_ok=True)
    (intents / "hostile.json").write_bytes(PAYLOADS[payload](registry))
    _one_line_naming(_cli(registry, "gc"), "intents/hostile.json")


def test_an_intent_with_a_time_without_a_zone_stops_gc_naming_it(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    intents = tmp_path / "registry" / "intents"
    intents.mkdir(exist_ok=True)
    body = {"format": "refstore.intent/1", "created_at": "2026-01-01T00:00:00", "paths": []}
    (intents / "naive.json").write_bytes(canonical_json(body))
    _one_line_naming(_cli(registry, "gc"), "intents/naive.json")


@pytest.mark.parametrize(
    "lock", [DEEP, LONG_INT, canonical_json({"created_at": "2026-01-01T00:00:00", "host": "h", "pid": 1})]
)
def test_a_damaged_gc_lock_is_taken_as_abandoned(
    registry: refstore.Registry, tmp_path: Path, lock: bytes
) -> None:
    (tmp_path / "registry" / "gc.lock").write_bytes(lock)
    result = _cli(registry, "--yes", "gc")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "registry" / "gc.lock").exists()


@pytest.mark.parametrize("payload", ["deeply nested", "5000-digit integer"])
def test_a_damaged_storage_record_on_s3_is_an_integrity_error(
    s3_fs: Any, s3_bucket: str, tmp_path: Path, payload: str
) -> None:
    s3_fs.pipe_file(f"{s3_bucket}/registry/storage.json", DEEP if payload == "deeply nested" else LONG_INT)
    (tmp_path / "f.txt").write_text("content")
    artifact = refstore.Artifact("data")
    artifact.add_file(tmp_path / "f.txt")
    with pytest.raises(refstore.IntegrityError, match=r"storage\.json.*delete it to probe again"):
        refstore.Registry(f"s3://{s3_bucket}/registry").log(artifact)


def test_metadata_a_reader_would_refuse_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("content")
    artifact = refstore.Artifact("data", metadata={"deep": _nested(MAX_DEPTH)})
    artifact.add_file(tmp_path / "f.txt")
    with pytest.raises(refstore.ManifestError, match="data: metadata: nested deeper than"):
        refstore.Registry(tmp_path / "registry").log(artifact)
    assert not (tmp_path / "registry" / "manifests").exists()
    fits = refstore.Artifact("data", metadata={"deep": _nested(MAX_DEPTH - 3)})
    fits.add_file(tmp_path / "f.txt")
    logged = refstore.Registry(tmp_path / "registry").log(fits)
    assert refstore.Registry(tmp_path / "registry").get("data").metadata == logged.metadata


@pytest.mark.parametrize("field", [{"config": []}, {"state": 3}, {"name": 5}, {"created_at": None}])
def test_a_resealed_run_record_with_hostile_fields_is_a_manifest_error(
    registry: refstore.Registry, tmp_path: Path, field: dict[str, Any]
) -> None:
    body = {"format": "refstore.run/1", "project": "p", "id": "r1", "name": "n", "created_at": "2026"}
    body |= {"state": "finished", "finished_at": None, "config": {}, "code": None, **field}
    record = tmp_path / "registry" / "runs" / "p" / "r1" / "run.json"
    record.parent.mkdir(parents=True)
    record.write_bytes(_sealed(body))
    result = _cli(registry, "runs", "show", "p/r1", "--dir", str(tmp_path))
    _one_line_naming(result, "run.json")
    assert "malformed run record" in result.output


@pytest.mark.parametrize("field", [{"digest": 5}, {"size": "big"}, {"synced_at": None}, {"state": -1}])
def test_a_resealed_file_state_with_hostile_fields_is_a_manifest_error(
    registry: refstore.Registry, tmp_path: Path, field: dict[str, Any]
) -> None:
    from refstore.runs.records import RunRecord

    run = tmp_path / "registry" / "runs" / "p" / "r1"
    (run / "files" / "f.txt").mkdir(parents=True)
    (run / "run.json").write_bytes(RunRecord("p", "r1", "n", "2026", "finished").to_bytes())
    body = {"format": "refstore.runfile/1", "path": "f.txt", "state": 0, "digest": "xxh3_128:" + "0" * 32}
    body |= {"size": 1, "policy": "now", "synced_at": "2026", **field}
    (run / "files" / "f.txt" / "0.json").write_bytes(_sealed(body))
    result = _cli(registry, "restore", "p/r1", "f.txt", "--dest", str(tmp_path / "out"))
    _one_line_naming(result, "0.json")
    assert "malformed file state" in result.output
