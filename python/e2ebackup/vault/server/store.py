"""The vault's records, on SQLite (one process) or PostgreSQL (several processes, one database).

Tables::

    vault_records  id | password_file | blob | attempts_left | max_attempts
                   | created | updated | last_login | failed_since_unlock
    vault_logins   id | record_id | state | expires
    vault_meta     key | value            (the server's public key: one database, one setup)

Guess counting (docs/VAULT.md, Guess counting). A login start takes one attempt and stores the
pending login in one transaction, before its answer exists::

    UPDATE vault_records SET attempts_left = attempts_left - 1 ...
     WHERE id = ? AND attempts_left > 0 RETURNING attempts_left, password_file

so no two logins, in any process, spend the same attempt, and a crash leaves either nothing or
the attempt spent. A finalization that verifies gives back *its own* attempt only: attempts that
other logins spent stay spent until the owner resets the count on purpose (a verified login
with ``reset``). Every login that ends without verifying (a wrong finalization, an abort, an
expiry) adds one to ``failed_since_unlock``, which the next verified login reports and clears: a
pending login ends exactly once (it is deleted by the statement that ends it), so each failure
is reported exactly once. A record at zero whose last pending login failed, was abandoned or
expired is *erased*: password file and wrapped key are overwritten with NULL for good (SQLite
runs with ``secure_delete``); the row stays as a tombstone so that later logins answer "gone".

An id the vault does not know gets a *phantom* row (no password file) on its first login start:
it counts down and ends as a tombstone exactly like a real record, so answers never tell a
real record from an unknown one (the OPAQUE response comes from opaque-ke's dummy record).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from e2ebackup.errors import LoginUnknown, RecordExists, VaultError, VaultLocked, VaultRecordGone

__all__ = [
    "ACTIONS",
    "LoginOutcome",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "open_store",
]


@dataclass(frozen=True)
class LoginOutcome:
    """How a pending login ended. ``failed_attempts`` (logins that ended without verifying
    since the last verified one) and ``unfinished_logins`` (others still pending) are set for
    a verified login only. ``blob`` and ``session_key`` never show in repr and never pickle."""

    ok: bool
    attempts_left: int
    blob: bytes | None = field(default=None, repr=False)
    session_key: bytes | None = field(default=None, repr=False)
    max_attempts: int = 0
    failed_attempts: int = 0
    unfinished_logins: int = 0

    def __reduce__(self) -> Any:
        raise TypeError("a login outcome holds a session key: it is not pickled")


class _Cursor(Protocol):
    def execute(self, sql: str, params: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS vault_records (
        id {blob} PRIMARY KEY,
        password_file {blob},
        blob {blob},
        attempts_left INTEGER NOT NULL CHECK (attempts_left >= 0),
        max_attempts INTEGER NOT NULL,
        created {real} NOT NULL,
        updated {real} NOT NULL,
        last_login {real},
        failed_since_unlock INTEGER NOT NULL DEFAULT 0
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

# Databases made before failed attempts were counted (the counter then returned to
# max_attempts at every verified login): the attempts spent since then, less the logins still
# pending, are the failures since the last verified login.
_MIGRATE_FAILED_COUNT = [
    "ALTER TABLE vault_records ADD COLUMN failed_since_unlock INTEGER NOT NULL DEFAULT 0",
    """UPDATE vault_records SET failed_since_unlock = max_attempts - attempts_left
        - (SELECT COUNT(*) FROM vault_logins WHERE record_id = vault_records.id)
       WHERE password_file IS NOT NULL AND max_attempts - attempts_left
        > (SELECT COUNT(*) FROM vault_logins WHERE record_id = vault_records.id)""",
]

# Erases a record at zero that no live login can restore any more.
_ERASE_IF_IDLE = """
    UPDATE vault_records SET password_file = NULL, blob = NULL, updated = ?
     WHERE id = ? AND attempts_left = 0
       AND (password_file IS NOT NULL OR blob IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM vault_logins WHERE record_id = ? AND expires > ?)
