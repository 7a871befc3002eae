"""A cache that stays within bounds (issue 15): ``refstore cache info``, ``refstore cache prune --max-size``
(least recently used first), ``$REFSTORE_CACHE_MAX_SIZE`` after downloads; downloads handed out as hard
links keep their bytes, a pruned object is fetched again, and pruning beside downloads in other processes
never breaks them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import refstore
from refstore.core.sizes import parse_size
from refstore.storage import cache as cache_module
from refstore.storage import cache_bounds
from refstore.storage.cache import Cache
from refstore.surfaces.cli import main

KB = 10_000  # each object's size: three of them make 30 kB


def _objects(
    s3_fs: Any, bucket: str, tmp_path: Path, names: str = "abc"
) -> dict[str, refstore.ArtifactVersion]:
    """One version per name, each holding one 10 kB object with bytes of its own, referenced on S3."""
    registry = refstore.Registry(tmp_path / "registry")
    versions = {}
    for name in names:
        s3_fs.pipe(f"{bucket}/{name}/data.bin", name.encode() * KB)
        s3_fs.invalidate_cache()
        artifact = refstore.Artifact(f"obj-{name}")
        artifact.add_reference(f"s3://{bucket}/{name}")
        versions[name] = registry.log(artifact)
    return versions


def _gets(server: Any, mark: int) -> list[str]:
    return [r.split("?")[0] for r in server.requests_since(mark) if r.startswith("GET ")]


def _cli(*args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result


def _info() -> dict[str, Any]:
    result = _cli("cache", "info", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GB", 10 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1048576", 1048576),
        ("0", 0),
        ("1.5GB", 1_500_000_000),
        ("10 gb", 10 * 10**9),
        ("2KiB", 2048),
        ("3kB", 3000),
        ("1TiB", 2**40),
        ("7B", 7),
    ],
)
def test_sizes_read_as_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "-1", "10XB", "1.5", "GB", "1e9"])
def test_a_size_that_is_none_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_info_and_prune_remove_the_least_recently_used_first(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    versions = _objects(s3_fs, s3_bucket, tmp_path)
    assert _info()["entries"] == 0
    for name in "abc":  # admitted in this order: a is the oldest ...
        versions[name].download(tmp_path / f"first-{name}")
    versions["a"].download(tmp_path / "again-a")  # ... until a warm download uses it again
    info = _info()
    assert (info["entries"], info["size"], info["linked_size"]) == (3, 3 * KB, 3 * KB)
    assert info["pins"] == 3 and info["oldest_use"] <= info["newest_use"]

    declined = _cli("cache", "prune", "--max-size", "25kB", input="n\n")
    assert declined.exit_code == 0 and "Remove 1 cached object(s)" in declined.output
    assert _info()["entries"] == 3

    pruned = _cli("cache", "prune", "--max-size", "25kB", "--yes", "--json")
    assert pruned.exit_code == 0, pruned.output
    report = json.loads(pruned.output)
    assert (report["removed"], report["freed"], report["entries"], report["size"]) == (1, KB, 2, 2 * KB)
    assert report["pins_removed"] == 1  # b's pin went with its bytes

    mark = s3_server.mark()
    for name in "abc":
        assert (
            versions[name].download(tmp_path / f"later-{name}") / "data.bin"
        ).read_bytes() == name.encode() * KB
    assert _gets(s3_server, mark) == [f"GET /{s3_bucket}/b/data.bin"]  # only the pruned object again

    nothing = _cli("cache", "prune", "--max-size", "1GB")
    assert nothing.exit_code == 0 and "removed 0 object(s)" in nothing.output


def test_pruning_never_changes_files_handed_out_as_hard_links(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    versions = _objects(s3_fs, s3_bucket, tmp_path, "ab")
    folders = {name: v.download(tmp_path / name) for name, v in versions.items()}
    assert all(os.stat(f / "data.bin").st_nlink == 2 for f in folders.values())  # shared with the cache

    emptied = _cli("cache", "prune", "--max-size", "0", "-y")
    assert emptied.exit_code == 0, emptied.output
    assert "removed 2 object(s)" in emptied.output
    info = _info()
    assert (info["entries"], info["size"], info["pins"]) == (0, 0, 0)
    for name, folder in folders.items():
        assert os.stat(folder / "data.bin").st_nlink == 1
        assert (folder / "data.bin").read_bytes() == name.encode() * KB
        assert versions[name].verify(folder)

    mark = s3_server.mark()
    again = versions["a"].download(tmp_path / "again")
    assert _gets(s3_server, mark) == [f"GET /{s3_bucket}/a/data.bin"]  # fetched again when needed
    assert (again / "data.bin").read_bytes() == b"a" * KB
    assert (folders["a"] / "data.bin").read_bytes() == b"a" * KB


def test_max_size_from_the_environment_prunes_after_downloads(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = _objects(s3_fs, s3_bucket, tmp_path)
    monkeypatch.setenv("REFSTORE_CACHE_MAX_SIZE", "25kB")
    for name in "abc":
        versions[name].download(tmp_path / name)
    info = _info()
    assert (info["entries"], info["size"]) == (2, 2 * KB)  # a went: the least recently used
    mark = s3_server.mark()
    versions["b"].download(tmp_path / "b-again")
    versions["c"].download(tmp_path / "c-again")
    assert _gets(s3_server, mark) == []

    prune_default = _cli("cache", "prune", "-y")  # --max-size defaults to the variable
    assert prune_default.exit_code == 0 and "removed 0 object(s)" in prune_default.output

    monkeypatch.setenv("REFSTORE_CACHE_MAX_SIZE", "lots")
    with pytest.raises(refstore.RefstoreError, match="REFSTORE_CACHE_MAX_SIZE: 'lots' is not a size"):
        versions["a"].download(tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    bad = _cli("cache", "prune", "--max-size", "lots")
    assert bad.exit_code == 2 and "is not a size" in bad.output


def test_an_object_pruned_right_after_its_download_admitted_it_is_still_put_in_place(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process prunes the cache to 0 at the worst moment: right after a download renamed fetched
    bytes into ``blobs/``. The download's file is already in place (linked from its own file in ``tmp/``):
    one GET per object, no refetch, the right bytes."""
    versions = _objects(s3_fs, s3_bucket, tmp_path, "ab")
    admit = Cache.admit

    def admit_then_prune(self: Cache, *args: Any) -> str:
        blob = admit(self, *args)
        cache_bounds.prune(Cache(self.root), 0)
        assert not os.path.exists(blob)
        return blob

    monkeypatch.setattr(Cache, "admit", admit_then_prune)
    mark = s3_server.mark()
    folder = versions["a"].download(tmp_path / "a")
    assert _gets(s3_server, mark) == [f"GET /{s3_bucket}/a/data.bin"]
    assert (folder / "data.bin").read_bytes() == b"a" * KB


