"""Sealing to a recipient key (X25519 + ML-KEM-768) against a password slot and against age
(pyrage, X25519 only), on one small file (the slot's cost shows) and one large one (the
payload's does). Ratios are what the report compares; no timing is asserted.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import e2ebackup
import pyrage
import pytest
from conftest import MIB, env_bytes, random_bytes, run
from e2ebackup.keys import Argon2idParams
from e2ebackup.recipients import Identity
from pytest_benchmark.fixture import BenchmarkFixture

LARGE_BYTES = env_bytes("E2EBACKUP_BENCH_RECIPIENT_MB", 64)
SMALL_BYTES = 4096
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", params=[SMALL_BYTES, LARGE_BYTES], ids=["4KiB", "large"])
def plain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    size: int = request.param
    path = tmp_path_factory.mktemp("recipients") / f"plain-{size}"
    with open(path, "wb") as f:
        for i in range(0, size, 64 * MIB):
            f.write(random_bytes(min(64 * MIB, size - i)))
    return path


def test_seal_to_recipient(benchmark: BenchmarkFixture, plain: Path) -> None:
    recipient = Identity.generate().recipient
    dst = plain.with_name("to-recipient")
    size = plain.stat().st_size
    run(
        benchmark,
        lambda: e2ebackup.encrypt_file(plain, dst, recipients=[recipient]),
        group=f"seal to a recipient ({size} bytes)",
        case="e2ebackup encrypt_file(recipients=) X25519+ML-KEM-768",
        nbytes=size,
        seconds=0.5,
    )
    os.unlink(dst)


def test_seal_with_password(benchmark: BenchmarkFixture, plain: Path) -> None:
    dst = plain.with_name("with-password")
    size = plain.stat().st_size
    run(
        benchmark,
        lambda: e2ebackup.encrypt_file(plain, dst, password=PASSWORD, kdf=Argon2idParams()),
        group=f"seal to a recipient ({size} bytes)",
        case="e2ebackup encrypt_file(password=) Argon2id default",
        nbytes=size,
        seconds=0.5,
    )
    os.unlink(dst)


def test_seal_with_pyrage(benchmark: BenchmarkFixture, plain: Path) -> None:
    recipient = pyrage.x25519.Identity.generate().to_public()
    size = plain.stat().st_size

    def seal() -> None:
        # pyrage takes and returns bytes: reading and writing the file is part of the job.
        data = plain.read_bytes()
        with open(plain.with_name("pyrage.age"), "wb") as f:
            f.write(pyrage.encrypt(data, [recipient]))

    run(
        benchmark,
        seal,
        group=f"seal to a recipient ({size} bytes)",
        case="pyrage encrypt X25519 (age)",
        nbytes=size,
        seconds=0.5,
    )
    os.unlink(plain.with_name("pyrage.age"))


def test_open_with_identity(benchmark: BenchmarkFixture, plain: Path) -> None:
    identity = Identity.generate()
    sealed_file = io.BytesIO()
    with open(plain, "rb") as f:
        e2ebackup.encrypt_file(f, sealed_file, recipients=[identity.recipient])
    blob = sealed_file.getvalue()
    run(
        benchmark,
        lambda: e2ebackup.decrypt_file(io.BytesIO(blob), io.BytesIO(), identity=identity),
        group=f"open with an identity ({len(blob)} bytes)",
        case="e2ebackup decrypt_file(identity=)",
        nbytes=len(blob),
        seconds=0.5,
    )
