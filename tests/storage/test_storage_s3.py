"""The S3 backend against a real S3 server (``rclone serve s3`` on 127.0.0.1): the conformance
suite, multipart uploads (parallel, bounded memory, resumed after dropped connections, a client
crash and a server restart), injected faults through a proxy, credentials and integrity."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from e2ebackup.errors import (
    InvalidArgument,
    ObjectExists,
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
)
from e2ebackup.storage import RetryingStorage, S3Storage, Storage, open_storage
from servers.fault_proxy import Fault, FaultProxy
from storage_conformance import StorageConformance, put

if TYPE_CHECKING:
    from servers.cloud import S3Server

# The session-scoped servers (s3_server, ...) of tests/servers/cloud.py. (Loaded as a plugin
# before anything here imports it, so that pytest rewrites its asserts.)
pytest_plugins = ["servers.cloud"]

MIB = 1 << 20
PART = 5 * MIB  # S3's smallest part
BUCKET = "e2ebackup"


def make(s3: S3Server, endpoint: str | None = None, **kwargs: Any) -> S3Storage:
    """A backend on a fresh prefix of the test bucket."""
    options: dict[str, Any] = {
        "endpoint_url": endpoint or s3.endpoint,
        "aws_access_key_id": s3.access_key,
        "aws_secret_access_key": s3.secret_key,
        "part_size": PART,
        "multipart_threshold": PART,
    }
    options.update(kwargs)
    return S3Storage(BUCKET, f"t-{uuid.uuid4().hex[:12]}", **options)


def retrying(inner: Storage, attempts: int = 6) -> RetryingStorage:
    return RetryingStorage(inner, attempts=attempts, sleep=lambda _: None)


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def put_data(storage: Storage, name: str, data: bytes) -> None:
    storage.put(name, io.BytesIO(data), size=len(data), sha256=hashlib.sha256(data).digest())


def reached_server(proxy: FaultProxy) -> list[int]:
    """Part numbers of the UploadParts the server stored (answered, or answered and then lost
    on the way back)."""
    return [
        r.part
        for r in proxy.records("PUT", "partNumber=")
        if r.status == 200 or r.fault == "close_after_forward"
    ]


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


# ---------------------------------------------------------------- conformance


class TestS3Conformance(StorageConformance):
    @pytest.fixture
    def storage(self, s3_server: S3Server) -> Iterator[Storage]:
        with make(s3_server) as s:
            yield s


class TestS3MultipartConformance(StorageConformance):
    """Every non-empty object as a multipart upload."""

    @pytest.fixture
    def storage(self, s3_server: S3Server) -> Iterator[Storage]:
        with make(s3_server, multipart_threshold=0, concurrency=2) as s:
            yield s


class TestS3ChaosConformance(StorageConformance):
    """The whole suite through RetryingStorage while every 5th request fails with a 503."""

    @pytest.fixture
    def storage(self, s3_server: S3Server, proxy: FaultProxy) -> Iterator[Storage]:
        proxy.add(Fault("status", every=5, status=503, code="SlowDown"))
        with retrying(make(s3_server, proxy.url, multipart_threshold=MIB), attempts=8) as s:
            yield s


# ---------------------------------------------------------------- multipart uploads


class Tracking(io.BytesIO):
    """Remembers how far the backend has read."""

    high = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.high = max(self.high, self.tell())
        return data


def test_multipart_parts_go_in_parallel_with_bounded_buffering(
    s3_server: S3Server, proxy: FaultProxy
) -> None:
    data = data_of(6 * PART + 12345)
    s = make(s3_server, proxy.url, concurrency=3)
    hold = proxy.add(Fault("hold", "PUT", "partNumber=", times=1000))
    src = Tracking(data)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            s.put("data/big", src, size=len(data), sha256=hashlib.sha256(data).digest())
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=upload)
    t.start()
    try:
        wait_for(lambda: proxy.in_flight == 3, "three parts in flight")
        time.sleep(0.3)  # give a runaway reader the chance to show itself
        # Three parts are buffered and uploading; the reader waits for a free buffer.
        assert proxy.in_flight == 3
        assert src.high <= 3 * PART
    finally:
        hold.release.set()
        t.join(60)
    assert not errors
    assert sorted(reached_server(proxy)) == list(range(1, 8))
    assert s.parts_uploaded == 7
    assert s.parts_reused == 0
    assert s.read("data/big") == data
    boundary = 2 * PART
    assert s.read("data/big", offset=boundary - 5, length=10) == data[boundary - 5 : boundary + 5]
    assert s.stat("data/big").size == len(data)


def test_large_objects_get_larger_parts(s3_server: S3Server) -> None:
    s = make(s3_server)
    assert s._part_size_for(10 * PART) == PART
    assert s._part_size_for(200_000 * PART) >= 200_000 * PART // 10_000
    with pytest.raises(InvalidArgument):
        make(s3_server, part_size=MIB)


@pytest.mark.parametrize("action", ["close", "close_after_forward"])
def test_put_resumes_after_dropped_connections_reusing_parts(
    s3_server: S3Server, proxy: FaultProxy, action: str
) -> None:
    """A part's connection is dropped (before the server saw it, or after it stored it and
    before the answer came back): the retried put finds the interrupted upload, reuses every
    part already there and uploads each missing one once."""
    data = data_of(5 * PART + 999, seed=2)
    inner = make(s3_server, proxy.url, concurrency=2)
    s = retrying(inner)
    proxy.add(Fault(action, "PUT", "partNumber=", nth=3))  # type: ignore[arg-type]
    put_data(s, "data/resumed", data)
    assert s.retries == 1
    assert inner.uploads_resumed == 1
    assert inner.parts_reused >= 2
    assert sorted(reached_server(proxy)) == list(range(1, 7))  # nothing uploaded twice
    # Every part was sent once; the one whose answer was lost is not counted as sent.
    assert inner.parts_uploaded + (action == "close_after_forward") == 6
    assert s.read("data/resumed") == data


CRASHING_CLIENT = """
import hashlib, io, random, sys
from e2ebackup.storage import S3Storage
endpoint, prefix, access, secret, size = sys.argv[1:6]
data = random.Random(3).randbytes(int(size))
s = S3Storage("e2ebackup", prefix, endpoint_url=endpoint, aws_access_key_id=access,
              aws_secret_access_key=secret, part_size=5 << 20, multipart_threshold=5 << 20,
              concurrency=2)
