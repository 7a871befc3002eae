"""A small registry to browse (``refstore ui`` tests and docs/screenshots.py): the ``mnist`` data set in two
versions (PNG, JPEG, GIF and WebP images, CSV, Parquet, JSON and text), a model logged by a training run
that used ``mnist:v1``, an evaluation run that used the model, and a run file synced in two states."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import refstore

#: Natural sizes of the sample images (width, height).
IMAGE_SIZES = {"digit-7.png": (64, 48), "photo.jpg": (80, 60), "blink.gif": (32, 32), "icon.webp": (40, 30)}
#: The first data row of ``labels.csv`` and of ``train/part-0.parquet`` (as the pages show them).
CSV_FIRST_ROW = ["0", "7", "train", 'a "quoted", comma']
PARQUET_FIRST_ROW = ["0", "7", "0.5", "seven"]
#: A description and metadata that would run script if a page did not escape them.
HOSTILE = "<script>document.title='owned'</script><img src=x onerror=\"document.title='owned'\">"


@dataclass(frozen=True)
class Sample:
    root: str
    train_run: str
    eval_run: str


def image_bytes(name: str) -> bytes:
    width, height = IMAGE_SIZES[name]
    image = Image.new("RGB", (width, height), (30, 90, 160))
    for x in range(width // 4, 3 * width // 4):
        image.putpixel((x, height // 2), (250, 200, 40))
    out = io.BytesIO()
    image.save(
        out, format={"png": "PNG", "jpg": "JPEG", "gif": "GIF", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
    )
    return out.getvalue()


def parquet_bytes(rows: int = 200, row_group_size: int | None = None) -> bytes:
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "label": pa.array([(7 + i) % 10 for i in range(rows)], pa.int32()),
            "weight": pa.array([0.5 + i for i in range(rows)], pa.float64()),
            "name": pa.array(
                ["seven" if (7 + i) % 10 == 7 else f"digit {(7 + i) % 10}" for i in range(rows)]
            ),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=row_group_size)
    return out.getvalue()


def csv_bytes(extra: int = 0) -> bytes:
    lines = ["id,label,split,note", '0,7,train,"a ""quoted"", comma"']
    lines += [f"{i},{i % 10},{'train' if i % 5 else 'test'},row {i}" for i in range(1, 30 + extra)]
    return ("\n".join(lines) + "\n").encode()


def write_sources(put: Callable[[str, bytes], None], base: str) -> None:
    """The first state of the ``mnist`` sources under ``base`` (a folder path or a bucket URL)."""
    put(f"{base}/README.md", b"# mnist (sample)\n\nHand-written digits, <b>not</b> markup.\n")
    put(f"{base}/meta.json", json.dumps({"classes": 10, "source": "sample", "shape": [28, 28]}).encode())
    put(f"{base}/labels.csv", csv_bytes())
    put(f"{base}/train/part-0.parquet", parquet_bytes())
    for name in IMAGE_SIZES:
        put(f"{base}/images/{name}", image_bytes(name))


def build(
    root: str, base: str, put: Callable[[str, bytes], None], work: Path, code: Path | None = None
) -> Sample:
    """Log the sample into the registry at ``root``, its sources under ``base`` written with ``put``; the
    runs start in ``code`` (default ``work``, no git repository: they record no code state)."""
    previous = os.getcwd()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(code or work)
    try:
        return _build(root, base, put, work)
    finally:
        os.chdir(previous)


def _build(root: str, base: str, put: Callable[[str, bytes], None], work: Path) -> Sample:
    registry = refstore.Registry(root)
    write_sources(put, base)
    first = refstore.Artifact("mnist", description="Hand-written digits\n(sample)", metadata={"rows": 200})
    first.add_reference(base)
    registry.log(first, aliases=["prod"])
    put(f"{base}/labels.csv", csv_bytes(extra=5))
    put(f"{base}/test/part-0.parquet", parquet_bytes(rows=20))
    second = refstore.Artifact("mnist", description="Hand-written digits\n(sample)", metadata={"rows": 220})
    second.add_reference(base)
    registry.log(second)
    (work / "notes.txt").write_text("<script>document.title='owned'</script>\n")
    notes = refstore.Artifact("notes", type="text", description=HOSTILE, metadata={HOSTILE: HOSTILE})
    notes.add_file(work / "notes.txt", name="<b>notes</b>.txt")
    registry.log(notes)
    (work / "model.bin").write_bytes(b"\x00weights" * 100)
    (work / "metrics.json").write_text('{"epoch": 0}')
    with refstore.init(
        "train", dir=work, registry=registry, config={"lr": 0.01, "epochs": 2}, sync_interval=0.02
    ) as run:
        run.use_artifact("mnist:v1")
        run.save(str(work / "metrics.json"))
        _wait_for_state(run, 1)
        (work / "metrics.json").write_text('{"epoch": 1, "loss": 0.25}')
        _wait_for_state(run, 2)
        model = refstore.Artifact("digits-model", type="model", metadata={"accuracy": 0.98})
        model.add_file(work / "model.bin")
        run.log_artifact(model)
        train = run.path
    with refstore.init("eval", dir=work, registry=registry, sync_interval=0.02) as run:
        run.use_artifact("digits-model:v0")
        evaluation = run.path
    return Sample(root, train, evaluation)


def _wait_for_state(run: refstore.Run, count: int) -> None:
    from refstore.runs.files import RunFiles

    files = RunFiles(run.registry.store, run.path)
    deadline = time.monotonic() + 15
    while len(files.states("metrics.json")) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics.json: {count} states not synced in time")
        time.sleep(0.02)


@contextlib.contextmanager
def serving(root: str, *, host: str = "127.0.0.1") -> Iterator[str]:
    """``refstore ui``'s server for the registry at ``root`` on a free port, in a thread; its base URL
    (no trailing slash)."""
    from refstore.surfaces.ui.server import serve
    from refstore.surfaces.ui.site import Site

    loop = asyncio.new_event_loop()
    found: list[str] = []
    ready = threading.Event()
    task = loop.create_task(
        serve(Site(refstore.Registry(root)), host, 0, lambda url: (found.append(url), ready.set()))
    )

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        if not ready.wait(20):
            raise AssertionError("refstore ui did not start")
        yield found[0].rstrip("/")
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(20)
        loop.close()


def fetch(url: str, *, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of one request, errors included (no redirect is followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


#: Debian's Chromium and its driver (``.ci/run`` installs them: apt-get install chromium chromium-driver).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chrome(*, javascript: bool = True, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium driven by Selenium; a missing browser or driver is an error, never a skip."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise AssertionError(f"{path} is missing: apt-get install chromium chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
