"""Runs on a registry whose bucket does not exist: the bucket is named, never "no run p/x" (issue 14).

``read_record`` used to catch every :class:`FileNotFoundError`, and a missing bucket
(:class:`refstore.ObjectNotFoundError`) is one, so ``refstore restore`` blamed the run instead of the bucket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import unique_name

import refstore
from refstore.surfaces.cli import main


def test_restore_from_a_missing_bucket_names_the_bucket(s3_fs: Any, s3_bucket: str, tmp_path: Path) -> None:
    missing = unique_name("gone-")
    root = f"s3://{missing}/reg"
    with pytest.raises(refstore.ObjectNotFoundError, match=rf"^s3://{missing}: no such bucket"):
        refstore.restore("a.txt", "p/run1", root=tmp_path / "out", registry=root)

    result = CliRunner().invoke(main, ["--root", root, "restore", "p/run1", "a.txt"])
    assert result.exit_code != 0
    assert f"s3://{missing}: no such bucket" in result.output
    assert "no run" not in result.output


def test_restore_of_an_unknown_run_in_an_existing_bucket_is_still_run_error(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(refstore.RunError, match=rf"^no run p/run1 in s3://{s3_bucket}/reg"):
        refstore.restore("a.txt", "p/run1", root=tmp_path / "out", registry=f"s3://{s3_bucket}/reg")


@pytest.mark.parametrize("ref", ["d:v0", "d:prod", "d", "d:latest"])
def test_reading_a_version_from_a_missing_bucket_names_the_bucket(s3_fs: Any, ref: str) -> None:
    missing = unique_name("gone-")
    with pytest.raises(refstore.ObjectNotFoundError, match=rf"^s3://{missing}: no such bucket"):
        refstore.Registry(f"s3://{missing}/reg").get(ref)
