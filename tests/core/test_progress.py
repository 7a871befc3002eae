"""Progress bars print amounts the way the rest of the command line does: ``1,088 files``, ``1.0 MiB``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refstore.core.progress import progress_bar


def _shown(capsys: pytest.CaptureFixture[str], total: int | None, unit: str, amount: int) -> str:
    with progress_bar(total, "work", unit=unit) as bar:
        time.sleep(0.01)
        bar.update(amount)
        bar.refresh()
    return capsys.readouterr().err.split("\r")[-3]  # the last state drawn before the bar is cleared


def test_counts_have_a_thousands_separator_and_a_unit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSTORE_PROGRESS", "1")
    assert re.fullmatch(r"work: 1,088 files \[00:00, [\d,]+ files/s\]", _shown(capsys, None, "files", 1088))
    known = _shown(capsys, 2000, "files", 1088)
    assert " 54%|" in known and "| 1,088/2,000 files [" in known and re.search(r"[\d,]+ files/s\]$", known)
    sizes = _shown(capsys, 3 * 1024 * 1024, "B", 1024 * 1024)
    assert "| 1.0 MiB/3.0 MiB [" in sizes and re.search(r"\d\.\d [KMG]iB/s\]$", sizes)


def test_hashing_a_folder_shows_files_with_a_space(tmp_path: Path) -> None:
    data = tmp_path / "many"
    data.mkdir()
    for i in range(1088):
        (data / f"{i:04d}.txt").write_text(str(i))
    env = {**os.environ, "REFSTORE_PROGRESS": "1", "REFSTORE_HASH_PROCESSES": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "refstore", "--root", str(tmp_path / "reg"), "log", "many", str(data)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"hashing file://\S+: [\d,]+ files \[", result.stderr), result.stderr
    assert not re.search(r"\dfiles", result.stderr)
