"""Run files whose names are long once percent-encoded (issue 14 item 15): a name of 240 bytes of UTF-8, or
a deep path, is saved, synced, listed, restored and cleaned like any other. Each test runs with the registry
in a local folder (255 bytes per name) and on moto S3."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from runs_support import FAST, registry_root, run_area, states

import refstore
from refstore.runs.files import MAX_NAME, encode_path
from refstore.surfaces.cli import main

__all__ = ["registry_root", "run_area"]  # fixtures used by name

#: 120 two-byte characters: 244 bytes as a file name, 724 characters percent-encoded.
WIDE = "é" * 120 + ".bin"
#: Two folders deep, each name within the limit, the whole path far beyond it.
DEEP = "d" * 200 + "/" + "e" * 200 + "/" + "f" * 200 + ".txt"


def test_long_names_sync_list_restore_and_clean(registry_root: str, tmp_path: Path, run_area: Path) -> None:
    source = tmp_path / "src"
    (source / DEEP).parent.mkdir(parents=True)
    (source / WIDE).write_bytes(b"wide name")
    (source / DEEP).write_bytes(b"deep path")
    (source / "short.txt").write_bytes(b"short")
    with refstore.init("proj", sync_interval=FAST) as run:
        saved = run.save(str(source / "**" / "*"), base_path=str(source))
        assert sorted(saved) == sorted([WIDE, DEEP, "short.txt"])
    for name in (WIDE, DEEP, "short.txt"):
        assert states(registry_root, run.path, name) == [0], name
        assert len(encode_path(name)) <= MAX_NAME

    restored = tmp_path / "restored"
    with refstore.restore(WIDE, run.path, root=restored) as handle:
        assert handle.read() == b"wide name"
    with refstore.restore(DEEP, run.path, root=restored) as handle:
        assert handle.read() == b"deep path"

    shown = CliRunner().invoke(main, ["runs", "show", "--json", run.path], catch_exceptions=False)
    assert json.loads(shown.output)["files"] == sorted([WIDE, DEEP, "short.txt"])
    clean = CliRunner().invoke(main, ["sync", "--clean", "--yes"], catch_exceptions=False)
    assert clean.exit_code == 0 and "deleted" in clean.output, clean.output
    assert not run.dir.exists()


def test_a_long_name_written_into_the_run_directory_syncs_again_after_a_change(
    registry_root: str, tmp_path: Path
) -> None:
    with refstore.init("proj", sync_interval=FAST) as run:
        run.save(str(run.dir / "*.bin"), policy="end")
        (run.dir / WIDE).write_bytes(b"one")
    (run.dir / WIDE).write_bytes(b"two, after the run")
    synced = CliRunner().invoke(main, ["sync", "--json"], catch_exceptions=False)
    assert json.loads(synced.output)[0]["uploaded"] == [WIDE]
    assert states(registry_root, run.path, WIDE) == [0, 1]
    with refstore.restore(WIDE, run.path, root=tmp_path / "r") as handle:
        assert handle.read() == b"two, after the run"