def test_an_object_pruned_while_a_warm_download_links_it_is_copied_from_the_open_file(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process prunes after a warm download opened and checked a cached file but before it made
    its hard link: the link fails, and the download copies the file it holds open; no request."""
    versions = _objects(s3_fs, s3_bucket, tmp_path, "a")
    versions["a"].download(tmp_path / "cold")
    (tmp_path / "cold" / "data.bin").unlink()  # the cached file is linkable again
    install = cache_module.install

    def prune_then_install(blob: str, *args: Any, **kwargs: Any) -> None:
        cache_bounds.prune(Cache(), 0)
        assert not os.path.exists(blob)
        install(blob, *args, **kwargs)

    monkeypatch.setattr(cache_module, "install", prune_then_install)
    mark = s3_server.mark()
    folder = versions["a"].download(tmp_path / "warm")
    assert _gets(s3_server, mark) == []
    assert (folder / "data.bin").read_bytes() == b"a" * KB


_DOWNLOADER = """
import sys, refstore
from pathlib import Path
root, work, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
version = refstore.Registry(root).get("many")
expected = {p: (Path(sys.argv[4]) / p).read_bytes() for p in version.manifest}
for i in range(rounds):
    folder = version.download(work / f"d{i}")
    for p, data in expected.items():
        assert (folder / p).read_bytes() == data, (i, p)
print("ok", rounds)
"""

_PRUNER = """
import sys
from pathlib import Path
from refstore.storage import cache_bounds
from refstore.storage.cache import Cache
stop = Path(sys.argv[1])
removed = prunes = 0
while not stop.exists():
    removed += cache_bounds.prune(Cache(), 0).removed
    prunes += 1
print("ok", prunes, removed)
"""


def test_pruning_beside_downloads_in_other_processes_never_breaks_them(tmp_path: Path) -> None:
    """Real processes: one downloads a version of 150 small copies into fresh folders, round after round
    (cold, then warm: linked or copied from the cache), while another empties the cache as fast as it can.
    Every download succeeds with the right bytes, and so do the files handed out earlier."""
    source = tmp_path / "source"
    source.mkdir()
    for i in range(150):
        (source / f"f{i:03}.bin").write_bytes(f"object {i} ".encode() * (50 + i))
    root = str(tmp_path / "registry")
    artifact = refstore.Artifact("many")
    artifact.add_dir(source)
    refstore.Registry(root).log(artifact)
    stop = tmp_path / "stop"
    pruner = subprocess.Popen(
        [sys.executable, "-c", _PRUNER, str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        downloader = subprocess.run(
            [sys.executable, "-c", _DOWNLOADER, root, str(tmp_path / "work"), "12", str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop.touch()
        out, err = pruner.communicate(timeout=60)
    assert downloader.returncode == 0, downloader.stderr
    assert pruner.returncode == 0, err
    prunes, removed = map(int, out.split()[1:])
    assert prunes > 1 and removed > 0  # it really pruned while the downloads ran
    for folder in (tmp_path / "work").iterdir():
        for path in source.iterdir():
            assert (folder / path.name).read_bytes() == path.read_bytes()
