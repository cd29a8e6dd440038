"""The key vault's service (``e2ebackup vault serve``): the HTTP API in ``app`` (Starlette on
uvicorn) over the records in ``store`` (SQLite or PostgreSQL). Needs the ``vault`` extra; the
client side (``e2ebackup.vault.client``, ``protocol``) never imports it."""

from __future__ import annotations

from e2ebackup.vault.server.app import (
    DEFAULT_MAX_ATTEMPTS,
    KEY_FILE,
    MIN_TOKEN_LENGTH,
    create_app,
    load_or_create_setup,
    load_registration_token,
    serve,
)
from e2ebackup.vault.server.store import (
    ACTIONS,
    LoginOutcome,
    PostgresStore,
    SqliteStore,
    Store,
    open_store,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_MAX_ATTEMPTS",
    "KEY_FILE",
    "MIN_TOKEN_LENGTH",
    "LoginOutcome",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "create_app",
    "load_or_create_setup",
    "load_registration_token",
    "open_store",
    "serve",
]