"""

# What a verified login does to its record: ``release`` gives back its own attempt (never above
# the maximum), ``reset`` restores every attempt no other login is still holding, ``delete``
# erases the record. Each clears the failed count it reports.
_VERIFIED = {
    "release": """UPDATE vault_records SET attempts_left = CASE WHEN attempts_left < max_attempts
                   THEN attempts_left + 1 ELSE max_attempts END, failed_since_unlock = 0,
                   updated = ?, last_login = ? WHERE id = ? AND password_file IS NOT NULL
                   RETURNING attempts_left, blob, max_attempts""",
    "reset": """UPDATE vault_records SET attempts_left = max_attempts
                   - (SELECT COUNT(*) FROM vault_logins WHERE record_id = vault_records.id),
                   failed_since_unlock = 0, updated = ?, last_login = ?
                   WHERE id = ? AND password_file IS NOT NULL
                   RETURNING attempts_left, blob, max_attempts""",
    "delete": """UPDATE vault_records SET password_file = NULL, blob = NULL, attempts_left = 0,
                   failed_since_unlock = 0, updated = ?, last_login = ?
                   WHERE id = ? AND password_file IS NOT NULL
                   RETURNING attempts_left, NULL, max_attempts""",
}
ACTIONS = tuple(_VERIFIED)


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

    def _columns(self, cur: _Cursor, table: str) -> set[str]:
        raise NotImplementedError

    def _create_schema(self, cur: _Cursor) -> None:
        for statement in _SCHEMA:
            self._x(cur, statement.format(blob=self.blob_type, real=self.real_type))
        if "failed_since_unlock" not in self._columns(cur, "vault_records"):
            for statement in _MIGRATE_FAILED_COUNT:
                self._x(cur, statement)

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
        """Charges one attempt, runs ``make_state(password_file)`` (OPAQUE's server login
        start: ``(response, sealed_state)``) and stores the pending login, in one transaction:
        the response leaves only once the attempt is spent, and an attempt is never spent
        without its pending login (which ends, at the latest by expiry, as a failure or a
        verified login). Returns the response and the attempts left. :class:`VaultRecordGone`
        or :class:`VaultLocked` at zero."""
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
                gone = live is None
            else:
                gone = False
                attempts_left = int(row[0])
                password_file = None if row[1] is None else bytes(row[1])
                response, state = make_state(password_file)
                self._x(
                    cur,
                    "INSERT INTO vault_logins (id, record_id, state, expires) VALUES (?, ?, ?, ?)",
                    login_id,
                    record_id,
                    state,
                    now + ttl,
                )
        # Raised after the transaction, so that an erasure at zero is committed.
        if row is not None:
            return response, attempts_left
        if gone:
            raise VaultRecordGone(
                "the vault no longer holds this key (too many wrong passwords, or it "
                "was deleted): use the recovery key"
            )
        raise VaultLocked(
            "no attempts left while the last one is still in progress; try again later"
        )

    def finish_login(
        self,
        login_id: bytes,
        verify: Callable[[bytes, bytes], bytes | None],
        *,
        delete: bool = False,
        action: str | None = None,
    ) -> LoginOutcome:
        """Takes the pending login (once) and runs ``verify(record_id, state)`` (the session
        key, or None). Verified, it does ``action`` (``release``, ``reset`` or ``delete``; see
        docs/VAULT.md) and returns the wrapped key with the failures since the last verified
        login. Not verified, it counts one failure and erases a record left at zero."""
        action = action or ("delete" if delete else "release")
        if action not in _VERIFIED:
            raise VaultError(f"unknown login action {action!r}")
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
                # Expired logins are failures to report now, not logins to wait for.
                self._end_expired(cur, now, record_id)
                # Reads the count under the row's lock (taken by this UPDATE), so that no
                # failure counted meanwhile by another process is cleared unreported.
                before = self._x(
                    cur,
                    "UPDATE vault_records SET updated = ? WHERE id = ?"
                    " RETURNING failed_since_unlock",
                    now,
                    record_id,
                ).fetchone()
                done = self._x(cur, _VERIFIED[action], now, now, record_id).fetchone()
                if done is not None and before is not None:
                    unfinished = self._x(
                        cur, "SELECT COUNT(*) FROM vault_logins WHERE record_id = ?", record_id
                    ).fetchone()
                    return LoginOutcome(
                        True,
                        int(done[0]),
                        None if done[1] is None else bytes(done[1]),
                        session_key,
                        max_attempts=int(done[2]),
                        failed_attempts=int(before[0]),
                        unfinished_logins=int(unfinished[0]),
                    )
            return self._failed(cur, record_id, now)

    def abort_login(self, login_id: bytes) -> LoginOutcome:
        """An honest client's word that its login failed: the pending login ends now."""
        return self.finish_login(login_id, lambda _record, _state: None)

    def _failed(self, cur: _Cursor, record_id: bytes, now: float) -> LoginOutcome:
        self._x(
            cur,
            "UPDATE vault_records SET failed_since_unlock = failed_since_unlock + 1 WHERE id = ?",
            record_id,
        )
        self._x(cur, _ERASE_IF_IDLE, now, record_id, record_id, now)
        row = self._x(
            cur,
            "SELECT attempts_left, password_file FROM vault_records WHERE id = ?",
            record_id,
        ).fetchone()
        return LoginOutcome(False, 0 if row is None else int(row[0]))

    def _end_expired(self, cur: _Cursor, now: float, record_id: bytes | None = None) -> None:
        """Ends expired pending logins (of one record, or all), each as one failure. Each login
        is deleted first: the statement that deletes it is the only one that counts it, even
        with a sweep in another process at the same time."""
        if record_id is None:
            rows = self._x(
                cur, "DELETE FROM vault_logins WHERE expires <= ? RETURNING record_id", now
            ).fetchall()
        else:
            rows = self._x(
                cur,
                "DELETE FROM vault_logins WHERE expires <= ? AND record_id = ? RETURNING record_id",
                now,
                record_id,
            ).fetchall()
        for failed_record, failures in sorted(Counter(bytes(row[0]) for row in rows).items()):
            self._x(
                cur,
                "UPDATE vault_records SET failed_since_unlock = failed_since_unlock + ?"
                " WHERE id = ?",
                failures,
                failed_record,
            )

    def sweep(self) -> int:
        """Ends expired pending logins (each one failure) and erases the records they left at
        zero."""
        now = time.time()
        with self._tx() as cur:
            self._end_expired(cur, now)
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

    def _columns(self, cur: _Cursor, table: str) -> set[str]:
        return {str(row[1]) for row in self._x(cur, f"PRAGMA table_info({table})").fetchall()}

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

    def _columns(self, cur: _Cursor, table: str) -> set[str]:
        rows = self._x(
            cur,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            table,
        ).fetchall()
        return {str(row[0]) for row in rows}

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
    _make_private(path)
    return SqliteStore(path)


def _make_private(path: Path) -> None:
    """SQLite gives the -wal and -shm files it creates the database file's mode: a database
    file made 0600 before the first connection keeps all of them private, whatever the umask
    or the data dir's mode. Files an older version left open to others are closed."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            mode = stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(f"{path}{suffix}", 0o600)
