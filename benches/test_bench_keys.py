"""Password hashing and sealed files, side by side with their peers.

KDF benchmarks process one derivation per call (``bytes`` = 1), so the report's rates are
derivations per second and its ratios compare times directly.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import e2ebackup
import pyAesCrypt
import pytest
from argon2.low_level import Type, hash_secret_raw
from conftest import MIB, env_bytes, random_bytes, run
from e2ebackup import _core
from e2ebackup.keys import Argon2idParams
from pytest_benchmark.fixture import BenchmarkFixture

SALT = b"\x01" * 16
PASSWORD = b"correct horse battery staple"
SEAL_BYTES = env_bytes("E2EBACKUP_BENCH_SEAL_MB", 1024)
# pyAesCrypt runs at tens of MB/s in pure Python: time it on a slice and normalise.
AESCRYPT_BYTES = min(SEAL_BYTES, 32 * MIB)


def test_argon2id_e2ebackup(benchmark: BenchmarkFixture) -> None:
    run(
        benchmark,
        lambda: _core.argon2id(PASSWORD, SALT),
        group="argon2id m=64MiB t=3 p=4",
        case="e2ebackup argon2id",
        nbytes=1,
    )


def test_argon2id_argon2_cffi(benchmark: BenchmarkFixture) -> None:
    run(
        benchmark,
        lambda: hash_secret_raw(PASSWORD, SALT, 3, 65536, 4, 32, Type.ID),
        group="argon2id m=64MiB t=3 p=4",
        case="argon2-cffi",
        nbytes=1,
    )


def two_in_threads() -> None:
    threads = [threading.Thread(target=_core.argon2id, args=(PASSWORD, SALT)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_argon2id_two_threads(benchmark: BenchmarkFixture) -> None:
    # Two derivations per call: the rate counts both, so "2 threads / 1 thread" near 2 means
    # the GIL was released and the lanes shared the cores.
    run(
        benchmark,
        two_in_threads,
        group="argon2id m=64MiB t=3 p=4",
        case="e2ebackup argon2id x2 in 2 threads",
        nbytes=2,
    )


def test_scrypt_e2ebackup(benchmark: BenchmarkFixture) -> None:
    run(
        benchmark,
        lambda: _core.scrypt(PASSWORD, SALT),
        group="scrypt N=2^17 r=8 p=1",
        case="e2ebackup scrypt",
        nbytes=1,
    )


def test_scrypt_hashlib(benchmark: BenchmarkFixture) -> None:
    run(
        benchmark,
        lambda: hashlib.scrypt(PASSWORD, salt=SALT, n=2**17, r=8, p=1, maxmem=1 << 30, dklen=32),
        group="scrypt N=2^17 r=8 p=1",
        case="hashlib.scrypt",
        nbytes=1,
    )


@pytest.fixture(scope="module")
def seal_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seal") / "plain"
    with open(path, "wb") as f:
        for i in range(0, SEAL_BYTES, 64 * MIB):
            f.write(random_bytes(min(64 * MIB, SEAL_BYTES - i)))
    return path


def test_seal_file_e2ebackup(benchmark: BenchmarkFixture, seal_source: Path) -> None:
    dst = seal_source.with_name("sealed")
    run(
        benchmark,
        lambda: e2ebackup.encrypt_file(seal_source, dst, password=PASSWORD, kdf=Argon2idParams()),
        group="sealed file encrypt (password)",
        case="e2ebackup encrypt_file(password=)",
        nbytes=SEAL_BYTES,
        seconds=0.5,
    )
    os.unlink(dst)


def test_seal_file_pyaescrypt(benchmark: BenchmarkFixture, seal_source: Path) -> None:
    src = seal_source.with_name("slice")
    with open(seal_source, "rb") as fin, open(src, "wb") as fout:
        fout.write(fin.read(AESCRYPT_BYTES))
    dst = seal_source.with_name("slice.aes")
    run(
        benchmark,
        lambda: pyAesCrypt.encryptFile(str(src), str(dst), PASSWORD.decode()),
        group="sealed file encrypt (password)",
        case="pyAesCrypt encryptFile",
        nbytes=AESCRYPT_BYTES,
        note=f"on {AESCRYPT_BYTES // MIB} MiB, normalised",
        seconds=0.5,
    )
    os.unlink(dst)
    os.unlink(src)
