"""Fixtures and helpers shared by the run tests (``test_runs*.py``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from refstore import Registry
from refstore.runs import current_run
from refstore.runs.files import RunFiles

#: How often test runs look at their live files (the default, 1 s, would make the tests slow).
FAST = 0.02


@pytest.fixture(params=["local", "s3"])
def registry_root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The registry the runs write to: a local folder, or a prefix of a fresh bucket on moto."""
    if request.param == "s3":
        root = f"s3://{request.getfixturevalue('s3_bucket')}/registry"
    else:
        root = str(tmp_path / "registry")
    monkeypatch.setenv("REFSTORE_ROOT", root)
    return root


@pytest.fixture(autouse=True)
def run_area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run directories go to ``<tmp>/work/refstore-runs``; runs a test leaves open are finished after it."""
    monkeypatch.setenv("REFSTORE_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("REFSTORE_IGNORE_GLOBS", raising=False)
    yield tmp_path / "work" / "refstore-runs"
    while (run := current_run()) is not None:
        with contextlib.suppress(Exception):
            run.finish()


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def states(root: str, run_path: str, name: str) -> list[int]:
    """The synced states of one run file, read from the registry."""
    return RunFiles(Registry(root).store, run_path).states(name)
