"""The vault service: a small JSON API over HTTP (Starlette on uvicorn).

``e2ebackup vault serve --data-dir DIR`` starts a working vault on SQLite; ``--database-url
postgresql://...`` runs several processes on one PostgreSQL database, all with the same key file.

API (bodies and answers are JSON; binary fields base64, ids hex; see docs/VAULT.md)::

    GET  /v1/status           -> service, protocol, suite, public_key, max_attempts, counts
    POST /v1/register/start   {request}                    -> {record_id, response}
    POST /v1/register/finish  {record_id, upload, blob}    -> 201 {record_id, attempts_left}
    POST /v1/login/start      {record_id, request}         -> {login_id, response, attempts_left}
    POST /v1/login/finish     {login_id, finalization, action: "release" | "reset" | "delete"}
                              -> {attempts_left, max_attempts, failed_attempts,
                                  unfinished_logins, sealed_blob?}; 401 {attempts_left} if it fails
    POST /v1/login/abort      {login_id}                   -> {attempts_left}

With a registration token (``--registration-token-file``), both register calls need the header
``Authorization: Bearer TOKEN``; logins never do (the password is what they prove).

Errors are ``{"error": CODE, "message": TEXT}``: 400 bad_request, 401 login_failed or
unauthorized, 404 unknown_login, 409 record_exists, 410 record_gone, 423 locked. Logs carry
request paths, status codes and the first 4 bytes of record ids; never a request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from e2ebackup import _core
from e2ebackup.errors import (
    E2EBackupError,
    LoginUnknown,
    RecordExists,
    VaultError,
    VaultLocked,
    VaultLoginFailed,
    VaultProtocolError,
    VaultRecordGone,
    VaultUnauthorized,
)
from e2ebackup.keyring.vault_slot import RECORD_ID_SIZE
from e2ebackup.vault import protocol as p
from e2ebackup.vault.server.store import ACTIONS, Store, open_store

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "KEY_FILE",
    "MIN_TOKEN_LENGTH",
    "create_app",
    "load_or_create_setup",
    "load_registration_token",
    "serve",
]

DEFAULT_MAX_ATTEMPTS = 10
LOGIN_TTL = 120.0
SWEEP_EVERY = 30.0
KEY_FILE = "vault-server.key"
# A registration token is a shared secret that admits registrations; shorter ones are guessable.
MIN_TOKEN_LENGTH = 16
log = logging.getLogger("e2ebackup.vault")


def load_or_create_setup(data_dir: str | Path) -> _core.OpaqueServer:
    """The server setup from ``DATA_DIR/vault-server.key`` (mode 0600), made on first start.
    Several processes starting at once agree on one file (it is linked into place). A data dir
    that others may write to is refused: they could put back an old database (and with it
    every spent attempt) or swap the key file."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o022:
        raise VaultError(
            f"the data dir {directory} is writable by other users (mode {mode:o}): chmod go-w it"
        )
    path = directory / KEY_FILE
    if not path.exists():
        server = _core.OpaqueServer()
        tmp = directory / f".{KEY_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, server.setup_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        finally:
            tmp.unlink()
    _refuse_if_shared(path)
    return _core.OpaqueServer(path.read_bytes())


