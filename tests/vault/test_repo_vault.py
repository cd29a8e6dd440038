"""A repository whose password is held by a key vault: init --vault, back up, then restore on a
new device (a fresh state and config) with only the password; after ten wrong passwords only
the recovery key opens it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from repo_helpers import make_tree, snapshot_of
from servers.vault import VaultProcess, vault  # noqa: F401

PASSWORD = "long vault passphrase"


def e2eb(device: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    # Each "device" has its own home and state: nothing carries over but the repository.
    environ.update(HOME=str(device), E2EBACKUP_STATE_DIR=str(device / "state"))
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args], capture_output=True, text=True,
        env=environ, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_init_with_vault_backup_and_restore_on_a_new_device(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    phone, new_phone = tmp_path / "phone", tmp_path / "new-phone"
    phone.mkdir()
    new_phone.mkdir()
    src = phone / "chats"
    make_tree(src, small_files=30, big=[2 << 20])
    repo = str(tmp_path / "cloud-repo")
    made = e2eb(phone, "init", "-r", repo, "--vault", vault.url, "--recovery-key", "--json",
                E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert made.returncode == 0, made.stderr
    recovery_key = json.loads(made.stdout)["recovery_key"]
    kinds = json.loads(e2eb(phone, "key", "list", "-r", repo, "--json",
                            E2EBACKUP_PASSWORD=PASSWORD).stdout)  # fmt: skip
    assert sorted(k["kind"] for k in kinds) == ["recovery-key", "vault"]  # no password slot
    assert e2eb(phone, "backup", "-r", repo, str(src), E2EBACKUP_PASSWORD=PASSWORD).returncode == 0

    restored = e2eb(new_phone, "restore", "-r", repo, "latest", "--target",
                    str(new_phone / "restored"), E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert snapshot_of(new_phone / "restored" / "chats") == snapshot_of(src)

    # The repository holds no slot that a password alone opens offline: the vault is the only
    # way from the password to the key, and it stops after ten wrong guesses.
    for _ in range(10):
        wrong = e2eb(new_phone, "snapshots", "-r", repo, E2EBACKUP_PASSWORD="guess")
        assert wrong.returncode == 1
    gone = e2eb(new_phone, "snapshots", "-r", repo, E2EBACKUP_PASSWORD=PASSWORD)
    assert gone.returncode == 1
    back = e2eb(new_phone, "restore", "-r", repo, "latest", "--target", str(new_phone / "again"),
                E2EBACKUP_RECOVERY_KEY=recovery_key)  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert snapshot_of(new_phone / "again" / "chats") == snapshot_of(src)


def test_key_passwd_re_registers_with_the_vault(
    tmp_path: Path,
    vault: VaultProcess,  # noqa: F811
) -> None:
    device = tmp_path / "device"
    device.mkdir()
    repo = str(tmp_path / "repo")
    made = e2eb(device, "init", "-r", repo, "--vault", vault.url, "--recovery-key",
                E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "new").write_text("a new vault passphrase")
    new_file = str(tmp_path / "new")
    changed = e2eb(device, "key", "passwd", "-r", repo, "--new-password-file", new_file,
                   E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert e2eb(device, "key", "check", "-r", repo, E2EBACKUP_PASSWORD=PASSWORD).returncode == 1
    ok = e2eb(device, "key", "check", "-r", repo, E2EBACKUP_PASSWORD="a new vault passphrase")
    assert ok.returncode == 0, ok.stderr
    added = e2eb(device, "key", "add", "-r", repo, "--new-password-file", str(tmp_path / "new"),
                 E2EBACKUP_PASSWORD="a new vault passphrase")  # fmt: skip
    assert added.returncode == 2
    assert "offline guessing" in added.stderr
