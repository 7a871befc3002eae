"""AzureBackend against a real Azurite blob server on 127.0.0.1; nothing is mocked.

Test objects are written with the Azure SDK (the backend's own client), never through refstore. Requests
are counted from Azurite's own debug log (server side), one line per request received.

Azurite has no blob versioning (a requested version id is silently ignored), so the version-pinned path is
only shown to fall back safely on the ETag there; reading an old version cannot be shown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import fsspec.asyn
import pytest
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from refstore.core.exceptions import (
    InvalidURLError,
    ObjectChangedError,
    ObjectNotFoundError,
    TooManyObjectsError,
)
from refstore.storage.backends import ObjectMeta, backend_class
from refstore.storage.backends.azure import AzureBackend, _md5_hex

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft): not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    connection_string: str
    debug_log: Path

    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, URL path and query, headers) of every request Azurite received so far."""
        # The debug log is written asynchronously: wait until it stops growing.
        size = -1
        for _ in range(50):
            now = self.debug_log.stat().st_size
            if now == size:
                break
            size = now
            time.sleep(0.05)
        out = []
        pattern = re.compile(
            r"RequestMethod=(\S+) RequestURL=http://[^/]+(\S*) RequestHeaders:(\{.*?\}) ClientIP"
        )
        for line in self.debug_log.read_text(errors="replace").splitlines():
            match = pattern.search(line)
            if match:
                out.append((match[1], match[2], json.loads(match[3])))
        return out

    def mark(self) -> int:
        return len(self.requests())

    def since(self, mark: int, container: str) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests()[mark:] if r[1].startswith(f"/{ACCOUNT}/{container}")]


@pytest.fixture
def azurite_log(azurite: Any) -> Azurite:
    """The session's Azurite (tests/conftest.py), with its request headers readable."""
    return Azurite(azurite.connection_string, azurite.debug_log)


@pytest.fixture(scope="module")
def service(azurite: Any) -> BlobServiceClient:
    """The Azure SDK's own (sync) client, for writing test objects."""
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="module")
def backend(azurite: Any) -> AzureBackend:
    """Built with no options: the connection string comes from the environment."""
    return AzureBackend(AzureBackend.filesystem("az", {}), "az")


@pytest.fixture
def container(service: BlobServiceClient) -> str:
    name = f"t{uuid.uuid4().hex[:20]}"
    service.create_container(name)
    return name


def run(func: Any, *args: Any, **kwargs: Any) -> Any:
    return fsspec.asyn.sync(fsspec.asyn.get_loop(), func, *args, **kwargs)


def put(service: BlobServiceClient, container: str, name: str, data: bytes, **kwargs: Any) -> None:
    service.get_blob_client(container, name).upload_blob(data, overwrite=True, **kwargs)


def put_blocks(service: BlobServiceClient, container: str, name: str, data: bytes) -> None:
    """A block-list upload: Azure stores no Content-MD5 for it."""
    blob = service.get_blob_client(container, name)
    block_id = base64.b64encode(b"block-0").decode()
    blob.stage_block(block_id, data)
    blob.commit_block_list([BlobBlock(block_id)])


# -- filesystem and environment ----------------------------------------------------------------------


def test_registered_for_azure_schemes() -> None:
    for scheme in ("az", "abfs", "abfss"):
        assert backend_class(scheme) is AzureBackend
    assert AzureBackend.protocols[0] == "az"
    assert AzureBackend.package == "adlfs"


def test_filesystem_takes_the_connection_string_from_the_environment(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str
) -> None:
    assert backend.fs.connection_string == azurite_log.connection_string
    put(service, container, "a.txt", b"hi")
    meta = run(backend.stat, f"{container}/a.txt")
    assert meta is not None and meta.size == 2


def test_filesystem_maps_the_azure_cli_variables(
    monkeypatch: pytest.MonkeyPatch, azurite_log: Azurite
) -> None:
    # adlfs reads AZURE_STORAGE_ACCOUNT_NAME / _ACCOUNT_KEY, not the Azure CLI's names: refstore maps them.
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "cliaccount")
    monkeypatch.setenv("AZURE_STORAGE_KEY", KEY)
    fs = AzureBackend.filesystem("az", {})
    assert fs.account_name == "cliaccount"
    assert fs.account_key == KEY
    assert fs.connection_string is None
    # explicit options win over the environment
    fs = AzureBackend.filesystem("az", {"account_name": "explicit", "account_key": KEY})
    assert fs.account_name == "explicit"


