"""The command line, run as a real subprocess."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import e2ebackup
import pytest
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import format_hex_key, parse_hex_key, read_key_file
from helpers import random_bytes


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args], input=stdin, capture_output=True, check=False
    )


def test_keygen_encrypt_decrypt_round_trip(tmp_path: Path) -> None:
    keyfile = tmp_path / "k"
    assert run("keygen", "-o", str(keyfile)).returncode == 0
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    data = random_bytes(100_000)
    (tmp_path / "a").write_bytes(data)
    r = run(
        "encrypt",
        "-k",
        str(keyfile),
        "--context",
        "x",
        str(tmp_path / "a"),
        str(tmp_path / "a.e2e"),
    )
    assert r.returncode == 0, r.stderr
    key = read_key_file(keyfile.read_bytes())
    assert e2ebackup.decrypt(key, (tmp_path / "a.e2e").read_bytes(), context=b"x") == data
    r = run("decrypt", "-k", str(keyfile), "--context", "x", str(tmp_path / "a.e2e"), "-")
    assert r.returncode == 0
    assert r.stdout == data
    r = run("encrypt", "-k", str(keyfile), "-", "-", stdin=b"piped")
    assert e2ebackup.decrypt(key, r.stdout) == b"piped"


def test_failures_have_distinct_exit_codes_and_leave_no_output(tmp_path: Path) -> None:
    keyfile, other = tmp_path / "k", tmp_path / "k2"
    run("keygen", "-o", str(keyfile))
    run("keygen", "-o", str(other))
    (tmp_path / "a").write_bytes(b"secret data")
    run("encrypt", "-k", str(keyfile), str(tmp_path / "a"), str(tmp_path / "a.e2e"))
    r = run("decrypt", "-k", str(other), str(tmp_path / "a.e2e"), str(tmp_path / "out"))
    assert r.returncode == 1
    assert b"decryption failed" in r.stderr
    assert not (tmp_path / "out").exists()
    r = run("decrypt", "-k", str(keyfile), str(tmp_path / "missing"), str(tmp_path / "out"))
    assert r.returncode == 3
    r = run("encrypt", "-k", str(keyfile), str(tmp_path / "a"), str(tmp_path / "a.e2e"))
    assert r.returncode == 3
    assert b"--force" in r.stderr
    (tmp_path / "bad").write_text("not a key")
    r = run("encrypt", "-k", str(tmp_path / "bad"), str(tmp_path / "a"), str(tmp_path / "b"))
    assert r.returncode == 2
    assert b"not a hex digit" in r.stderr
    assert run("encrypt", str(tmp_path / "a")).returncode == 2
    assert sorted(os.listdir(tmp_path)) == ["a", "a.e2e", "bad", "k", "k2"]


def test_hex_keys_parse_tolerantly_and_fail_precisely() -> None:
    key = bytes(range(32))
    text = format_hex_key(key)
    assert len(text.split()) == 16
    assert parse_hex_key(text) == key
    assert parse_hex_key(text.upper().replace(" ", "-")) == key
    assert parse_hex_key("\n".join(text.split())) == key
    with pytest.raises(InvalidArgument, match="found 63"):
        parse_hex_key(key.hex()[:-1])
    with pytest.raises(InvalidArgument, match="'g' at position 3"):
        parse_hex_key("00g" + key.hex()[3:])
    assert read_key_file(key) == key
    assert read_key_file(text.encode()) == key
    with pytest.raises(InvalidArgument):
        read_key_file(b"\xff" * 40)


def test_readme_quick_start_main_job_works(tmp_path: Path) -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    install_and_run, test_command = block.strip().splitlines()
    assert test_command == "bash tools/test.sh"
    steps = install_and_run.split(" && ")
    assert steps[0] == "python3 -m pip install ."  # the package is already installed here
    shutil.copytree(readme.parent / "python", tmp_path / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    env["E2EBACKUP_STATE_DIR"] = str(tmp_path / "state")
    for step in steps[1:]:
        argv = shlex.split(step)
        if argv[0] == "export":
            name, value = argv[1].split("=", 1)
            env[name] = value
            continue
        assert argv[:3] == ["python3", "-m", "e2ebackup"]
        r = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=tmp_path,
            capture_output=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr
    for f in (tmp_path / "python").rglob("*.py"):
        restored = tmp_path / "restored" / f.relative_to(tmp_path)
        assert restored.read_bytes() == f.read_bytes()
