"""Attacks on the key vault's guess accounting, as the storage provider: it reads the vault slot
(URL and record id) from the container it stores, and makes login attempts at the vault.

Each attacker guess here is a real ``login/start`` (an OPAQUE credential request for a password
the attacker tries); the attacker learns whether its guess was right from that answer alone, so
it may end the login (``abort``) or simply drop it. The owner uses the command line. All against
real ``e2ebackup vault serve`` processes (tests/servers/vault.py).
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2ebackup import _core
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import Argon2idParams
from e2ebackup.vault import protocol as p
from e2ebackup.vault.client import VaultClient
from repo_helpers import cli
from servers.vault import VaultProcess, free_port, vault  # noqa: F401

OWNER_PASSWORD = "owner's long passphrase 7"
FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)


Run = subprocess.CompletedProcess[str]


def owner(tmp: Path, *args: str, password: str = OWNER_PASSWORD) -> Run:
    return cli(tmp, *args, E2EBACKUP_PASSWORD=password)


def sealed_with_vault(tmp: Path, server: VaultProcess) -> Path:
    """The owner's file, sealed with the vault and a recovery key (as docs/VAULT.md advises)."""
    src, enc = tmp / "diary.txt", tmp / "diary.e2eb"
    src.write_bytes(os.urandom(10_000))
    made = owner(
        tmp, "encrypt", "--vault", server.url, "--new-recovery-key", "-q", str(src), str(enc)
    )
    assert made.returncode == 0, made.stderr
    return enc


def record_of(tmp: Path, enc: Path) -> str:
    """What the provider reads from the file it stores: the vault slot's record id."""
    listed = cli(tmp, "key", "list", "--json", str(enc))
    assert listed.returncode == 0, listed.stderr
    (vault_slot,) = [s["vault"] for s in json.loads(listed.stdout) if s["kind"] == "vault"]
    return str(vault_slot["record"])


def guess(url: str, record: str, *, end: bool = True) -> httpx.Response:
    """One password guess at the vault. With ``end``, the attacker then ends the login as an
    honest client would; without, it drops it after the first message."""
    login = _core.OpaqueClientLogin(b"guess " + os.urandom(4).hex().encode())
    answer = httpx.post(
        url + "/v1/login/start", json={"record_id": record, "request": p.b64(login.request)}
    )
    if answer.status_code == 200 and end:
        httpx.post(url + "/v1/login/abort", json={"login_id": answer.json()["login_id"]})
    return answer


def decrypt(tmp: Path, enc: Path, password: str = OWNER_PASSWORD) -> Run:
    out = tmp / "out.txt"
    out.unlink(missing_ok=True)
    return owner(tmp, "decrypt", "-q", str(enc), str(out), password=password)


