"""A registry that others can write must not make refstore read this machine's files (issue 14, item 6).

Anyone who can write a shared registry (here: a bucket in moto, a real S3 server on a socket) can log an
entry ``file:///home/victim/.aws/credentials`` recorded with ``checksum=False``; a download, ``open`` or
``verify`` of it must not copy or read that file unless the reader opts in with ``allow_local_refs=True``
(``--allow-local-refs``). Entries that pin the file's xxh3_128 hash keep working: only bytes the manifest
already knows can come out. And a local source must be a regular file: ``/dev/zero`` or a FIFO behind an
entry never hangs a download.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

import refstore
from refstore.core.manifest import ManifestEntry
from refstore.surfaces.cli import main

SECRET = b"[default]\naws_secret_access_key = the-victims-key\n"


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "victim" / ".aws" / "credentials"
    path.parent.mkdir(parents=True)
    path.write_bytes(SECRET)
    return path


def _log_reference(root: str, target: Path, *, checksum: bool) -> None:
    """What a hostile writer of the registry does: log a reference to a file on the reader's machine."""
    artifact = refstore.Artifact("data")
    artifact.add_reference(target, checksum=checksum)
    refstore.Registry(root).log(artifact)


def _files_holding(folder: Path, data: bytes) -> list[Path]:
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and data in p.read_bytes()]


def test_an_unchecked_local_file_named_by_a_registry_in_s3_is_never_read_without_opt_in(
    tmp_path: Path, s3_bucket: str
) -> None:
    root = f"s3://{s3_bucket}/registry"
    secret = _secret(tmp_path)
    _log_reference(root, secret, checksum=False)
    version = refstore.Registry(root).get("data:v0")  # a reader of the shared registry
    dest = tmp_path / "download"

    for read in (
        lambda: version.download(dest),
        lambda: version.download(dest, executor=ThreadPoolExecutor(2)),
        lambda: version.download(dest, skip_cache=True),
        lambda: version.open("credentials"),
        lambda: version.verify(),
    ):
        with pytest.raises(refstore.StorageAccessError) as raised:
            read()
        message = str(raised.value)
        assert f"file://{secret}: entry 'credentials' names a local file without a content hash" in message
        assert root in message and "allow_local_refs=True" in message and "\n" not in message
    assert not dest.exists()  # refused before anything was written
    assert _files_holding(tmp_path / "refstore-cache", SECRET) == []

    # the reader who trusts the registry opts in
    assert (version.download(dest, allow_local_refs=True) / "credentials").read_bytes() == SECRET
    other = version.download(tmp_path / "on-workers", executor=ThreadPoolExecutor(2), allow_local_refs=True)
    assert (other / "credentials").read_bytes() == SECRET
    with version.open("credentials", allow_local_refs=True) as handle:
        assert handle.read() == SECRET
    assert version.verify(allow_local_refs=True)


def test_a_local_file_whose_hash_the_manifest_pins_keeps_working_from_s3(
    tmp_path: Path, s3_bucket: str
) -> None:
    """The seed's own use case: a team registry in a bucket referencing files on a shared NFS mount."""
    root = f"s3://{s3_bucket}/registry"
    shared = tmp_path / "nfs" / "train.csv"
    shared.parent.mkdir()
    shared.write_bytes(b"a,b\n1,2\n")
    _log_reference(root, shared, checksum=True)
    version = refstore.Registry(root).get("data")
    assert (version.download(tmp_path / "dl") / "train.csv").read_bytes() == b"a,b\n1,2\n"
    with version.open("train.csv") as handle:
        assert handle.read() == b"a,b\n1,2\n"
    assert version.verify()
    shared.write_bytes(b"a,b\n9,9\n")  # other bytes: the pinned hash refuses them (the cache is not asked)
    with pytest.raises(refstore.ObjectChangedError, match=r"train\.csv"):
        version.download(tmp_path / "dl2", skip_cache=True)


