"""``refstore ui`` over HTTP and from the command line: stable URLs, escaping, read-only answers, the image
bytes it serves, the static export, the CLI, folders of a 1,000,000-entry version, and a Parquet preview of a
200 MB object on S3 that reads its footer and first row group only (requests counted on moto)."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
import ui_support
from click.testing import CliRunner
from ui_support import fetch

import refstore
from refstore.surfaces.cli import main
from refstore.surfaces.ui import links
from refstore.surfaces.ui.folders import all_folders, list_folder


def _put(path: str, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)


@pytest.fixture(scope="module")
def local_sample(tmp_path_factory: pytest.TempPathFactory) -> ui_support.Sample:
    work = tmp_path_factory.mktemp("ui-pages")
    return ui_support.build(str(work / "registry"), str(work / "data"), _put, work / "runs")


@pytest.fixture(scope="module")
def served(local_sample: ui_support.Sample) -> Iterator[str]:
    with ui_support.serving(local_sample.root) as url:
        yield url


def _text(body: bytes) -> str:
    return body.decode()


def test_every_page_has_a_stable_url(served: str, local_sample: ui_support.Sample) -> None:
    pages = [
        "/artifacts",
        "/artifacts?q=mni",
        "/artifacts/mnist",
        "/artifacts/mnist/v1",
        "/artifacts/mnist/v1/files/",
        "/artifacts/mnist/v1/files/train/",
        "/artifacts/mnist/v1/files/train/part-0.parquet",
        "/artifacts/mnist/diff/v0/v1",
        "/artifacts/mnist/v1/lineage",
        "/runs",
        f"/runs/{local_sample.train_run}",
        f"/runs/{local_sample.train_run}/lineage",
    ]
    for page in pages:
        status, kind, body = fetch(served + page)
        assert (status, kind) == (200, "text/html; charset=utf-8"), page
        assert b"<table" in body, page
    assert fetch(served + "/")[0] == 302
    assert fetch(served + "/artifacts/mnist/prod")[0] == 302  # an alias leads to its version's URL
    status, _, body = fetch(served + "/artifacts/mnist/latest/files/train/")
    assert status == 302
    assert fetch(served + "/artifacts/mnist/v1/files/train")[0] == 302  # a folder's URL ends in /


def test_links_are_named_and_paths_escaped_in_urls(served: str) -> None:
    body = _text(fetch(served + "/artifacts/mnist/v1/files/")[2])
    assert '<a href="/artifacts/mnist/v1/files/train/">train</a>' in body
    assert '<a href="/artifacts/mnist/v1/files/labels.csv">labels.csv</a>' in body
    body = _text(fetch(served + "/artifacts/notes/v0/files/%3Cb%3Enotes%3C/")[2])
    assert '<a href="/artifacts/notes/v0/files/%3Cb%3Enotes%3C/b%3E.txt">b&gt;.txt</a>' in body


def test_registry_text_is_escaped(served: str) -> None:
    for page in ("/artifacts/notes", "/artifacts/notes/v0"):
        body = _text(fetch(served + page)[2])
        assert "<script>document" not in body and "<img src=x" not in body
        assert "&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt;" in body
    body = _text(fetch(served + "/artifacts/notes/v0/files/%3Cb%3Enotes%3C/b%3E.txt")[2])
    assert "&lt;script&gt;document.title" in body and "<script>document" not in body


def test_unknown_things_are_404_pages_that_name_them(served: str) -> None:
    for page, named in [
        ("/artifacts/nope", "nope"),
        ("/artifacts/mnist/v9", "mnist:v9"),
        ("/artifacts/mnist/v1/files/nothing.txt", "nothing.txt"),
        ("/artifacts/mnist/v1/files/nowhere/", "nowhere"),
        ("/runs/train/nope", "train/nope"),
        ("/artifacts/mnist/v1/raw/nothing.png", "nothing.png"),
    ]:
        status, _, body = fetch(served + page)
        assert status == 404 and named in _text(body), page


def test_read_only_and_answers_only_at_its_own_address(served: str) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert fetch(served + "/artifacts/mnist", method=method)[0] == 405
    status, _, _ = fetch(served + "/artifacts", headers={"Host": "attacker.example:80"})
    assert status == 421
    status, _, _ = fetch(served + "/artifacts")
    assert status == 200


def test_image_bytes_are_served_pinned_and_only_for_images(served: str) -> None:
    for name in ui_support.IMAGE_SIZES:
        status, kind, body = fetch(f"{served}/artifacts/mnist/v1/raw/images/{name}")
        assert (status, body) == (200, ui_support.image_bytes(name))
        assert kind.startswith("image/")
    status, _, _ = fetch(f"{served}/artifacts/mnist/v1/raw/README.md")
    assert status == 404


def test_text_json_and_limits(served: str, tmp_path: Path) -> None:
    body = _text(fetch(served + "/artifacts/mnist/v1/files/meta.json")[2])
    assert "&#34;classes&#34;: 10" in body  # pretty-printed JSON
    body = _text(fetch(served + "/artifacts/mnist/v1/files/README.md")[2])
    assert "Hand-written digits, &lt;b&gt;not&lt;/b&gt; markup." in body
    (tmp_path / "big.txt").write_bytes(b"x" * (200 * 2**10))
    artifact = refstore.Artifact("big-text")
    artifact.add_reference(tmp_path / "big.txt")
    version = refstore.Registry(tmp_path / "registry").log(artifact)
    with ui_support.serving(str(tmp_path / "registry")) as url:
        body = _text(fetch(url + "/artifacts/big-text/v0/files/big.txt")[2])
    shown = re.search(r'<pre id="preview-text" class="text">(x*)</pre>', body)
    assert shown is not None and len(shown[1]) == 64 * 2**10 and "The first 64 KiB" in body
    assert version.manifest["big.txt"].size == 200 * 2**10


def test_export_writes_the_same_pages_as_a_static_site(
    local_sample: ui_support.Sample, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    result = CliRunner().invoke(main, ["ui", "--root", local_sample.root, "--export", str(site), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["pages"]
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert written == len(pages)
    for page in (
        "artifacts/index.html",
        "artifacts/mnist/index.html",
        "artifacts/mnist/v1/index.html",
        "artifacts/mnist/v1/files/index.html",
        "artifacts/mnist/v1/files/train/index.html",
        "artifacts/mnist/v1/files/train/part-0.parquet.html",
        "artifacts/mnist/diff/v0/v1/index.html",
        "artifacts/mnist/v1/lineage/index.html",
        "runs/index.html",
        f"runs/{local_sample.train_run}/index.html",
    ):
        assert page in pages
    version_page = (site / "artifacts/mnist/v1/index.html").read_text()
    assert '<a href="files/train/index.html">train</a>' in version_page
    assert 'href="../../../static/style.css"' in version_page
    for page in pages:  # every relative link leads to a file the export wrote
        html = (site / page).read_text()
        for href in re.findall(r'href="([^"#?]+)"', html):
            assert (site / page).parent.joinpath(_unquote(href)).resolve().exists(), (page, href)
    parquet_page = (site / "artifacts/mnist/v1/files/train/part-0.parquet.html").read_text()
    assert "not part of this export" in parquet_page and "preview-table" not in parquet_page
    assert not (site / "artifacts/mnist/v1/raw").exists()

    with_previews = tmp_path / "previews"
    result = CliRunner().invoke(
        main, ["ui", "--root", local_sample.root, "--export", str(with_previews), "--previews"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "preview-table" in (with_previews / "artifacts/mnist/v1/files/train/part-0.parquet.html").read_text()
    )
    png = with_previews / "artifacts/mnist/v1/raw/images/digit-7.png"
    assert png.read_bytes() == ui_support.image_bytes("digit-7.png")
    image_page = (with_previews / "artifacts/mnist/v1/files/images/digit-7.png.html").read_text()
    assert 'src="../../raw/images/digit-7.png"' in image_page


def _unquote(href: str) -> str:
    from urllib.parse import unquote

    return unquote(href)


def test_templates_and_static_files_are_package_data() -> None:
    """Every template and static file (the vendored graph layout too) ships in the wheel: pyproject's
    package-data globs match each of them."""
    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = root / "refstore" / "surfaces" / "ui"
    shipped = [p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()]
    data = [p for p in shipped if not p.endswith(".py") and "__pycache__" not in p]
    assert "static/vendor/dagre.min.js" in data and "templates/base.html" in data
    missing = [p for p in data if not any(fnmatch.fnmatch(p, g) for g in globs["refstore.surfaces.ui"])]
    assert not missing


def test_export_file_names_keep_files_and_listings_apart() -> None:
    assert links.export_file("/artifacts/a/v0/files/x/") == "artifacts/a/v0/files/x/index.html"
    assert links.export_file("/artifacts/a/v0/files/x/", 3) == "artifacts/a/v0/files/x/index-3.html"
    assert links.export_file("/artifacts/a/v0/files/x/index") == "artifacts/a/v0/files/x/index.entry.html"
    assert links.export_file("/artifacts/a/v0/files/x/index-2") == "artifacts/a/v0/files/x/index-2.entry.html"
    assert links.export_file("/artifacts/a/v0/files/x/y.csv") == "artifacts/a/v0/files/x/y.csv.html"
    here = links.Links("/artifacts/a/v0/files/x/y.csv")
    assert here.href("/artifacts/a/v0/files/") == "../index.html"
    assert here.href("/artifacts/a/v0/files/x/a b?.csv") == "a%20b%3F.csv.html"
    assert links.Links().href("/artifacts/a/v0/files/x/a b?.csv") == "/artifacts/a/v0/files/x/a%20b%3F.csv"


def test_folder_pages_list_every_child_once_in_order() -> None:
    paths = sorted(
        ["a", "a!", "a/b", "a/c/d", "a/c/e", "a0", "b/x", "b/y/z", "c"] + [f"m/f{i:03d}" for i in range(25)]
    )
    root = list_folder(paths, "", limit=1000)
    assert [(c.name, c.folder, c.entries) for c in root.children] == [
        ("a", False, 1),
        ("a!", False, 1),
        ("a", True, 3),
        ("a0", False, 1),
        ("b", True, 2),
        ("c", False, 1),
        ("m", True, 25),
    ]
    assert root.entries == len(paths) and root.next_after is None
    for limit in (1, 2, 3, 7):
        for folder in all_folders(paths):
            seen, after = [], None
            while True:
                page = list_folder(paths, folder, after=after, limit=limit)
                seen += page.children
                after = page.next_after
                if after is None:
                    break
            assert seen == list_folder(paths, folder, limit=1000).children, (folder, limit)


def test_a_version_of_a_million_entries_opens_and_pages_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version page and its folders: the chunked manifest's paths are read once (no entries made:
    its parse is most of the first open, measured and printed), then a folder page reads no chunk at all,
    so it costs a page, not the version. Timings are printed, not asserted (speed lives in benchmarks)."""
    from refstore.core.chunks import ChunkedManifest
    from refstore.core.manifest import ManifestEntry

    count = 1_000_000
    artifact = refstore.Artifact("huge")
    artifact._add(
        [
            ManifestEntry(
                f"shard-{i // 100_000}/part-{i:07d}.bin", f"s3://b/k/{i}", i, f"etag:{i:x}", f"{i:x}"
            )
            for i in range(count - 1)
        ]
        + [ManifestEntry("zz-top.txt", "s3://b/zz", 1, "etag:1", "1")]
    )
    refstore.Registry(tmp_path / "registry").log(artifact)
    del artifact
    reads: list[str] = []
    real_read = ChunkedManifest._read_bytes

    def counted(self: ChunkedManifest, ref: Any, what: str) -> Any:
        reads.append(what)
        return real_read(self, ref, what)

    monkeypatch.setattr(ChunkedManifest, "_read_bytes", counted)
    with ui_support.serving(str(tmp_path / "registry")) as url:
        started = time.perf_counter()
        status, _, body = fetch(url + "/artifacts/huge/v0")
        first_open = time.perf_counter() - started
        assert status == 200 and b"1,000,000 entries in this version" in body
        assert body.count(b'class="folder"') == 10
        assert reads.count("chunk") >= 100  # the paths of every chunk, once
        reads.clear()
        timings = []
        for page in ("/artifacts/huge/v0", "/artifacts/huge/v0/files/shard-3/", "/artifacts/huge/v0/files/"):
            started = time.perf_counter()
            status, _, body = fetch(url + page)
            timings.append(time.perf_counter() - started)
            assert status == 200
        next_page = re.search(
            rb'href="([^"]+)" rel="next"', fetch(url + "/artifacts/huge/v0/files/shard-3/")[2]
        )
        assert next_page is not None
        started = time.perf_counter()
        status, _, body = fetch(url + next_page[1].decode().replace("&amp;", "&"))
        timings.append(time.perf_counter() - started)
        assert status == 200 and b">part-0300500.bin</a>" in body and b">part-0300499.bin</a>" not in body
        assert reads.count("chunk") <= 2  # folder pages page the paths already read: no full read again
    print(
        f"\n1,000,000 entries: first open {first_open:.2f} s, "
        f"then pages in {', '.join(f'{t:.3f}' for t in timings)} s"
    )