def _refuse_if_shared(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VaultError(f"{path} is readable by other users (mode {mode:o}): chmod 600 it")


def load_registration_token(path: str | Path) -> str:
    """The registration token in ``path`` (one line, mode 0600, at least 16 characters)."""
    path = Path(path)
    try:
        _refuse_if_shared(path)
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise VaultError(f"cannot read the registration token file {path}: {e}") from None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise VaultError(
            f"the registration token in {path} must be one word of at least "
            f"{MIN_TOKEN_LENGTH} characters (for example: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    return token


def _token_digest(token: str) -> bytes:
    # Comparing digests keeps the comparison's time independent of the token and its length.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _short(record_id: bytes) -> str:
    return record_id[:4].hex()


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 4 * p.MAX_MESSAGE:
        raise VaultProtocolError("request body too large")
    try:
        body = json.loads(raw)
    except ValueError:
        raise VaultProtocolError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise VaultProtocolError("the body must be a JSON object")
    return body


Handler = Callable[[Request], Awaitable[JSONResponse]]


def _guarded(handler: Handler) -> Handler:
    async def run(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except VaultRecordGone as e:
            return _error(410, "record_gone", str(e))
        except VaultLocked as e:
            return _error(423, "locked", str(e))
        except LoginUnknown as e:
            return _error(404, "unknown_login", str(e))
        except VaultUnauthorized as e:
            return _error(401, "unauthorized", str(e))
        except RecordExists as e:
            return _error(409, "record_exists", str(e))
        except (VaultProtocolError, E2EBackupError) as e:
            return _error(400, "bad_request", str(e))

    return run


def create_app(
    store: Store,
    server: _core.OpaqueServer,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    login_ttl: float = LOGIN_TTL,
    sweep_every: float = SWEEP_EVERY,
    registration_token: str | None = None,
) -> Starlette:
    """The ASGI app over ``store`` with the server setup ``server``. With
    ``registration_token``, only requests that bear it may register."""
    if not 1 <= max_attempts <= 1000:
        raise VaultError("max_attempts must be 1 to 1000")
    store.bind_public_key(server.public_key)
    expected = _token_digest(registration_token) if registration_token is not None else None

    def admit(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            _token_digest(given.strip()), expected
        ):
            log.warning("registration refused: no valid registration token")
            raise VaultUnauthorized("this vault registers only with its registration token")

    async def status(request: Request) -> JSONResponse:
        counts = await run_in_threadpool(store.counts)
        return JSONResponse(
            {
                "service": p.SERVICE,
                "protocol": p.PROTOCOL,
                "suite": p.SUITE,
                "public_key": server.public_key.hex(),
                "max_attempts": max_attempts,
                "registration": "open" if expected is None else "token",
                **counts,
            }
        )

    async def register_start(request: Request) -> JSONResponse:
        admit(request)
        body = await _body(request)
        reg_request = p.unb64(body.get("request"), "request")
        record_id = _core.generate_key()[:RECORD_ID_SIZE]
        response = await run_in_threadpool(server.registration_response, reg_request, record_id)
        return JSONResponse({"record_id": record_id.hex(), "response": p.b64(response)})

    async def register_finish(request: Request) -> JSONResponse:
        admit(request)
        body = await _body(request)
        record_id = p.unhex(body.get("record_id"), "record_id", RECORD_ID_SIZE)
        upload = p.unb64(body.get("upload"), "upload")
        blob = p.unb64(body.get("blob"), "blob", p.MAX_BLOB)
        if not 0 < len(blob) <= p.MAX_BLOB:
            raise VaultProtocolError(f"blob must be 1 to {p.MAX_BLOB} bytes")
        password_file = _core.opaque_registration_finish(upload)
        await run_in_threadpool(store.create, record_id, password_file, blob, max_attempts)
        log.info("registered record %s", _short(record_id))
        return JSONResponse(
            {"record_id": record_id.hex(), "attempts_left": max_attempts}, status_code=201
        )

    async def login_start(request: Request) -> JSONResponse:
        body = await _body(request)
        record_id = p.unhex(body.get("record_id"), "record_id", RECORD_ID_SIZE)
        cred_request = p.unb64(body.get("request"), "request")
        if len(cred_request) != p.CREDENTIAL_REQUEST_SIZE:
            # Checked before an attempt is charged; a well-sized but invalid one costs one.
            raise VaultProtocolError("request is not an OPAQUE credential request")
        login_id = _core.generate_key()[: p.LOGIN_ID_SIZE]
        context = p.login_context(login_id, record_id)

        def make_state(password_file: bytes | None) -> tuple[bytes, bytes]:
            return server.login_start(cred_request, record_id, password_file, context)

        response, attempts_left = await run_in_threadpool(
            store.begin_login, record_id, max_attempts, login_id, login_ttl, make_state
        )
        log.info("login started for %s: %d attempts left", _short(record_id), attempts_left)
        return JSONResponse(
            {
                "login_id": login_id.hex(),
                "response": p.b64(response),
                "attempts_left": attempts_left,
            }
        )

    async def login_finish(request: Request) -> JSONResponse:
        body = await _body(request)
        login_id = p.unhex(body.get("login_id"), "login_id", p.LOGIN_ID_SIZE)
        finalization = p.unb64(body.get("finalization"), "finalization")
        action = body.get("action", "release")
        if action not in ACTIONS:
            raise VaultProtocolError("action must be 'release', 'reset' or 'delete'")

        def verify(record_id: bytes, state: bytes) -> bytes | None:
            try:
                return server.login_finish(
                    state, p.login_context(login_id, record_id), finalization
                )
            except (VaultLoginFailed, VaultProtocolError):
                return None

        outcome = await run_in_threadpool(
            lambda: store.finish_login(login_id, verify, action=action)
        )
        if not outcome.ok:
            log.info("login failed: %d attempts left", outcome.attempts_left)
            return _error(
                401,
                "login_failed",
                "the login did not verify",
                attempts_left=outcome.attempts_left,
            )
        assert outcome.session_key is not None
        answer: dict[str, Any] = {
            "attempts_left": outcome.attempts_left,
            "max_attempts": outcome.max_attempts,
            "failed_attempts": outcome.failed_attempts,
            "unfinished_logins": outcome.unfinished_logins,
        }
        if outcome.failed_attempts:
            log.info("%d failed attempt(s) reported to the owner", outcome.failed_attempts)
        if action == "delete":
            log.info("record deleted by its owner")
        elif outcome.blob is not None:
            answer["sealed_blob"] = p.b64(
                p.seal_release(outcome.session_key, login_id, outcome.blob)
            )
            log.info("login succeeded: key released%s", ", count reset" * (action == "reset"))
        return JSONResponse(answer)

    async def login_abort(request: Request) -> JSONResponse:
        body = await _body(request)
        login_id = p.unhex(body.get("login_id"), "login_id", p.LOGIN_ID_SIZE)
        outcome = await run_in_threadpool(store.abort_login, login_id)
        return JSONResponse({"attempts_left": outcome.attempts_left})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(sweep_every)
                try:
                    erased = await run_in_threadpool(store.sweep)
                    if erased:
                        log.info("erased %d record(s) out of attempts", erased)
                except Exception:  # keep sweeping; the next round retries
                    log.exception("sweep failed")

        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            store.close()

    routes = [
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/register/start", _guarded(register_start), methods=["POST"]),
        Route("/v1/register/finish", _guarded(register_finish), methods=["POST"]),
        Route("/v1/login/start", _guarded(login_start), methods=["POST"]),
        Route("/v1/login/finish", _guarded(login_finish), methods=["POST"]),
        Route("/v1/login/abort", _guarded(login_abort), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(
    *,
    host: str,
    port: int,
    data_dir: str | Path,
    database_url: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    registration_token_file: str | Path | None = None,
    log_level: str = "info",
) -> None:
    """Runs the vault until interrupted (what ``e2ebackup vault serve`` does)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    server = load_or_create_setup(data_dir)
    token = None
    if registration_token_file is not None:
        token = load_registration_token(registration_token_file)
    store = open_store(data_dir, database_url)
    app = create_app(store, server, max_attempts=max_attempts, registration_token=token)
    log.info(
        "vault on %s:%d over %s, %s, registration %s, public key %s",
        host,
        port,
        "HTTPS" if tls_cert else "HTTP",
        "PostgreSQL" if database_url else f"SQLite in {data_dir}",
        "by token" if token else "open",
        server.public_key.hex(),
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        server_header=False,
    )
