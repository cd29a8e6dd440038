"""The vault's records, on SQLite (one process) or PostgreSQL (several processes, one database).

Tables::

    vault_records  id | password_file | blob | attempts_left | max_attempts
                   | created | updated | last_login
    vault_logins   id | record_id | state | expires
    vault_meta     key | value            (the server's public key: one database, one setup)

Guess counting. A login start takes one attempt with one atomic statement::

    UPDATE vault_records SET attempts_left = attempts_left - 1 ...
     WHERE id = ? AND attempts_left > 0 RETURNING attempts_left, password_file

so no two logins, in any process, spend the same attempt, and a crash after it leaves the attempt
spent. Only a finalization that verifies gives attempts back (the counter returns to
``max_attempts``), in the same transaction that deletes the pending login, so a login finishes
at most once. A record at zero whose last pending login failed, was abandoned or expired is
*erased*: password file and wrapped key are overwritten with NULL for good (SQLite runs with
``secure_delete``); the row stays as a tombstone so that later logins answer "gone".

An id the vault does not know gets a *phantom* row (no password file) on its first login start:
it counts down and ends as a tombstone exactly like a real record, so answers never tell a
real record from an unknown one (the OPAQUE response comes from opaque-ke's dummy record).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from e2ebackup.errors import VaultError, VaultLocked, VaultRecordGone

__all__ = [
    "LoginCharge",
    "LoginOutcome",
    "LoginUnknown",
    "PostgresStore",
    "RecordExists",
    "SqliteStore",
    "Store",
    "open_store",
]


class RecordExists(VaultError):
    """A registration for an id that is taken."""


class LoginUnknown(VaultError):
    """No pending login with this id: never started, already finished, or swept."""


@dataclass(frozen=True)
class LoginCharge:
    attempts_left: int
    password_file: bytes | None


@dataclass(frozen=True)
class LoginOutcome:
    ok: bool
    attempts_left: int
    blob: bytes | None = None
    session_key: bytes | None = None


class _Cursor(Protocol):
    def execute(self, sql: str, params: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS vault_records (
        id {blob} PRIMARY KEY,
        password_file {blob},
        blob {blob},
        attempts_left INTEGER NOT NULL CHECK (attempts_left >= 0),
        max_attempts INTEGER NOT NULL,
        created {real} NOT NULL,
        updated {real} NOT NULL,
        last_login {real}
    )""",
    """CREATE TABLE IF NOT EXISTS vault_logins (
        id {blob} PRIMARY KEY,
        record_id {blob} NOT NULL,
        state {blob} NOT NULL,
        expires {real} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS vault_logins_record ON vault_logins (record_id)",
    "CREATE TABLE IF NOT EXISTS vault_meta (key TEXT PRIMARY KEY, value {blob} NOT NULL)",
]

# Erases a record at zero that no live login can restore any more.
_ERASE_IF_IDLE = """
    UPDATE vault_records SET password_file = NULL, blob = NULL, updated = ?
     WHERE id = ? AND attempts_left = 0
       AND (password_file IS NOT NULL OR blob IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM vault_logins WHERE record_id = ? AND expires > ?)