def test_the_command_line_serves_prints_its_url_and_stops_on_ctrl_c(local_sample: ui_support.Sample) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "refstore", "ui", "--root", local_sample.root, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found is not None, line
        assert fetch(found[0] + "artifacts")[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
        assert "stopped" in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()


def test_the_command_line_names_the_extra_when_it_is_missing(local_sample: ui_support.Sample) -> None:
    code = "import sys; sys.modules['jinja2'] = None; from refstore.surfaces.cli import run; run()"
    result = subprocess.run(
        [sys.executable, "-c", code, "ui", "--root", local_sample.root],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == "refstore: error: refstore ui needs Jinja2: pip install 'refstore[ui]'\n"
    result = CliRunner().invoke(main, ["ui", "--root", local_sample.root, "--previews"])
    assert result.exit_code == 2 and "--previews goes with --export" in result.output


def test_a_parquet_preview_of_200_mb_on_s3_reads_its_footer_and_first_row_group(
    s3_server: Any, s3_fs: Any, s3_bucket: str, tmp_path: Path
) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, width, group = 200_000, 1000, 2000  # 100 row groups of about 2 MB of random bytes
    raw = np.random.default_rng(0).bytes(rows * width)
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "blob": pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows, [None, pa.py_buffer(raw)]),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=group, compression="none", use_dictionary=False)
    data = out.getvalue()
    s3_fs.pipe(f"{s3_bucket}/big/table.parquet", data)
    artifact = refstore.Artifact("big-table")
    artifact.add_reference(f"s3://{s3_bucket}/big/table.parquet")
    refstore.Registry(tmp_path / "registry").log(artifact)
    metadata = pq.read_metadata(io.BytesIO(data))
    first_group = metadata.row_group(0).total_byte_size
    footer = metadata.serialized_size + 8
    with ui_support.serving(str(tmp_path / "registry")) as url, _recording(s3_server) as recorded:
        status, _, body = fetch(url + "/artifacts/big-table/v0/files/table.parquet")
    assert status == 200 and b"200,000 rows; the first 50 shown." in body
    gets = [r for r in recorded if r["method"] == "GET" and "/big/table.parquet" in r["url"]]
    ranges = [r["headers"].get("Range") for r in gets]
    assert ranges and all(r is not None for r in ranges), ranges
    transferred = sum(_range_length(r) for r in ranges)
    print(
        f"\n{len(data) / 2**20:.0f} MiB Parquet: {len(gets)} GETs, "
        f"{transferred / 2**20:.2f} MiB read ({ranges})"
    )
    assert len(data) > 200 * 10**6
    # the footer, then the first row group's pages with one read-ahead of at most 4 MiB (a pinned S3 file's)
    assert transferred <= footer + first_group + 4 * 2**20, (transferred, footer, first_group)
    assert transferred < len(data) / 30


@contextlib.contextmanager
def _recording(server: Any) -> Iterator[list[dict[str, Any]]]:
    """moto's request recorder: every request with its headers, as the server received it."""
    import urllib.request

    def call(action: str) -> str:
        method = "GET" if action.startswith("download") else "POST"
        request = urllib.request.Request(f"{server.endpoint_url}/moto-api/recorder/{action}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())

    recorded: list[dict[str, Any]] = []
    call("reset-recording")
    call("start-recording")
    try:
        yield recorded
    finally:
        call("stop-recording")
        recorded += [json.loads(line) for line in call("download-recording").splitlines() if line]
        call("reset-recording")


def _range_length(header: str) -> int:
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(last) - int(first) + 1
