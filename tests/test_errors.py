"""Storage errors in refstore's terms (issue 12 item 3, issue 13's error mapping): refused or missing
credentials are ``StorageAccessError`` naming the URL and what to set, a missing bucket is
``ObjectNotFoundError`` naming it, a refused port ``StorageUnavailableError``; S3 answers are told by their
status and code, never their message (Ceph RGW sends empty ones); and the command line prints one line.

Refused credentials need a server that checks them (moto accepts any key): :class:`AnsweringServer` is a
tiny aiohttp server on 127.0.0.1 that gives every request the same answer, the way S3, GCS, Azure or a
web server refuse one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unique_name
from servers import S3Server, free_port

import refstore
from refstore.core.loop import run_sync
from refstore.storage.locations import clear_backends, resolve
from refstore.storage.store import Store

SECRET = "wJalrXUtnFEMI-do-not-print-me"


class AnsweringServer:
    """Answers every request with ``status``, ``body`` and ``headers`` (no body to a HEAD)."""

    def __init__(self) -> None:
        self.status, self.body, self.headers = 403, b"", {}
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: int, body: str | bytes = b"", **headers: str) -> None:
        self.status, self.body, self.headers = (
            status,
            body.encode() if isinstance(body, str) else body,
            headers,
        )

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            self.requests.append(f"{request.method} {request.path_qs}")
            await request.read()
            body = b"" if request.method == "HEAD" else self.body
            return web.Response(status=self.status, body=body, headers=self.headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def answering() -> Iterator[AnsweringServer]:
    server = AnsweringServer()
    server.start()
    yield server
    server.stop()


def s3_error(code: str, message: str | None) -> str:
    text = "" if message is None else f"<Message>{message}</Message>"
    return f'<?xml version="1.0"?><Error><Code>{code}</Code>{text}<RequestId>r1</RequestId></Error>'


@pytest.fixture
def fake_s3(answering: AnsweringServer, monkeypatch: pytest.MonkeyPatch) -> AnsweringServer:
    """S3 at the answering server, with a secret that must never be printed."""
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", answering.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    clear_backends()
    return answering


@pytest.fixture
def no_aws_credentials(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """moto, with no AWS credentials anywhere (environment, files, instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    clear_backends()
    return s3_server


# -- S3, from Python -----------------------------------------------------------------------------------


def test_s3_without_credentials_is_storage_access_error(no_aws_credentials: S3Server, s3_bucket: str) -> None:
    art = refstore.Artifact("d")
    with pytest.raises(refstore.StorageAccessError) as caught:
        art.add_reference(f"s3://{s3_bucket}/data")
    assert str(caught.value).startswith(f"s3://{s3_bucket}/data: no AWS credentials were found")
    assert "AWS_ACCESS_KEY_ID" in str(caught.value) and "storage_options" in str(caught.value)
    with pytest.raises(refstore.StorageAccessError, match=f"s3://{s3_bucket}/reg"):
        refstore.Registry(f"s3://{s3_bucket}/reg").artifacts()
    assert isinstance(caught.value, PermissionError)


@pytest.mark.parametrize("message", ["Access Denied", "", None])
def test_s3_refused_credentials_name_the_url_never_the_secret(
    fake_s3: AnsweringServer, message: str | None
) -> None:
    fake_s3.answer(403, s3_error("SignatureDoesNotMatch", message))
    with pytest.raises(refstore.StorageAccessError) as caught:
        refstore.Artifact("d").add_reference("s3://secure/data")
    text = str(caught.value)
    assert text.startswith("s3://secure/data: S3 refused the request (HTTP 403")  # a HEAD: no code
    assert "AWS_SECRET_ACCESS_KEY" in text and SECRET not in text and "None" not in text
    with pytest.raises(refstore.StorageAccessError) as caught:
        refstore.Registry("s3://secure/reg").artifacts()  # a listing: the code from the body
    text = str(caught.value)
    assert text.startswith("s3://secure/reg/") and "(HTTP 403 SignatureDoesNotMatch" in text
    assert SECRET not in text and "None" not in text


def test_s3_refused_reads_of_a_logged_version_are_access_errors_not_changed_objects(
    s3_fs: Any, s3_bucket: str, answering: AnsweringServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_fs.pipe(f"{s3_bucket}/data/a.txt", b"pinned bytes")
    art = refstore.Artifact("d")
    art.add_reference(f"s3://{s3_bucket}/data")
    version = refstore.Registry(tmp_path / "reg").log(art)
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", answering.url)  # the same bucket now refuses these keys
    clear_backends()
    answering.answer(403, s3_error("InvalidAccessKeyId", ""))
    url = f"s3://{s3_bucket}/data/a.txt"
    with pytest.raises(refstore.StorageAccessError, match=f"^{url}: S3 refused the request"):
        version.open("a.txt")
    with pytest.raises(refstore.StorageAccessError, match="S3 refused the request"):
        version.download(tmp_path / "dl")


def test_s3_missing_bucket_is_object_not_found_naming_it(fake_s3: AnsweringServer) -> None:
    fake_s3.answer(404, s3_error("NoSuchBucket", ""))  # Ceph RGW: an empty message
    with pytest.raises(refstore.ObjectNotFoundError, match=r"^s3://nobucket: no such bucket \(HTTP 404"):
        refstore.Artifact("d").add_reference("s3://nobucket/data")
    with pytest.raises(refstore.ObjectNotFoundError, match=r"^s3://nobucket: no such bucket"):
        refstore.Registry("s3://nobucket/reg").artifacts()  # not "(no artifacts)"


def test_s3_refused_create_only_write_without_condition_is_file_exists(fake_s3: AnsweringServer) -> None:
    # Ceph RGW's 412 names no <Condition>: s3fs alone makes it OSError(EINVAL, None)
    fake_s3.answer(412, s3_error("PreconditionFailed", ""))
    backend = resolve("s3://reg/r").backend  # the backend's write (Store.create first probes the registry)
    with pytest.raises(FileExistsError, match=r"^s3://reg/r/versions/x/0 already exists$"):
        run_sync(backend.put_create_only, "reg/r/versions/x/0", b"{}")


def test_s3_empty_message_is_replaced_by_status_code_and_url(fake_s3: AnsweringServer) -> None:
    fake_s3.answer(400, s3_error("InvalidArgument", ""))
    with pytest.raises(OSError, match=r"^\[Errno \d+\] s3://reg/r/a: S3 answered HTTP 400 InvalidArgument$"):
        Store("s3://reg/r", None).list("a")
    with pytest.raises(OSError, match=r"s3://reg/r/b: S3 answered HTTP 400"):  # a GET: no body parsed
        Store("s3://reg/r", None).read("b")


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid:9000"])  # refused port, DNS
def test_s3_refused_port_is_storage_unavailable(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", "http://" + host.format(port=free_port()))
    clear_backends()
    with pytest.raises(refstore.StorageUnavailableError, match=r"^s3://b/data: S3 did not answer"):
        refstore.Artifact("d").add_reference("s3://b/data")


# -- S3 on Ceph RGW: a real server that checks signatures and leaves messages empty ------------------------


@pytest.mark.s3_server("rgw")
def test_rgw_refused_create_only_write_is_file_exists(s3_unversioned_bucket: str) -> None:
    # RGW's 412 names no <Condition>: s3fs alone raises OSError(EINVAL, None), "[Errno 22] None"
    backend = resolve(f"s3://{s3_unversioned_bucket}/reg").backend
    path = f"{s3_unversioned_bucket}/reg/versions/x/0.json"
    run_sync(backend.put_create_only, path, b"first")
    with pytest.raises(FileExistsError, match=f"^s3://{path} already exists$"):
        run_sync(backend.put_create_only, path, b"second")


@pytest.mark.s3_server("rgw")
def test_rgw_wrong_secret_and_missing_bucket(
    s3_endpoint: Any, s3_unversioned_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = unique_name("gone-")
    with pytest.raises(refstore.ObjectNotFoundError, match=f"^s3://{missing}: no such bucket"):
        refstore.Registry(f"s3://{missing}/reg").artifacts()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    clear_backends()
    with pytest.raises(refstore.StorageAccessError) as caught:
        refstore.Registry(f"s3://{s3_unversioned_bucket}/reg").artifacts()
    text = str(caught.value)
    assert text.startswith(f"s3://{s3_unversioned_bucket}/reg/") and "HTTP 403 SignatureDoesNotMatch" in text
    assert "None" not in text and SECRET not in text and "AWS_SECRET_ACCESS_KEY" in text


# -- HTTP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_http_refused_is_storage_access_error(answering: AnsweringServer, status: int) -> None:
    answering.answer(status, "no")
    url = f"{answering.url}/private/a.bin"
    with pytest.raises(refstore.StorageAccessError) as caught:
        refstore.Artifact("d").add_reference(url)
    assert str(caught.value).startswith(f"{url}: access refused")
    assert "headers" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid"])  # refused port, DNS failure
def test_http_refused_port_is_storage_unavailable(host: str) -> None:
    url = f"http://{host.format(port=free_port())}/a.bin"
    with pytest.raises(refstore.StorageUnavailableError, match=f"^{url}: storage did not answer"):
        refstore.Artifact("d").add_reference(url)


# -- GCS and Azure ----------------------------------------------------------------------------------------


def test_gcs_refused_is_storage_access_error(
    answering: AnsweringServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", answering.url)
    clear_backends()
    answering.answer(403, '{"error": {"code": 403, "message": "anon has no storage.objects.list access"}}')
    with pytest.raises(refstore.StorageAccessError) as caught:
        refstore.Artifact("d").add_reference("gs://secure/data/")
    text = str(caught.value)
    assert text.startswith("gs://secure/data: GCS refused the request (HTTP 403: anon has no storage.objects")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in text
    with pytest.raises(refstore.StorageAccessError, match=r"^gs://secure/reg/"):
        refstore.Registry("gs://secure/reg").artifacts()


def test_gcs_missing_bucket_is_object_not_found(gcs_server: Any) -> None:
    missing = unique_name("gone-")
    with pytest.raises(refstore.ObjectNotFoundError, match=f"^gs://{missing}: no such bucket"):
        refstore.Artifact("d").add_reference(f"gs://{missing}/data/")
    with pytest.raises(refstore.ObjectNotFoundError, match=f"^gs://{missing}: no such bucket"):
        refstore.Registry(f"gs://{missing}/reg").artifacts()


def test_azure_refused_is_storage_access_error(
    answering: AnsweringServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "a2V5LW5vdC1wcmludGVk"  # base64 of "key-not-printed"
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={key};BlobEndpoint={answering.url}/acct;",
    )
    clear_backends()
    message = "<Message>Server failed to authenticate the request.</Message>"
    body = f'<?xml version="1.0"?><Error><Code>AuthenticationFailed</Code>{message}</Error>'
    answering.answer(
        403, body, **{"x-ms-error-code": "AuthenticationFailed", "Content-Type": "application/xml"}
    )
    with pytest.raises(refstore.StorageAccessError) as caught:
        refstore.Artifact("d").add_reference("az://secure/data/")
    text = str(caught.value)
    assert text.startswith("az://secure/data: Azure refused the request (HTTP 403 AuthenticationFailed)")
    assert "AZURE_STORAGE_CONNECTION_STRING" in text and key not in text


def test_azure_without_any_account_is_storage_access_error(
    azurite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    clear_backends()
    with pytest.raises(
        refstore.StorageAccessError, match=r"^az://: no Azure account or credentials were found; set"
    ):
        refstore.Artifact("d").add_reference("az://container/data/")


# -- URLs and names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("s3:/lake/x", "s3://lake/x"),
        ("gs:/bucket/k", "gs://bucket/k"),
        ("s3//lake/x", "s3://lake/x"),
        ("s3:lake/x", "s3://lake/x"),
        ("S3:/lake", "s3://lake"),
        ("az:/container/k", "az://container/k"),
        ("https:/example.com/a", "https://example.com/a"),
        ("file:/tmp/x", "file:///tmp/x"),
    ],
)
def test_mistyped_url_says_what_was_meant_never_a_local_path(tmp_path: Path, typed: str, meant: str) -> None:
    with pytest.raises(refstore.InvalidURLError) as caught:
        refstore.Artifact("d").add_reference(typed)
    assert str(caught.value) == f"{typed}: a malformed {meant.split(':')[0]}:// URL; did you mean {meant}?"
    with pytest.raises(refstore.InvalidURLError, match="did you mean"):
        refstore.Registry(typed)
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" was made


def test_unknown_artifact_suggests_the_closest_names(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    registry = refstore.Registry(tmp_path / "reg")
    for name in ("sales", "salaries", "images"):
        art = refstore.Artifact(name)
        art.add_reference(tmp_path / "f.txt")
        registry.log(art)
    with pytest.raises(
        refstore.ArtifactNotFoundError, match=r"^sale: no such artifact in .*; did you mean sales"
    ):
        registry.get("sale")
    with pytest.raises(refstore.ArtifactNotFoundError, match=r"did you mean images\?$"):
        registry.versions("imagse")
    with pytest.raises(refstore.ArtifactNotFoundError) as caught:
        registry.get("zzz:latest")
    assert "did you mean" not in str(caught.value)


# -- the command line, as a subprocess --------------------------------------------------------------------

#: Every command, with what it needs; ROOT is the condition's registry, DATA an S3 prefix, DEST a folder.
COMMANDS = {
    "log": ["log", "x", "DATA"],
    "ls": ["ls"],
    "show": ["show", "x:v0"],
    "get": ["get", "x:v0", "DEST"],
    "verify": ["verify", "x:v0"],
    "diff": ["diff", "x:v0", "x:v1"],
    "alias": ["alias", "x:v0", "prod"],
    "gc": ["gc"],
    "sync": ["sync"],
    "restore": ["restore", "RUN", "m.txt", "--dest", "DEST"],
}


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refstore", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _crashed_run(folder: Path, root: str, env: dict[str, str]) -> str:
    """A run directory in ``folder`` whose run (registry ``root``) died with a file not synced yet."""
    script = (
        "import os, refstore\n"
        f"run = refstore.init(project='p', id={folder.name!r}, registry={root!r})\n"
        "open('m.txt', 'w').write('1')\n"
        "run.save('m.txt', policy='end')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, cwd=folder, check=True, timeout=60)
    return f"p/{folder.name}"


@pytest.fixture
def cli_conditions(
    s3_server: S3Server, s3_fs: Any, answering: AnsweringServer, tmp_path: Path
) -> dict[str, tuple[dict[str, str], str, str, str]]:
    """condition -> (environment, registry root, data prefix, what its one line must say)."""
    bucket = unique_name("s3-")
    s3_fs.mkdir(bucket)
    s3_fs.pipe(f"{bucket}/data/a.txt", b"a")
    answering.answer(403, s3_error("AccessDenied", ""))  # Ceph RGW: an empty <Message>
    moto = {**os.environ, "AWS_S3_ENDPOINT_URL": s3_server.endpoint_url}
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    bare = {k: v for k, v in moto.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    bare.update(
        AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_CONFIG_FILE=str(empty), AWS_EC2_METADATA_DISABLED="true"
    )
    refused = {**moto, "AWS_S3_ENDPOINT_URL": answering.url, "AWS_SECRET_ACCESS_KEY": SECRET}
    closed = {**moto, "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    missing = unique_name("gone-")
    return {
        "no credentials": (
            bare,
            f"s3://{bucket}/reg",
            f"s3://{bucket}/data",
            "no AWS credentials were found",
        ),
        "refused credentials": (
            refused,
            f"s3://{bucket}/reg",
            f"s3://{bucket}/data",
            "S3 refused the request (HTTP 403",
        ),
        "refused port": (closed, f"s3://{bucket}/reg", f"s3://{bucket}/data", "S3 did not answer"),
        "missing bucket": (
            moto,
            f"s3://{missing}/reg",
            f"s3://{missing}/data",
            f"s3://{missing}",  # "no such bucket"; restore says "no run p/... in s3://<bucket>/reg"
        ),
    }


def test_every_command_prints_one_line_never_a_traceback(
    cli_conditions: dict[str, tuple[dict[str, str], str, str, str]], s3_fs: Any, tmp_path: Path
) -> None:
    moto_env = cli_conditions["missing bucket"][0]
    gone = cli_conditions["missing bucket"][1].split("/")[2]
    s3_fs.mkdir(gone)  # for the run that sync will find, until the bucket goes
    jobs = []
    for condition, (env, root, data, needle) in cli_conditions.items():
        folder = tmp_path / condition.replace(" ", "-")
        folder.mkdir()
        run = _crashed_run(folder, root, {**moto_env, "REFSTORE_ROOT": root})
        for command, template in COMMANDS.items():
            args = [{"DATA": data, "DEST": str(folder / "dest"), "RUN": run}.get(a, a) for a in template]
            jobs.append(
                (condition, command, needle, [*args, "--root", root], {**env, "REFSTORE_ROOT": root}, folder)
            )
    s3_fs.rm(gone, recursive=True)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: (job, _cli(job[3], job[4], job[5])), jobs))
    failures = []
    for (condition, command, needle, _, _, _), result in results:
        lines = result.stderr.strip().splitlines()
        ok = result.returncode == 1 and len(lines) == 1 and lines[0].startswith("refstore: error: ")
        if not ok or needle not in result.stderr or "Traceback" in result.stderr or SECRET in result.stderr:
            failures.append(f"{condition} / {command}: exit {result.returncode}\n{result.stderr}")
    assert not failures, "\n".join(failures)


def test_debug_shows_the_traceback(cli_conditions: dict[str, tuple[dict[str, str], str, str, str]]) -> None:
    env, root, _, needle = cli_conditions["no credentials"]
    result = _cli(["ls", "--root", root, "--debug"], env, Path.cwd())
    assert result.returncode == 1 and "Traceback" in result.stderr and "NoCredentialsError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("refstore: error: ") and needle in result.stderr
