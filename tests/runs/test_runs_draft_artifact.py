"""A draft ``Artifact`` once logged acts on its version: the W&B reference-artifact flow works as written.

``run.use_artifact(draft)`` logs it (a new version only when the files changed) and records the use; after
``Registry.log``, ``run.log_artifact`` or ``run.use_artifact`` the draft downloads, opens and verifies
that version; before, and after a change, it says to log it first. Each test runs with the registry in a
local folder and on moto S3.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runs_support import registry_root, run_area

import refstore
from refstore import Artifact, RefstoreError, Registry

__all__ = ["registry_root", "run_area"]  # fixtures used by name


def _dataset(folder: Path, train: bytes = b"0123456789" * 100) -> Path:
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "train.bin").write_bytes(train)
    (folder / "labels" / "classes.txt").write_text("0\n1\n2\n")
    return folder


def test_the_wandb_reference_artifact_flow(
    registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnist = _dataset(tmp_path / "mount" / "datasets" / "mnist")
    (tmp_path / "job").mkdir()
    monkeypatch.chdir(tmp_path / "job")
    with refstore.init("mnist-cnn") as run:
        artifact = Artifact("mnist", type="dataset")
        artifact.add_reference(f"file://{mnist}/")
        version = run.use_artifact(artifact)
        artifact_dir = artifact.download()
    assert Path(artifact_dir).absolute() == tmp_path / "job" / "artifacts" / "mnist:v0"
    assert (artifact_dir / "train.bin").read_bytes() == (mnist / "train.bin").read_bytes()
    assert (artifact_dir / "labels" / "classes.txt").read_text() == "0\n1\n2\n"
    assert (artifact.version, artifact.qualified_name) == (0, "mnist:v0") == (version.version, "mnist:v0")
    assert artifact.logged_version == version
    assert version.used_by() == [run.path] and version.created_by == run.path
    assert artifact.verify() and artifact.verify().ok == ["labels/classes.txt", "train.bin"]
    with artifact.open("labels/classes.txt") as handle:
        assert handle.read() == b"0\n1\n2\n"


def test_use_artifact_makes_a_new_version_only_when_the_files_changed(
    registry_root: str, tmp_path: Path
) -> None:
    mnist = _dataset(tmp_path / "mnist")
    used = []
    for train in (b"first", b"first", b"second"):
        _dataset(mnist, train)
        with refstore.init("p") as run:
            draft = Artifact("mnist")
            draft.add_reference(f"file://{mnist}/")
            used.append((run.use_artifact(draft).qualified_name, run.path, draft.qualified_name))
    assert [name for name, _, _ in used] == ["mnist:v0", "mnist:v0", "mnist:v1"]
    assert [drafted for _, _, drafted in used] == ["mnist:v0", "mnist:v0", "mnist:v1"]
    registry = Registry(registry_root)
    assert [v.version for v in registry.versions("mnist")] == [0, 1]
    assert registry.get("mnist:v0").used_by() == sorted([used[0][1], used[1][1]])
    assert registry.get("mnist:v1").used_by() == [used[2][1]]
    assert registry.get("mnist:v0").created_by == used[0][1]  # the run that logged it first


@pytest.mark.parametrize("action", ["download", "open", "verify", "version", "qualified_name"])
def test_a_draft_that_is_not_logged_says_to_log_it_first(
    registry_root: str, tmp_path: Path, action: str
) -> None:
    draft = Artifact("notes")
    draft.add_file(_dataset(tmp_path / "d") / "train.bin")
    calls = {
        "download": lambda: draft.download(tmp_path / "out"),
        "open": lambda: draft.open("train.bin"),
        "verify": draft.verify,
        "version": lambda: draft.version,
        "qualified_name": lambda: draft.qualified_name,
    }
    with pytest.raises(RefstoreError, match=r"artifact 'notes' is a draft .*log it first"):
        calls[action]()
    assert draft.logged_version is None and not (tmp_path / "out").exists()


def test_log_and_log_artifact_point_the_draft_at_their_version_until_it_changes(
    registry_root: str, tmp_path: Path
) -> None:
    data = _dataset(tmp_path / "d")
    draft = Artifact("model", type="model")
    draft.add_file(data / "train.bin")
    logged = Registry(registry_root).log(draft)
    assert draft.qualified_name == "model:v0" == logged.qualified_name
    assert (draft.download(tmp_path / "v0") / "train.bin").read_bytes() == (data / "train.bin").read_bytes()

    draft.add_file(data / "labels" / "classes.txt")  # the draft changed: v0 no longer describes it
    with pytest.raises(RefstoreError, match="log it first"):
        draft.download(tmp_path / "stale")
    with refstore.init("p") as run:
        produced = run.log_artifact(draft)
    assert draft.qualified_name == "model:v1" == produced.qualified_name and produced.created_by == run.path
    assert sorted(p.name for p in draft.download(tmp_path / "v1").iterdir()) == ["classes.txt", "train.bin"]
    assert draft.verify(), "the copies are in the registry: nothing changed"
