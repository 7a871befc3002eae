"""``import refstore`` stays light: no cloud SDK is imported until a backend is used."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_loads_no_cloud_clients() -> None:
    code = "import json, sys, refstore; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"boto3", "botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "google", "azure"}


def test_public_api_is_sorted_and_complete() -> None:
    import refstore

    assert refstore.__all__ == sorted(refstore.__all__)
    for name in refstore.__all__:
        assert hasattr(refstore, name), name
    assert issubclass(refstore.ObjectNotFoundError, FileNotFoundError)
    assert issubclass(refstore.ArtifactNotFoundError, LookupError)
    assert issubclass(refstore.UnsupportedSchemeError, refstore.InvalidURLError)
