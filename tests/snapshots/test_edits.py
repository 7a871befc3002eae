"""Editable metadata (issue 15): description, metadata, tags and TTL change after logging, as an append-only
history of create-only records, while the version's record, manifest and digests stay exactly as logged;
``find`` filters versions. On a local registry and on one in a moto (S3) bucket."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

import refstore
from refstore.core.records import Values
from refstore.core.records import actor as refstore_actor
from refstore.snapshots import edits


@pytest.fixture
def registry(local_or_s3_registry: refstore.Registry) -> refstore.Registry:
    return local_or_s3_registry


def _log(
    registry: refstore.Registry, tmp_path: Path, name: str, content: str, **kwargs: object
) -> refstore.ArtifactVersion:
    source = tmp_path / "source" / name / "data.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(content)
    artifact = refstore.Artifact(name, **kwargs)  # type: ignore[arg-type]
    artifact.add_file(source)
    return registry.log(artifact)


def test_update_changes_values_keeps_the_record_and_digests_and_keeps_history(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    logged = _log(registry, tmp_path, "mnist", "a", description="first", metadata={"lr": 0.1}, tags=["raw"])
    assert (logged.description, logged.metadata, logged.tags) == ("first", {"lr": 0.1}, ["raw"])
    record = registry.store.read_created("artifacts/mnist/versions/0.json")
    updated = registry.update("mnist:v0", description="second", metadata={"lr": 0.2, "split": "train"})
    assert (updated.description, updated.metadata, updated.tags) == (
        "second",
        {"lr": 0.2, "split": "train"},
        ["raw"],
    )
    registry.update("mnist:v0", tags=["prod-candidate"])
    registry.update("mnist:v0", set_metadata={"epochs": 3}, unset_metadata=["split"], add_tags=["x"])
    now = registry.get("mnist:v0")
    assert now.description == "second"
    assert now.metadata == {"lr": 0.2, "epochs": 3}
    assert now.tags == ["prod-candidate", "x"]
    assert (now.digest, now.manifest_digest) == (logged.digest, logged.manifest_digest)
    assert registry.store.read_created("artifacts/mnist/versions/0.json") == record  # never rewritten
    history = now.history()
    assert [e.seq for e in history] == [0, 1, 2]
    assert [e.description for e in history] == ["second"] * 3
    assert all("@" in e.edited_by and e.edited_at for e in history)
    assert now.last_edit == history[-1]
    assert registry.update("mnist:v0", description="second").last_edit == history[-1]  # no change: no record
    registry.update("mnist:v0", description="")
    assert registry.get("mnist:v0").description is None


def test_an_edit_that_loses_the_race_is_applied_again_to_the_winners_values(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    logged = _log(registry, tmp_path, "mnist", "a")
    other = refstore.Registry(registry.root)  # another writer
    seen: list[list[str]] = []

    def add_mine(values: Values) -> Values:
        if not seen:  # the other writer edits between this edit's read and its claim
            other.update("mnist:v0", add_tags=["theirs"])
        seen.append(values.tags)
        return replace(values, tags=[*values.tags, "mine"])

    edits.edit(registry.store, logged.record, add_mine)
    assert seen == [[], ["theirs"]]  # the claim failed, so the change ran again on the winner's values
    assert registry.get("mnist:v0").tags == ["theirs", "mine"]
    assert [e.edited_by for e in registry.get("mnist:v0").history()] == [refstore_actor()] * 2


def test_edits_are_checked_before_anything_is_written(registry: refstore.Registry, tmp_path: Path) -> None:
    _log(registry, tmp_path, "mnist", "a")
    with pytest.raises(refstore.InvalidNameError, match="tag"):
        registry.update("mnist:v0", tags=["no spaces"])
    with pytest.raises(ValueError, match="ttl"):
        registry.update("mnist:v0", ttl=True)  # type: ignore[arg-type]
    assert registry.get("mnist:v0").history() == []


def test_a_tampered_edit_record_is_an_integrity_error(tmp_path: Path) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    _log(registry, tmp_path, "mnist", "a")
    registry.update("mnist:v0", description="honest")
    path = tmp_path / "registry" / "artifacts" / "mnist" / "edits" / "0" / "0.json"
    path.write_bytes(path.read_bytes().replace(b"honest", b"forged"))
    with pytest.raises(refstore.IntegrityError):
        print(registry.get("mnist:v0").description)


def test_find_filters_versions_by_type_tag_and_metadata(registry: refstore.Registry, tmp_path: Path) -> None:
    _log(registry, tmp_path, "mnist", "a", metadata={"split": "train"}, tags=["raw"])
    _log(registry, tmp_path, "mnist", "b", metadata={"split": "test"})
    _log(registry, tmp_path, "resnet", "c", type="model", metadata={"split": "train"})
    registry.update("mnist:v1", add_tags=["prod-candidate"])
    names = lambda found: [v.qualified_name for v in found]  # noqa: E731
    assert names(registry.find(type="model")) == ["resnet:v0"]
    assert names(registry.find(tag="prod-candidate")) == ["mnist:v1"]
    assert names(registry.find(metadata={"split": "train"})) == ["mnist:v0", "resnet:v0"]
    assert names(registry.find(type="dataset", metadata={"split": "train"})) == ["mnist:v0"]
    assert names(registry.find()) == ["mnist:v0", "mnist:v1", "resnet:v0"]
    registry.delete("mnist:v0")
    assert names(registry.find(tag="raw")) == []  # deleted versions are not found


def test_log_time_values_are_in_the_version_record(registry: refstore.Registry, tmp_path: Path) -> None:
    _log(registry, tmp_path, "mnist", "a", tags=["raw"])
    _log(registry, tmp_path, "plain", "b")
    tagged = json.loads(registry.store.read_created("artifacts/mnist/versions/0.json"))
    plain = json.loads(registry.store.read_created("artifacts/plain/versions/0.json"))
    assert tagged["tags"] == ["raw"]
    assert "tags" not in plain and "ttl_seconds" not in plain  # records without them read as before


def test_log_refuses_bad_tags_or_ttl_before_writing(tmp_path: Path) -> None:
    registry = refstore.Registry(tmp_path / "registry")
    with pytest.raises(refstore.InvalidNameError, match="tag"):
        refstore.Artifact("mnist", tags=["has space"])
    artifact = refstore.Artifact("mnist", ttl=timedelta(seconds=-1))
    (tmp_path / "a.txt").write_text("a")
    artifact.add_file(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="ttl"):
        registry.log(artifact)
    assert not (tmp_path / "registry").exists()
