"""End to end through the command line and a running vault on 127.0.0.1: a sealed file with a
vault slot and a recovery key opens with the password alone; after ten wrong passwords only the
recovery key opens it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from servers.vault import VaultProcess, vault  # noqa: F401

PASSWORD = "tr0ub4dor & 3"


def e2eb(
    *args: str, password: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    if password is not None:
        environ["E2EBACKUP_PASSWORD"] = password
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_encrypt_with_vault_then_decrypt_with_password_or_recovery_key(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    src, enc = tmp_path / "notes.txt", tmp_path / "notes.e2eb"
    src.write_bytes(os.urandom(300_000))
    made = e2eb(
        "encrypt", "--vault", vault.url, "--new-recovery-key", "-q", str(src), str(enc),
        password=PASSWORD,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    recovery_key = made.stderr.split("shown only once")[1].split("\n\n")[1].strip()
    assert len(recovery_key.replace(" ", "")) == 64

    listing = e2eb("key", "list", str(enc))
    assert "vault" in listing.stdout
    assert vault.url in listing.stdout
    assert "password" not in listing.stdout

    out = tmp_path / "out1"
    opened = e2eb("decrypt", "-q", str(enc), str(out), password=PASSWORD)
    assert opened.returncode == 0, opened.stderr
    assert out.read_bytes() == src.read_bytes()

    # key passwd re-registers; the old password no longer opens it.
    new_pw = tmp_path / "new-password"
    new_pw.write_text("n3w password\n")
    changed = e2eb("key", "passwd", str(enc), "--new-password-file", str(new_pw), password=PASSWORD)
    assert changed.returncode == 0, changed.stderr
    assert e2eb("decrypt", "-q", str(enc), str(tmp_path / "o"), password=PASSWORD).returncode == 1
    checked = e2eb("key", "check", str(enc), password="n3w password")
    assert checked.returncode == 0
    # The old password was one failed attempt at the new record: the owner is told, and the
    # right password does not give it back (docs/VAULT.md, Guess counting).
    assert "1 failed attempt since your last unlock" in checked.stderr

    # Nine more wrong passwords: each failure says how many are left.
    for left in range(8, -1, -1):
        wrong = e2eb("decrypt", "-q", str(enc), str(tmp_path / "o"), password="guess")
        assert wrong.returncode == 1
        assert ("last attempt" if left == 0 else f"{left} attempt") in wrong.stderr
    gone = e2eb("decrypt", "-q", str(enc), str(tmp_path / "o"), password="n3w password")
    assert gone.returncode == 1
    assert "recovery key" in gone.stderr
    assert not (tmp_path / "o").exists()

    out2 = tmp_path / "out2"
    recovered = e2eb(
        "decrypt", "-q", str(enc), str(out2), env={"E2EBACKUP_RECOVERY_KEY": recovery_key}
    )
    assert recovered.returncode == 0, recovered.stderr
    assert out2.read_bytes() == src.read_bytes()


def test_vault_refuses_password_slot_and_warns_without_recovery_key(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    src, enc = tmp_path / "a", tmp_path / "a.e2eb"
    src.write_bytes(b"hello")
    made = e2eb("encrypt", "--vault", vault.url, "-q", str(src), str(enc), password=PASSWORD)
    assert made.returncode == 0, made.stderr
    assert "no recovery key" in made.stderr
    pw = tmp_path / "pw"
    pw.write_text("another\n")
    added = e2eb("key", "add", str(enc), "--new-password-file", str(pw), password=PASSWORD)
    assert added.returncode == 2
    assert "offline guessing" in added.stderr


def test_vault_serve_needs_a_data_dir() -> None:
    result = e2eb("vault", "serve")
    assert result.returncode == 2
    assert "--data-dir" in result.stderr
