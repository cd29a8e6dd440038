"""The vault's guess limit, against real vault processes: ten wrong passwords, then the right
one is refused and the record is gone; sequentially, ten at once, across two processes on one
PostgreSQL database, and across a restart. Plus: unknown records look like real ones, and the
database and logs never hold the password, the data key or the export key."""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from e2ebackup import _core, sealed
from e2ebackup.errors import (
    InvalidArgument,
    VaultError,
    VaultKeyMismatch,
    VaultLocked,
    VaultLoginFailed,
    VaultRecordGone,
)
from e2ebackup.keyring.slots import KIND_VAULT, KeySlots
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import Argon2idParams, RecoveryKey
from e2ebackup.vault import protocol as p
from e2ebackup.vault.client import VaultClient
from servers.vault import (  # noqa: F401
    PostgresCluster,
    VaultProcess,
    pg_database,
    postgres,
    vault,
)

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
RIGHT, WRONG = "correct horse battery", "wrong horse"


def client(url: str, pin: bytes | None = None) -> VaultClient:
    return VaultClient(url, pin, ksf=FAST)


def try_unlock(url: str, slot: VaultSlot, password: str) -> object:
    """The key, or the exception, of one unlock in its own client."""
    with client(url) as c:
        try:
            return c.unlock(slot, password)
        except VaultError as e:
            return e


def assert_gone(url: str, slot: VaultSlot) -> None:
    outcome = try_unlock(url, slot, RIGHT)
    assert isinstance(outcome, VaultRecordGone), outcome


def test_register_unlock_and_counting(vault: VaultProcess) -> None:  # noqa: F811
    """A verified login gives back its own attempt only; the owner is told of the failures
    once, and gives the attempts back on purpose (docs/VAULT.md, Guess counting)."""
    data_key = _core.generate_key()
    with client(vault.url) as c:
        slot = c.register(RIGHT, data_key)
        assert slot.server_public_key == vault.public_key()
        assert c.unlock(slot, RIGHT) == data_key
        for left in (9, 8, 7):
            with pytest.raises(VaultLoginFailed) as e:
                c.unlock(slot, WRONG)
            assert e.value.attempts_left == left
            assert f"{left} attempts left" in str(e.value)
        key, report = c.unlock_with_report(slot, RIGHT)  # the failures stay spent
        assert key == data_key
        assert (report.attempts_left, report.max_attempts, report.failed_attempts) == (7, 10, 3)
        assert c.unlock_with_report(slot, RIGHT)[1].failed_attempts == 0  # told once
        with pytest.raises(VaultLoginFailed) as e:
            c.unlock(slot, WRONG)
        assert e.value.attempts_left == 6
        report = c.reset_count(slot, RIGHT)
        assert (report.attempts_left, report.failed_attempts, report.reset) == (10, 1, True)
        with pytest.raises(VaultLoginFailed) as e:
            c.unlock(slot, WRONG)
        assert e.value.attempts_left == 9


def test_ten_wrong_then_right_is_refused_sequential(vault: VaultProcess) -> None:  # noqa: F811
    with client(vault.url) as c:
        slot = c.register(RIGHT, _core.generate_key())
        lefts = []
        for _ in range(10):
            with pytest.raises(VaultLoginFailed) as e:
                c.unlock(slot, WRONG)
            lefts.append(e.value.attempts_left)
        assert lefts == list(range(9, -1, -1))
    assert_gone(vault.url, slot)
    assert_gone(vault.url, slot)  # and stays gone


def run_concurrently(n: int, fn: Callable[[int], object]) -> list[object]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def test_ten_wrong_at_once_then_right_is_refused(vault: VaultProcess) -> None:  # noqa: F811
    with client(vault.url) as c:
        slot = c.register(RIGHT, _core.generate_key())
    outcomes = run_concurrently(10, lambda _: try_unlock(vault.url, slot, WRONG))
    assert all(isinstance(o, VaultLoginFailed) for o in outcomes), outcomes
    # Every attempt was charged exactly once: each count from 9 to 0 was seen once.
    assert sorted(o.attempts_left for o in outcomes) == list(range(10))  # type: ignore[attr-defined]
    assert_gone(vault.url, slot)


