"""The vault's guess accounting under load and over time (docs/VAULT.md, Guess counting): a
verified login gives back only its own attempt, each failed login is reported to the owner
exactly once, expired logins are failures, databases from before this accounting are migrated,
and the command line resets the count of a repository. Real vault processes and OPAQUE."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from e2ebackup import _core, sealed
from e2ebackup.errors import VaultLoginFailed
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import Argon2idParams
from e2ebackup.vault.client import UnlockReport, VaultClient, watch_unlocks
from e2ebackup.vault.server import SqliteStore, Store
from repo_helpers import cli
from servers.vault import (  # noqa: F401
    PostgresCluster,
    VaultProcess,
    pg_database,
    postgres,
    vault,
)
from test_vault import client, run_concurrently, try_unlock

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
RIGHT, WRONG = "correct horse battery", "wrong horse"


def unlock_report(url: str, slot: VaultSlot) -> UnlockReport:
    with client(url) as c:
        return c.unlock_with_report(slot, RIGHT)[1]


def test_owner_and_attacker_at_once_on_two_postgresql_processes(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
) -> None:
    """Six wrong and four right logins at once, spread over two processes on one database:
    the right ones give back only their own attempts, and every wrong one is reported to the
    owner exactly once, whatever the interleaving."""
    a = VaultProcess(tmp_path / "vault", database_url=pg_database).start()
    b = VaultProcess(tmp_path / "vault", database_url=pg_database).start()
    try:
        with client(a.url) as c:
            slot = c.register(RIGHT, _core.generate_key())
        urls = [a.url, b.url]

        def login(i: int) -> object:
            url = urls[i % 2]
            return unlock_report(url, slot) if i % 5 == 0 else try_unlock(url, slot, WRONG)

        outcomes = run_concurrently(10, login)  # i = 0, 5 right twice; 1-4, 6-9 wrong
        outcomes += run_concurrently(2, lambda i: unlock_report(urls[i], slot))
        reports = [o for o in outcomes if isinstance(o, UnlockReport)]
        wrong = [o for o in outcomes if isinstance(o, VaultLoginFailed)]
        assert (len(reports), len(wrong)) == (4, 8), outcomes
        final = unlock_report(b.url, slot)
        assert final.attempts_left == 2  # 10 - 8 wrong; the right ones cost nothing
        assert sum(r.failed_attempts or 0 for r in [*reports, final]) == 8
        assert final.failed_attempts == 0
    finally:
        a.stop()
        b.stop()


def test_counts_survive_a_restart(tmp_path: Path) -> None:
    server = VaultProcess(tmp_path / "vault").start()
    try:
        with client(server.url) as c:
            slot = c.register(RIGHT, _core.generate_key())
        for _ in range(3):
            try_unlock(server.url, slot, WRONG)
        server.restart()
        report = unlock_report(server.url, slot)
        assert (report.failed_attempts, report.attempts_left) == (3, 7)
        server.restart()
        assert unlock_report(server.url, slot).attempts_left == 7
    finally:
        server.stop()


def drop_failed_count_column(store: str, url_or_path: str, attempts_left: int) -> None:
    """Makes a database look like one from before failed attempts were counted: no column,
    and the counter where the old vault left it."""
    drop = "ALTER TABLE vault_records DROP COLUMN failed_since_unlock"
    set_left = "UPDATE vault_records SET attempts_left = ?"
    if store == "sqlite":
        with sqlite3.connect(url_or_path) as db:
            db.execute(drop)
            db.execute(set_left, (attempts_left,))
        return
    import psycopg

    with psycopg.connect(url_or_path) as conn:
        conn.execute(drop)
        conn.execute(set_left.replace("?", "%s"), (attempts_left,))


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_old_database_is_migrated(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """An old vault returned the counter to the maximum at every verified login, so the
    attempts missing from it are the failures since the owner's last unlock."""
    database_url = request.getfixturevalue("pg_database") if store == "postgresql" else None
    server = VaultProcess(tmp_path / "vault", database_url=database_url).start()
    try:
        with client(server.url) as c:
            slot = c.register(RIGHT, _core.generate_key())
        server.stop()
        target = database_url or str(tmp_path / "vault" / "vault.sqlite3")
        drop_failed_count_column(store, target, attempts_left=6)
        server.start()
        report = unlock_report(server.url, slot)
        assert (report.failed_attempts, report.attempts_left) == (4, 6)
        server.restart()  # migrated once: nothing is counted twice
        assert unlock_report(server.url, slot).failed_attempts == 0
    finally:
        server.stop()


