"""Previews of one entry's pinned bytes, read through :meth:`ArtifactVersion.open` and never whole.

Images (PNG, JPEG, GIF, WebP: Pillow reads the header for the format and the natural size; the page then
loads the bytes from :func:`image_bytes`, at most :data:`IMAGE_LIMIT`), text and JSON (the first
:data:`TEXT_LIMIT` bytes), CSV (rows of the first :data:`TEXT_LIMIT` bytes) and Parquet (PyArrow reads the
footer, then the first rows of the first row group only). A source that moved on without its pinned
version gives the :class:`~refstore.ObjectChangedError` text, never other bytes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal

from ...core.exceptions import RefstoreError

if TYPE_CHECKING:
    from ...core.manifest import ManifestEntry
    from ...snapshots.version import ArtifactVersion

TEXT_LIMIT = 64 * 2**10
#: Rows shown of a CSV or Parquet table.
ROW_LIMIT = 50
#: Largest image whose bytes a page shows.
IMAGE_LIMIT = 32 * 2**20
#: Characters shown of one table cell.
CELL_LIMIT = 200
#: Image formats a page shows (Pillow's names), with their media types and file extensions.
IMAGE_TYPES = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "GIF": ("image/gif", "gif")}
IMAGE_TYPES["WEBP"] = ("image/webp", "webp")
INSTALL_HINT = "pip install 'refstore[ui]'"

Kind = Literal["image", "text", "json", "table", "none", "error"]
_EXTENSIONS = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp"), "image"),
    **dict.fromkeys((".parquet", ".pq"), "parquet"),
    **dict.fromkeys((".csv", ".tsv"), "csv"),
    **dict.fromkeys((".json", ".geojson"), "json"),
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF8", "image"),
    (b"PAR1", "parquet"),
)


@dataclass(frozen=True)
class Preview:
    """What a file page shows of the bytes: ``kind`` says which of the other fields are set."""

    kind: Kind
    message: str = ""
    text: str = ""
    truncated: bool = False
    columns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    #: Rows in the whole table where known (Parquet), else ``None``.
    total_rows: int | None = None
    image_format: str = ""
    width: int = 0
    height: int = 0


def preview(version: ArtifactVersion, entry: ManifestEntry) -> Preview:
    """The preview of ``entry`` of ``version``; errors of the source become a preview of kind ``error``."""
    kind = _EXTENSIONS.get(posixpath.splitext(entry.path)[1].lower(), "sniff")
    try:
        with version.open(entry.path) as handle:
            if kind == "sniff":
                kind = _sniff(handle)
            return _READERS[kind](handle, entry)
    except RefstoreError as exc:  # ObjectChangedError above all: the pinned bytes are gone
        return Preview("error", message=str(exc))


def image_bytes(version: ArtifactVersion, path: str) -> tuple[bytes, str] | None:
    """The bytes of an image entry and its media type; ``None`` when it is no image a page shows, or too
    large. Read through the pinned reader: a source that moved on raises
    :class:`~refstore.ObjectChangedError`."""
    entry = version.manifest[path]
    if entry.size > IMAGE_LIMIT:
        return None
    with version.open(path) as handle:
        found = _image_format(handle)
        if found is None:
            return None
        handle.seek(0)
        data = handle.read(IMAGE_LIMIT + 1)
    if len(data) > IMAGE_LIMIT:
        return None
    return data, IMAGE_TYPES[found][0]


def _sniff(handle: IO[bytes]) -> str:
    head = handle.read(16)
    handle.seek(0)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), "text")


def _image_format(handle: IO[bytes]) -> str | None:
    """Pillow's name for the format of the image ``handle`` holds (one of :data:`IMAGE_TYPES`), reading
    only its header; ``None`` for anything else."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(handle, formats=list(IMAGE_TYPES)) as image:
            return str(image.format)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _image(handle: IO[bytes], entry: ManifestEntry) -> Preview:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(handle, formats=list(IMAGE_TYPES)) as image:
            width, height, found = image.width, image.height, str(image.format)
    except (UnidentifiedImageError, OSError, ValueError):
        return Preview("none", message="not an image in a format a page shows (PNG, JPEG, GIF, WebP)")
    if entry.size > IMAGE_LIMIT:
        message = f"{found} image, {width} x {height}: too large to show here"
        return Preview("none", message=message, image_format=found, width=width, height=height)
    return Preview("image", image_format=found, width=width, height=height)


