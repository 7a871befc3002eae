"""Install only what a backend needs (issue 12 item 10): ``pip install refstore`` reads local files and
HTTP(S) and keeps a local registry; a cloud URL whose client is missing raises ``UnsupportedSchemeError``
naming the extra (``pip install 'refstore[s3]'``).

A core-only install is imitated in a fresh interpreter whose ``sitecustomize`` (first on ``PYTHONPATH``)
refuses every import of the cloud clients and records each attempt, so the test also proves that
``import refstore`` and local or HTTP use never even try to import them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tomllib
from conftest import HTTPDir

ROOT = Path(__file__).resolve().parents[1]

#: What ``pip install refstore`` (no extra) does not bring.
CLOUD_PACKAGES = ("s3fs", "obstore", "gcsfs", "adlfs", "aiobotocore", "botocore", "boto3", "azure", "google")

SITECUSTOMIZE = f"""
import importlib.abc, sys

ATTEMPTS = []
BLOCKED = {CLOUD_PACKAGES!r}


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            ATTEMPTS.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
sys.modules["_refstore_blocked_imports"] = type(sys)("_refstore_blocked_imports")
sys.modules["_refstore_blocked_imports"].ATTEMPTS = ATTEMPTS
"""

SCRIPT = """
import json, sys
from pathlib import Path
import refstore
from _refstore_blocked_imports import ATTEMPTS

out = {"after_import": list(ATTEMPTS)}
data = Path("data")
data.mkdir()
(data / "a.txt").write_text("local bytes")
art = refstore.Artifact("both")
art.add_reference(data, "local")
art.add_reference(sys.argv[1], "web/b.txt")
version = refstore.Registry("reg").log(art)
folder = version.download("dl")
out["downloaded"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
out["verified"] = bool(version.verify())
out["after_local_and_http"] = list(ATTEMPTS)
out["errors"] = {}
for url in ("s3://bucket/k", "s3a://bucket/k", "gs://bucket/k", "az://container/k", "abfs://container/k"):
    try:
        refstore.Artifact("cloud").add_reference(url)
    except refstore.UnsupportedSchemeError as exc:
        out["errors"][url] = str(exc)
print(json.dumps(out))
"""


def _core_only_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "core-only-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_core_install_reads_local_and_http_and_names_the_extra_for_cloud_urls(
    tmp_path: Path, http_server: HTTPDir
) -> None:
    (http_server.root / "b.txt").write_bytes(b"web bytes")
    env = _core_only_env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, http_server.url("b.txt")],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["after_import"] == [] and out["after_local_and_http"] == []  # never even tried
    assert out["downloaded"] == ["local/a.txt", "web/b.txt"] and out["verified"]
    extras = {"s3": "s3", "s3a": "s3", "gs": "gcs", "az": "azure", "abfs": "azure"}
    for url, message in out["errors"].items():
        scheme = url.split(":")[0]
        assert message.startswith(f"{scheme}://: this backend needs the package "), message
        assert message.endswith(f"pip install 'refstore[{extras[scheme]}]'"), message
    assert len(out["errors"]) == 5


def test_cli_names_the_extra_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refstore", "log", "x", "s3://bucket/data"],
        env=_core_only_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "refstore: error: s3://: this backend needs the package 's3fs', which is not installed: "
        "pip install 'refstore[s3]'"
    ]


def test_extras_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(name in core for name in ("s3fs", "gcsfs", "adlfs"))
    extras = project["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["s3"] + extras["gcs"] + extras["azure"]] == [
        "s3fs",
        "obstore",
        "gcsfs",
        "adlfs",
    ]
    backends = extras["s3"] + extras["gcs"] + extras["azure"]
    assert extras["all"] == backends and set(backends) <= set(extras["test"])