def registered(store: Store, server: _core.OpaqueServer, record_id: bytes) -> None:
    registration = _core.OpaqueClientRegistration(RIGHT.encode())
    response = server.registration_response(registration.request, record_id)
    upload, _, _ = registration.finish(RIGHT.encode(), response, memory_kib=256, iterations=1)
    store.create(record_id, _core.opaque_registration_finish(upload), os.urandom(104), 10)


def start(
    store: Store, server: _core.OpaqueServer, record_id: bytes, ttl: float
) -> tuple[bytes, _core.OpaqueClientLogin, bytes]:
    login = _core.OpaqueClientLogin(RIGHT.encode())
    login_id = os.urandom(16)
    response, _ = store.begin_login(
        record_id,
        10,
        login_id,
        ttl,
        lambda pf: server.login_start(login.request, record_id, pf, login_id + record_id),
    )
    return login_id, login, response


def test_expired_logins_are_failures_once(tmp_path: Path) -> None:
    """A login nobody finishes is a failure when it expires, by the sweep or at the owner's
    next verified login, and is reported once."""
    store, server, record_id = (
        SqliteStore(tmp_path / "v.sqlite3"),
        _core.OpaqueServer(),
        os.urandom(16),
    )
    try:
        registered(store, server, record_id)
        start(store, server, record_id, ttl=-1)  # expired at once
        start(store, server, record_id, ttl=-1)
        assert store.sweep() == 0  # one expired login made a failure, not an erasure
        start(store, server, record_id, ttl=-1)
        login_id, login, response = start(store, server, record_id, ttl=60)
        finalization, *_ = login.finish(RIGHT.encode(), response, memory_kib=256, iterations=1)
        outcome = store.finish_login(
            login_id, lambda rid, state: server.login_finish(state, login_id + rid, finalization)
        )
        assert outcome.ok
        assert (outcome.failed_attempts, outcome.attempts_left) == (3, 7)
        assert store.sweep() == 0
        login_id, login, response = start(store, server, record_id, ttl=60)
        finalization, *_ = login.finish(RIGHT.encode(), response, memory_kib=256, iterations=1)
        again = store.finish_login(
            login_id, lambda rid, state: server.login_finish(state, login_id + rid, finalization)
        )
        assert (again.failed_attempts, again.attempts_left) == (0, 7)
    finally:
        store.close()


def test_watch_unlocks_reports_the_logins_of_a_container(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    src, enc, out = tmp_path / "a", tmp_path / "a.e2eb", tmp_path / "b"
    src.write_bytes(b"watched")
    sealed.seal_file(src, enc, password=RIGHT, vault=VaultClient(vault.url, ksf=FAST))
    (vault_slot,) = [s["vault"] for s in sealed.list_slots(enc) if s["kind"] == "vault"]
    record = bytes.fromhex(str(vault_slot["record"]))  # type: ignore[index]
    slot = VaultSlot(vault.url, record, bytes.fromhex(str(vault_slot["public_key"])), FAST)  # type: ignore[index]
    try_unlock(vault.url, slot, WRONG)
    with watch_unlocks() as reports:
        sealed.unseal_file(enc, out, password=RIGHT)
    assert [(r.failed_attempts, r.attempts_left, r.reset) for r in reports] == [(1, 9, False)]
    with watch_unlocks(reset_count=True) as reports:
        sealed.check(enc, password=RIGHT)
    assert [(r.attempts_left, r.reset) for r in reports] == [(10, True)]


def test_reset_count_of_a_repository(tmp_path: Path, vault: VaultProcess) -> None:  # noqa: F811
    repo = str(tmp_path / "repo")
    made = cli(tmp_path, "init", "-r", repo, "--vault", vault.url, "--recovery-key")
    assert made.returncode == 0, made.stderr
    for _ in range(2):
        wrong = cli(tmp_path, "snapshots", "-r", repo, E2EBACKUP_PASSWORD="not it")
        assert wrong.returncode == 1
    listed = cli(tmp_path, "snapshots", "-r", repo)
    assert listed.returncode == 0, listed.stderr
    assert "2 failed attempts since your last unlock" in listed.stderr
    reset = cli(tmp_path, "vault", "reset-count", "-r", repo)
    assert reset.returncode == 0, reset.stderr
    assert "count reset: 10 of 10 attempts left" in reset.stderr
    again = cli(tmp_path, "snapshots", "-r", repo)
    assert again.returncode == 0, again.stderr
    assert "attempt" not in again.stderr