def test_owner_unlock_does_not_refund_the_attackers_guesses(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    """(a) 9 wrong guesses, the owner unlocks, 9 more: before, the owner's unlock gave every
    attempt back, so the provider had 9 silent guesses per unlock, for ever. Now the record
    is gone after 10 wrong guesses in all, and the owner was told in between."""
    enc = sealed_with_vault(tmp_path, vault)
    record = record_of(tmp_path, enc)
    for _ in range(9):
        assert guess(vault.url, record).status_code == 200
    opened = decrypt(tmp_path, enc)
    assert opened.returncode == 0, opened.stderr
    assert "9 failed attempts since your last unlock" in opened.stderr
    assert "1 of 10 attempts left" in opened.stderr

    answers = [guess(vault.url, record).status_code for _ in range(9)]
    assert answers == [200] + [410] * 8  # the tenth wrong guess in all was the last one
    gone = decrypt(tmp_path, enc)
    assert gone.returncode == 1
    assert "recovery key" in gone.stderr


def test_dropped_logins_are_spent_guesses(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    """(b) Logins the attacker starts and drops after the first message (it needs no more to
    test its guess) each spend an attempt, and the owner's unlock does not give them back."""
    enc = sealed_with_vault(tmp_path, vault)
    record = record_of(tmp_path, enc)
    lefts = [guess(vault.url, record, end=False).json()["attempts_left"] for _ in range(4)]
    assert lefts == [9, 8, 7, 6]
    opened = decrypt(tmp_path, enc)
    assert opened.returncode == 0, opened.stderr
    assert "4 unfinished logins" in opened.stderr
    assert "6 of 10 attempts left" in opened.stderr
    lefts = [guess(vault.url, record, end=False).json()["attempts_left"] for _ in range(6)]
    assert lefts == [5, 4, 3, 2, 1, 0]
    # Every attempt is spent: the owner's right password is refused too, and no key released.
    refused = decrypt(tmp_path, enc)
    assert refused.returncode == 1
    assert "no attempts left" in refused.stderr


def test_owner_sees_the_failed_attempts(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    """(c) The owner learns how many failed attempts there were since its last unlock (the
    command line on stderr, the Python API in the report), once; the attempts stay spent."""
    with VaultClient(vault.url, ksf=FAST) as client:
        data_key = _core.generate_key()
        slot = client.register(OWNER_PASSWORD, data_key)
        for _ in range(3):
            assert guess(vault.url, slot.record_id.hex()).status_code == 200
        key, report = client.unlock_with_report(slot, OWNER_PASSWORD)
        assert key == data_key
        assert (report.failed_attempts, report.attempts_left, report.max_attempts) == (3, 7, 10)
        assert report.unfinished_logins == 0
        assert "3 failed attempts since your last unlock" in report.describe()
        key, report = client.unlock_with_report(slot, OWNER_PASSWORD)
        assert (report.failed_attempts, report.attempts_left) == (0, 7)

    enc = sealed_with_vault(tmp_path, vault)
    guess(vault.url, record_of(tmp_path, enc))
    opened = decrypt(tmp_path, enc)
    assert opened.returncode == 0, opened.stderr
    assert "1 failed attempt since your last unlock" in opened.stderr
    quiet = decrypt(tmp_path, enc)
    assert quiet.returncode == 0, quiet.stderr
    assert "failed attempt" not in quiet.stderr


def owner_login_by_hand(url: str, slot: VaultSlot, password: str) -> tuple[dict[str, Any], str]:
    """The owner's login as the wire carries it: the finish request's body, and the login id."""
    login = _core.OpaqueClientLogin(password.encode())
    started = httpx.post(
        url + "/v1/login/start",
        json={"record_id": slot.record_id.hex(), "request": p.b64(login.request)},
    ).json()
    finalization, *_ = login.finish(
        password.encode(),
        p.unb64(started["response"], "response"),
        memory_kib=FAST.memory_kib,
        iterations=FAST.iterations,
        parallelism=FAST.parallelism,
    )
    body = {"login_id": started["login_id"], "finalization": p.b64(finalization)}
    return body, started["login_id"]


def test_a_replayed_finish_is_no_login(vault: VaultProcess) -> None:  # noqa: F811
    """A network attacker replays the owner's verified finish (no TLS): it finds no login, and
    the count does not move."""
    with VaultClient(vault.url, ksf=FAST) as client:
        slot = client.register(OWNER_PASSWORD, _core.generate_key())
        for _ in range(2):
            guess(vault.url, slot.record_id.hex())
        body, _ = owner_login_by_hand(vault.url, slot, OWNER_PASSWORD)
        first = httpx.post(vault.url + "/v1/login/finish", json=body)
        assert first.status_code == 200
        assert first.json()["attempts_left"] == 8
        for action in ("release", "reset"):
            again = httpx.post(vault.url + "/v1/login/finish", json={**body, "action": action})
            assert again.status_code == 404
        _, report = client.unlock_with_report(slot, OWNER_PASSWORD)
        assert report.attempts_left == 8


def test_reset_count_needs_the_password(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    """(d) Only a verified login resets the count: the attacker's reset without the password
    fails (and is one more spent guess); the owner's `vault reset-count` works."""
    enc = sealed_with_vault(tmp_path, vault)
    record = record_of(tmp_path, enc)
    for _ in range(3):
        guess(vault.url, record)
    # The attacker asks for a reset with a finalization it cannot make.
    login = _core.OpaqueClientLogin(b"guess")
    started = httpx.post(
        vault.url + "/v1/login/start", json={"record_id": record, "request": p.b64(login.request)}
    ).json()
    forged = httpx.post(
        vault.url + "/v1/login/finish",
        json={"login_id": started["login_id"], "finalization": p.b64(bytes(64)), "action": "reset"},
    )
    assert forged.status_code == 401
    assert forged.json()["attempts_left"] == 6
    wrong = owner(tmp_path, "vault", "reset-count", str(enc), password="not the password")
    assert wrong.returncode == 1
    assert "5 attempts left" in wrong.stderr

    reset = owner(tmp_path, "vault", "reset-count", str(enc))
    assert reset.returncode == 0, reset.stderr
    assert "5 failed attempts since your last unlock" in reset.stderr
    assert "10 of 10 attempts left" in reset.stderr
    opened = decrypt(tmp_path, enc)
    assert opened.returncode == 0, opened.stderr
    assert "attempt" not in opened.stderr


def test_reset_count_of_a_container_without_a_vault(tmp_path: Path) -> None:
    src, enc = tmp_path / "a", tmp_path / "a.e2eb"
    src.write_bytes(b"plain password slot")
    assert owner(tmp_path, "encrypt", "-q", str(src), str(enc)).returncode == 0
    result = owner(tmp_path, "vault", "reset-count", str(enc))
    assert result.returncode == 2
    assert "no vault slot" in result.stderr


def test_data_dir_open_to_others_leaks_no_database_file(tmp_path: Path) -> None:
    """A local user who can list a data dir made 0755 (by an admin, or a package) must not be
    able to read the database or its -wal/-shm files while the vault runs."""
    data_dir = tmp_path / "vault"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    server = VaultProcess(data_dir).start()
    try:
        with VaultClient(server.url, ksf=FAST) as client:
            slot = client.register(OWNER_PASSWORD, _core.generate_key())
            client.unlock(slot, OWNER_PASSWORD)
        files = {f.name: stat.S_IMODE(f.stat().st_mode) for f in data_dir.iterdir()}
        names = set(files)
        assert {"vault.sqlite3", "vault.sqlite3-wal", "vault.sqlite3-shm"} <= names, names
        readable = {n: oct(m) for n, m in files.items() if m & 0o077 and not n.endswith(".log")}
        assert not readable, readable
    finally:
        server.stop()


def test_old_database_files_are_closed_to_others(tmp_path: Path) -> None:
    """Database files an older version left readable by others are made private on start."""
    data_dir = tmp_path / "vault"
    server = VaultProcess(data_dir).start()
    server.stop()
    for name in ("vault.sqlite3", "vault.sqlite3-wal", "vault.sqlite3-shm"):
        path = data_dir / name
        path.touch()
        os.chmod(path, 0o644)
    server.start()
    try:
        for name in ("vault.sqlite3", "vault.sqlite3-wal", "vault.sqlite3-shm"):
            path = data_dir / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    finally:
        server.stop()


def test_data_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    """Whoever can write to the data dir can put back an old database, and with it every spent
    attempt: the vault refuses to run there."""
    data_dir = tmp_path / "vault"
    data_dir.mkdir()
    os.chmod(data_dir, 0o777)
    result = subprocess.run(
        [sys.executable, "-m", "e2ebackup", "vault", "serve", "--data-dir", str(data_dir),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert "writable by other users" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_side_login_outcome_hides_the_session_key() -> None:
    from e2ebackup.vault.server import LoginOutcome

    session_key, blob = os.urandom(64), os.urandom(104)
    outcome = LoginOutcome(True, 9, blob, session_key)
    for secret in (session_key, blob):
        for text in (repr(outcome), str(outcome)):
            assert secret.hex() not in text
            assert repr(secret) not in text
    with pytest.raises(TypeError):
        pickle.dumps(outcome)
