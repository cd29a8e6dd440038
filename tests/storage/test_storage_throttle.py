"""Bandwidth limits: the token bucket's arithmetic on a simulated clock (no timing in tests),
the wrapper passing the conformance suite, and the command line taking the limits."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ebackup.storage import LocalStorage, RetryingStorage, Storage, ThrottledStorage
from e2ebackup.storage.wrappers import TokenBucket
from repo_helpers import cli
from storage_conformance import StorageConformance, put


class Clock:
    """Simulated time: sleeping moves it forward."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_passes_then_the_rate_holds() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, burst=500, clock=clock, sleep=clock.sleep)
    bucket.take(500)
    assert clock.slept == []  # within the burst
    for _ in range(100):
        bucket.take(100)  # 10,000 bytes more at 1,000 a second
    assert sum(clock.slept) == pytest.approx(10.0)
    clock.now += 60  # idle: the bucket refills, but only up to the burst
    bucket.take(500)
    bucket.take(1000)
    assert sum(clock.slept) == pytest.approx(11.0)


def test_debt_is_slept_off_by_whoever_incurs_it() -> None:
    clock = Clock()
    bucket = TokenBucket(100, burst=100, clock=clock, sleep=clock.sleep)
    bucket.take(1100)  # a large read all at once
    assert clock.slept == [pytest.approx(10.0)]
    bucket.take(0)
    assert len(clock.slept) == 1
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_uploads_and_downloads_are_paid_for(tmp_path: Path) -> None:
    clock = Clock()
    s = ThrottledStorage(
        LocalStorage(tmp_path), upload=1 << 20, download=2 << 20, sleep=clock.sleep, clock=clock
    )
    data = os.urandom(5 << 20)
    put(s, "data/aa/x", data)
    burst_up = s.up.burst if s.up else 0
    assert sum(clock.slept) == pytest.approx((len(data) - burst_up) / (1 << 20))
    clock.slept.clear()
    assert s.read("data/aa/x") == data
    with s.open("data/aa/x", offset=1 << 20, length=1 << 20) as f:
        assert f.read() == data[1 << 20 : 2 << 20]
    burst_down = s.down.burst if s.down else 0
    assert sum(clock.slept) == pytest.approx((6 << 20) / (2 << 20) - burst_down / (2 << 20))


def test_a_retried_upload_is_paid_for_again(tmp_path: Path) -> None:
    """Inside the retries, the bytes of every attempt count (they crossed the link)."""
    from e2ebackup.errors import StorageUnavailable

    clock = Clock()

    class FlakyOnce(LocalStorage):
        failed = False

        def put(self, name: str, data: io.BufferedIOBase, *, size: int, sha256: bytes) -> None:  # type: ignore[override]
            if not self.failed:
                self.failed = True
                while data.read(1 << 20):
                    pass
                raise StorageUnavailable("connection reset")
            super().put(name, data, size=size, sha256=sha256)  # type: ignore[arg-type]

    s = RetryingStorage(
        ThrottledStorage(FlakyOnce(tmp_path), upload=1 << 20, sleep=clock.sleep, clock=clock),
        sleep=lambda _: None,
    )
    data = os.urandom(3 << 20)
    put(s, "data/aa/y", data)
    assert s.read("data/aa/y") == data
    assert sum(clock.slept) > 5.0  # about 6 MiB at 1 MiB/s, less the burst


class TestThrottledConformance(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        clock = Clock()
        inner = LocalStorage(tmp_path / "repo")
        with ThrottledStorage(
            inner, upload=1 << 20, download=1 << 20, sleep=clock.sleep, clock=clock
        ) as s:
            yield s


def test_command_line_limits(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x" * 1000)
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    fast = cli(tmp_path, "backup", "-r", repo, str(tmp_path / "src"), "--limit-upload", "1e6")
    assert fast.returncode == 0, fast.stderr
    for bad in ("0", "-5", "fast", "inf", "nan"):
        r = cli(tmp_path, "backup", "-r", repo, str(tmp_path / "src"), "--limit-upload", bad)
        assert r.returncode == 2
        assert "a rate in KiB/s" in r.stderr
    listed = cli(tmp_path, "snapshots", "-r", repo, "--limit-download", "50000", "--json")
    assert listed.returncode == 0, listed.stderr
