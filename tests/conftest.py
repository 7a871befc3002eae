"""Shared fixtures: real storage servers on 127.0.0.1, fresh buckets, and an isolated environment.

Servers (session-scoped, started lazily by the first test that asks, stopped by PID at session end; a
server that cannot be found or started FAILS every test that needs it, it is never skipped):

- ``s3_server``: moto server subprocess. ``.endpoint_url``; ``.mark()`` / ``.requests_since(mark)`` count
  the S3 requests it logged (``"METHOD TARGET"`` strings, ``/moto-api`` housekeeping left out);
  ``.entries_since(mark)`` gives :class:`servers.Request` records with the status too; ``.reset()``.
- ``gcs_server``: fake-gcs-server (memory backend). ``.endpoint_url``, same request counting.
- ``azurite``: Azurite blob service. ``.connection_string``, ``.account_name``, ``.account_key``,
  ``.endpoint_url`` (the account URL ``http://127.0.0.1:P/devstoreaccount1``), same request counting.
  Found at ``$REFSTORE_AZURITE``, else ``.ci/node/node_modules/.bin/azurite-blob``, else on PATH.
- ``http_server`` (function-scoped view of one session server): aiohttp static files. ``.root`` is a fresh
  directory to write into, ``.base_url`` serves it (no trailing slash), ``.url("a/b.txt")``, and the
  same request counting. aiohttp sends ETag and Last-Modified, honours Range and If-Match (412 on a
  mismatch) but ignores an ETag in If-Range (it answers 206 anyway).
- ``rgw_server``: Ceph RADOS Gateway on the RADOS store (tests/rgw/start_rgw.sh: one monitor, one memstore
  OSD, radosgw; ~20 s to start, once per session). ``.endpoint_url``, ``.access_key``, ``.secret_key``,
  ``.version``, same request counting. Ceph comes from PATH (``.ci/run`` installs Debian 12's packages)
  or, with ``REFSTORE_RGW_CEPH=trixie``, from Debian 13 packages unpacked into /tmp/rgw-rootfs.

Which S3 server: ``s3_endpoint`` (function-scoped) is moto, unless the module sets
``S3_SERVERS = ("moto", "rgw")`` (its tests that use ``s3_fs``/``s3_bucket``/... then run once per
server) or the test is marked ``@pytest.mark.s3_server("rgw")``. For RGW it points AWS_S3_ENDPOINT_URL and
the AWS keys at RGW for the test. ``s3_server`` is always moto (request counting, ``reset()``).

Raw clients for writing test objects (function-scoped, fresh instance and listing cache per test):
``s3_fs`` (s3fs, ``version_aware=True``), ``gcs_fs`` (gcsfs, ``version_aware=True``: pinned reads are
``bucket/key#<generation>``), ``azure_fs`` (adlfs). Fresh names per test: ``s3_bucket`` (versioned),
``s3_unversioned_bucket``, ``gcs_bucket`` (versioned), ``gcs_unversioned_bucket``, ``azure_container``.
``local_or_s3_registry``: a fresh ``Registry`` on local disk, then one in a moto bucket.

Environment. ``cloud_env`` (autouse, session) points refstore's default credential chains at the
servers, lazily: at session start it sets AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY=testing,
AWS_DEFAULT_REGION=us-east-1, points AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE at nothing and clears
endpoint and credential variables of the developer's shell (AWS_ENDPOINT_URL*, AWS_PROFILE,
STORAGE_EMULATOR_HOST, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*); each server fixture then sets its
own variable when it starts: AWS_S3_ENDPOINT_URL (``s3_server``; refstore maps it, s3fs does not read it),
STORAGE_EMULATOR_HOST (``gcs_server``), AZURE_STORAGE_CONNECTION_STRING (``azurite``). So a test that
relies on the environment alone must still request the server fixture, which also keeps a run of only
local tests from starting any server. All of it is undone at session end.

GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false and NO_GCE_CHECK=true are set below at import time, before gcsfs
can be imported (otherwise 60 s gRPC probes and 3 s metadata probes; TESTING.md gotchas 1 and 10).

Every test also gets REFSTORE_CACHE_DIR=<tmp_path>/refstore-cache and REFSTORE_ROOT=<tmp_path>/refstore-root
(neither created) and runs with tmp_path as its working directory, so nothing leaks into the repo or
into the user's cache.

``--soak`` (fixture ``soak``) makes the trust tests run long: more processes, versions and kill points.
"""