"""


class Store:
    """Shared logic; subclasses provide connections, placeholders and transactions."""

    blob_type = "BLOB"
    real_type = "REAL"

    def _tx(self) -> contextlib.AbstractContextManager[_Cursor]:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql

    def _x(self, cur: _Cursor, sql: str, *params: object) -> Any:
        cur.execute(self._sql(sql), params)
        return cur

    def _create_schema(self, cur: _Cursor) -> None:
        for statement in _SCHEMA:
            self._x(cur, statement.format(blob=self.blob_type, real=self.real_type))

    def close(self) -> None:
        pass

    # -- setup ----------------------------------------------------------------------------------

    def bind_public_key(self, public_key: bytes) -> None:
        """Records the server's public key on first use; refuses a database made with another
        server setup (its password files would all fail)."""
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO vault_meta (key, value) VALUES ('public_key', ?) "
                "ON CONFLICT (key) DO NOTHING",
                public_key,
            )
            row = self._x(cur, "SELECT value FROM vault_meta WHERE key = 'public_key'").fetchone()
        if bytes(row[0]) != public_key:
            raise VaultError(
                "this database belongs to a vault with another server key: use that key file"
            )

    # -- records --------------------------------------------------------------------------------

    def create(
        self, record_id: bytes, password_file: bytes, blob: bytes, max_attempts: int
    ) -> None:
        now = time.time()
        with self._tx() as cur:
            row = self._x(
                cur,
                "INSERT INTO vault_records (id, password_file, blob, attempts_left, max_attempts,"
                " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
                " RETURNING id",
                record_id,
                password_file,
                blob,
                max_attempts,
                max_attempts,
                now,
                now,
            ).fetchone()
        if row is None:
            raise RecordExists("a record with this id exists")

    def begin_login(
        self,
        record_id: bytes,
        max_attempts: int,
        login_id: bytes,
        ttl: float,
        make_state: Callable[[bytes | None], tuple[bytes, bytes]],
    ) -> tuple[bytes, int]:
        """Charges one attempt, then runs ``make_state(password_file)`` (OPAQUE's server login
        start: ``(response, sealed_state)``) and stores the pending login. Returns the response
        and the attempts left. :class:`VaultRecordGone` or :class:`VaultLocked` at zero."""
        now = time.time()
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO vault_records (id, attempts_left, max_attempts, created, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                record_id,
                max_attempts,
                max_attempts,
                now,
                now,
            )
            row = self._x(
                cur,
                "UPDATE vault_records SET attempts_left = attempts_left - 1, updated = ?"
                " WHERE id = ? AND attempts_left > 0 RETURNING attempts_left, password_file",
                now,
                record_id,
            ).fetchone()
            if row is None:
                self._x(cur, _ERASE_IF_IDLE, now, record_id, record_id, now)
                live = self._x(
                    cur,
                    "SELECT 1 FROM vault_logins WHERE record_id = ? AND expires > ?",
                    record_id,
                    now,
                ).fetchone()
                if live is None:
                    raise VaultRecordGone(
                        "the vault no longer holds this key (too many wrong passwords, or it "
                        "was deleted): use the recovery key"
                    )
                raise VaultLocked(
                    "no attempts left while the last one is still in progress; try again later"
                )
            attempts_left = int(row[0])
            password_file = None if row[1] is None else bytes(row[1])
        # The attempt is spent (committed) before any response exists.
        response, state = make_state(password_file)
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO vault_logins (id, record_id, state, expires) VALUES (?, ?, ?, ?)",
                login_id,
                record_id,
                state,
                now + ttl,
            )
        return response, attempts_left

    def finish_login(
        self,
        login_id: bytes,
        verify: Callable[[bytes, bytes], bytes | None],
        *,
        delete: bool = False,
    ) -> LoginOutcome:
        """Takes the pending login (once), runs ``verify(record_id, state)`` (the session key,
        or None) and, on success, restores the attempts and returns the wrapped key, or, with
        ``delete``, erases the record. On failure, erases a record left at zero."""
        now = time.time()
        with self._tx() as cur:
            row = self._x(
                cur,
                "DELETE FROM vault_logins WHERE id = ? RETURNING record_id, state, expires",
                login_id,
            ).fetchone()
            if row is None:
                raise LoginUnknown("no such login: it expired, finished, or never started")
            record_id, state, expires = bytes(row[0]), bytes(row[1]), float(row[2])
            session_key = verify(record_id, state) if expires > now else None
            if session_key is not None:
                if delete:
                    done = self._x(
                        cur,
                        "UPDATE vault_records SET password_file = NULL, blob = NULL,"
                        " attempts_left = 0, updated = ? WHERE id = ?"
                        " AND password_file IS NOT NULL RETURNING attempts_left, blob",
                        now,
                        record_id,
                    ).fetchone()
                else:
                    done = self._x(
                        cur,
                        "UPDATE vault_records SET attempts_left = max_attempts, updated = ?,"
                        " last_login = ? WHERE id = ? AND password_file IS NOT NULL"
                        " RETURNING attempts_left, blob",
                        now,
                        now,
                        record_id,
                    ).fetchone()
                if done is not None:
                    blob = None if delete or done[1] is None else bytes(done[1])
                    return LoginOutcome(True, int(done[0]), blob, session_key)
            return self._failed(cur, record_id, now)

    def abort_login(self, login_id: bytes) -> LoginOutcome:
        """An honest client's word that its login failed: the pending login ends now."""
        return self.finish_login(login_id, lambda _record, _state: None)

    def _failed(self, cur: _Cursor, record_id: bytes, now: float) -> LoginOutcome:
        self._x(cur, _ERASE_IF_IDLE, now, record_id, record_id, now)
        row = self._x(
            cur,
            "SELECT attempts_left, password_file FROM vault_records WHERE id = ?",
            record_id,
        ).fetchone()
        return LoginOutcome(False, 0 if row is None else int(row[0]))

    def sweep(self) -> int:
        """Drops expired pending logins and erases the records they left at zero."""
        now = time.time()
        with self._tx() as cur:
            self._x(cur, "DELETE FROM vault_logins WHERE expires <= ?", now)
            erased = self._x(
                cur,
                "UPDATE vault_records SET password_file = NULL, blob = NULL, updated = ?"
                " WHERE attempts_left = 0 AND password_file IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM vault_logins WHERE record_id = vault_records.id"
                " AND expires > ?) RETURNING id",
                now,
                now,
            )
            return len(erased.fetchall())

    def counts(self) -> dict[str, int]:
        with self._tx() as cur:
            row = self._x(
                cur,
                "SELECT COUNT(*) FROM vault_records WHERE password_file IS NOT NULL",
            ).fetchone()
            pending = self._x(cur, "SELECT COUNT(*) FROM vault_logins").fetchone()
        return {"records": int(row[0]), "pending_logins": int(pending[0])}


class SqliteStore(Store):
    """One file, WAL mode, one connection per thread; write transactions are ``BEGIN
    IMMEDIATE``, so they run one at a time (several processes on one file work too)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._tx() as cur:
            self._create_schema(cur)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        conn = self._conn()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()


class PostgresStore(Store):
    """PostgreSQL through psycopg 3, one connection per thread, explicit transactions at READ
    COMMITTED. The decrement is a single UPDATE: row locks make concurrent logins, in any
    process, take turns."""

    blob_type = "BYTEA"
    real_type = "DOUBLE PRECISION"

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        with self._tx() as cur:
            # Several processes may start at once: one creates the schema.
            cur.execute("SELECT pg_advisory_xact_lock(7244917230)")
            self._create_schema(cur)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        conn = self._conn()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except self._psycopg.OperationalError:
            conn.close()  # reconnect next time
            raise

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()


def open_store(data_dir: str | Path, database_url: str | None = None) -> Store:
    """PostgreSQL for a ``postgresql://`` URL, else SQLite at ``DATA_DIR/vault.sqlite3``."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise VaultError("--database-url must be a postgresql:// URL")
        return PostgresStore(database_url)
    path = Path(data_dir) / "vault.sqlite3"
    fresh = not path.exists()
    store = SqliteStore(path)
    if fresh:
        os.chmod(path, 0o600)
    return store