def test_more_guesses_at_once_than_allowed(vault: VaultProcess) -> None:  # noqa: F811
    """Twenty at once, right passwords among them: at most ten logins ever run."""
    data_key = _core.generate_key()
    with client(vault.url) as c:
        slot = c.register(RIGHT, data_key)
    outcomes = run_concurrently(20, lambda i: try_unlock(vault.url, slot, WRONG))
    failed = [o for o in outcomes if isinstance(o, VaultLoginFailed)]
    refused = [o for o in outcomes if isinstance(o, VaultRecordGone | VaultLocked)]
    assert len(failed) == 10, outcomes
    assert len(refused) == 10, outcomes
    assert_gone(vault.url, slot)


def test_two_vault_processes_on_one_postgresql(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
) -> None:
    a = VaultProcess(tmp_path / "vault", database_url=pg_database).start()
    b = VaultProcess(tmp_path / "vault", database_url=pg_database).start()
    try:
        assert a.public_key() == b.public_key()  # one key file, one setup
        data_key = _core.generate_key()
        with client(a.url) as c:
            slot = c.register(RIGHT, data_key)
        assert try_unlock(b.url, slot, RIGHT) == data_key  # registered on a, opened on b
        urls = [a.url, b.url]
        outcomes = run_concurrently(10, lambda i: try_unlock(urls[i % 2], slot, WRONG))
        assert sorted(o.attempts_left for o in outcomes) == list(range(10))  # type: ignore[attr-defined]
        assert_gone(a.url, slot)
        assert_gone(b.url, slot)

        # A second record: guesses alternate between the processes, sequentially.
        with client(b.url) as c:
            slot2 = c.register(RIGHT, data_key)
        for i in range(10):
            outcome = try_unlock(urls[i % 2], slot2, WRONG)
            assert isinstance(outcome, VaultLoginFailed)
            assert outcome.attempts_left == 9 - i
        assert_gone(b.url, slot2)
    finally:
        a.stop()
        b.stop()


def test_restart_in_the_middle(tmp_path: Path) -> None:
    server = VaultProcess(tmp_path / "vault").start()
    try:
        with client(server.url) as c:
            slot = c.register(RIGHT, _core.generate_key())
        for _ in range(5):
            assert isinstance(try_unlock(server.url, slot, WRONG), VaultLoginFailed)
        server.restart()
        outcomes = [try_unlock(server.url, slot, WRONG) for _ in range(5)]
        assert [o.attempts_left for o in outcomes] == [4, 3, 2, 1, 0]  # type: ignore[attr-defined]
        server.restart()
        assert_gone(server.url, slot)
    finally:
        server.stop()


def test_restart_in_the_middle_postgresql(tmp_path: Path, pg_database: str) -> None:  # noqa: F811
    server = VaultProcess(tmp_path / "vault", database_url=pg_database).start()
    try:
        with client(server.url) as c:
            slot = c.register(RIGHT, _core.generate_key())
        for _ in range(6):
            assert isinstance(try_unlock(server.url, slot, WRONG), VaultLoginFailed)
        server.restart()
        outcomes = [try_unlock(server.url, slot, WRONG) for _ in range(4)]
        assert [o.attempts_left for o in outcomes] == [3, 2, 1, 0]  # type: ignore[attr-defined]
        assert_gone(server.url, slot)
    finally:
        server.stop()


def test_abandoned_login_still_counts(vault: VaultProcess) -> None:  # noqa: F811
    """A client that starts logins and never finishes them (it learns its guess from the
    response alone) spends an attempt each time."""
    with client(vault.url) as c:
        slot = c.register(RIGHT, _core.generate_key())
    for left in range(9, -1, -1):
        login = _core.OpaqueClientLogin(WRONG.encode())
        answer = httpx.post(
            vault.url + "/v1/login/start",
            json={"record_id": slot.record_id.hex(), "request": p.b64(login.request)},
        )
        assert answer.json()["attempts_left"] == left
    # The last logins are still pending: no attempt for anyone, right password or not.
    assert isinstance(try_unlock(vault.url, slot, RIGHT), VaultLocked)


