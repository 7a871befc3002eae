"""Fixtures of the snapshot tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import refstore


@pytest.fixture(params=["local", "s3"])
def local_or_s3_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[refstore.Registry]:
    """A fresh registry on local disk, and one in a moto (S3) bucket."""
    if request.param == "local":
        yield refstore.Registry(tmp_path / "registry")
    else:
        yield refstore.Registry(f"s3://{request.getfixturevalue('s3_bucket')}/registry")