s.put("data/crash", io.BytesIO(data), size=len(data), sha256=hashlib.sha256(data).digest())
print("finished", flush=True)
"""


def test_put_resumes_after_the_client_is_killed(s3_server: S3Server, proxy: FaultProxy) -> None:
    """A backup process dies (SIGKILL) mid-upload; the next one resumes the upload."""
    size = 6 * PART + 7
    data = random.Random(3).randbytes(size)
    s = make(s3_server, proxy.url, concurrency=2)
    proxy.add(Fault("hold", "PUT", "partNumber=", nth=3, times=1000))
    args = [proxy.url, s.prefix, s3_server.access_key, s3_server.secret_key, str(size)]
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CLIENT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: len(reached_server(proxy)) == 2 and proxy.in_flight >= 1, "2 parts")
    finally:
        child.kill()
        out, err = child.communicate(timeout=30)
    assert b"finished" not in out, err
    # Releases the held requests of the dead client. A request whose body the client had
    # wholly written to the socket before it died still reaches the server (as it would over
    # a real network); a torn one never does.
    proxy.clear()
    wait_for(lambda: proxy.in_flight == 0, "the held requests to end")
    before = reached_server(proxy)
    assert {1, 2} <= set(before)
    assert len(before) == len(set(before))

    put_data(s, "data/crash", data)
    assert s.uploads_resumed == 1
    assert s.parts_reused == len(before)
    assert s.parts_uploaded == 7 - len(before)
    assert sorted(reached_server(proxy)) == list(range(1, 8))  # each part once, across both
    assert s.read("data/crash") == data


def test_server_killed_mid_upload_and_restarted(tmp_path: Path) -> None:
    """The S3 server dies (SIGKILL) in the middle of a multipart upload and comes back on the
    same port and folder; the retried put completes, the data is intact and nothing is left
    behind in listings.

    `rclone serve s3` keeps multipart uploads in memory, so after its restart the interrupted
    upload is gone and the parts sent before the crash are sent again (once). A server that
    keeps uploads across restarts (AWS, MinIO) has its parts reused instead, as the tests above
    show; the assertions hold either way."""
    from servers.cloud import start_s3_server

    s3 = start_s3_server(tmp_path)
    try:
        s3.create_bucket(BUCKET)
        with FaultProxy(s3.endpoint) as proxy:
            data = data_of(6 * PART + 1, seed=4)
            inner = make(s3, proxy.url, concurrency=2)
            s = RetryingStorage(inner, attempts=12, base_delay=0.05, max_delay=0.5)
            hold = proxy.add(Fault("hold", "PUT", "partNumber=", nth=3, times=1))
            errors: list[BaseException] = []

            def upload() -> None:
                try:
                    put_data(s, "data/restart", data)
                except BaseException as e:
                    errors.append(e)

            t = threading.Thread(target=upload)
            t.start()
            wait_for(lambda: len(reached_server(proxy)) >= 2 and hold.fired == 1, "2 parts")
            s3.server.kill()
            hold.release.set()  # the held part now meets a dead server
            wait_for(lambda: s.retries >= 1, "a failed attempt")
            mark = len(proxy.records())
            s3.server.start()
            t.join(60)
            assert not errors, errors
            assert s.read("data/restart") == data
            after = [
                r.part
                for r in proxy.records()[mark:]
                if r.method == "PUT" and r.part and r.status == 200
            ]
            assert len(after) == len(set(after))  # no part sent twice after the restart
            assert inner.parts_reused + len(after) == 7  # every part reused or sent once
            assert [o.name for o in inner.list()] == ["data/restart"]
            inner.cleanup_incomplete(0)
    finally:
        s3.server.stop()


def test_a_mismatching_interrupted_upload_is_discarded(s3_server: S3Server) -> None:
    """Same key, other bytes in the interrupted upload's first part: not reused, aborted, and
    the retry starts a fresh upload."""
    data = data_of(2 * PART + 3, seed=5)
    inner = make(s3_server)
    client = s3_server.client()
    key = inner.prefix + "data/odd"
    up = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=b"z" * PART)
    s = retrying(inner)
    put_data(s, "data/odd", data)
    assert s.retries == 1
    assert inner.parts_reused == 0
    assert s.read("data/odd") == data


def test_cleanup_incomplete_aborts_stale_uploads(s3_server: S3Server) -> None:
    s = make(s3_server)
    client = s3_server.client()
    key = s.prefix + "data/stale"
    up = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=b"s" * PART)
    assert s.cleanup_incomplete(older_than=3600) == 0
    assert s.cleanup_incomplete(older_than=0) == 1
    assert s._find_upload(key) is None
    assert s.cleanup_incomplete(older_than=0) == 0


# ---------------------------------------------------------------- injected faults


def _single(s: Storage) -> None:
    put_data(s, "data/single", b"single object" * 100)
    assert s.read("data/single") == b"single object" * 100


def _multipart(s: Storage) -> None:
    data = data_of(PART + 10, seed=6)
    put_data(s, "data/multi", data)
    assert s.read("data/multi") == data


def _get(s: Storage) -> None:
    put_data(s, "data/get", b"g" * 5000)
    assert s.read("data/get", offset=10, length=20) == b"g" * 20


def _listing(s: Storage) -> None:
    for i in range(5):
        put_data(s, f"index/{i}", b"%d" % i)
    assert sorted(o.name for o in s.list("index/")) == [f"index/{i}" for i in range(5)]


def fresh(fault: Fault) -> Fault:
    """A copy with its own counters (the table below is shared by the parametrized tests)."""
    return dataclasses.replace(fault, seen=0, fired=0, release=threading.Event())


FAULTS: list[tuple[str, Fault, Callable[[Storage], None]]] = [
    ("PutObject 503 SlowDown", Fault("status", "PUT", "data/single", status=503), _single),
    (
        "PutObject 500",
        Fault("status", "PUT", "data/single", status=500, code="InternalError"),
        _single,
    ),
    ("PutObject dropped", Fault("close", "PUT", "data/single"), _single),
    ("PutObject answer lost", Fault("close_after_forward", "PUT", "data/single"), _single),
    ("PutObject corrupted", Fault("corrupt", "PUT", "data/single"), _single),
    ("HeadObject 503", Fault("status", "HEAD", "data/single", status=503), _single),
    ("GetObject 503", Fault("status", "GET", "data/get", status=503), _get),
    ("GetObject dropped", Fault("close", "GET", "data/get"), _get),
    ("UploadPart SlowDown", Fault("status", "PUT", "partNumber=2", status=503), _multipart),
    ("UploadPart corrupted", Fault("corrupt", "PUT", "partNumber=1"), _multipart),
    (
        "Create 500",
        Fault("status", "POST", "uploads", status=500, code="InternalError"),
        _multipart,
    ),
    ("Complete dropped", Fault("close", "POST", "uploadId="), _multipart),
    ("Complete answer lost", Fault("close_after_forward", "POST", "uploadId="), _multipart),
    ("ListObjects page 2 503", Fault("status", "GET", "continuation-token", status=503), _listing),
]


@pytest.mark.parametrize(("fault", "scenario"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_injected_faults_are_retried_to_success(
    s3_server: S3Server, proxy: FaultProxy, fault: Fault, scenario: Callable[[Storage], None]
) -> None:
    fault = proxy.add(fresh(fault))
    s = retrying(make(s3_server, proxy.url, page_size=2))
    scenario(s)
    assert fault.fired == 1
    assert s.retries >= 1


@pytest.mark.parametrize(
    ("fault", "scenario"),
    [(f[1], f[2]) for f in FAULTS if f[0] in ("PutObject 503 SlowDown", "GetObject dropped")],
)
def test_without_retries_faults_are_storage_unavailable(
    s3_server: S3Server, proxy: FaultProxy, fault: Fault, scenario: Callable[[Storage], None]
) -> None:
    proxy.add(fresh(fault))
    with pytest.raises(StorageUnavailable):
        scenario(make(s3_server, proxy.url))


def test_server_down_is_unavailable(s3_server: S3Server) -> None:
    from servers.cloud import free_port

    s = make(s3_server, f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(StorageUnavailable):
        s.stat("config")


def test_list_paginates(s3_server: S3Server, proxy: FaultProxy) -> None:
    s = make(s3_server, proxy.url, page_size=2)
    for i in range(5):
        put(s, f"snapshots/{i}", b"x")
    proxy.reset_log()
    assert sorted(o.name for o in s.list("snapshots/")) == [f"snapshots/{i}" for i in range(5)]
    assert len(proxy.records("GET", "list-type=2")) == 3


# ---------------------------------------------------------------- integrity


def test_a_stored_object_that_does_not_match_is_deleted(
    s3_server: S3Server, proxy: FaultProxy
) -> None:
    """The check after the upload sees another checksum (here: a proxy that rewrites the ETag
    of the HeadObject answer): the object is deleted and the put fails."""
    s = make(s3_server, proxy.url)
    proxy.add(Fault("etag", "HEAD", "data/damaged", nth=2))  # 1: existence check, 2: verify
    with pytest.raises(StorageError, match="checksum") as info:
        put(s, "data/damaged", b"d" * 1000)
    assert not isinstance(info.value, StorageUnavailable)
    assert not s.exists("data/damaged")


def test_content_md5_is_sent_and_checked_by_the_server(
    s3_server: S3Server, proxy: FaultProxy
) -> None:
    s = make(s3_server, proxy.url)
    proxy.add(Fault("corrupt", "PUT", "data/bad-digest"))
    with pytest.raises(StorageUnavailable, match="BadDigest"):
        put(s, "data/bad-digest", b"b" * 1000)
    assert not s.exists("data/bad-digest")


def test_bad_data_never_completes_a_multipart_upload(s3_server: S3Server) -> None:
    s = make(s3_server)
    data = data_of(2 * PART, seed=7)
    with pytest.raises(StorageError, match="does not match"):
        s.put("data/bad", io.BytesIO(data), size=len(data), sha256=b"\0" * 32)
    with pytest.raises(StorageError, match="does not match"):
        s.put("data/long", io.BytesIO(data + b"+"), size=len(data), sha256=b"\0" * 32)
    assert not s.exists("data/bad")
    assert not s.exists("data/long")
    assert s._find_upload(s.prefix + "data/bad") is None  # aborted, not left to resume


def test_signed_payloads(s3_server: S3Server) -> None:
    """Bodies go unsigned by default (Content-MD5 protects them); signing them works too."""
    s = make(s3_server, sign_payload=True)
    data = data_of(PART + 3, seed=8)
    put_data(s, "data/signed", data)
    put(s, "data/small", b"small")
    assert s.read("data/signed") == data


def test_write_once(s3_server: S3Server) -> None:
    s = make(s3_server)
    data = data_of(PART + 1)
    put_data(s, "data/once", data)
    with pytest.raises(ObjectExists):
        put_data(s, "data/once", data)
    with pytest.raises(ObjectExists):  # retrying does not hide it when nothing failed
        put_data(retrying(s), "data/once", data)


def test_reads(s3_server: S3Server) -> None:
    s = make(s3_server)
    put(s, "empty", b"")
    put(s, "three", b"abc")
    assert s.read("empty") == b""
    assert s.read("empty", offset=0, length=0) == b""
    assert s.read("three", offset=3) == b""
    assert s.read("three", offset=1) == b"bc"
    with pytest.raises(ObjectNotFound):
        s.open("missing", offset=5)
    with pytest.raises(ObjectNotFound):
        s.read("missing", length=0)
    with s.open("three") as f:
        assert f.read(1) == b"a"  # closing early is fine
    s.delete("three")
    s.delete("three")
    assert [o.name for o in s.list()] == ["empty"]


# ---------------------------------------------------------------- credentials


def assert_no_secret(e: BaseException, *secrets: str) -> None:
    text = f"{e} {e!r} {e.__cause__!r} {e.__context__!r}"
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize(
    ("access", "secret"),
    [("", "wrong-secret-key-value-12345"), ("unknown-access-key", "")],
    ids=["wrong secret", "unknown access key"],
)
def test_wrong_credentials_are_auth_errors_without_secrets(
    s3_server: S3Server, access: str, secret: str
) -> None:
    access = access or s3_server.access_key
    secret = secret or s3_server.secret_key
    s = make(s3_server, aws_access_key_id=access, aws_secret_access_key=secret)
    for op in (
        lambda: s.stat("config"),
        lambda: put(s, "config", b"x"),
        lambda: list(s.list()),
        lambda: s.read("config"),
        lambda: s.delete("config"),
    ):
        with pytest.raises(StorageAuthError) as info:
            op()
        assert_no_secret(info.value, secret, s3_server.secret_key)
        assert "access key" in str(info.value)
    assert secret not in s.location


def test_missing_bucket_is_an_auth_error(s3_server: S3Server) -> None:
    s = S3Storage(
        "no-such-bucket",
        "x",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    for op in (
        lambda: s.stat("config"),
        lambda: put(s, "config", b"x"),
        lambda: list(s.list()),
        lambda: s.read("config"),
    ):
        with pytest.raises(StorageAuthError, match=r"no-such-bucket.*does not exist") as info:
            op()
        assert_no_secret(info.value, s3_server.secret_key)


def test_no_credentials_at_all(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    s = S3Storage(BUCKET, "x", endpoint_url=s3_server.endpoint)
    with pytest.raises(StorageAuthError, match="no S3 credentials"):
        s.stat("config")


# ---------------------------------------------------------------- open_storage


def test_open_storage_s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    prefix = f"open-{uuid.uuid4().hex[:8]}/repo"
    s = open_storage(f"s3://{BUCKET}/{prefix}", s3_endpoint=s3_server.endpoint)
    assert isinstance(s, RetryingStorage)
    put(s, "config", b"hello")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    again = open_storage(f"s3://{BUCKET}/{prefix}/")
    assert again.read("config") == b"hello"
    assert [o.name for o in again.list()] == ["config"]
    assert s3_server.secret_key not in again.location
    with pytest.raises(InvalidArgument):
        open_storage("s3:///prefix")
    with pytest.raises(InvalidArgument):
        open_storage("ftp://host/x")


def test_boto3_is_imported_lazily() -> None:
    code = (
        "import sys, e2ebackup, e2ebackup.storage\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
