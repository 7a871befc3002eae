"""Parallel listings (issue 16): a reference to a large S3 prefix against one sequential raw listing pass.

    python benchmarks/parallel_listing.py [--servers moto,rgw] [--objects 100000] [--prefixes 200]
                                          [--repeat 3] [--results]

Data: ``--objects`` objects of 256 random bytes under ``data/``, spread over ``--prefixes`` sub-prefixes
(``data/p000/obj-000000.bin``, round robin), written with 64 PUTs in flight.

- moto: an unversioned bucket. moto copies every version in the bucket on each ListObjectVersions page
  (about 15 s per page at 100,000 objects here), so a versioned pass over 100,000 objects would take half an
  hour; the raw pass is a boto3 ``list_objects_v2`` paginator, and refstore lists its first page with
  ListObjectVersions, learns from GetBucketVersioning that the bucket never kept versions, and goes on with
  ListObjectsV2 (``refstore.storage.backends.s3``). refstore's passes on moto wait up to 300 s for an answer
  (``config_kwargs={"read_timeout": 300}``; the default is 20 s): moto's first ListObjectVersions page takes
  15-60 s at 100,000 objects.
- Ceph RGW (a real, multi-threaded S3 server): a versioned bucket; the raw pass is a boto3
  ``list_object_versions`` paginator, refstore lists versions throughout.

After an untimed warm-up (imports, first connections), each round runs, in a rotating order: refstore
``Artifact.add_reference`` (parallel streams, the default), the same with ``REFSTORE_LIST_CONCURRENCY=1``
(one stream: refstore's sequential listing), and the raw pass; each checks its count, and refstore's
entries are checked against the raw pass's keys, ETags and versions.
Requests are counted on the server. ``--results`` replaces (or adds) this case's section of
``benchmarks/RESULTS.md``; the table is printed either way.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("REFSTORE_PROGRESS", "0")

from _common import close_s3fs, machine, s3_environment, versions  # noqa: E402
from servers import start_moto, start_rgw  # noqa: E402

TITLE = "## Parallel listing of a large S3 prefix (issue 16)"
BUCKET = "listing-bench"


@contextmanager
def _server(name: str, workdir: Path) -> Iterator[Any]:
    server = start_moto(workdir) if name == "moto" else start_rgw(workdir)
    env = s3_environment(server.endpoint_url)
    if name == "rgw":
        env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL", "AWS_PROFILE"):
        os.environ.pop(variable, None)
    os.environ.update(env)
    try:
        yield server
    finally:
        server.stop()


def _client() -> Any:
    import boto3

    # a session of its own: boto3's default one keeps the first server's credentials
    return boto3.session.Session().client("s3", endpoint_url=os.environ["AWS_S3_ENDPOINT_URL"])


def populate(objects: int, prefixes: int, versioned: bool) -> None:
    client = _client()
    client.create_bucket(Bucket=BUCKET)
    if versioned:
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

    async def put_all() -> None:
        import s3fs

        fs = s3fs.S3FileSystem(
            key=os.environ["AWS_ACCESS_KEY_ID"],
            secret=os.environ["AWS_SECRET_ACCESS_KEY"],
            client_kwargs={"endpoint_url": os.environ["AWS_S3_ENDPOINT_URL"]},
            skip_instance_cache=True,
            asynchronous=True,
        )
        await fs.set_session()
        slots = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with slots:
                await fs._pipe_file(f"{BUCKET}/{key(i, prefixes)}", os.urandom(256))

        for start in range(0, objects, 10_000):
            await asyncio.gather(*(put(i) for i in range(start, min(objects, start + 10_000))))
        await close_s3fs(fs)

    asyncio.run(put_all())


def key(i: int, prefixes: int) -> str:
    return f"data/p{i % prefixes:03d}/obj-{i:06d}.bin"


def raw_pass(versioned: bool) -> list[tuple[str, str, str | None]]:
    """One sequential pass of the boto3 paginator: ``(key, etag, version)`` of the current objects."""
    client = _client()
    method = "list_object_versions" if versioned else "list_objects_v2"
    found = []
    for page in client.get_paginator(method).paginate(Bucket=BUCKET, Prefix="data/"):
        for item in page.get("Versions" if versioned else "Contents", []):
            if versioned and not item["IsLatest"]:
                continue
            version = item.get("VersionId")
            found.append(
                (item["Key"], item["ETag"].strip('"'), None if version in (None, "null") else version)
            )
    return found


def refstore_pass(streams: int | None, read_timeout: int) -> list[tuple[str, str, str | None]]:
    import refstore
    from refstore.storage.locations import clear_backends

    clear_backends()  # a fresh client each time, as the raw pass makes one
    if streams is None:
        os.environ.pop("REFSTORE_LIST_CONCURRENCY", None)
    else:
        os.environ["REFSTORE_LIST_CONCURRENCY"] = str(streams)
    try:
        entries = refstore.Artifact("bench").add_reference(
            f"s3://{BUCKET}/data",
            max_objects=10**7,
            storage_options={"config_kwargs": {"read_timeout": read_timeout}},
        )
    finally:
        os.environ.pop("REFSTORE_LIST_CONCURRENCY", None)
    return [(f"data/{e.path}", e.etag or "", e.version_id) for e in entries]


def measure(server: Any, name: str, objects: int, prefixes: int, repeat: int) -> dict[str, Any]:
    versioned = name == "rgw"
    started = time.monotonic()
    populate(objects, prefixes, versioned)
    print(f"{name}: wrote {objects:,} objects in {time.monotonic() - started:.0f} s", file=sys.stderr)
    listing = "ListObjectVersions" if versioned else "ListObjectsV2"
    # refstore's default read timeout is 20 s; moto's first ListObjectVersions page (refstore's first
    # request) takes 15-60 s at 100,000 objects, so the moto passes wait up to 300 s for an answer.
    timeout = 20 if versioned else 300
    tools: dict[str, Callable[[], list[tuple[str, str, str | None]]]] = {
        "refstore add_reference (parallel streams, the default)": lambda: refstore_pass(None, timeout),
        "refstore add_reference, one stream (REFSTORE_LIST_CONCURRENCY=1)": lambda: refstore_pass(1, timeout),
        f"raw boto3 paginator: one sequential {listing} pass": lambda: raw_pass(versioned),
    }
    rows: dict[str, dict[str, list[float]]] = {tool: {"seconds": [], "requests": []} for tool in tools}
    expected = sorted(raw_pass(versioned))
    assert len(expected) == objects, (len(expected), objects)
    refstore_pass(None, timeout)  # untimed: imports and first connections
    order = list(tools)
    for round_ in range(repeat):
        for tool in order[round_ % len(order) :] + order[: round_ % len(order)]:
            os.sync()
            mark = server.mark()
            began = time.perf_counter()
            found = tools[tool]()
            seconds = time.perf_counter() - began
            rows[tool]["seconds"].append(seconds)
            rows[tool]["requests"].append(len(server.requests_since(mark)))
            assert sorted(found) == expected, f"{tool}: a different listing"
            print(f"{name} round {round_ + 1}: {tool}: {seconds:.2f} s", file=sys.stderr)
    return {"server": name, "versioned": versioned, "rows": rows}


def report(results: list[dict[str, Any]], objects: int, prefixes: int, repeat: int, load: str) -> str:
    import refstore

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    packages = versions(["moto", "boto3", "botocore", "s3fs"])
    lines = [
        TITLE,
        "",
        f"Produced by `python benchmarks/parallel_listing.py` on {when}: {objects:,} objects of 256 bytes "
        f"over {prefixes} prefixes, medians of {repeat} rounds (rotating order), requests counted on the "
        "server. "
        f"{info['nproc']} CPUs, {info['memory']}; refstore {refstore.__version__}, "
        + ", ".join(f"{k} {v}" for k, v in packages.items())
        + f". Load average during the run: {load} (a shared machine: read the ratios).",
        "",
        "| server | tool | median | rounds | requests | x raw pass |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        rows = result["rows"]
        raw = statistics.median(rows[list(rows)[-1]]["seconds"])
        for tool, row in rows.items():
            median = statistics.median(row["seconds"])
            rounds = " / ".join(f"{s:.1f} s" for s in row["seconds"])
            requests = int(statistics.median(row["requests"]))
            server = f"{result['server']} ({'versioned' if result['versioned'] else 'unversioned'} bucket)"
            lines.append(
                f"| {server} | {tool} | {median:.1f} s | {rounds} | {requests:,} | {median / raw:.2f}x |"
            )
    lines += ["", f"⌈N/1000⌉ = {-(-objects // 1000):,} pages of objects.", ""]
    return "\n".join(lines)


def write_section(text: str, path: Path, title: str = TITLE) -> None:
    """Replace the section ``title`` of RESULTS.md (up to the next ``## ``), or add it at the end."""
    old = path.read_text() if path.exists() else ""
    if title in old:
        head, _, rest = old.partition(title)
        after = rest.find("\n## ")
        tail = rest[after + 1 :] if after >= 0 else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="moto,rgw")
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--prefixes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    parser.add_argument("--workdir", default="/tmp/refstore-listing-bench")
    args = parser.parse_args()
    results = []
    loads = []
    for name in args.servers.split(","):
        with _server(name, Path(args.workdir) / name) as server:
            results.append(measure(server, name, args.objects, args.prefixes, args.repeat))
            loads.append(f"{os.getloadavg()[1]:.1f} ({name})")
        print(report(results, args.objects, args.prefixes, args.repeat, ", ".join(loads)), file=sys.stderr)
    text = report(results, args.objects, args.prefixes, args.repeat, ", ".join(loads))
    print(text)
    if args.results:
        write_section(text, HERE / "RESULTS.md")


if __name__ == "__main__":
    main()
