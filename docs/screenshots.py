"""Screenshots of ``refstore ui`` for the README (docs/ui-*.png), taken in Debian's Chromium (Selenium).

    python docs/screenshots.py            # writes docs/ui-*.png

The registry is the sample the browser tests use (tests/surfaces/ui_support.py), logged into a scratch folder.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "surfaces"))

import ui_support  # noqa: E402

#: (file name, page, height of the shot in pixels)
SHOTS = [
    ("ui-artifacts.png", "/artifacts", 420),
    ("ui-version.png", "/artifacts/mnist/v1", 780),
    ("ui-parquet.png", "/artifacts/mnist/v1/files/train/part-0.parquet", 720),
    ("ui-diff.png", "/artifacts/mnist/diff/v0/v1", 560),
    ("ui-lineage.png", "/artifacts/mnist/v1/lineage?depth=3", 500),
    ("ui-run.png", "/runs/{train}", 900),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)

        def put(path: str, data: bytes) -> None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)

        code = _code_under_git(work / "code")  # the runs record a commit, a branch and a patch
        sample = ui_support.build(str(work / "registry"), str(work / "data"), put, work / "runs", code)
        with ui_support.serving(sample.root) as url:
            for name, page, height in SHOTS:
                browser = ui_support.chrome(width=1100, height=height)
                try:
                    browser.get(url + page.format(train=sample.train_run))
                    time.sleep(0.5)  # the lineage graph is drawn by script
                    browser.save_screenshot(str(HERE / name))
                finally:
                    browser.quit()
                print(f"wrote docs/{name}")


def _code_under_git(folder: Path) -> Path:
    """A git repository with a commit, a remote and an uncommitted change."""
    import subprocess

    folder.mkdir()
    (folder / "train.py").write_text("print('train')\n")
    for command in (
        ["init", "-q", "-b", "main"],
        ["remote", "add", "origin", "https://git.example.com/team/digits.git"],
        ["add", "train.py"],
        ["-c", "user.name=docs", "-c", "user.email=docs@example.com", "commit", "-q", "-m", "train"],
    ):
        subprocess.run(["git", *command], cwd=folder, check=True)
    (folder / "train.py").write_text("print('train, lr 0.01')\n")
    return folder


if __name__ == "__main__":
    main()
