"""What the command line prints from a registry cannot drive the terminal (issue 14 item 7).

Anyone who can write a shared registry chooses refs, types, descriptions, metadata and run names. Here a
hostile writer forges them with refstore's own record classes (as it could by hand): ``ESC[2K`` + ``CR``
would erase the real source URL on a terminal and print an innocent one in its place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from refstore.core.manifest import Manifest, ManifestEntry
from refstore.core.records import AliasRecord, VersionRecord
from refstore.runs.records import RunRecord
from refstore.snapshots.registry import Registry
from refstore.surfaces.cli import main

HIDE = "\x1b[2K\r"  # erase the line, back to its start
REF = f"file:///srv/evil/credentials{HIDE}s3://team-bucket/data/train.csv"
DESCRIPTION = f"wipes your disk{HIDE}a harmless dataset"
TYPE = "dataset\x1b[8m"  # concealed text from here on
METADATA = {f"owner{HIDE}": "mallory\u202e\x9b2K", "nested": {"x": f"\x07{HIDE}"}}
#: Every character a terminal acts on, other than the line feed between lines.
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _forge(root: Path, name: str = "data", version: int = 0, path: str = "train.csv") -> None:
    """A version whose manifest, record and alias a hostile writer made."""
    registry = Registry(root)
    registry.create()
    manifest = Manifest({path: ManifestEntry(path, REF, 5, "md5:" + "0" * 32)})
    registry._store_manifest(manifest)
    record = VersionRecord(
        name=name,
        version=version,
        type=TYPE,
        manifest_digest=manifest.digest,
        content_digest=manifest.content_digest,
        created_at=f"2026-01-01{HIDE}",
        description=DESCRIPTION,
        metadata=METADATA,
        created_by=f"project/run{HIDE}",
    )
    registry.store.create(f"artifacts/{name}/versions/{version}.json", record.to_bytes())
    registry.store.replace(
        f"artifacts/{name}/aliases/prod.json", AliasRecord(name, "prod", version).to_bytes()
    )
    registry.store.create(f"artifacts/{name}/lineage/{version}/p~r{HIDE}", b"p/r")


def _run(root: Path, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--root", str(root), *args])
    assert not _CONTROLS.search(result.output), result.output
    return result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _forge(tmp_path / "registry")
    return tmp_path / "registry"


def test_show_escapes_refs_types_descriptions_and_metadata(root: Path) -> None:
    result = _run(root, "show", "data:prod")
    assert result.exit_code == 0, result.output
    out = result.output
    # the real source stays on the line, before the text that would have replaced it
    assert "file:///srv/evil/credentials\\x1b[2K\\rs3://team-bucket/data/train.csv" in out
    assert "wipes your disk\\x1b[2K\\ra harmless dataset" in out
    assert "(dataset\\x1b[8m)" in out
    assert "owner\\x1b[2K\\r: mallory\\u202e\\x9b2K" in out
    assert "project/run\\x1b[2K\\r" in out and "p/r\\x1b[2K\\r" in out


def test_ls_diff_alias_and_verify_escape_what_they_print(root: Path, tmp_path: Path) -> None:
    _forge(root, version=1, path="other.csv")
    listing = _run(root, "ls")
    assert listing.exit_code == 0 and "dataset\\x1b[8m" in listing.output
    versions = _run(root, "ls", "data")
    assert versions.exit_code == 0 and "2026-01-01\\x1b[2K\\r" in versions.output
    assert _run(root, "diff", "data:v0", "data:v1").output == "+ other.csv\n- train.csv\n"
    assert _run(root, "alias", "data:v0", "stable").exit_code == 0
    checked = _run(root, "verify", "data:v0")
    assert checked.exit_code == 1 and "missing  train.csv" in checked.output


def test_an_error_quoting_a_registry_ref_is_escaped(root: Path, tmp_path: Path) -> None:
    result = _run(root, "get", "data:v0", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "credentials\\x1b[2K s3://team-bucket" in result.output, result.output  # CR: one line
    assert result.output.count("\n") == 1


def test_json_output_escapes_control_characters_and_keeps_the_values(root: Path) -> None:
    result = _run(root, "--json", "show", "data:v0")
    assert result.exit_code == 0 and result.output.isascii()
    data = json.loads(result.output)
    assert data["entries"][0]["ref"] == REF and data["version"]["description"] == DESCRIPTION
    assert data["version"]["type"] == TYPE and data["version"]["metadata"] == METADATA


def test_run_names_and_errors_are_escaped(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.create()
    record = RunRecord(
        project="p",
        id="r1",
        name=f"nightly{HIDE}",
        created_at="2026-01-01T00:00:00+00:00",
        state="failed",
        config={"lr": f"0.1{HIDE}"},
        error=f"ValueError: boom{HIDE}all good",
    )
    registry.store.replace("runs/p/r1/run.json", record.to_bytes())
    result = _run(tmp_path / "registry", "runs", "show", "p/r1", "--dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "nightly\\x1b[2K\\r" in result.output and "boom\\x1b[2K\\rall good" in result.output
    assert json.loads(_run(tmp_path / "registry", "--json", "runs", "show", "p/r1").output)


def test_a_folder_that_is_no_artifact_name_is_not_listed(root: Path) -> None:
    (root / "artifacts" / f"evil{HIDE}" / "versions").mkdir(parents=True)
    (root / "artifacts" / f"evil{HIDE}" / "versions" / "0.json").write_text("{}")
    assert Registry(root).artifacts() == ["data"]
    listing = _run(root, "ls")
    assert listing.exit_code == 0 and "evil" not in listing.output, listing.output
