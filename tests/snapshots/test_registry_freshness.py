"""A long-lived reader of a registry on S3 sees every version and alias another process committed before
its call started, though s3fs caches listings and refstore shares one filesystem per process (issue 14
item 16)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import refstore

_WRITER = textwrap.dedent(
    """
    import pathlib, sys
    import refstore
    root, name, folder, text, *aliases = sys.argv[1:]
    source = pathlib.Path(folder) / "f.txt"
    source.write_text(text)
    artifact = refstore.Artifact(name)
    artifact.add_file(source)
    print(refstore.Registry(root).log(artifact, aliases=aliases).qualified_name)
    """
)


def _log_elsewhere(root: str, tmp_path: Path, text: str, *aliases: str) -> str:
    """Log ``text`` as a new version of ``data`` from another process."""
    folder = tmp_path / f"writer-{text}"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, root, "data", str(folder), text, *aliases],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_long_lived_reader_sees_versions_and_aliases_written_by_another_process(
    s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/registry"
    reader, second = refstore.Registry(root), refstore.Registry(root)  # one filesystem, one listing cache
    assert _log_elsewhere(root, tmp_path, "A") == "data:v0"
    assert [v.qualified_name for v in reader.versions("data")] == ["data:v0"]  # listings now cached
    assert reader.get("data").qualified_name == "data:v0" and reader.artifacts() == ["data"]

    assert _log_elsewhere(root, tmp_path, "B", "prod") == "data:v1"
    assert reader.get("data:v1").qualified_name == "data:v1"
    assert second.get("data:prod").qualified_name == "data:v1"
    assert reader.get("data:latest").qualified_name == "data:v1"
    assert [v.version for v in second.versions("data")] == [0, 1]

    assert _log_elsewhere(root, tmp_path, "C", "prod") == "data:v2"
    assert reader.get("data:prod").qualified_name == "data:v2"
    assert reader.get("data:v1").aliases == []
    assert second.get("data").aliases == ["latest", "prod"]
    assert (reader.get("data:v2").download(tmp_path / "out") / "f.txt").read_text() == "C"
