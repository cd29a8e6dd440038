"""Attacks on key slots, written as the storage provider who can edit every stored byte.

The provider plants a vault slot that names its own vault (its own pinned key, the weakest KSF
a reader accepts) hoping that ``key passwd`` or ``rotate`` registers the new password or data
key there; it mixes a vault slot with a password slot; it adds junk ``keys/`` objects so that
every open runs the KDF many times. Each slot is built here from docs/FORMAT.md alone, as an
attacker would, and the attacker's vault is a real HTTP listener that records every request.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ebackup.keys import RecoveryKey
from repo_helpers import FAST, cli, env as cli_env
from servers.vault import VaultProcess, vault  # noqa: F401

PASSWORD = "long vault passphrase"
NEW_PASSWORD = "a different passphrase"


class AttackerVault:
    """An HTTP server on 127.0.0.1 that writes down every request it gets and answers 503."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append(f"{self.command} {self.path}")
                body = b'{"error": "unavailable", "message": "attacker"}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker() -> Iterator[AttackerVault]:
    server = AttackerVault()
    try:
        yield server
    finally:
        server.close()


# -- slots as the spec lays them out (docs/FORMAT.md, Slot layout and Vault slots) --------------


def _slot(kind: int, body: bytes) -> bytes:
    head = bytes([kind]) + struct.pack(">H", len(body))
    return head + body + hashlib.sha256(head + body).digest()[:16]


def planted_vault_slot(url: str) -> bytes:
    """A vault slot naming the attacker's vault, a key of its own and the weakest Argon2id
    parameters; ``wrapped`` is random: the attacker does not know the data key."""
    public = struct.pack(">QB", 1_700_000_000, 0)
    public += struct.pack(">H", len(url)) + url.encode() + os.urandom(16) + os.urandom(32)
    public += struct.pack(">III", 8, 1, 1)
    return _slot(3, public + os.urandom(104))


def junk_password_slot() -> bytes:
    public = struct.pack(">QB", 1_700_000_000, 0)
    public += struct.pack(">BIII", 1, 8, 1, 1) + bytes([16]) + os.urandom(16)
    return _slot(2, public + os.urandom(104))


def plant_in_sealed(path: Path, slot: bytes, *, first: bool = False) -> None:
    blob = path.read_bytes()
    area_len = struct.unpack(">I", blob[26:30])[0]
    count, slots = blob[30], blob[31 : 30 + area_len]
    slots = slot + slots if first else slots + slot
    area = bytes([count + 1]) + slots
    path.write_bytes(blob[:26] + struct.pack(">I", len(area)) + area + blob[30 + area_len :])


def plant_in_repo(repo: Path, slot: bytes, name: str) -> None:
    (repo / "keys" / name).write_bytes(bytes([1]) + slot)