def test_unknown_record_is_indistinguishable(vault: VaultProcess) -> None:  # noqa: F811
    with client(vault.url) as c:
        slot = c.register(RIGHT, _core.generate_key())
    ghost = VaultSlot(vault.url, os.urandom(16), slot.server_public_key, FAST)

    def start(record_id: bytes) -> httpx.Response:
        login = _core.OpaqueClientLogin(WRONG.encode())
        return httpx.post(
            vault.url + "/v1/login/start",
            json={"record_id": record_id.hex(), "request": p.b64(login.request)},
        )

    real, fake = start(slot.record_id), start(ghost.record_id)
    assert real.status_code == fake.status_code == 200
    assert real.json().keys() == fake.json().keys()
    assert real.json()["attempts_left"] == fake.json()["attempts_left"] == 9
    assert len(real.json()["response"]) == len(fake.json()["response"])
    for answer in (real, fake):  # end both logins, as an honest client does
        httpx.post(vault.url + "/v1/login/abort", json={"login_id": answer.json()["login_id"]})
    # Both count down the same way and end the same way.
    for left in range(8, -1, -1):
        a, b = try_unlock(vault.url, slot, WRONG), try_unlock(vault.url, ghost, WRONG)
        assert isinstance(a, VaultLoginFailed)
        assert isinstance(b, VaultLoginFailed)
        assert a.attempts_left == b.attempts_left == left
    assert_gone(vault.url, slot)
    assert isinstance(try_unlock(vault.url, ghost, RIGHT), VaultRecordGone)


def test_pinned_key_and_substituted_vault(tmp_path: Path, vault: VaultProcess) -> None:  # noqa: F811
    data_key = _core.generate_key()
    with client(vault.url) as c:
        slot = c.register(RIGHT, data_key)
    # Another vault answering at the same address (say after a DNS change) is refused.
    other = VaultProcess(tmp_path / "other").start()
    try:
        with pytest.raises(VaultKeyMismatch):
            client(other.url, slot.server_public_key).register(RIGHT, data_key)
        moved = VaultSlot(other.url, slot.record_id, slot.server_public_key, FAST)
        assert isinstance(try_unlock(other.url, moved, RIGHT), VaultLoginFailed)
    finally:
        other.stop()
    with pytest.raises(InvalidArgument):
        VaultClient("http://example.com/vault")  # plain http only on loopback


def secrets_of(password: str, data_key: bytes, export_key: bytes) -> list[bytes]:
    out = []
    for s in (password.encode(), data_key, export_key, export_key[:32]):
        out += [s, s.hex().encode(), base64.b64encode(s)]
    return out


def register_capturing(url: str, password: str, data_key: bytes) -> tuple[VaultSlot, bytes]:
    """A registration done by hand (as VaultClient does it) to learn the export key."""
    reg = _core.OpaqueClientRegistration(password.encode())
    started = httpx.post(url + "/v1/register/start", json={"request": p.b64(reg.request)}).json()
    record_id = bytes.fromhex(started["record_id"])
    upload, export_key, pk = reg.finish(
        password.encode(), p.unb64(started["response"], "r"), memory_kib=256, iterations=1
    )
    blob = _core.wrap_key(p.blob_key(export_key), data_key, p.blob_context(record_id, pk))
    httpx.post(
        url + "/v1/register/finish",
        json={"record_id": record_id.hex(), "upload": p.b64(upload), "blob": p.b64(blob)},
    ).raise_for_status()
    return VaultSlot(url, record_id, pk, FAST), export_key


def exercise(url: str) -> list[bytes]:
    """Registers, logs in right and wrong, deletes: returns the secrets involved."""
    password, data_key = "scan me " + os.urandom(8).hex(), _core.generate_key()
    slot, export_key = register_capturing(url, password, data_key)
    with client(url) as c:
        assert c.unlock(slot, password) == data_key
        with pytest.raises(VaultLoginFailed):
            c.unlock(slot, password + "x")
        assert c.unlock(slot, password) == data_key
    return secrets_of(password, data_key, export_key)


def test_sqlite_database_and_logs_hold_no_secret(vault: VaultProcess) -> None:  # noqa: F811
    secrets = exercise(vault.url) + exercise(vault.url)
    files = [f for f in vault.data_dir.iterdir() if f.is_file()]
    assert any(f.name.startswith("vault.sqlite3") for f in files)
    for f in files:
        data = f.read_bytes()
        for s in secrets:
            assert s not in data, f"{f.name} holds a secret"
    key_file = vault.data_dir / "vault-server.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    # The database holds what it should: one password file and one wrapped key per record.
    with sqlite3.connect(vault.data_dir / "vault.sqlite3") as db:
        rows = db.execute("SELECT password_file, blob FROM vault_records").fetchall()
    assert len(rows) == 2
    assert all(len(f) == 192 and len(b) == 104 for f, b in rows)