from __future__ import annotations

import os

os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
os.environ["NO_GCE_CHECK"] = "true"

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from servers import (
    AzuriteServer,
    GCSServer,
    HTTPDir,
    HTTPServer,
    RGWServer,
    S3Server,
    ServerError,
    start_azurite,
    start_fake_gcs,
    start_moto,
    start_rgw,
)

T = TypeVar("T")

_CLEARED = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_S3_ENDPOINT_URL",
    "FSSPEC_S3_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ACCOUNT_URL",
)

_names = itertools.count(1)


def unique_name(prefix: str = "t") -> str:
    """A fresh bucket/container name, valid for S3, GCS and Azure (lower case, digits, hyphens)."""
    return f"{prefix}{next(_names):04d}-{uuid.uuid4().hex[:10]}"


def _start(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except ServerError as exc:
        pytest.fail(f"{what} could not be started: {exc}", pytrace=False)


# -- environment ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory and log files of the session's servers."""
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session", autouse=True)
def cloud_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pytest.MonkeyPatch]:
    """The session's environment; server fixtures add their endpoint variables to it (see module doc)."""
    mp = pytest.MonkeyPatch()
    for name in _CLEARED:
        mp.delenv(name, raising=False)
    nowhere = tmp_path_factory.mktemp("no-aws-config")
    mp.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield mp
    mp.undo()


@pytest.fixture(autouse=True)
def _isolated_refstore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFSTORE_CACHE_DIR", str(tmp_path / "refstore-cache"))
    monkeypatch.setenv("REFSTORE_ROOT", str(tmp_path / "refstore-root"))
    monkeypatch.chdir(tmp_path)


# -- S3 -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(cloud_env: pytest.MonkeyPatch, server_dir: Path) -> Iterator[S3Server]:
    server = _start("moto (S3)", lambda: start_moto(server_dir))
    cloud_env.setenv("AWS_S3_ENDPOINT_URL", server.endpoint_url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw_server(server_dir: Path) -> Iterator[RGWServer]:
    """Ceph RGW (RADOS store); tests reach it through ``s3_endpoint`` (which also sets the environment)."""
    server = _start("Ceph RGW (S3)", lambda: start_rgw(server_dir))
    yield server
    server.stop()


#: The S3 servers a test can run against: ``s3_endpoint``'s parameter values.
S3_SERVER_NAMES = ("moto", "rgw")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "s3_server(name): run this test's S3 fixtures against moto or rgw")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with ``S3_SERVERS = ("moto", "rgw")`` runs each test that uses ``s3_endpoint`` (``s3_fs``,
    ``s3_bucket``, ...) once per server; a test that asks for ``s3_server`` itself stays on moto."""
    servers = getattr(metafunc.module, "S3_SERVERS", None)
    if servers and "s3_endpoint" in metafunc.fixturenames and "s3_server" not in metafunc.fixturenames:
        metafunc.parametrize("s3_endpoint", servers, indirect=True)


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Server | RGWServer:
    """The S3 server of this test: moto unless parametrized (``S3_SERVERS``) or marked
    ``@pytest.mark.s3_server("rgw")``. For RGW, AWS_S3_ENDPOINT_URL and the AWS keys point at it for the
    test (and the processes it starts)."""
    name = getattr(request, "param", None)
    if name is None:
        marker = request.node.get_closest_marker("s3_server")
        name = marker.args[0] if marker is not None else "moto"
    if name == "moto":
        server: S3Server = request.getfixturevalue("s3_server")
        return server
    if name != "rgw":
        raise ValueError(f"unknown S3 server {name!r}: one of {S3_SERVER_NAMES}")
    rgw: RGWServer = request.getfixturevalue("rgw_server")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", rgw.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
    return rgw


@pytest.fixture
def s3_fs(s3_endpoint: S3Server | RGWServer) -> Any:
    import s3fs

    rgw = isinstance(s3_endpoint, RGWServer)
    return s3fs.S3FileSystem(
        key=s3_endpoint.access_key if rgw else "testing",
        secret=s3_endpoint.secret_key if rgw else "testing",
        client_kwargs={"endpoint_url": s3_endpoint.endpoint_url},  # no region_name: moto refuses it
        skip_instance_cache=True,
        version_aware=True,
    )


def _make_s3_bucket(fs: Any, versioned: bool) -> str:
    name = unique_name("s3-")
    fs.mkdir(name)
    if versioned:
        fs.call_s3("put_bucket_versioning", Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    fs.invalidate_cache()
    return name


@pytest.fixture
def s3_bucket(s3_fs: Any) -> str:
    """A fresh bucket with versioning enabled."""
    return _make_s3_bucket(s3_fs, versioned=True)


@pytest.fixture
def s3_unversioned_bucket(s3_fs: Any) -> str:
    return _make_s3_bucket(s3_fs, versioned=False)


@pytest.fixture(params=["local", "s3"])
def local_or_s3_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh registry on local disk, and one in a moto (S3) bucket (registry features run on both)."""
    import refstore

    if request.param == "local":
        return refstore.Registry(tmp_path / "registry")
    return refstore.Registry(f"s3://{request.getfixturevalue('s3_bucket')}/registry")


