"""Shared fixtures and the timing helper of the e2ebackup benchmark suite (pytest-benchmark).

Sizes come from the environment so the same suite serves the full run and the CI smoke run:

``E2EBACKUP_BENCH_MB``       in-memory data size in MiB (default 256; CI smoke run: 8)
``E2EBACKUP_BENCH_FILE_MB``  file size in MiB for the file-to-file suite (default 256)
``E2EBACKUP_BENCH_SECONDS``  timed seconds aimed at per benchmark (default 2.0)
``E2EBACKUP_BENCH_DIR``      parent directory of the file suite's scratch directory
                             (default: the system temporary directory)

Every benchmark records ``extra_info["case"]`` (a stable name that ``report.py`` looks up) and
``extra_info["bytes"]`` (the bytes one call processes), so that peers run on a smaller slice are
normalised to bytes per second. Never assert on a timing here: the machines are shared.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import e2ebackup
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

MIB = 1 << 20


def env_bytes(name: str, default_mib: float) -> int:
    """A size in bytes from an environment variable given in MiB (fractions allowed)."""
    raw = os.environ.get(name, "").strip()
    mib = float(raw) if raw else default_mib
    size = int(mib * MIB)
    if size <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return size


BENCH_BYTES = env_bytes("E2EBACKUP_BENCH_MB", 256)
FILE_BYTES = env_bytes("E2EBACKUP_BENCH_FILE_MB", 256)
TARGET_SECONDS = float(os.environ.get("E2EBACKUP_BENCH_SECONDS", "2.0"))
MIN_ROUNDS = 5
MAX_ROUNDS = 200

# Slow peers run on at most this much data; their figures are normalised to bytes per second.
SLOW_PEER_BYTES = 32 * MIB

ALGORITHMS = ("aes-256-gcm", "chacha20-poly1305")


def thread_label(threads: int | None) -> str:
    return "1t" if threads == 1 else "all"


def run(
    benchmark: BenchmarkFixture,
    fn: Callable[[], object],
    *,
    group: str,
    case: str,
    nbytes: int,
    note: str = "",
    setup: Callable[[], None] | None = None,
    seconds: float = 1.0,
) -> None:
    """Times ``fn`` (``nbytes`` of payload per call) under ``benchmark``.

    Two untimed calls warm up (page faults in fresh buffers, thread pools, caches) and estimate
    the cost, which sets the number of rounds: about ``seconds * TARGET_SECONDS`` of work, at
    least ``MIN_ROUNDS``. Reports use the median. ``setup``, if given, runs untimed before every
    call (its cost counts in the round budget).
    """
    benchmark.group = group
    benchmark.extra_info.update({"case": case, "bytes": nbytes, "note": note})
    if benchmark.disabled:
        benchmark.pedantic(fn, setup=setup, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
        return
    cost = float("inf")
    for _ in range(2):  # the first call can be much slower (page faults, thread start-up)
        start = time.perf_counter()
        if setup is not None:
            setup()
        fn()
        cost = min(cost, max(time.perf_counter() - start, 1e-6))
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(seconds * TARGET_SECONDS / cost)))
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0
    )


def random_bytes(size: int) -> bytes:
    """Incompressible data, generated in pieces to keep the peak at about ``size``."""
    piece = 64 * MIB
    return b"".join(os.urandom(min(piece, size - i)) for i in range(0, size, piece))


@pytest.fixture(scope="session")
def key() -> bytes:
    return e2ebackup.generate_key()


@pytest.fixture(scope="session")
def plaintext() -> bytes:
    """``E2EBACKUP_BENCH_MB`` MiB of random data, made once per session."""
    return random_bytes(BENCH_BYTES)


@pytest.fixture(scope="session")
def ciphertexts(key: bytes, plaintext: bytes) -> dict[str, bytes]:
    """The plaintext encrypted once per algorithm (input of the decrypt benchmarks)."""
    return {alg: e2ebackup.encrypt(key, plaintext, algorithm=alg) for alg in ALGORITHMS}
