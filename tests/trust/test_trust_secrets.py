"""Secrets: credentials never reach manifests, registry records, logs, progress output or error messages.

Distinctive secrets are planted in ``storage_options``, in the environment, in ``user:password@`` URLs,
in signed query strings and SAS tokens, and in HTTP headers. Every operation then runs, successful and
failing, with progress bars forced on and logging at DEBUG for refstore; afterwards every file written
(registry, cache, downloads, the registry inside the bucket), all captured output and every exception's
full traceback are searched for each secret.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import refstore


def _planted(kind: str) -> str:
    return f"{kind}PLANTED{uuid.uuid4().hex}"


ACCESS_KEY = _planted("AKIA")
SECRET_KEY = _planted("secret")
SESSION_TOKEN = _planted("token")
PASSWORD = _planted("password")
SIGNATURE = _planted("signature")
SAS = _planted("sas")
BEARER = _planted("bearer")
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, PASSWORD, SIGNATURE, SAS, BEARER)

URLS_WITH_SECRETS = [
    f"https://user:{PASSWORD}@example.org/data.csv",
    f"s3://user:{PASSWORD}@bucket/key",
    f"abfs://user:{PASSWORD}@account.dfs.core.windows.net/path",
    f"https://bucket.s3.amazonaws.com/k?X-Amz-Credential={ACCESS_KEY}&X-Amz-Signature={SIGNATURE}",
    f"https://storage.googleapis.com/b/k?X-Goog-Signature={SIGNATURE}",
    f"https://account.blob.core.windows.net/container/blob?sv=2022-11-02&sig={SAS}",
    f"https://example.org/f?access_token={SESSION_TOKEN}",
    f"http://[::1/x?sig={SIGNATURE}",
    f"3s://user:{PASSWORD}@x/y",
    f"s3://user:{PASSWORD}@bad bucket/k",
]


def assert_no_secret(text: str | bytes, where: str) -> None:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    for planted in SECRETS:
        assert planted.encode() not in data, f"a planted secret ({planted[:12]}...) leaked into {where}"


def assert_no_secret_in_files(root: Path) -> int:
    scanned = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert_no_secret(path.read_bytes(), str(path))
            scanned += 1
    return scanned


def failure_text(action: Callable[[], Any]) -> str:
    """The full traceback (chained causes included) of what ``action`` raised; it must be a RefstoreError."""
    with pytest.raises(refstore.RefstoreError) as info:
        action()
    return "".join(traceback.format_exception(info.value))


@pytest.fixture
def loud(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Progress bars on, refstore logging at DEBUG, everything else at INFO, all captured."""
    monkeypatch.setenv("REFSTORE_PROGRESS", "1")
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="refstore")
    return caplog


def test_storage_option_credentials_never_leave_memory(
    loud: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    s3_server: Any,
    s3_fs: Any,
    s3_bucket: str,
    http_server: Any,
    tmp_path: Path,
) -> None:
    s3_fs.pipe({f"{s3_bucket}/data/a.txt": b"alpha", f"{s3_bucket}/data/sub/b.txt": b"beta"})
    s3_fs.invalidate_cache()
    (http_server.root / "page.txt").write_bytes(b"over http")
    s3_options = {"key": ACCESS_KEY, "secret": SECRET_KEY, "token": SESSION_TOKEN}
    http_options = {"headers": {"Authorization": f"Bearer {BEARER}"}}
    failures: list[str] = []

    (tmp_path / "copy.txt").write_bytes(b"a copy")
    for registry in (
        refstore.Registry(tmp_path / "registry"),
        refstore.Registry(f"s3://{s3_bucket}/registry", storage_options=s3_options),
    ):
        web = refstore.Artifact("web")
        web.add_reference(http_server.url("page.txt"), storage_options=http_options)
        registry.log(web).download(tmp_path / "out" / uuid.uuid4().hex, storage_options=http_options)
        artifact = refstore.Artifact("data", metadata={"note": "no secrets here"})
        artifact.add_reference(f"s3://{s3_bucket}/data", storage_options=s3_options)
        artifact.add_file(tmp_path / "copy.txt")
        version = registry.log(artifact, aliases=["prod"])
        target = registry.get("data:prod").download(
            tmp_path / "out" / uuid.uuid4().hex, storage_options=s3_options
        )
        assert (target / "sub" / "b.txt").read_bytes() == b"beta"
        with version.open("a.txt", storage_options=s3_options) as handle:
            assert handle.read() == b"alpha"
        assert version.verify(storage_options=s3_options).missing == []

    pinned = version.manifest["a.txt"].version_id
    s3_fs.call_s3("delete_object", Bucket=s3_bucket, Key="data/a.txt", VersionId=pinned)  # gone for good
    failures.append(
        failure_text(lambda: version.download(tmp_path / "gone", skip_cache=True, storage_options=s3_options))
    )
    failures.append(
        failure_text(
            lambda: refstore.Artifact("x").add_reference(
                f"s3://{s3_bucket}/nothing/", storage_options=s3_options
            )
        )
    )
    failures.append(
        failure_text(
            lambda: refstore.Registry(f"s3://{s3_bucket}/registry", storage_options=s3_options).get("missing")
        )
    )
    for url in URLS_WITH_SECRETS:
        failures.append(failure_text(lambda u=url: refstore.Artifact("x").add_reference(u)))
        failures.append(failure_text(lambda u=url: refstore.Registry(u)))

    captured = capsys.readouterr()
    for text, where in [
        (captured.out, "stdout"),
        (captured.err, "stderr (progress bars)"),
        (loud.text, "logs"),
    ]:
        assert_no_secret(text, where)
    assert "%" in captured.err or "it/s" in captured.err or "B/s" in captured.err, (
        "progress output was not shown"
    )
    for text in failures:
        assert_no_secret(text, "an exception")
    assert assert_no_secret_in_files(tmp_path) > 10
    for key in s3_fs.find(f"{s3_bucket}/registry"):
        assert_no_secret(s3_fs.cat_file(key), f"s3://{key}")


def test_environment_credentials_never_reach_cli_output_or_files(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_fs.pipe({f"{s3_bucket}/data/a.txt": b"alpha", f"{s3_bucket}/data/b.txt": b"beta"})
    s3_fs.invalidate_cache()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "REFSTORE_PROGRESS": "1",
    }
    local, remote = str(tmp_path / "registry"), f"s3://{s3_bucket}/registry"
    bad_urls = URLS_WITH_SECRETS[::3]
    commands = [
        ["--root", remote, "log", "data", f"s3://{s3_bucket}/data", "--alias", "prod"],
        ["--root", remote, "ls", "data", "--json"],
        ["--root", remote, "get", "data:prod", str(tmp_path / "out")],
        ["--root", local, "log", "data", f"s3://{s3_bucket}/data"],
        ["--root", local, "show", "data", "--json"],
        ["--root", local, "verify", "data"],
        ["--root", local, "get", "missing:v9"],
        *(["--root", local, "log", "bad", url] for url in bad_urls),
    ]
    outputs = []
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "refstore", *command], env=env, capture_output=True, text=True, timeout=120
        )
        outputs.append(result)
        assert_no_secret(result.stdout + result.stderr, f"the output of refstore {' '.join(command[:4])}")
    assert sum(r.returncode != 0 for r in outputs) == 1 + len(bad_urls)
    assert all(r.stderr.startswith("refstore: error:") for r in outputs if r.returncode != 0)
    assert assert_no_secret_in_files(tmp_path) > 5
    for key in s3_fs.find(f"{s3_bucket}/registry"):
        assert_no_secret(s3_fs.cat_file(key), f"s3://{key}")
