"""Run inside the peers' venv: time ``wandb.Artifact(...).add_reference(URI)`` and print one JSON line.

Usage: ``python wandb_reference.py URI MAX_OBJECTS``. WANDB_MODE=offline; for S3 the caller sets
AWS_S3_ENDPOINT_URL and dummy keys. The import of wandb is not timed; the reference (listing, HEADs,
MD5s) is.
"""

from __future__ import annotations

import json
import sys
import time

import wandb


def main() -> None:
    uri, max_objects = sys.argv[1], int(sys.argv[2])
    start = time.perf_counter()
    artifact = wandb.Artifact("bench", type="dataset")
    entries = artifact.add_reference(uri, max_objects=max_objects)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "entries": len(entries)}))


if __name__ == "__main__":
    main()
