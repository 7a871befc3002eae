"""Unit tests: run-directory globs, ignore globs, the settings file, path encoding of synced files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refstore import RunError
from refstore.runs.files import MAX_NAME, decode_path, encode_path
from refstore.runs.globs import is_ignored, matches, run_relative
from refstore.runs.settings import ignore_globs


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("a.pt", "*.pt", True),
        ("ckpt/a.pt", "*.pt", False),
        ("ckpt/a.pt", "ckpt/*.pt", True),
        ("eval/x/y.txt", "eval/*", False),
        ("eval/x/y.txt", "eval/**", True),
        ("eval/x/y.txt", "**/y.txt", True),
        ("y.txt", "**/y.txt", True),
        ("A.PT", "*.pt", False),
        ("model-3.bin", "model-?.bin", True),
    ],
)
def test_matches_is_a_path_glob(path: str, pattern: str, expected: bool) -> None:
    assert matches(path, pattern) is expected


def test_ignore_globs_match_the_path_or_the_file_name() -> None:
    globs = ("*.log", "tmp/*")
    assert is_ignored("a/b/c.log", globs) and is_ignored("tmp/x", globs)
    assert not is_ignored("c.txt", globs) and not is_ignored("a/tmp/x", globs)


def test_run_relative(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    assert run_relative(str(tmp_path / "x" / "a.pt"), None, run_dir) == "a.pt"
    assert run_relative(str(tmp_path / "run" / "sub" / "a.pt"), None, run_dir) == "sub/a.pt"
    assert run_relative(str(tmp_path / "r" / "eval" / "*"), str(tmp_path / "r"), run_dir) == "eval/*"
    with pytest.raises(RunError, match="base_path"):
        run_relative(str(tmp_path / "elsewhere" / "a"), str(tmp_path / "r"), run_dir)


def test_settings_file_with_or_without_a_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFSTORE_IGNORE_GLOBS", " *.log ,, *.tmp")
    assert ignore_globs(tmp_path) == ("*.log", "*.tmp")
    (tmp_path / "settings").write_text("ignore_globs = *.patch, secrets/*\n")
    assert ignore_globs(tmp_path) == ("*.log", "*.tmp", "*.patch", "secrets/*")
    (tmp_path / "settings").write_text("[default]\nignore_globs=*.ckpt\n")
    assert ignore_globs(tmp_path)[-1] == "*.ckpt"
    (tmp_path / "settings").write_text("[default\n")
    with pytest.raises(RunError, match="settings"):
        ignore_globs(tmp_path)


_segment = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))


@given(st.lists(_segment, min_size=1, max_size=4).map("/".join))
def test_encoded_paths_are_one_folder_name_and_decode_back(path: str) -> None:
    encoded = encode_path(path)
    assert "/" not in encoded and ".tmp-" not in encoded and len(encoded.encode()) <= MAX_NAME
    assert decode_path(encoded) == (path if "%~" not in encoded else None)


def test_public_run_names_are_not_shadowed_by_submodules() -> None:
    import importlib
    import pkgutil
    import types

    import refstore
    import refstore.runs

    for module in pkgutil.iter_modules(refstore.runs.__path__):
        importlib.import_module(f"refstore.runs.{module.name}")
    for name in refstore.runs.__all__:
        assert not isinstance(getattr(refstore.runs, name), types.ModuleType), name
    for name in ("Run", "finish", "init", "restore", "save"):
        assert not isinstance(getattr(refstore, name), types.ModuleType), name