def run(tmp: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``cli`` with the environment given as a dict."""
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args],
        capture_output=True,
        text=True,
        env=cli_env(tmp, **env),
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
    )


def kinds_of_file(tmp: Path, path: Path) -> list[str]:
    r = cli(tmp, "key", "list", "--json", str(path))
    assert r.returncode == 0, r.stderr
    return [s["kind"] for s in json.loads(r.stdout)]


def kinds_of_repo(tmp: Path, repo: Path, **env: str) -> list[str]:
    r = run(tmp, "key", "list", "-r", str(repo), "--json", env=env)
    assert r.returncode == 0, r.stderr
    return sorted(s["kind"] for s in json.loads(r.stdout))


def vault_file(tmp: Path, url: str, rk: RecoveryKey) -> Path:
    (tmp / "plain").write_bytes(b"the chats")
    out = tmp / "chats.e2eb"
    r = cli(tmp, "encrypt", "--vault", url, str(tmp / "plain"), str(out),
            E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert kinds_of_file(tmp, out) == ["vault", "recovery-key"]
    return out


def vault_repo(tmp: Path, url: str, rk: RecoveryKey) -> Path:
    repo = tmp / "repo"
    r = cli(tmp, "init", "-r", str(repo), "--vault", url,
            E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    (tmp / "src").mkdir()
    (tmp / "src" / "a.txt").write_text("the chats")
    r = cli(tmp, "backup", "-r", str(repo), str(tmp / "src"), E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 0, r.stderr
    return repo


# -- 1. a planted vault slot is never told anything --------------------------------------------


def test_key_passwd_of_a_sealed_file_ignores_a_planted_vault_slot(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
    attacker: AttackerVault,
) -> None:
    rk = RecoveryKey.generate()
    path = vault_file(tmp_path, vault.url, rk)
    plant_in_sealed(path, planted_vault_slot(attacker.url))
    (tmp_path / "new").write_text(NEW_PASSWORD)
    r = cli(tmp_path, "key", "passwd", "--new-password-file", str(tmp_path / "new"), str(path),
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert attacker.requests == []
    assert kinds_of_file(tmp_path, path) == ["vault", "recovery-key"]  # the planted one dropped
    r = cli(tmp_path, "decrypt", str(path), "-", E2EBACKUP_PASSWORD=NEW_PASSWORD)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the chats"


def test_a_planted_vault_slot_listed_first_gets_at_most_a_login_it_learns_nothing_from(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
    attacker: AttackerVault,
) -> None:
    # Before the data key is known, an unlock by password cannot tell the planted slot from the
    # real one: it may start an OPAQUE login there (a blinded value, nothing to guess from),
    # then goes on to the real vault. No registration, no password change, no data key.
    rk = RecoveryKey.generate()
    path = vault_file(tmp_path, vault.url, rk)
    plant_in_sealed(path, planted_vault_slot(attacker.url), first=True)
    (tmp_path / "new").write_text(NEW_PASSWORD)
    r = cli(tmp_path, "key", "passwd", "--new-password-file", str(tmp_path / "new"), str(path),
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert {request.split()[1] for request in attacker.requests} <= {"/v1/login/start"}
    assert kinds_of_file(tmp_path, path) == ["vault", "recovery-key"]


def test_rotate_of_a_sealed_file_with_the_recovery_key_ignores_a_planted_vault_slot(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
    attacker: AttackerVault,
) -> None:
    rk = RecoveryKey.generate()
    path = vault_file(tmp_path, vault.url, rk)
    plant_in_sealed(path, planted_vault_slot(attacker.url), first=True)
    r = cli(tmp_path, "rotate", str(path),
            E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert attacker.requests == []
    assert kinds_of_file(tmp_path, path) == ["vault", "recovery-key"]
    for env in ({"E2EBACKUP_PASSWORD": PASSWORD}, {"E2EBACKUP_RECOVERY_KEY": rk.reveal()}):
        r = run(tmp_path, "decrypt", str(path), "-", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "the chats"


def test_rotate_of_a_password_file_with_the_recovery_key_ignores_a_planted_vault_slot(
    tmp_path: Path, attacker: AttackerVault
) -> None:
    rk = RecoveryKey.generate()
    (tmp_path / "plain").write_bytes(b"the chats")
    path = tmp_path / "chats.e2eb"
    r = cli(tmp_path, "encrypt", str(tmp_path / "plain"), str(path),
            E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    plant_in_sealed(path, planted_vault_slot(attacker.url))
    r = cli(tmp_path, "rotate", str(path),
            E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert attacker.requests == []
    assert kinds_of_file(tmp_path, path) == ["password", "recovery-key"]


def test_key_passwd_of_a_repository_ignores_a_planted_vault_slot(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
    attacker: AttackerVault,
) -> None:
    rk = RecoveryKey.generate()
    repo = vault_repo(tmp_path, vault.url, rk)
    plant_in_repo(repo, planted_vault_slot(attacker.url), "0" * 64)  # listed first
    (tmp_path / "new").write_text(NEW_PASSWORD)
    # Opened with the recovery key; the current password proves itself at the vault.
    r = cli(tmp_path, "key", "passwd", "-r", str(repo), "--new-password-file",
            str(tmp_path / "new"), E2EBACKUP_PASSWORD=PASSWORD,
            E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert attacker.requests == []
    assert not (repo / "keys" / ("0" * 64)).exists()  # dropped on rewrite
    assert kinds_of_repo(tmp_path, repo, E2EBACKUP_PASSWORD=NEW_PASSWORD) == [
        "recovery-key",
        "vault",
    ]


def test_rotate_of_a_repository_ignores_a_planted_vault_slot(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
    attacker: AttackerVault,
) -> None:
    rk = RecoveryKey.generate()
    repo = vault_repo(tmp_path, vault.url, rk)
    plant_in_repo(repo, planted_vault_slot(attacker.url), "0" * 64)
    new = tmp_path / "rotated"
    r = cli(tmp_path, "rotate", "-r", str(repo), "--to", str(new),
            E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_RECOVERY_KEY=rk.reveal())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert attacker.requests == []
    assert kinds_of_repo(tmp_path, new, E2EBACKUP_PASSWORD=PASSWORD) == ["recovery-key", "vault"]


# -- 2. rotate keeps the credential kinds -------------------------------------------------------


def test_rotate_of_a_vault_repository_keeps_the_vault_and_a_recovery_key(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    rk = RecoveryKey.generate()
    repo = vault_repo(tmp_path, vault.url, rk)
    new = tmp_path / "rotated"
    # Only the password: the recovery-key slot cannot be carried over, so a new key is shown.
    r = cli(tmp_path, "rotate", "-r", str(repo), "--to", str(new), "--json",
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    new_rk = json.loads(r.stdout)["recovery_key"]
    assert kinds_of_repo(tmp_path, new, E2EBACKUP_PASSWORD=PASSWORD) == ["recovery-key", "vault"]
    for env in ({"E2EBACKUP_PASSWORD": PASSWORD}, {"E2EBACKUP_RECOVERY_KEY": new_rk}):
        r = run(tmp_path, "ls", "-r", str(new), "latest", env=env)
        assert r.returncode == 0, r.stderr
        assert "a.txt" in r.stdout


# -- 3. a vault slot beside a password slot is refused on read ---------------------------------


def test_a_sealed_file_with_a_vault_and_a_password_slot_is_refused(
    tmp_path: Path, attacker: AttackerVault
) -> None:
    (tmp_path / "plain").write_bytes(b"the chats")
    path = tmp_path / "chats.e2eb"
    r = cli(tmp_path, "encrypt", str(tmp_path / "plain"), str(path), E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 0, r.stderr
    plant_in_sealed(path, planted_vault_slot(attacker.url), first=True)
    r = cli(tmp_path, "decrypt", str(path), "-", E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 1
    assert "vault slot" in r.stderr
    assert "password slot" in r.stderr
    assert r.stdout == ""
    assert attacker.requests == []

    from e2ebackup import sealed
    from e2ebackup.errors import ConflictingKeySlots

    with pytest.raises(ConflictingKeySlots):
        sealed.unseal_file(path, tmp_path / "out", password=PASSWORD)
    assert not (tmp_path / "out").exists()


def test_a_repository_with_a_vault_and_a_password_slot_is_refused(
    tmp_path: Path, attacker: AttackerVault
) -> None:
    repo = tmp_path / "repo"
    assert cli(tmp_path, "init", "-r", str(repo), E2EBACKUP_PASSWORD=PASSWORD).returncode == 0
    plant_in_repo(repo, planted_vault_slot(attacker.url), "0" * 64)
    r = cli(tmp_path, "snapshots", "-r", str(repo), E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 1
    assert "vault slot" in r.stderr
    assert "password slot" in r.stderr
    assert attacker.requests == []


# -- 4. junk keys/ objects: a cap per repository, checked before any KDF ------------------------


def test_many_junk_key_objects_are_refused_before_any_kdf(tmp_path: Path) -> None:
    from e2ebackup.errors import TooManyKeySlots
    from e2ebackup.repo.repository import Repository
    from e2ebackup.storage import LocalStorage

    root = tmp_path / "repo"
    Repository.init(LocalStorage(root), password=PASSWORD, kdf=FAST)
    for _ in range(40):
        plant_in_repo(root, junk_password_slot(), os.urandom(32).hex())
    with pytest.raises(TooManyKeySlots, match="41"):
        Repository.open(LocalStorage(root, create=False), password=PASSWORD)
    r = cli(tmp_path, "snapshots", "-r", str(root), E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 1
    assert "41 key slots" in r.stderr


def test_one_key_object_full_of_slots_counts_towards_the_cap(tmp_path: Path) -> None:
    from e2ebackup.errors import TooManyKeySlots
    from e2ebackup.repo.repository import Repository
    from e2ebackup.storage import LocalStorage

    root = tmp_path / "repo"
    Repository.init(LocalStorage(root), password=PASSWORD, kdf=FAST)
    for _ in range(2):  # 1 + 2 * 20 slots, each object within its own limit of 32
        (root / "keys" / os.urandom(32).hex()).write_bytes(
            bytes([20]) + b"".join(junk_password_slot() for _ in range(20))
        )
    with pytest.raises(TooManyKeySlots, match="41"):
        Repository.open(LocalStorage(root, create=False), password=PASSWORD)


# -- 5. keys stay out of pickles ----------------------------------------------------------------


def test_a_recovery_key_cannot_be_pickled() -> None:
    rk = RecoveryKey.generate()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(rk, protocol=protocol)


def test_a_password_cannot_be_pickled_or_shown() -> None:
    from e2ebackup.keys import Password

    password = Password("hunter2-secret")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(password, protocol=protocol)
    assert "hunter2" not in repr(password) + str(password) + f"{password}"
