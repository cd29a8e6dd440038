"""Attack: whoever holds the encrypted file truncates or alters it, and the victim decrypts it
into a pipe (``e2ebackup decrypt SRC - | tar x``). Output written to a pipe cannot be taken
back, so plaintext released before the damage is found would reach the reader as if it were the
file. By default nothing may come out unless the whole file authenticated; ``--stream`` lets the
user accept a prefix, and then the exit code and stderr must say the output is not authentic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import e2ebackup
import pytest
from e2ebackup import sealed
from repo_helpers import FAST

CHUNK = e2ebackup.CHUNK_SIZE
PASSWORD = "pipe password"
# 2 MiB, 128 chunks: a prefix is released long before the end is checked.
SIZE = 128 * CHUNK + 123


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``e2ebackup ARGS`` with standard output a real pipe, as in ``... | tar x``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    env["E2EBACKUP_PASSWORD"] = PASSWORD
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def plaintext() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, plaintext: bytes) -> dict[str, Path]:
    """A sealed file and a plain C2SP file (-k) of the same plaintext, each intact, cut short
    by whole chunks (every remaining chunk authenticates), and with its last byte flipped."""
    d = tmp_path_factory.mktemp("pipe")
    (d / "plain").write_bytes(plaintext)
    sealed.seal_file(d / "plain", d / "sealed", password=PASSWORD, kdf=FAST)
    key = e2ebackup.generate_key()
    (d / "key").write_text(key.hex() + "\n")
    e2ebackup.encrypt_file(d / "plain", d / "c2sp", key)
    out = {}
    for kind in ("sealed", "c2sp"):
        whole = (d / kind).read_bytes()
        out[kind] = d / kind
        out[f"{kind}-truncated"] = d / f"{kind}-truncated"
        out[f"{kind}-truncated"].write_bytes(whole[: len(whole) - 10 * (CHUNK + 16)])
        out[f"{kind}-tampered"] = d / f"{kind}-tampered"
        out[f"{kind}-tampered"].write_bytes(whole[:-1] + bytes([whole[-1] ^ 1]))
    out["key"] = d / "key"
    return out


def decrypt_args(files: dict[str, Path], kind: str) -> list[str]:
    return ["-k", str(files["key"])] if kind.startswith("c2sp") else []


@pytest.mark.parametrize("kind", ["sealed", "c2sp"])
@pytest.mark.parametrize("damage", ["truncated", "tampered"])
@pytest.mark.parametrize("via_stdin", [False, True])
def test_damaged_file_into_a_pipe_releases_nothing(
    files: dict[str, Path], kind: str, damage: str, via_stdin: bool
) -> None:
    src = files[f"{kind}-{damage}"]
    if via_stdin:
        r = run("decrypt", *decrypt_args(files, kind), "-", "-", stdin=src.read_bytes())
    else:
        r = run("decrypt", *decrypt_args(files, kind), str(src), "-")
    assert r.returncode == 1, r.stderr
    assert r.stdout == b"", f"{len(r.stdout)} unauthenticated plaintext bytes reached the pipe"
    assert b"e2ebackup:" in r.stderr
    assert b"Traceback" not in r.stderr


@pytest.mark.parametrize("kind", ["sealed", "c2sp"])
def test_intact_file_into_a_pipe_comes_out_whole(
    files: dict[str, Path], kind: str, plaintext: bytes
) -> None:
    r = run("decrypt", *decrypt_args(files, kind), str(files[kind]), "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout == plaintext
    r = run("decrypt", *decrypt_args(files, kind), "-", "-", stdin=files[kind].read_bytes())
    assert r.returncode == 0, r.stderr
    assert r.stdout == plaintext


@pytest.mark.parametrize("kind", ["sealed", "c2sp"])
@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_stream_releases_a_prefix_but_fails_loudly(
    files: dict[str, Path], kind: str, damage: str, plaintext: bytes
) -> None:
    r = run("decrypt", "--stream", *decrypt_args(files, kind), str(files[f"{kind}-{damage}"]), "-")
    assert r.returncode == 1
    assert plaintext.startswith(r.stdout)  # whatever came out is a prefix, never altered bytes
    assert len(r.stdout) < len(plaintext)
    assert b"not authentic" in r.stderr
    assert b"Traceback" not in r.stderr
    r = run("decrypt", "--stream", *decrypt_args(files, kind), str(files[kind]), "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout == plaintext


def test_larger_than_the_pipe_buffer_is_refused_before_any_output(
    files: dict[str, Path], plaintext: bytes
) -> None:
    # Known size (a file): refused before reading; unknown (stdin): refused at the bound.
    r = run("decrypt", "--pipe-buffer", "1", str(files["sealed"]), "-")
    assert r.returncode == 2
    assert r.stdout == b""
    assert b"--stream" in r.stderr
    r = run("decrypt", "--pipe-buffer", "1", "-", "-", stdin=files["sealed"].read_bytes())
    assert r.returncode == 2
    assert r.stdout == b""
    assert b"--stream" in r.stderr
    r = run("decrypt", "--pipe-buffer", "1", "--stream", str(files["sealed"]), "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout == plaintext


def test_a_regular_file_as_standard_output_is_rolled_back(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # `decrypt SRC - > out`: a seekable sink is truncated back on failure, nothing kept.
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    env["E2EBACKUP_PASSWORD"] = PASSWORD
    with out.open("wb") as f:
        r = subprocess.run(
            [sys.executable, "-m", "e2ebackup", "decrypt", str(files["sealed-truncated"]), "-"],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE, env=env, check=False,
        )  # fmt: skip
    assert r.returncode == 1
    assert out.read_bytes() == b""
