"""Downloads that hold when files change under them (issue 14): prefixes at ``/`` boundaries (item 24)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import refstore
from refstore.cli import main


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _log_files(tmp_path: Path, files: dict[str, bytes], name: str) -> refstore.ArtifactVersion:
    source = tmp_path / f"src-{name}"
    for path, data in files.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(data)
    artifact = refstore.Artifact(name)
    artifact.add_reference(source)
    return refstore.Registry().log(artifact)


# -- item 24: a path prefix matches at / boundaries, or names one file ------------------------------------

SPLITS = {"train/a.txt": b"a", "train2/b.txt": b"b", "train.txt": b"t", "test/c.txt": b"c"}


def test_a_prefix_takes_a_folder_at_slash_boundaries_never_its_siblings(tmp_path: Path) -> None:
    version = _log_files(tmp_path, SPLITS, "splits")
    for prefix in ("train", "train/"):
        got = version.download(tmp_path / prefix.replace("/", "_slash"), path_prefix=prefix)
        assert _tree(got) == {"train/a.txt": b"a"}, prefix
    assert _tree(version.download(tmp_path / "one", path_prefix="train2/b.txt")) == {"train2/b.txt": b"b"}
    with pytest.raises(refstore.ObjectNotFoundError, match="'trai'"):
        version.download(tmp_path / "none", path_prefix="trai")
    result = CliRunner().invoke(main, ["get", "splits:v0", str(tmp_path / "cli"), "--prefix", "train"])
    assert result.exit_code == 0, result.output
    assert _tree(tmp_path / "cli") == {"train/a.txt": b"a"}


def test_clean_under_a_prefix_never_touches_files_of_a_sibling_with_a_longer_name(tmp_path: Path) -> None:
    version = _log_files(tmp_path, SPLITS, "splits")
    dest = tmp_path / "dest"
    (dest / "train2").mkdir(parents=True)
    (dest / "train2" / "mine.txt").write_bytes(b"my work")
    (dest / "train.txt.bak").write_bytes(b"my backup")
    (dest / "train").mkdir()
    (dest / "train" / "old.txt").write_bytes(b"old")
    got = version.download(dest, path_prefix="train", clean=True)
    assert got.removed == ("train/old.txt",)
    assert _tree(dest) == {"train/a.txt": b"a", "train2/mine.txt": b"my work", "train.txt.bak": b"my backup"}
    got = version.download(dest, path_prefix="train.txt")
    assert got.extra == ()  # a file's path: train.txt.bak is not under it
    assert (dest / "train.txt").read_bytes() == b"t"
