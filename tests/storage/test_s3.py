"""S3 specifics, counted on the server side: listings only, one GET per object, none when warm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import refstore


def _fill(fs: Any, bucket: str, count: int, prefix: str = "data") -> None:
    fs.pipe({f"{bucket}/{prefix}/f{i:05d}.txt": f"object {i}".encode() for i in range(count)})
    fs.invalidate_cache()


def test_reference_of_1000_versioned_objects_sends_at_most_4_requests(
    s3_server: Any, s3_fs: Any, s3_bucket: str
) -> None:
    _fill(s3_fs, s3_bucket, 1000)
    artifact = refstore.Artifact("big")
    mark = s3_server.mark()
    entries = artifact.add_reference(f"s3://{s3_bucket}/data")
    requests = s3_server.requests_since(mark)
    assert len(entries) == 1000
    assert all(e.version_id for e in entries)
    assert len(requests) <= 4, requests
    assert not any(r.startswith("HEAD /") and "/data/f" in r for r in requests)


def test_cold_download_is_one_get_per_object_and_warm_sends_none(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    _fill(s3_fs, s3_bucket, 50)
    artifact = refstore.Artifact("dl")
    artifact.add_reference(f"s3://{s3_bucket}/data")
    version = refstore.Registry(tmp_path / "reg").log(artifact)
    mark = s3_server.mark()
    version.download(tmp_path / "cold")
    cold = s3_server.requests_since(mark)
    assert len(cold) == 50 and all(r.startswith("GET /") for r in cold), cold
    mark = s3_server.mark()
    target = version.download(tmp_path / "warm")
    assert s3_server.requests_since(mark) == []
    assert (target / "f00007.txt").read_bytes() == b"object 7"


def test_only_aws_s3_endpoint_url_configured(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Reference, log into a registry inside the bucket and download, from fresh processes."""
    s3_fs.pipe({f"{s3_bucket}/in/a.txt": b"A", f"{s3_bucket}/in/b/c.txt": b"C"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(
        AWS_S3_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID="dummy",
        AWS_SECRET_ACCESS_KEY="dummy",
        REFSTORE_ROOT=f"s3://{s3_bucket}/team-registry",
    )
    log = f"""
        import refstore
        art = refstore.Artifact("shared")
        art.add_reference("s3://{s3_bucket}/in")
        print(refstore.Registry().log(art, aliases=["prod"]).qualified_name)
    """
    fetch = """
        import json, refstore
        v = refstore.Registry().get("shared:prod")
        root = v.download("out")
        print(json.dumps([v.qualified_name, (root / "a.txt").read_text(), (root / "b/c.txt").read_text()]))
    """
    logged = _run(log, env, tmp_path)
    assert logged.strip() == "shared:v0"
    s3_fs.pipe_file(f"{s3_bucket}/in/a.txt", b"overwritten")
    assert json.loads(_run(fetch, env, tmp_path)) == ["shared:v0", "A", "C"]


def _run(code: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
