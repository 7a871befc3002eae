"""Incremental versions (issue 16): ``ArtifactVersion.new_draft()`` gives an ``Artifact`` holding the
version's entries, ``Artifact.remove`` drops a path or a folder, adds replace the version's entries, and
``log`` makes the next version. On a local registry and on one in a moto (S3) bucket."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import refstore
from refstore.core.exceptions import InvalidURLError, ObjectNotFoundError, UnsafePathError


@pytest.fixture
def registry(local_or_s3_registry: refstore.Registry) -> refstore.Registry:
    return local_or_s3_registry


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


FILES = {"train/a.bin": "a", "train/x/y": "y", "training/z": "z", "readme.txt": "hello"}


def _artifact(tmp_path: Path, copies: bool = False, name: str = "data") -> tuple[Path, refstore.Artifact]:
    """The files of ``FILES`` and an artifact of them: references, or copies (``add_dir``)."""
    source = _tree(tmp_path / "src", FILES)
    artifact = refstore.Artifact(name)
    (artifact.add_dir if copies else artifact.add_reference)(source)
    return source, artifact


def _read_all(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_draft_logged_unchanged_gives_back_the_version(registry: refstore.Registry, tmp_path: Path) -> None:
    source = _tree(tmp_path / "src", FILES)
    artifact = refstore.Artifact("data")
    artifact.add_reference(source / "train", "train")
    artifact.add_file(source / "readme.txt")
    v0 = registry.log(artifact)
    draft = v0.new_draft()
    assert isinstance(draft, refstore.Artifact)
    assert dict(draft.manifest.items()) == dict(v0.manifest.items())
    assert draft.staged_files == {}  # the copy's bytes are in the registry already
    again = registry.log(draft)
    assert (again.version, again.created, again.digest) == (0, False, v0.digest)
    assert [v.version for v in registry.versions("data")] == [0]


def test_remove_a_folder_and_add_gives_exactly_the_new_entries(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _, artifact = _artifact(tmp_path)
    v0 = registry.log(artifact)
    new = _tree(tmp_path / "new", {"b.bin": "bee", "notes.txt": "stored"})

    draft = v0.new_draft()
    assert draft.remove("train") == 2
    added = draft.add_reference(new / "b.bin", "train/b.bin")
    copied = draft.add_file(new / "notes.txt", "docs/notes.txt")
    v1 = registry.log(draft)

    assert (v1.version, v1.created) == (1, True)
    expected = {p: e for p, e in v0.manifest.items() if not p.startswith("train/")}
    expected.update({e.path: e for e in [*added, copied]})
    assert dict(v1.manifest.items()) == expected
    assert dict(registry.get("data:v0").manifest.items()) == dict(v0.manifest.items())  # v0 untouched
    (new / "notes.txt").unlink()  # the copy is read back from the registry's blob store
    out = v1.download(tmp_path / "out", skip_cache=True)
    assert _read_all(Path(out)) == {
        "train/b.bin": "bee",
        "training/z": "z",
        "readme.txt": "hello",
        "docs/notes.txt": "stored",
    }


def test_stored_copies_of_the_version_log_and_download_from_a_draft(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    source, artifact = _artifact(tmp_path, copies=True, name="copies")
    v0 = registry.log(artifact)
    for path in source.rglob("*"):  # the draft has no local file for any copy
        if path.is_file():
            path.unlink()

    draft = v0.new_draft()
    assert draft.remove("train/x/y") == 1
    draft._check_copies(registry.store)  # what the log relies on is there
    v1 = registry.log(draft)

    assert (v1.version, v1.created) == (1, True)
    assert all(e.is_copy for e in v1.manifest.values())
    assert sorted(v1.manifest) == ["readme.txt", "train/a.bin", "training/z"]
    out = v1.download(tmp_path / "out", skip_cache=True)
    assert _read_all(Path(out)) == {"train/a.bin": "a", "training/z": "z", "readme.txt": "hello"}


def test_remove_matches_folders_at_slash_boundaries(tmp_path: Path) -> None:
    source, artifact = _artifact(tmp_path)
    assert artifact.remove("train/") == 2
    assert sorted(artifact.manifest) == ["readme.txt", "training/z"]
    assert artifact.remove("training/z") == 1
    assert sorted(artifact.manifest) == ["readme.txt"]

    artifact.add_file(source / "train" / "a.bin", "extra/a.bin")
    assert len(artifact.staged_files) == 1
    assert artifact.remove("extra") == 1
    assert artifact.staged_files == {}  # nothing left to upload for the removed copy


def test_removing_nothing_raises_naming_the_path_and_the_artifact(tmp_path: Path) -> None:
    _, artifact = _artifact(tmp_path)
    with pytest.raises(ObjectNotFoundError, match=r"^data: no entry to remove at 'trai' ") as raised:
        artifact.remove("trai")
    assert "\n" not in str(raised.value)
    with pytest.raises(ObjectNotFoundError, match=r"'readme\.txt/x'"):
        artifact.remove("readme.txt/x")
    for bad in ("/", "", "../train", "/train"):
        with pytest.raises(UnsafePathError):
            artifact.remove(bad)
    assert len(artifact.manifest) == len(FILES)  # nothing was removed


def test_an_add_on_a_draft_replaces_the_version_entry_once(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    source, artifact = _artifact(tmp_path)
    v0 = registry.log(artifact)
    (source / "readme.txt").write_text("changed")

    fresh = refstore.Artifact("data")
    fresh.add_file(tmp_path / "src" / "training" / "z", "readme.txt")
    with pytest.raises(InvalidURLError, match=r"'readme\.txt' is already in the artifact"):
        fresh.add_reference(source / "readme.txt")  # a fresh artifact still refuses a conflicting add

    draft = v0.new_draft()
    draft.add_reference(source / "readme.txt")  # replaces the version's entry
    with pytest.raises(InvalidURLError, match=r"'readme\.txt' is already in the artifact"):
        draft.add_file(source / "training" / "z", "readme.txt")  # a second, different add is refused
    draft.add_reference(source / "readme.txt")  # the same entry again is fine
    v1 = registry.log(draft)
    assert v1.version == 1
    assert v1.manifest["readme.txt"] != v0.manifest["readme.txt"]
    assert len(v1.manifest) == len(v0.manifest)
    with v1.open("readme.txt") as stream:
        assert stream.read() == b"changed"


def test_a_draft_carries_the_current_values(registry: refstore.Registry, tmp_path: Path) -> None:
    source = _tree(tmp_path / "src", FILES)
    artifact = refstore.Artifact(
        "data",
        "model",
        description="first",
        metadata={"params": {"lr": 0.1}},
        tags=["raw"],
        ttl=timedelta(days=3),
    )
    artifact.add_reference(source)
    v0 = registry.log(artifact)
    registry.update("data:v0", description="edited", set_metadata={"epochs": 2}, add_tags=["prod"])

    current = registry.get("data:v0")
    draft = current.new_draft()
    assert (draft.name, draft.type, draft.description) == ("data", "model", "edited")
    assert draft.metadata == {"params": {"lr": 0.1}, "epochs": 2}
    assert (draft.tags, draft.ttl) == (["raw", "prod"], timedelta(days=3))
    draft.metadata["params"]["lr"] = 0.5  # the draft's own copy
    assert current.metadata["params"] == {"lr": 0.1}
    draft.remove("readme.txt")
    v1 = registry.log(draft)
    assert (v1.type, v1.description, v1.tags, v1.ttl) == (
        "model",
        "edited",
        ["raw", "prod"],
        timedelta(days=3),
    )
    assert v1.metadata == {"params": {"lr": 0.5}, "epochs": 2}
    assert v0.record.metadata == {"params": {"lr": 0.1}}  # as logged


def test_a_draft_checks_its_copies_against_another_registry(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    source, artifact = _artifact(tmp_path, copies=True, name="copies")
    artifact.add_reference(source / "readme.txt", "ref.txt")
    v0 = registry.log(artifact)
    other = refstore.Registry(tmp_path / "other")
    draft = v0.new_draft()
    draft.remove("train")
    with pytest.raises(
        ObjectNotFoundError, match=r"^copies: entry 'readme.txt' \(and 1 more\) is a copy"
    ) as e:
        draft._check_copies(other.store)
    assert "copies:v0 in " in str(e.value) and "\n" not in str(e.value)
    draft.add_file(source / "readme.txt")  # staged again: only the other copy is missing now
    with pytest.raises(ObjectNotFoundError, match=r"^copies: entry 'training/z' is a copy"):
        draft._check_copies(other.store)
    draft.remove("training")
    draft._check_copies(other.store)  # references and staged copies need nothing there


def test_logging_a_draft_to_a_registry_without_its_copies_fails(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    _, artifact = _artifact(tmp_path, copies=True, name="copies")
    v0 = registry.log(artifact)
    other = refstore.Registry(tmp_path / "other")
    with pytest.raises(ObjectNotFoundError, match="is a copy stored with copies:v0"):
        other.log(v0.new_draft())
    assert other.artifacts() == []
