"""``latest`` is what was logged last: a return to an older version's content makes a new version, content
equal to the latest comes back unchanged, ``created`` and ``refstore log`` say which, and a version of
another type is refused. On a local registry and on registries in moto (S3), fake-gcs-server and Azurite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import refstore
from refstore.surfaces.cli import main

_BUCKETS = {"s3": ("s3", "s3_bucket"), "gcs": ("gs", "gcs_bucket"), "azure": ("az", "azure_container")}


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[refstore.Registry]:
    if request.param == "local":
        yield refstore.Registry(tmp_path / "registry")
    else:
        scheme, fixture = _BUCKETS[request.param]
        yield refstore.Registry(f"{scheme}://{request.getfixturevalue(fixture)}/registry")


def _artifact(tmp_path: Path, content: str, type: str = "dataset") -> refstore.Artifact:
    source = tmp_path / "source.txt"
    source.write_text(content)
    artifact = refstore.Artifact("data", type=type)
    artifact.add_file(source, name="data.txt")
    return artifact


def test_a_return_to_older_content_is_a_new_latest_version(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    a0 = registry.log(_artifact(tmp_path, "A"))
    b1 = registry.log(_artifact(tmp_path, "B"))
    a2 = registry.log(_artifact(tmp_path, "A"))
    assert (a0.version, b1.version, a2.version) == (0, 1, 2)
    assert (a0.created, b1.created, a2.created) == (True, True, True)
    assert registry.get("data:latest") == a2 and registry.get("data") == a2
    assert [v.digest for v in registry.versions("data")] == [a0.digest, b1.digest, a0.digest]
    assert a2.manifest_digest == a0.manifest_digest  # the stored manifest is reused, not written anew
    assert a2.diff(b1).modified == ["data.txt"] and not a2.diff(a0)
    assert (a2.download(tmp_path / "out") / "data.txt").read_text() == "A"


def test_content_equal_to_the_latest_comes_back_unchanged(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    registry.log(_artifact(tmp_path, "A"))
    first = registry.log(_artifact(tmp_path, "B"), aliases=["one"])
    again = registry.log(_artifact(tmp_path, "B"), aliases=["two"])
    assert again == first and again.version == 1
    assert first.created and not again.created
    assert [v.version for v in registry.versions("data")] == [0, 1]
    assert registry.get("data:two") == first and not registry.get("data:v1").created


def test_a_version_of_another_type_is_refused(registry: refstore.Registry, tmp_path: Path) -> None:
    registry.log(_artifact(tmp_path, "A", type="dataset"))
    for content in ("A", "B"):  # unchanged content or not, the type must match
        with pytest.raises(refstore.ArtifactTypeError) as caught:
            registry.log(_artifact(tmp_path, content, type="model"))
        message = str(caught.value)
        assert "'model'" in message and "'dataset'" in message and "data:v0" in message
        assert "\n" not in message and isinstance(caught.value, ValueError)
    assert [v.version for v in registry.versions("data")] == [0]


def test_a_stale_content_index_never_names_a_version_of_other_content(tmp_path: Path) -> None:
    """The content index maps content to the first version holding it; an entry that names a version of
    other content (damaged) is ignored: the return gets its own manifest written and stays correct."""
    registry = refstore.Registry(tmp_path / "registry")
    a0 = registry.log(_artifact(tmp_path, "A"))
    b1 = registry.log(_artifact(tmp_path, "B"))
    index = tmp_path / "registry" / "artifacts" / "data" / "digests" / f"{a0.digest.split(':')[1]}.json"
    assert index.read_text() == "0"
    index.write_text(str(b1.version))
    a2 = registry.log(_artifact(tmp_path, "A"))
    assert a2.version == 2 and a2.digest == a0.digest
    assert (a2.download(tmp_path / "out") / "data.txt").read_text() == "A"


def test_log_command_says_whether_it_created_a_version(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    data.mkdir()

    def log(content: str, *extra: str) -> str:
        (data / "a.txt").write_text(content)
        result = runner.invoke(main, ["log", "ds", str(data), "--copy", *extra])
        assert result.exit_code == 0, result.output
        return result.output

    assert log("A").startswith("ds:v0 sha256:") and "created" in log("B")
    unchanged = log("B")
    assert unchanged.startswith("ds:v1 ") and "unchanged" in unchanged and "created" not in unchanged
    returned = json.loads(log("A", "--json"))
    assert returned["created"] is True and returned["version"]["qualified_name"] == "ds:v2"
    assert json.loads(log("A", "--json"))["created"] is False
    result = runner.invoke(main, ["log", "ds", str(data), "--copy", "--type", "model"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "'model'" in result.output and "'dataset'" in result.output


def test_a_concurrent_log_of_the_same_content_is_not_doubled(
    registry: refstore.Registry, tmp_path: Path
) -> None:
    """Another writer logs the same new content between this log's look at ``latest`` and its claim of
    the next number: the claim loses the race and returns the winner's version, not a second copy."""
    registry.log(_artifact(tmp_path, "A"))
    other = refstore.Registry(registry.root)

    class Racing(refstore.Registry):
        def _store_manifest(self, manifest: refstore.Manifest) -> None:
            won = other.log(_artifact(tmp_path / "other", "B"))  # the twin claims v1 first
            assert won.created and won.version == 1
            super()._store_manifest(manifest)

    (tmp_path / "other").mkdir()
    late = Racing(registry.root).log(_artifact(tmp_path, "B"), aliases=["mine"])
    assert (late.version, late.created) == (1, False)
    assert [v.version for v in registry.versions("data")] == [0, 1]
    assert registry.get("data:mine").version == 1
