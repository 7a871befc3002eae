"""Smoke tests of the test servers themselves, through the raw clients (no refstore)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from servers import AzuriteServer, GCSServer, HTTPDir, S3Server, parse_request_line


def test_parse_request_line_formats() -> None:
    werkzeug = '127.0.0.1 - - [22/Nov/2026 03:23:20] "GET /b?versions&prefix=k HTTP/1.1" 200 -'
    go = (
        'time=2026-11-22T03:23:25Z level=INFO msg="127.0.0.1 - - [22/Nov/2026:03:23:25 +0000] '
        '\\"GET /download/storage/v1/b/b/o/k?alt=media HTTP/1.1\\" 200 0\\n"'
    )
    morgan = '127.0.0.1 - - [22/Nov/2026:03:23:47 +0000] "HEAD /devstoreaccount1/c/my key HTTP/1.1" 404 -'
    assert str(parse_request_line(werkzeug)) == "GET /b?versions&prefix=k"
    assert str(parse_request_line(go)) == "GET /download/storage/v1/b/b/o/k?alt=media"
    parsed = parse_request_line("\x1b[33m" + morgan)
    assert parsed is not None and (parsed.method, parsed.target, parsed.status) == (
        "HEAD",
        "/devstoreaccount1/c/my key",
        404,
    )
    assert parse_request_line(" * Running on http://127.0.0.1:5000") is None


def test_environment_points_at_nothing_real(tmp_path: Path) -> None:
    assert Path.cwd() == tmp_path
    assert os.environ["REFSTORE_CACHE_DIR"].startswith(str(tmp_path))
    assert os.environ["REFSTORE_ROOT"].startswith(str(tmp_path))
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert os.environ["NO_GCE_CHECK"] == "true"


# -- S3 -------------------------------------------------------------------------------------------------


def test_s3_read_write_and_env(s3_server: S3Server, s3_fs: Any, s3_unversioned_bucket: str) -> None:
    assert os.environ["AWS_S3_ENDPOINT_URL"] == s3_server.endpoint_url
    s3_fs.pipe_file(f"{s3_unversioned_bucket}/a.txt", b"hello")
    assert s3_fs.cat_file(f"{s3_unversioned_bucket}/a.txt") == b"hello"
    assert s3_fs.info(f"{s3_unversioned_bucket}/a.txt")["VersionId"] is None


def test_s3_versioned_read_of_old_version(s3_fs: Any, s3_bucket: str) -> None:
    path = f"{s3_bucket}/k"
    s3_fs.pipe_file(path, b"v1")
    first = s3_fs.info(path)["VersionId"]
    s3_fs.pipe_file(path, b"v2")
    s3_fs.rm(path)  # the current version is now a delete marker
    s3_fs.invalidate_cache()
    assert first not in (None, "null")
    with s3_fs.open(path, "rb", version_id=first) as f:
        assert f.read() == b"v1"
    assert s3_fs.cat_file(f"{path}?versionId={first}") == b"v1"


def test_s3_request_counting(s3_server: S3Server, s3_fs: Any, s3_bucket: str) -> None:
    s3_fs.pipe_file(f"{s3_bucket}/k", b"x")
    s3_fs.invalidate_cache()
    mark = s3_server.mark()
    s3_fs.call_s3("list_object_versions", Bucket=s3_bucket, Prefix="k")
    s3_fs.call_s3("head_object", Bucket=s3_bucket, Key="k")
    s3_fs.call_s3("get_object", Bucket=s3_bucket, Key="k")
    s3_fs.call_s3("put_object", Bucket=s3_bucket, Key="k2", Body=b"y")
    assert s3_server.requests_since(mark) == [
        f"GET /{s3_bucket}?versions&prefix=k&encoding-type=url",
        f"HEAD /{s3_bucket}/k",
        f"GET /{s3_bucket}/k",
        f"PUT /{s3_bucket}/k2",
    ]
    statuses = [e.status for e in s3_server.entries_since(mark)]
    assert statuses == [200, 200, 200, 200]
    assert s3_server.requests_since(s3_server.mark()) == []


def test_s3_counting_s3fs_calls(s3_server: S3Server, s3_fs: Any, s3_bucket: str) -> None:
    mark = s3_server.mark()
    s3_fs.pipe_file(f"{s3_bucket}/k", b"x")  # PUT
    s3_fs.invalidate_cache()
    s3_fs.info(f"{s3_bucket}/k")  # HEAD
    s3_fs.ls(s3_bucket)  # GET (ListObjectVersions: s3_fs is version_aware)
    requests = s3_server.requests_since(mark)
    assert [r.split()[0] for r in requests] == ["PUT", "HEAD", "GET"], requests
    assert requests[2].startswith(f"GET /{s3_bucket}?versions&prefix="), requests

    # s3fs's cat_file sends a HEAD before its GET (TESTING.md gotcha 9 applies to cat_file too).
    mark = s3_server.mark()
    s3_fs.invalidate_cache()
    assert s3_fs.cat_file(f"{s3_bucket}/k") == b"x"
    assert s3_server.requests_since(mark) == [f"HEAD /{s3_bucket}/k", f"GET /{s3_bucket}/k"]


def test_s3_reset_is_not_counted(s3_server: S3Server) -> None:
    mark = s3_server.mark()
    # Only list the request; a real reset would drop other tests' buckets, which are per test anyway.
    urllib.request.urlopen(s3_server.endpoint_url + "/moto-api/", timeout=10).close()
    assert s3_server.requests_since(mark) == []


# -- GCS ------------------------------------------------------------------------------------------------


def test_gcs_read_write_and_env(gcs_server: GCSServer, gcs_fs: Any, gcs_unversioned_bucket: str) -> None:
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_server.endpoint_url
    gcs_fs.pipe_file(f"{gcs_unversioned_bucket}/a.txt", b"hello")
    assert gcs_fs.cat_file(f"{gcs_unversioned_bucket}/a.txt") == b"hello"
    info = gcs_fs.info(f"{gcs_unversioned_bucket}/a.txt")
    assert info["size"] == 5 and info["md5Hash"] and info["crc32c"] and info["generation"]


def test_gcs_versioned_read_of_old_version(gcs_server: GCSServer, gcs_fs: Any, gcs_bucket: str) -> None:
    path = f"{gcs_bucket}/k"
    gcs_fs.pipe_file(path, b"v1")
    first = gcs_fs.info(path)["generation"]
    gcs_fs.pipe_file(path, b"v2")
    gcs_fs.invalidate_cache()
    assert gcs_fs.cat_file(path) == b"v2"
    mark = gcs_server.mark()
    assert gcs_fs.cat_file(f"{path}#{first}") == b"v1"
    assert gcs_server.requests_since(mark) == [
        f"GET /download/storage/v1/b/{gcs_bucket}/o/k?alt=media&generation={first}"
    ]
    assert len(gcs_fs.ls(gcs_bucket, versions=True, detail=False)) == 2


# -- Azure ----------------------------------------------------------------------------------------------


def test_azurite_read_write_and_env(azurite: AzuriteServer, azure_fs: Any, azure_container: str) -> None:
    assert os.environ["AZURE_STORAGE_CONNECTION_STRING"] == azurite.connection_string
    assert azurite.account_name == "devstoreaccount1"
    assert azurite.endpoint_url.endswith("/devstoreaccount1")
    mark = azurite.mark()
    azure_fs.pipe_file(f"{azure_container}/a.txt", b"hello")
    assert azure_fs.cat_file(f"{azure_container}/a.txt") == b"hello"
    assert azure_fs.info(f"{azure_container}/a.txt")["etag"]
    requests = azurite.requests_since(mark)
    assert f"PUT /devstoreaccount1/{azure_container}/a.txt" in requests, requests


# -- HTTP -----------------------------------------------------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_http_static_etag_range_if_match(http_server: HTTPDir) -> None:
    (http_server.root / "sub").mkdir()
    (http_server.root / "sub" / "a.txt").write_bytes(b"hello world")
    url = http_server.url("sub/a.txt")
    assert url == f"{http_server.base_url}/sub/a.txt"

    mark = http_server.mark()
    status, headers, body = _get(url)
    assert (status, body) == (200, b"hello world")
    etag = headers["Etag"]
    assert etag and headers["Content-Length"] == "11"

    status, headers, body = _get(url, {"Range": "bytes=0-4"})
    assert (status, body, headers["Content-Range"]) == (206, b"hello", "bytes 0-4/11")
    assert _get(url, {"If-Match": etag})[0] == 200
    assert _get(url, {"If-Match": '"something-else"'})[0] == 412
    # An ETag in If-Range is ignored: the range is served anyway (refstore must not rely on If-Range).
    assert _get(url, {"If-Range": '"something-else"', "Range": "bytes=0-4"})[0] == 206

    path = url.removeprefix(f"http://127.0.0.1:{http_server.server.port}")
    assert http_server.requests_since(mark) == [f"GET {path}"] * 5
    assert _get(http_server.base_url + "/")[0] == 200  # directory index


def test_http_dirs_are_fresh(http_server: HTTPDir) -> None:
    assert list(http_server.root.iterdir()) == []


@pytest.mark.parametrize("fixture", ["s3_bucket", "gcs_bucket", "azure_container"])
def test_fresh_names_per_test(fixture: str, request: pytest.FixtureRequest) -> None:
    first = request.getfixturevalue(fixture)
    assert first and first == first.lower() and 3 <= len(first) <= 63