def test_a_connection_string_for_another_account_is_refused(azurite_log: Azurite) -> None:
    with pytest.raises(InvalidURLError, match="otheraccount") as info:
        AzureBackend.filesystem("az", {"account_name": "otheraccount"})
    assert KEY not in str(info.value)
    # the same account is fine
    AzureBackend.filesystem("az", {"account_name": ACCOUNT})


# -- stat --------------------------------------------------------------------------------------------


def test_stat_gives_size_etag_md5_and_time(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    put(service, container, "data/a.txt", b"hello")
    props = service.get_blob_client(container, "data/a.txt").get_blob_properties()
    meta = run(backend.stat, f"{container}/data/a.txt")
    assert meta is not None
    assert meta.url == f"az://{container}/data/a.txt"
    assert meta.size == 5
    assert meta.etag == props.etag.strip('"') and '"' not in meta.etag
    assert meta.digest == "md5:" + hashlib.md5(b"hello").hexdigest()
    assert meta.version_id is None  # Azurite: no versioning
    assert meta.last_modified is not None
    assert datetime.fromisoformat(meta.last_modified) == props.last_modified


def test_stat_without_content_md5_uses_the_etag(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    put_blocks(service, container, "blocks.bin", b"x" * 100)
    meta = run(backend.stat, f"{container}/blocks.bin")
    assert meta is not None and meta.size == 100
    assert meta.digest == f"etag:{meta.etag}"


def test_stat_of_what_is_not_a_blob(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    put(service, container, "dir/folder", b"", metadata={"hdi_isfolder": "true"})
    put(service, container, "dir/file", b"x")
    assert run(backend.stat, f"{container}/missing") is None
    assert run(backend.stat, f"{container}/dir") is None  # a prefix only
    assert run(backend.stat, f"{container}/dir/folder") is None  # a folder marker
    assert run(backend.stat, container) is None  # a container
    assert run(backend.stat, f"nosuchcontainer{uuid.uuid4().hex[:8]}/x") is None


def test_md5_in_every_spelling() -> None:
    digest = hashlib.md5(b"abc").digest()
    assert _md5_hex(digest) == digest.hex()
    assert _md5_hex(bytearray(digest)) == digest.hex()
    assert _md5_hex(base64.b64encode(digest).decode()) == digest.hex()
    assert _md5_hex(digest.hex().upper()) == digest.hex()
    assert _md5_hex(None) is None
    assert _md5_hex(b"") is None
    assert _md5_hex("not base64!") is None


# -- listing -----------------------------------------------------------------------------------------


def _layout(service: BlobServiceClient, container: str) -> None:
    put(service, container, "data/a.txt", b"a")
    put(service, container, "data/sub/b.bin", b"bb")
    put(service, container, "data/empty", b"")  # a zero-byte blob is data
    put(service, container, "data/folder", b"", metadata={"hdi_isfolder": "true"})  # HNS directory
    put(service, container, "data/Folder2", b"", metadata={"Hdi_isfolder": "true"})  # capitalized
    put(service, container, "data/adlfsdir", b"", metadata={"is_directory": "true"})  # adlfs marker
    put(service, container, "data/dir/", b"")  # a trailing-slash marker
    put(service, container, "data", b"not under data/")
    put(service, container, "data2/x", b"not under data/")
    put(service, container, "other/y", b"y")


def test_list_prefix_is_recursive_and_matches_at_the_slash(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str
) -> None:
    _layout(service, container)
    mark = azurite_log.mark()
    listed = run(backend.list_prefix, f"{container}/data", max_objects=100)
    assert sorted(m.url for m in listed) == [
        f"az://{container}/data/a.txt",
        f"az://{container}/data/empty",
        f"az://{container}/data/sub/b.bin",
    ]
    # one List Blobs request, no request per blob
    requests = azurite_log.since(mark, container)
    assert [(m, "comp=list" in u) for m, u, _ in requests] == [("GET", True)]
    # the listing's metadata is what a HEAD gives
    for meta in listed:
        assert meta == run(backend.stat, backend.path(meta.url))
    # a trailing slash changes nothing
    again = run(backend.list_prefix, f"{container}/data/", max_objects=100)
    assert sorted(m.url for m in again) == sorted(m.url for m in listed)


def test_list_container_root_lists_everything(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    _layout(service, container)
    listed = run(backend.list_prefix, container, max_objects=100)
    names = sorted(backend.path(m.url).split("/", 1)[1] for m in listed)
    assert names == ["data", "data/a.txt", "data/empty", "data/sub/b.bin", "data2/x", "other/y"]


def test_list_prefix_over_max_objects_raises(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    for i in range(3):
        put(service, container, f"p/{i}", b"x")
    with pytest.raises(TooManyObjectsError, match=rf"az://{container}/p: at least 3 objects.*max_objects=2"):
        run(backend.list_prefix, f"{container}/p", max_objects=2)
    assert len(run(backend.list_prefix, f"{container}/p", max_objects=3)) == 3


def test_list_prefix_empty_and_missing(backend: AzureBackend, container: str) -> None:
    assert run(backend.list_prefix, f"{container}/nothing", max_objects=10) == []
    with pytest.raises(ObjectNotFoundError, match="no such container"):
        run(backend.list_prefix, f"nosuch{uuid.uuid4().hex[:8]}/x", max_objects=10)
    with pytest.raises(InvalidURLError):
        run(backend.list_prefix, "", max_objects=10)


# -- fetch -------------------------------------------------------------------------------------------


def _pin(backend: AzureBackend, container: str, name: str) -> ObjectMeta:
    meta = run(backend.stat, f"{container}/{name}")
    assert meta is not None
    return meta  # type: ignore[no-any-return]


def test_fetch_is_one_conditional_get(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    put(service, container, "f.bin", b"payload" * 1000)
    pin = _pin(backend, container, "f.bin")
    seen: list[int] = []
    mark = azurite_log.mark()
    run(backend.fetch, pin, tmp_path / "out", seen.append)
    assert (tmp_path / "out").read_bytes() == b"payload" * 1000
    assert sum(seen) == pin.size
    requests = azurite_log.since(mark, container)
    assert len(requests) == 1
    method, _, headers = requests[0]
    assert method == "GET"
    assert headers["if-match"] == f'"{pin.etag}"'


def test_fetch_empty_blob_is_one_request(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    put(service, container, "empty", b"")
    pin = _pin(backend, container, "empty")
    mark = azurite_log.mark()
    run(backend.fetch, pin, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b""
    ((method, _, headers),) = azurite_log.since(mark, container)
    assert method == "HEAD" and headers["if-match"] == f'"{pin.etag}"'
    put(service, container, "empty", b"no longer empty")
    with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
        run(backend.fetch, pin, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_fetch_large_blob_in_chunks(
    backend: AzureBackend, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    data = os.urandom(1024) * (34 * 1024)  # 34 MiB: past the SDK's 32 MiB single GET
    put(service, container, "big", data)
    pin = _pin(backend, container, "big")
    assert pin.digest == "md5:" + hashlib.md5(data).hexdigest()
    seen: list[int] = []
    run(backend.fetch, pin, tmp_path / "out", seen.append)
    assert (tmp_path / "out").read_bytes() == data
    assert sum(seen) == len(data) and len(seen) > 1


def test_fetch_after_overwrite_raises_changed(
    backend: AzureBackend, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    put(service, container, "f", b"old")
    pin = _pin(backend, container, "f")
    put(service, container, "f", b"new")
    with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
        run(backend.fetch, pin, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fetch_after_delete_raises_changed(
    backend: AzureBackend, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    put(service, container, "f", b"old")
    pin = _pin(backend, container, "f")
    service.get_blob_client(container, "f").delete_blob()
    with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
        run(backend.fetch, pin, tmp_path / "out")


def test_version_pin_still_checks_the_etag_where_versions_are_ignored(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    # Azurite ignores version ids and serves the current blob: the ETag must catch an overwrite.
    put(service, container, "v", b"old")
    pin = replace(_pin(backend, container, "v"), version_id="2024-01-01T00:00:00.0000000Z")
    mark = azurite_log.mark()
    run(backend.fetch, pin, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"old"
    ((method, url, _),) = azurite_log.since(mark, container)
    assert method == "GET" and "versionid=" in url.lower()
    put(service, container, "v", b"new")
    with pytest.raises(ObjectChangedError, match="ETag"):
        run(backend.fetch, pin, tmp_path / "out2")
    with pytest.raises(ObjectChangedError):
        backend.open_pinned(pin)


def test_fetch_checks_size_and_md5(
    backend: AzureBackend, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    put(service, container, "f", b"abc")
    pin = _pin(backend, container, "f")
    with pytest.raises(ObjectChangedError, match="MD5"):
        run(backend.fetch, replace(pin, digest="md5:" + "0" * 32), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ObjectChangedError, match="bytes"):
        run(backend.fetch, replace(pin, size=4), tmp_path / "out")


def test_fetch_unchecked_pin_reads_what_is_there(
    backend: AzureBackend, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    put(service, container, "f", b"now")
    pin = ObjectMeta(url=f"az://{container}/f", size=0, digest="ref:" + "0" * 64)
    run(backend.fetch, pin, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"now"
    with backend.open_pinned(pin) as handle:
        assert handle.read() == b"now"


# -- open_pinned -------------------------------------------------------------------------------------


def test_open_pinned_seeks_with_conditional_range_reads(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str
) -> None:
    data = bytes(range(256)) * 40
    put(service, container, "r.bin", data)
    pin = _pin(backend, container, "r.bin")
    mark = azurite_log.mark()
    with backend.open_pinned(pin) as handle:
        assert handle.seekable() and not handle.writable()
        handle.seek(1000)
        assert handle.read(10) == data[1000:1010]
        assert handle.tell() == 1010
        handle.seek(-5, os.SEEK_END)
        assert handle.read() == data[-5:]
        handle.seek(0)
        assert handle.read() == data
    requests = azurite_log.since(mark, container)
    assert requests[0][0] == "HEAD" and requests[0][2]["if-match"] == f'"{pin.etag}"'
    gets = [r for r in requests if r[0] == "GET"]
    assert gets and all(h["if-match"] == f'"{pin.etag}"' and "x-ms-range" in h for _, _, h in gets)


def test_open_pinned_after_overwrite_raises_changed(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    put(service, container, "f", b"old")
    pin = _pin(backend, container, "f")
    put(service, container, "f", b"new!")
    with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
        backend.open_pinned(pin)


def test_open_pinned_notices_a_change_mid_read(
    backend: AzureBackend, service: BlobServiceClient, container: str
) -> None:
    data = os.urandom(9 * 2**20)  # more than one 4 MiB block
    put(service, container, "big", data)
    pin = _pin(backend, container, "big")
    with backend.open_pinned(pin) as handle:
        assert handle.read(10) == data[:10]
        put(service, container, "big", b"replaced")
        handle.seek(8 * 2**20)
        with pytest.raises(ObjectChangedError, match=re.escape(pin.url)):
            handle.read(10)


# -- registry writes ---------------------------------------------------------------------------------


def test_put_create_only(
    backend: AzureBackend, azurite_log: Azurite, service: BlobServiceClient, container: str
) -> None:
    mark = azurite_log.mark()
    run(backend.put_create_only, f"{container}/reg/v1.json", b"first")
    ((method, _, headers),) = azurite_log.since(mark, container)
    assert method == "PUT" and headers["if-none-match"] == "*"
    with pytest.raises(FileExistsError, match=f"az://{container}/reg/v1.json"):
        run(backend.put_create_only, f"{container}/reg/v1.json", b"second")
    assert service.get_blob_client(container, "reg/v1.json").download_blob().readall() == b"first"


def test_put_atomic_overwrites(backend: AzureBackend, service: BlobServiceClient, container: str) -> None:
    run(backend.put_atomic, f"{container}/alias.json", b"1")
    run(backend.put_atomic, f"{container}/alias.json", b"2")
    assert service.get_blob_client(container, "alias.json").download_blob().readall() == b"2"
    # what refstore writes is itself listable and statable
    assert run(backend.stat, f"{container}/alias.json").size == 1


def test_upload_a_local_file(
    backend: AzureBackend, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    local = tmp_path / "blob"
    local.write_bytes(b"blob bytes")
    run(backend.upload, local, f"{container}/blobs/ab/cd")
    assert service.get_blob_client(container, "blobs/ab/cd").download_blob().readall() == b"blob bytes"


# -- https://<account>.blob.core.windows.net/ URLs ---------------------------------------------------


def test_works_with_an_account_url_prefix(
    azurite_log: Azurite, service: BlobServiceClient, container: str, tmp_path: Path
) -> None:
    prefix = f"https://{ACCOUNT}.blob.core.windows.net/"
    fs = AzureBackend.filesystem("https", {"account_name": ACCOUNT})
    backend = AzureBackend(fs, "https", url_prefix=prefix)
    put(service, container, "d/x.txt", b"xyz", content_settings=ContentSettings(content_type="text/plain"))
    url = f"{prefix}{container}/d/x.txt"
    assert backend.path(url) == f"{container}/d/x.txt"
    meta = run(backend.stat, backend.path(url))
    assert meta is not None and meta.url == url
    (listed,) = run(backend.list_prefix, f"{container}/d", max_objects=10)
    assert listed == meta
    run(backend.fetch, meta, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"xyz"
