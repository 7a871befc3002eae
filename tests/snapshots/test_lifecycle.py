"""Deleting versions and artifacts, removing aliases, retention and TTLs (issue 15), on a local registry and
on one in a moto (S3) bucket: what a user relies on after ``delete``, ``unalias``, ``retain`` and ``gc``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import refstore
from refstore.core.records import AliasRecord
from refstore.runs.lineage import LineageIndex
from refstore.snapshots import aliases, lifecycle
from refstore.storage.store import Store


@pytest.fixture
def registry(local_or_s3_registry: refstore.Registry) -> refstore.Registry:
    return local_or_s3_registry


def _log(
    registry: refstore.Registry, tmp_path: Path, content: str, **kwargs: object
) -> refstore.ArtifactVersion:
    source = tmp_path / "source" / "data.txt"
    source.parent.mkdir(exist_ok=True)
    source.write_text(content)
    aliases = kwargs.pop("aliases", ())
    artifact = refstore.Artifact("data", **kwargs)  # type: ignore[arg-type]
    artifact.add_file(source)
    return registry.log(artifact, aliases=aliases)  # type: ignore[arg-type]


def _stored(registry: refstore.Registry, folder: str) -> set[str]:
    fs, base = registry.store.backend.fs, registry.store.full(folder)
    fs.invalidate_cache()
    return {p.rsplit("/", 1)[-1] for p in fs.find(base)}


def test_a_deleted_version_is_gone_latest_moves_down_and_numbers_are_never_reused(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    for i in range(3):
        _log(registry, tmp_path, f"content {i}")
    deleted = registry.delete("data:v2")
    assert deleted.qualified_name == "data:v2" and deleted.deleted and deleted.deleted.reason == "deleted"
    with pytest.raises(refstore.ArtifactNotFoundError, match=r"data:v2 was deleted"):
        registry.get("data:v2")
    with pytest.raises(refstore.DeletedVersionError):
        registry.get("data:v2")
    assert registry.get("data").version == 1 == registry.get("data:latest").version
    assert [v.version for v in registry.versions("data")] == [0, 1]
    assert [(v.version, bool(v.deleted)) for v in registry.versions("data", deleted=True)] == [
        (0, False),
        (1, False),
        (2, True),
    ]
    again = _log(registry, tmp_path, "content 2")  # the deleted version's content: a new number
    assert again.version == 3 and again.created
    with pytest.raises(refstore.DeletedVersionError):
        registry.delete("data:v2")


def test_delete_refuses_while_aliases_point_at_it_and_force_removes_them(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _log(registry, tmp_path, "a", aliases=["prod", "best"])
    _log(registry, tmp_path, "b")
    with pytest.raises(refstore.AliasedVersionError, match=r"data:v0: best, prod point at it"):
        registry.delete("data:v0")
    assert registry.get("data:prod").version == 0  # nothing written
    deleted = registry.delete("data:prod", force=True)
    assert deleted.version == 0 and deleted.deleted and deleted.deleted.aliases == ["best", "prod"]
    for alias in ("prod", "best"):
        with pytest.raises(refstore.ArtifactNotFoundError, match=alias):
            registry.get(f"data:{alias}")
    assert registry.versions("data")[0].aliases == ["latest"]
    registry.delete("data:v1")  # only latest points at it: no force needed
    assert registry.artifacts() == []
    with pytest.raises(refstore.ArtifactNotFoundError, match="every version of data is deleted"):
        registry.get("data")


def test_unalias_removes_an_alias_and_alias_delete_history_is_kept(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _log(registry, tmp_path, "a", aliases=["prod"])
    _log(registry, tmp_path, "b")
    registry.alias("data:v1", "prod")
    assert registry.unalias("data", "prod").version == 1
    with pytest.raises(refstore.ArtifactNotFoundError):
        registry.get("data:prod")
    with pytest.raises(refstore.ArtifactNotFoundError, match="data:prod: no such alias"):
        registry.unalias("data", "prod")
    registry.alias("data:v0", "prod")  # an alias can come back
    assert registry.get("data:prod").version == 0
    assert _stored(registry, "artifacts/data/aliases/prod") == {"0.json", "1.json", "2.json", "3.json"}


def test_delete_artifact_removes_every_version_and_alias_and_a_new_log_goes_on_numbering(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _log(registry, tmp_path, "a", aliases=["prod"])
    _log(registry, tmp_path, "b", aliases=["staging"])
    deleted = registry.delete_artifact("data")
    assert [v.qualified_name for v in deleted] == ["data:v0", "data:v1"]
    assert registry.artifacts() == [] and registry.artifacts(deleted=True) == ["data"]
    with pytest.raises(refstore.ArtifactNotFoundError):
        registry.versions("data")
    fresh = _log(registry, tmp_path, "a", type="model")  # another type is fine once every version is gone
    assert fresh.version == 2 and registry.get("data").version == 2
    assert registry.artifacts() == ["data"]
    with pytest.raises(refstore.ArtifactNotFoundError):
        registry.get("data:prod")


def test_gc_frees_what_only_deleted_versions_referenced(registry: refstore.Registry, tmp_path: Path) -> None:
    source = tmp_path / "files"
    source.mkdir()
    (source / "shared.bin").write_bytes(b"shared" * 100)
    (source / "only-v0.bin").write_bytes(b"only in v0" * 100)
    first = refstore.Artifact("data")
    first.add_dir(source)
    v0 = registry.log(first)
    (source / "only-v0.bin").unlink()
    second = refstore.Artifact("data")
    second.add_dir(source)
    registry.log(second)
    blobs_before = _stored(registry, "blobs")
    assert refstore.collect_garbage(registry, yes=True).blobs == []  # v0 still holds them
    registry.delete("data:v0")
    dry = refstore.collect_garbage(registry)
    only_v0 = v0.manifest["only-v0.bin"].digest.split(":", 1)[1]
    assert [p.rsplit("/", 1)[-1] for p in dry.blobs] == [only_v0]
    assert dry.manifests == [f"manifests/{v0.manifest_digest[7:9]}/{v0.manifest_digest[7:]}.json"]
    report = refstore.collect_garbage(registry, yes=True)
    assert report.blobs == dry.blobs and report.size > 0
    assert _stored(registry, "blobs") == blobs_before - {only_v0}
    out = registry.get("data").download(tmp_path / "out")
    assert (out / "shared.bin").read_bytes() == b"shared" * 100


def test_retain_keeps_the_newest_aliased_and_recent_versions(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    for i in range(6):
        _log(registry, tmp_path, f"content {i}", aliases=["prod"] if i == 1 else ())
    plan = registry.retain("data", keep_last=2, dry_run=True)
    assert [v.version for v in plan] == [0, 2, 3]
    assert [v.version for v in registry.versions("data")] == list(range(6))  # a dry run deletes nothing
    assert registry.retain("data", keep_last=2, older_than=timedelta(days=1)) == []  # all logged just now
    deleted = registry.retain("data", keep_last=2)
    assert [v.version for v in deleted] == [0, 2, 3] and all(v.deleted for v in deleted)
    assert [v.version for v in registry.versions("data")] == [1, 4, 5]
    gone = registry.retain("data", keep_last=1, keep_aliased=False)
    assert [v.version for v in gone] == [1, 4]
    assert [v.version for v in registry.versions("data")] == [5]
    with pytest.raises(refstore.ArtifactNotFoundError):
        registry.get("data:prod")
    with pytest.raises(ValueError, match="keep_last, older_than"):
        registry.retain("data")


def test_retain_older_than_deletes_only_old_versions(
    registry: refstore.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        _log(registry, tmp_path, f"content {i}")
    later = datetime.now(timezone.utc) + timedelta(days=40)
    monkeypatch.setattr(lifecycle, "_now", lambda: later)
    assert [v.version for v in registry.retain("data", older_than=timedelta(days=30))] == [0, 1]
    assert [v.version for v in registry.versions("data")] == [2]  # latest is kept (keep_aliased)


def test_ttl_set_at_log_time_or_later_is_enforced_by_gc(
    registry: refstore.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v0 = _log(registry, tmp_path, "a", ttl=timedelta(days=30))
    v1 = _log(registry, tmp_path, "b", aliases=["prod"])
    _log(registry, tmp_path, "c")
    assert v0.ttl == timedelta(days=30) and v0.expires_at is not None and v1.ttl is None
    registry.update("data:v1", ttl=timedelta(days=7))
    assert registry.get("data:v1").ttl == timedelta(days=7)
    assert refstore.collect_garbage(registry).expired == []  # not yet
    later = datetime.now(timezone.utc) + timedelta(days=31)
    monkeypatch.setattr(lifecycle, "_now", lambda: later)
    dry = refstore.collect_garbage(registry)
    assert dry.expired == ["data:v0"] and dry.expired_aliased == ["data:v1"]
    assert dry.manifests  # what only v0 referenced would be freed in the same run
    assert [v.version for v in registry.versions("data")] == [0, 1, 2]  # a dry run deletes nothing
    report = refstore.collect_garbage(registry, yes=True)
    assert report.expired == ["data:v0"] and report.manifests == dry.manifests
    assert [v.version for v in registry.versions("data")] == [1, 2]
    assert registry.versions("data", deleted=True)[0].deleted.reason == "ttl"  # type: ignore[union-attr]
    registry.update("data:v1", ttl=False)  # no TTL any more
    registry.unalias("data", "prod")
    assert refstore.collect_garbage(registry, yes=True).expired == []


def test_a_version_runs_used_stays_in_their_lineage_as_deleted(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    version = _log(registry, tmp_path, "a")
    _log(registry, tmp_path, "b")
    with refstore.init(project="p", dir=tmp_path / "runs", registry=registry) as run:
        run.use_artifact("data:v0")
    registry.delete("data:v0")
    used = registry.versions_used_by(run.path)
    assert [(v.qualified_name, v.deleted.reason if v.deleted else None) for v in used] == [
        ("data:v0", "deleted")
    ]
    assert used[0].used_by() == [run.path] and used[0].digest == version.digest
    index = LineageIndex(registry)  # what runs show and the ui read
    assert index.used[run.path] == ["data:v0"] and index.deleted == {"data:v0"}


def test_an_alias_pointed_at_a_version_as_it_is_deleted_is_taken_back(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _log(registry, tmp_path, "a")
    _log(registry, tmp_path, "b")
    registry.delete("data:v0")  # the delete won the race: its tombstone is there when the alias is written
    with pytest.raises(refstore.DeletedVersionError, match="data:v0 was deleted"):
        lifecycle.point_alias(registry.store, "data", 0, "prod")
    head = aliases.head(registry.store, "data", "prod")
    assert head is not None and (head.seq, head.version) == (1, None)  # written, then removed again
    with pytest.raises(refstore.ArtifactNotFoundError):
        registry.get("data:prod")
    with pytest.raises(refstore.DeletedVersionError):
        registry.alias("data:v0", "prod")


def test_a_log_whose_version_is_deleted_before_its_alias_lands_logs_again(
    registry: refstore.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process deletes the version a log just claimed, before the log's alias is on it: the log
    claims the next number, so the alias names the logged content; the deleted number stays deleted."""
    _log(registry, tmp_path, "a")
    point_alias = lifecycle.point_alias
    raced: list[int] = []

    def deleted_first(store: Store, name: str, number: int, alias: str) -> None:
        if not raced:
            raced.append(number)
            registry.delete(f"{name}:v{number}")
        point_alias(store, name, number, alias)

    monkeypatch.setattr(lifecycle, "point_alias", deleted_first)
    logged = _log(registry, tmp_path, "b", aliases=["prod"])
    assert raced == [1] and logged.version == 2 and logged.created
    assert registry.get("data:prod").version == 2 == registry.get("data").version
    assert [(v.version, bool(v.deleted)) for v in registry.versions("data", deleted=True)] == [
        (0, False),
        (1, True),
        (2, False),
    ]
    assert registry.get("data:v2").digest == registry.versions("data", deleted=True)[1].digest


def test_an_older_registrys_alias_pointer_is_read_moved_and_removed(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _log(registry, tmp_path, "a")
    _log(registry, tmp_path, "b")
    pointer = AliasRecord("data", "prod", 0).to_bytes()  # what refstore wrote before alias records
    registry.store.replace("artifacts/data/aliases/prod.json", pointer)
    assert registry.get("data:prod").version == 0
    assert registry.versions("data")[0].aliases == ["prod"]
    registry.alias("data:v1", "prod")
    assert registry.get("data:prod").version == 1  # the first record supersedes the pointer
    assert registry.unalias("data", "prod").version == 1
    with pytest.raises(refstore.ArtifactNotFoundError):
        registry.get("data:prod")