# -- GCS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_server(cloud_env: pytest.MonkeyPatch, server_dir: Path) -> Iterator[GCSServer]:
    server = _start("fake-gcs-server (GCS)", lambda: start_fake_gcs(server_dir))
    cloud_env.setenv("STORAGE_EMULATOR_HOST", server.endpoint_url)
    yield server
    server.stop()


@pytest.fixture
def gcs_fs(gcs_server: GCSServer) -> Any:
    import gcsfs

    return gcsfs.GCSFileSystem(
        token="anon", endpoint_url=gcs_server.endpoint_url, skip_instance_cache=True, version_aware=True
    )


@pytest.fixture
def gcs_bucket(gcs_fs: Any) -> str:
    """A fresh bucket with versioning enabled."""
    name = unique_name("gcs-")
    gcs_fs.mkdir(name, enable_versioning=True)
    gcs_fs.invalidate_cache()
    return name


@pytest.fixture
def gcs_unversioned_bucket(gcs_fs: Any) -> str:
    name = unique_name("gcs-")
    gcs_fs.mkdir(name)
    gcs_fs.invalidate_cache()
    return name


# -- Azure ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite(cloud_env: pytest.MonkeyPatch, server_dir: Path) -> Iterator[AzuriteServer]:
    server = _start("Azurite (Azure Blob)", lambda: start_azurite(server_dir))
    cloud_env.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
    yield server
    server.stop()


@pytest.fixture
def azure_fs(azurite: AzuriteServer) -> Any:
    import adlfs

    return adlfs.AzureBlobFileSystem(connection_string=azurite.connection_string, skip_instance_cache=True)


@pytest.fixture
def azure_container(azure_fs: Any) -> str:
    name = unique_name("az-")
    azure_fs.mkdir(name)
    azure_fs.invalidate_cache()
    return name


# -- HTTP -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _http_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    server = HTTPServer(tmp_path_factory.mktemp("http-root"))
    _start("aiohttp static server (HTTP)", server.start)
    yield server
    server.stop()


@pytest.fixture
def http_server(_http_server_session: HTTPServer) -> HTTPDir:
    """A fresh directory served over HTTP: write into ``.root``, fetch from ``.base_url``."""
    name = unique_name("h")
    root = _http_server_session.root / name
    root.mkdir()
    return HTTPDir(_http_server_session, root, f"{_http_server_session.base_url}/{name}")


# -- Dask -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_threads() -> Iterator[Any]:
    """The executor of a Dask ``LocalCluster`` whose two workers are threads of this process (2 threads
    each): tasks still go through the scheduler and their arguments are copied on the way. One per module,
    so that its threads (a monitor reads ``/proc`` twice a second) are gone before other modules run."""
    from dask_support import local_cluster

    with local_cluster(processes=False) as executor:
        yield executor


@pytest.fixture
def on_workers(dask_threads: Any) -> Any:
    """``dask_threads`` through a :class:`dask_support.OnWorkers`: the tasks it ran, and on which worker."""
    from dask_support import OnWorkers

    return OnWorkers(dask_threads)


# -- soak -----------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="run the trust tests long: more concurrent processes, versions and kill -9 points",
    )


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    """True under ``--soak``: trust tests scale their processes, versions and kill points up."""
    return bool(request.config.getoption("--soak"))
