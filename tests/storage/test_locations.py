"""URL parsing: every scheme to one backend and path, and clear errors for bad URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import refstore
from refstore.storage.locations import resolve


def test_plain_paths_and_file_urls(tmp_path: Path) -> None:
    assert resolve(tmp_path / "x").url == f"file://{tmp_path}/x"
    assert resolve(f"file://{tmp_path}/x").path == f"{tmp_path}/x"
    assert resolve("rel/dir/").is_folder
    home = resolve("~/data")
    assert home.path == os.path.expanduser("~/data")


@pytest.mark.parametrize(
    ("url", "scheme", "path"),
    [
        ("s3://bucket/a/b.txt", "s3", "bucket/a/b.txt"),
        ("s3://bucket/prefix/", "s3", "bucket/prefix"),
        ("gs://bucket/k", "gs", "bucket/k"),
        ("gcs://bucket/k", "gcs", "bucket/k"),
        ("az://container/k", "az", "container/k"),
        ("abfs://container/k", "abfs", "container/k"),
    ],
)
def test_bucket_schemes(url: str, scheme: str, path: str) -> None:
    location = resolve(url)
    assert location.backend.protocol == scheme
    assert location.path == path


def test_azure_https_form_keeps_the_account() -> None:
    location = resolve("https://myacct.blob.core.windows.net/cont/dir/f.bin")
    assert location.backend.protocol == "az"
    assert location.path == "cont/dir/f.bin"
    assert location.url == "https://myacct.blob.core.windows.net/cont/dir/f.bin"


def test_http_urls_stay_whole() -> None:
    location = resolve("https://example.org/data/f.csv?x=1")
    assert location.backend.protocol == "https"
    assert location.url == "https://example.org/data/f.csv?x=1"


@pytest.mark.parametrize("url", ["", "   ", "s3://", "s3:///key", "s3://bad bucket/k", "3s://x/y", "a\x00b"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(refstore.InvalidURLError):
        resolve(url)


def test_unknown_scheme_names_the_scheme() -> None:
    with pytest.raises(refstore.UnsupportedSchemeError, match="ftpx://"):
        resolve("ftpx://host/file")


def test_credentials_in_urls_are_refused_without_echoing_them() -> None:
    with pytest.raises(refstore.InvalidURLError) as info:
        resolve("https://user:hunter2@example.org/f")
    assert "hunter2" not in str(info.value)


def test_storage_options_keyed_by_scheme_apply_to_their_scheme_only() -> None:
    from refstore.storage.locations import options_for

    mixed = {"s3": {"anon": True}, "https": {"headers": {"X": "1"}}}
    assert options_for("s3", mixed) == {"anon": True}
    assert options_for("s3a", {"s3": {"anon": True}}) == {"anon": True}
    assert options_for("gs", mixed) == {}
    assert options_for("s3", {"anon": True}) == {"anon": True}  # plain options apply as they are
    assert resolve("s3://bucket/key", mixed).backend.fs.anon is True
    with pytest.raises(refstore.UnsupportedSchemeError):
        resolve("ftpx://h/f", mixed)