def _head(handle: IO[bytes]) -> tuple[bytes, bool]:
    data = handle.read(TEXT_LIMIT + 1)
    return data[:TEXT_LIMIT], len(data) > TEXT_LIMIT


def _decoded(data: bytes, truncated: bool) -> str | None:
    """``data`` as UTF-8 text (a character cut at the end of a truncated read dropped); ``None`` if binary."""
    if b"\x00" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(data) - 3:
            return data[: exc.start].decode()
        return None


def _text(handle: IO[bytes], entry: ManifestEntry) -> Preview:
    data, truncated = _head(handle)
    text = _decoded(data, truncated)
    if text is None:
        return Preview("none", message="binary data: no preview")
    return Preview("text", text=text, truncated=truncated)


def _json(handle: IO[bytes], entry: ManifestEntry) -> Preview:
    data, truncated = _head(handle)
    text = _decoded(data, truncated)
    if text is None:
        return Preview("none", message="binary data: no preview")
    if not truncated:
        with contextlib.suppress(ValueError):  # not JSON after all: shown as text
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return Preview("json", text=text, truncated=truncated)


def _csv(handle: IO[bytes], entry: ManifestEntry) -> Preview:
    data, truncated = _head(handle)
    if truncated:
        data = data[: data.rfind(b"\n") + 1] or data  # whole lines only
    text = _decoded(data, truncated)
    if text is None:
        return Preview("none", message="binary data: no preview")
    delimiter = "\t" if entry.path.lower().endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        lines = [row for _, row in zip(range(ROW_LIMIT + 1), reader, strict=False)]
    except csv.Error as exc:
        return Preview("none", message=f"not readable as CSV: {exc}")
    if not lines:
        return Preview("table", truncated=truncated)
    header, rows = lines[0], lines[1:]
    width = max(len(header), *(len(r) for r in rows)) if rows else len(header)
    more = truncated or len(lines) > ROW_LIMIT
    return Preview(
        "table",
        columns=header + [""] * (width - len(header)),
        rows=[[_cell(c) for c in r] + [""] * (width - len(r)) for r in rows],
        truncated=more,
    )


def _parquet(handle: IO[bytes], entry: ManifestEntry) -> Preview:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return Preview("none", message=f"Parquet previews need PyArrow: {INSTALL_HINT}")
    try:
        parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=2**16)  # reads the footer
        schema = parquet.schema_arrow
        batch = None
        if parquet.metadata.num_row_groups:
            batches = parquet.iter_batches(batch_size=ROW_LIMIT, row_groups=[0], use_threads=False)
            batch = next(iter(batches), None)
    except RefstoreError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError for bytes that are not Parquet
        return Preview("none", message=f"not readable as Parquet: {exc}")
    rows = batch.to_pylist() if batch is not None else []
    total = parquet.metadata.num_rows
    return Preview(
        "table",
        columns=list(schema.names),
        types=[str(t) for t in schema.types],
        rows=[[_cell(row.get(name)) for name in schema.names] for row in rows],
        total_rows=total,
        truncated=total > len(rows),
    )


def _cell(value: Any) -> str:
    text = "" if value is None else value if isinstance(value, str) else str(value)
    return text if len(text) <= CELL_LIMIT else text[: CELL_LIMIT - 1] + "\u2026"


_READERS: dict[str, Callable[[IO[bytes], ManifestEntry], Preview]] = {
    "image": _image,
    "text": _text,
    "json": _json,
    "csv": _csv,
    "parquet": _parquet,
}
