"""One large object from Ceph RGW: refstore's pinned download against boto3's ``download_file`` (issue 13).

Starts a fresh RGW cluster (RADOS store, ``tests/rgw/start_rgw.sh``), uploads one object of random bytes
with boto3 (multipart, boto3's defaults) into a versioned bucket, references it, then times per round, in an
order that rotates each round, with ``os.sync()`` before each timed step:

- ``boto3``: ``download_file`` with its default transfer settings (ranged GETs, 10 threads);
- ``refstore``: ``ArtifactVersion.download`` into a fresh folder with a fresh cache (pinned ranged GETs
  from ``refstore.storage.backends.s3.RANGED_THRESHOLD`` on, every byte hashed);
- ``refstore-1``: the same with the ranged path turned off (one pinned GET).

Every download is checked against the uploaded bytes' digest after its timing. Run:
``python benchmarks/large_object.py [--size-mib 1024] [--rounds 3]``; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import boto3  # noqa: E402
import xxhash  # noqa: E402
from servers import start_rgw  # noqa: E402


def _digest(path: Path) -> str:
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 2**20):
            hasher.update(chunk)
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 2**20
    work = Path(tempfile.mkdtemp(prefix="refstore-large-"))
    server = start_rgw(work / "rgw")
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_S3_ENDPOINT_URL=server.endpoint_url,
            AWS_ENDPOINT_URL_S3=server.endpoint_url,
        )
        client = boto3.client("s3", endpoint_url=server.endpoint_url)
        client.create_bucket(Bucket="large")
        client.put_bucket_versioning(Bucket="large", VersioningConfiguration={"Status": "Enabled"})
        source = work / "source.bin"
        with open(source, "wb") as out:
            for _ in range(size // 2**20):
                out.write(os.urandom(2**20))
        expected = _digest(source)
        client.upload_file(str(source), "large", "data/big.bin")
        source.unlink()

        import refstore
        import refstore.storage.backends.s3 as s3_backend

        art = refstore.Artifact("big", type="dataset")
        art.add_reference("s3://large/data/")
        version = refstore.Registry(str(work / "registry")).log(art)
        threshold = s3_backend.RANGED_THRESHOLD

        def with_boto3(dest: Path) -> Path:
            target = dest / "big.bin"
            client.download_file("large", "data/big.bin", str(target))
            return target

        def with_refstore(dest: Path, ranged: bool = True) -> Path:
            os.environ["REFSTORE_CACHE_DIR"] = str(dest / "cache")
            s3_backend.RANGED_THRESHOLD = threshold if ranged else 2**62
            try:
                return version.download(dest / "out") / "big.bin"
            finally:
                s3_backend.RANGED_THRESHOLD = threshold

        tools: dict[str, Callable[[Path], Path]] = {
            "boto3": with_boto3,
            "refstore": with_refstore,
            "refstore-1": lambda dest: with_refstore(dest, ranged=False),
        }
        times: dict[str, list[float]] = {name: [] for name in tools}
        names = list(tools)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                dest = work / f"{name}-{round_}"
                dest.mkdir()
                os.sync()
                start = time.perf_counter()
                target = tools[name](dest)
                times[name].append(time.perf_counter() - start)
                if _digest(target) != expected:
                    raise SystemExit(f"{name}: wrong bytes in round {round_}")
                shutil.rmtree(dest)
        base = statistics.median(times["boto3"])
        print(f"RGW {server.version or '(version unknown)'}, {args.size_mib} MiB, {args.rounds} rounds\n")
        print("| tool | median s | all rounds s | vs boto3 |\n|---|---|---|---|")
        for name in names:
            runs = ", ".join(f"{t:.2f}" for t in times[name])
            median = statistics.median(times[name])
            print(f"| {name} | {median:.2f} | {runs} | {median / base:.2f}x |")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