def test_postgresql_database_and_logs_hold_no_secret(
    tmp_path: Path,
    postgres: PostgresCluster,  # noqa: F811
    pg_database: str,  # noqa: F811
) -> None:
    import psycopg

    server = VaultProcess(tmp_path / "vault", database_url=pg_database).start()
    try:
        secrets = exercise(server.url)
    finally:
        server.stop()
    with psycopg.connect(pg_database) as conn:
        conn.execute("CHECKPOINT")
        dump = b"".join(
            bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
            for table in ("vault_records", "vault_logins", "vault_meta")
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()
            for v in row
        )
    haystacks = {"dump": dump, "log": server.log.read_bytes()}
    for f in postgres.data_files():
        haystacks[str(f)] = f.read_bytes()
    for name, data in haystacks.items():
        for s in secrets:
            assert s not in data, f"{name} holds a secret"


def test_vault_slot_excludes_password_slots(vault: VaultProcess) -> None:  # noqa: F811
    data_key = _core.generate_key()
    with client(vault.url) as c:
        vslot = c.register(RIGHT, data_key)
    slots = KeySlots(os.urandom(16))
    slots.add_vault(data_key, vslot, label="vault")
    with pytest.raises(InvalidArgument, match="offline guessing"):
        slots.add_password(data_key, "pw", kdf=FAST)
    slots.add_recovery_key(data_key, RecoveryKey.generate())
    decoded = KeySlots.decode(slots.container_id, slots.encode())
    assert next(s.kind for s in decoded.slots) == KIND_VAULT
    assert decoded.vault_slots() == [vslot]
    assert decoded.unlock_vault(lambda v: client(v.url).unlock(v, RIGHT)) == data_key

    other = KeySlots(os.urandom(16))
    other.add_password(data_key, "pw", kdf=FAST)
    with pytest.raises(InvalidArgument):
        other.add_vault(data_key, vslot)
    # A slot copied into another container, or pointing at another key, does not open.
    moved = KeySlots.decode(os.urandom(16), slots.encode())
    with pytest.raises(VaultError.__mro__[1]):  # E2EBackupError: CorruptKeySlot
        moved.unlock_vault(lambda v: client(v.url).unlock(v, RIGHT))


def test_sealed_file_with_vault_and_recovery_key(tmp_path: Path, vault: VaultProcess) -> None:  # noqa: F811
    src, enc, out = tmp_path / "a.txt", tmp_path / "a.e2eb", tmp_path / "b.txt"
    src.write_bytes(os.urandom(100_000))
    rk = RecoveryKey.generate()
    sealed.seal_file(src, enc, password=RIGHT, recovery_key=rk, vault=client(vault.url))
    kinds = [s["kind"] for s in sealed.list_slots(enc)]
    assert kinds == ["vault", "recovery-key"]
    sealed.unseal_file(enc, out, password=RIGHT)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(InvalidArgument):
        sealed.add_password(enc, "new", password=RIGHT)

    # Change the password: a new record, the old one deleted.
    def vault_slot() -> VaultSlot:
        with open(enc, "rb") as f:
            return sealed.read_header(f).slots.vault_slots()[0]

    old_slot = vault_slot()
    sealed.change_password(enc, RIGHT, "new password")
    new_slot = vault_slot()
    assert new_slot.record_id != old_slot.record_id
    assert isinstance(try_unlock(vault.url, old_slot, RIGHT), VaultRecordGone)
    out.unlink()
    sealed.unseal_file(enc, out, password="new password")
    assert out.read_bytes() == src.read_bytes()
    # Rotation keeps the vault: the new data key goes to a new record.
    sealed.rotate(enc, password="new password")
    assert [s["kind"] for s in sealed.list_slots(enc)] == ["vault"]
    out.unlink()
    sealed.unseal_file(enc, out, password="new password")
    assert out.read_bytes() == src.read_bytes()
