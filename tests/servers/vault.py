"""Real vault processes for the tests: ``e2ebackup vault serve`` on SQLite or on a throwaway
PostgreSQL cluster (initdb + pg_ctl on 127.0.0.1, as an unprivileged user), and a peer vault
built on the independent opaque-snake package.

Run as a script, ``python tests/servers/vault.py peer PORT`` serves the peer vault: our JSON API
over opaque-snake's OPAQUE server, records in memory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30, verify: Any = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v1/status", timeout=2, verify=verify).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


class VaultProcess:
    """``e2ebackup vault serve`` in a subprocess; ``restart()`` keeps its data dir and port.
    ``tls=(cert, key, ca)`` serves HTTPS with that certificate (``ca`` verifies it);
    ``extra`` are more ``vault serve`` options."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        max_attempts: int = 10,
        port: int | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.max_attempts = max_attempts
        self.port = port or free_port()
        self.tls = tls
        self.extra = extra
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: Any = ssl.create_default_context(cafile=str(tls[2])) if tls else True
        self.log = data_dir / f"vault-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> VaultProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "e2ebackup",
            "vault",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--max-attempts",
            str(self.max_attempts),
        ]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        if self.tls:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        cmd += self.extra
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_http(self.url, self.proc, self.log, verify=self.verify)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.url + "/v1/status", verify=self.verify).json()
        return answer

    def public_key(self) -> bytes:
        return bytes.fromhex(self.status()["public_key"])


class PostgresCluster:
    """A throwaway PostgreSQL server from Debian's packages, on 127.0.0.1, trust auth."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="e2ebackup-pg-"))
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
        self.url = f"postgresql://vault@127.0.0.1:{self.port}/vault"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def start(self) -> PostgresCluster:
        data = self.dir / "data"
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "vault", "-E", "UTF8"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off",
            "start",
        )
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                  "vault", "vault")  # fmt: skip
        return self

    def data_files(self) -> list[Path]:
        return [p for p in (self.dir / "data").rglob("*") if p.is_file()]

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(postgres: PostgresCluster) -> Iterator[str]:
    """An empty database of its own for one test, on the session's cluster."""
    import psycopg

    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    admin = postgres.url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[VaultProcess]:
    """A vault on SQLite, default limit of 10."""
    server = VaultProcess(tmp_path / "vault").start()
    try:
        yield server
    finally:
        server.stop()


class PeerProcess:
    """The peer vault (opaque-snake's server behind our JSON API) in a subprocess."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "peer.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "peer", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_http(self.url, self.proc, self.log)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


@pytest.fixture
def peer_vault(tmp_path: Path) -> Iterator[PeerProcess]:
    peer = PeerProcess(tmp_path)
    try:
        yield peer
    finally:
        peer.stop()


def _peer_app() -> object:
    """Our API over opaque-snake: registration, login with a counter, release of the blob."""
    import opaque_snake as osn
    from e2ebackup.vault import protocol as p
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    server = osn.OpaqueServer()
    # The public key: a registration's response carries it; the client reads it from there.
    probe = osn.OpaqueClient()
    req, state = probe.start_registration("probe")
    res = probe.finish_registration(
        server.create_registration_response(req, "probe"), state, "probe"
    )
    public_key = res.server_s_pk
    records: dict[str, dict[str, Any]] = {}
    logins: dict[str, tuple[str, Any]] = {}

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": p.SERVICE,
                "protocol": p.PROTOCOL,
                "suite": "opaque-snake",
                "public_key": public_key.hex(),
                "max_attempts": 10,
            }
        )

    async def register_start(request: Request) -> JSONResponse:
        body = await request.json()
        record_id = os.urandom(16).hex()
        req = osn.RegistrationRequest.from_bytes(p.unb64(body["request"], "request"))
        resp = server.create_registration_response(req, record_id)
        return JSONResponse({"record_id": record_id, "response": p.b64(resp.to_bytes())})

    async def register_finish(request: Request) -> JSONResponse:
        body = await request.json()
        upload = osn.RegistrationUpload.from_bytes(p.unb64(body["upload"], "upload"))
        records[body["record_id"]] = {
            "file": server.finish_registration(upload),
            "blob": p.unb64(body["blob"], "blob"),
            "attempts": 10,
        }
        return JSONResponse({"record_id": body["record_id"], "attempts_left": 10}, 201)

    async def login_start(request: Request) -> JSONResponse:
        body = await request.json()
        record = records[body["record_id"]]
        record["attempts"] -= 1
        req = osn.CredentialRequest.from_bytes(p.unb64(body["request"], "request"))
        resp, state = server.create_credential_response(req, body["record_id"], record["file"])
        login_id = os.urandom(16).hex()
        logins[login_id] = (body["record_id"], state)
        return JSONResponse(
            {
                "login_id": login_id,
                "response": p.b64(resp.to_bytes()),
                "attempts_left": record["attempts"],
            }
        )

    async def login_finish(request: Request) -> JSONResponse:
        body = await request.json()
        record_id, state = logins.pop(body["login_id"])
        fin = osn.CredentialFinalization.from_bytes(p.unb64(body["finalization"], "fin"))
        try:
            keys = server.finish_login(fin, state)
        except osn.OpaqueError:
            return JSONResponse({"error": "login_failed", "message": "no"}, 401)
        record = records[record_id]
        record["attempts"] = 10
        sealed = p.seal_release(
            keys.session_key,
            bytes.fromhex(body["login_id"]),
            bytes(record["blob"]),
        )
        return JSONResponse({"attempts_left": 10, "sealed_blob": p.b64(sealed)})

    async def login_abort(request: Request) -> JSONResponse:
        body = await request.json()
        logins.pop(body["login_id"], None)
        return JSONResponse({"attempts_left": 0})

    return Starlette(
        routes=[
            Route("/v1/status", status),
            Route("/v1/register/start", register_start, methods=["POST"]),
            Route("/v1/register/finish", register_finish, methods=["POST"]),
            Route("/v1/login/start", login_start, methods=["POST"]),
            Route("/v1/login/finish", login_finish, methods=["POST"]),
            Route("/v1/login/abort", login_abort, methods=["POST"]),
        ]
    )


if __name__ == "__main__":
    import uvicorn

    assert sys.argv[1] == "peer"
    uvicorn.run(_peer_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")  # type: ignore[arg-type]