@pytest.mark.parametrize(
    ("form", "digest"),
    [("file://{}", "md5:" + "0" * 32), ("{}", "ref:" + "0" * 64), ("FILE://{}", "ref:" + "0" * 64)],
)
def test_a_forged_local_entry_is_refused_whatever_its_form(
    tmp_path: Path, s3_bucket: str, form: str, digest: str
) -> None:
    """A forged entry with the right size and an ``md5:`` digest (local files are checked by xxh3_128 only)
    is no safer than ``checksum=False``; a plain path or an upper-case scheme is as local as ``file://``:
    all refused."""
    root = f"s3://{s3_bucket}/registry"
    secret = _secret(tmp_path)
    artifact = refstore.Artifact("data")
    artifact._add([ManifestEntry("credentials", form.format(secret), len(SECRET), digest)])
    refstore.Registry(root).log(artifact)
    version = refstore.Registry(root).get("data")
    with pytest.raises(refstore.StorageAccessError, match="without a content hash"):
        version.download(tmp_path / "dl")
    with pytest.raises(refstore.StorageAccessError, match="without a content hash"):
        version.open("credentials")
    assert not (tmp_path / "dl").exists()
    assert _files_holding(tmp_path / "refstore-cache", SECRET) == []


def test_cli_get_and_verify_refuse_unless_allow_local_refs(tmp_path: Path, s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/registry"
    secret = _secret(tmp_path)
    _log_reference(root, secret, checksum=False)
    runner = CliRunner()
    dest = tmp_path / "dl"
    for command in (["get", "data:v0", str(dest)], ["verify", "data:v0"]):
        refused = runner.invoke(main, ["--root", root, *command])
        assert refused.exit_code == 1
        assert refused.output.count("\n") == 1 and "--allow-local-refs" in refused.output
        assert f"file://{secret}" in refused.output
    assert not dest.exists()
    got = runner.invoke(main, ["--root", root, "get", "data:v0", str(dest), "--allow-local-refs"])
    assert got.exit_code == 0, got.output
    assert (dest / "credentials").read_bytes() == SECRET
    checked = runner.invoke(main, ["--root", root, "verify", "data:v0", "--allow-local-refs"])
    assert checked.exit_code == 0 and "1 ok" in checked.output


def test_an_unchecked_local_file_in_a_registry_on_this_disk_needs_no_opt_in(tmp_path: Path) -> None:
    """The user's own local registry: its writers can read these files anyway."""
    root = str(tmp_path / "reg")
    secret = _secret(tmp_path)
    _log_reference(root, secret, checksum=False)
    version = refstore.Registry(root).get("data")
    assert (version.download(tmp_path / "dl") / "credentials").read_bytes() == SECRET


# -- local sources must be regular files ----------------------------------------------------------------

_READ = """
import sys
import refstore
version = refstore.Registry(sys.argv[1]).get("data")
for how in ("download", "open"):
    try:
        if how == "download":
            version.download(sys.argv[2])
        else:
            version.open("data.bin").read()
        print(how, "read it")
    except refstore.ObjectChangedError as exc:
        print(how, "refused:", exc)
"""


def _limit_file_size() -> None:
    import resource

    resource.setrlimit(
        resource.RLIMIT_FSIZE, (2**24, 2**24)
    )  # refstore 0.1 copied /dev/zero until the disk was full


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_source_that_is_not_a_regular_file_is_refused_naming_it(tmp_path: Path, kind: str) -> None:
    """The file was regular when it was logged (``checksum=False``), then became a link to ``/dev/zero``
    (endless bytes) or a FIFO (no writer: an open that never returns). Both reads refuse it at once; the
    child process has a time limit and a 16 MiB file size limit, so a regression fails instead of hanging
    or filling the disk."""
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"regular at first")
    root = str(tmp_path / "reg")
    _log_reference(root, source, checksum=False)
    source.unlink()
    if kind == "fifo":
        os.mkfifo(source)
    else:
        source.symlink_to(kind)
    dest = tmp_path / "dl"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_READ), root, str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode == 0, result.stderr
    downloaded, opened = result.stdout.splitlines()
    assert downloaded.startswith(f"download refused: file://{source}: not a regular file; ")
    assert opened == f"open refused: file://{source}: not a regular file"
    assert not (dest / "data.bin").exists()
