"""The command line on sealed files: passwords from files, fds and the environment, recovery
keys, key slot commands, rotation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from e2ebackup.keys import RecoveryKey
from helpers import random_bytes

PASSWORD = "correct horse battery"


def run(
    *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,
        pass_fds=pass_fds,
        check=False,
    )


def test_password_and_recovery_key_round_trip(tmp_path: Path) -> None:
    data = random_bytes(50_000)
    (tmp_path / "db").write_bytes(data)
    env = {"E2EBACKUP_PASSWORD": PASSWORD}
    r = run(
        "encrypt",
        "--new-recovery-key",
        "--qr",
        str(tmp_path / "rk.svg"),
        str(tmp_path / "db"),
        str(tmp_path / "db.sealed"),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    digits = re.search(r"((?:[0-9a-f]{4} ){15}[0-9a-f]{4})", r.stderr)
    assert digits is not None
    assert (tmp_path / "rk.svg").exists()
    assert PASSWORD not in r.stderr + r.stdout
    (tmp_path / "rk").write_text(digits.group(1))
    r = run("decrypt", str(tmp_path / "db.sealed"), str(tmp_path / "out1"), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out1").read_bytes() == data
    r = run(
        "decrypt",
        "--recovery-key-file",
        str(tmp_path / "rk"),
        str(tmp_path / "db.sealed"),
        str(tmp_path / "out2"),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out2").read_bytes() == data
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    out3 = tmp_path / "out3"
    r = run("decrypt", "--password-file", str(pw_file), str(tmp_path / "db.sealed"), str(out3))
    assert r.returncode == 0
    assert out3.read_bytes() == data
    rfd, wfd = os.pipe()
    os.write(wfd, (PASSWORD + "\n").encode())
    os.close(wfd)
    try:
        r = run(
            "key", "check", "--password-fd", str(rfd), str(tmp_path / "db.sealed"), pass_fds=(rfd,)
        )
    finally:
        os.close(rfd)
    assert r.returncode == 0, r.stderr


def test_failures_and_missing_passwords(tmp_path: Path) -> None:
    (tmp_path / "db").write_bytes(b"data")
    env = {"E2EBACKUP_PASSWORD": PASSWORD}
    assert run("encrypt", str(tmp_path / "db"), str(tmp_path / "s"), env=env).returncode == 0
    r = run(
        "decrypt", str(tmp_path / "s"), str(tmp_path / "out"), env={"E2EBACKUP_PASSWORD": "nope"}
    )
    assert r.returncode == 1
    assert "wrong password" in r.stderr
    assert not (tmp_path / "out").exists()
    r = run("decrypt", str(tmp_path / "s"), str(tmp_path / "out"))
    assert r.returncode == 2
    assert "no password given" in r.stderr
    rk = RecoveryKey.generate()
    r = run(
        "decrypt",
        str(tmp_path / "s"),
        str(tmp_path / "out"),
        env={"E2EBACKUP_RECOVERY_KEY": rk.reveal()},
    )
    assert r.returncode == 1
    assert "no recovery-key slot" in r.stderr
    r = run("decrypt", str(tmp_path / "db"), str(tmp_path / "out"), env=env)
    assert r.returncode == 1
    assert "not an e2ebackup sealed file" in r.stderr


def test_key_commands_and_rotate(tmp_path: Path) -> None:
    (tmp_path / "db").write_bytes(b"chat history")
    f = str(tmp_path / "s")
    env = {"E2EBACKUP_PASSWORD": PASSWORD}
    assert run("encrypt", "--kdf", "scrypt", str(tmp_path / "db"), f, env=env).returncode == 0
    (tmp_path / "new").write_text("second password")
    r = run(
        "key", "add", "--new-password-file", str(tmp_path / "new"), "--label", "phone", f, env=env
    )
    assert r.returncode == 0, r.stderr
    r = run("key", "add", "--new-recovery-key", f, env=env)
    assert r.returncode == 0, r.stderr
    listing = json.loads(run("key", "list", "--json", f).stdout)
    assert [s["kind"] for s in listing] == ["password", "password", "recovery-key"]
    assert listing[0]["kdf"].startswith("scrypt")
    assert listing[1]["label"] == "phone"
    (tmp_path / "third").write_text("third password")
    r = run("key", "passwd", "--new-password-file", str(tmp_path / "third"), f, env=env)
    assert r.returncode == 0, r.stderr
    assert run("key", "check", f, env=env).returncode == 1
    third = {"E2EBACKUP_PASSWORD": "third password"}
    assert run("key", "check", f, env=third).returncode == 0
    assert run("key", "remove", "--slot", "1", f, env=third).returncode == 0
    assert len(json.loads(run("key", "list", "--json", f).stdout)) == 2
    r = run("rotate", f, env=third)
    assert r.returncode == 0, r.stderr
    assert "slots: password" in r.stderr
    r = run("decrypt", f, "-", env=third)
    assert r.stdout == "chat history"


def test_keygen_qr(tmp_path: Path) -> None:
    r = run("keygen", "-o", str(tmp_path / "k"), "--qr", str(tmp_path / "k.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k.png").read_bytes().startswith(b"\x89PNG")
    RecoveryKey.parse((tmp_path / "k").read_text())
