"""ordered_map: results in order, a bounded number computed ahead, errors where they belong."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2ebackup._parallel import ordered_map


def test_results_come_in_order_whatever_finishes_first() -> None:
    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (10 - n % 10))
        return n * n

    assert list(ordered_map(slow_for_small, range(50), threads=4)) == [n * n for n in range(50)]
    assert list(ordered_map(slow_for_small, range(5), threads=1)) == [n * n for n in range(5)]


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_at_most_threads_plus_one_results_are_computed_ahead(threads: int) -> None:
    started = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal started
        with lock:
            started += 1
        return n

    results = ordered_map(work, range(100), threads=threads)
    for consumed, value in enumerate(results, start=1):
        assert value == consumed - 1
        time.sleep(0.001)  # a slow consumer: the producers must wait for it
        with lock:
            assert started <= consumed + threads


def test_an_error_is_raised_in_its_place_and_the_rest_is_cancelled() -> None:
    done: list[int] = []

    def work(n: int) -> int:
        if n == 3:
            raise ValueError("item 3")
        time.sleep(0.001)
        done.append(n)
        return n

    got: list[int] = []
    with pytest.raises(ValueError, match="item 3"):
        got.extend(ordered_map(work, range(1000), threads=2))
    assert got == [0, 1, 2]
    assert len(done) < 10  # not the other 996


def test_a_shared_pool_is_left_running() -> None:
    with ThreadPoolExecutor(2) as pool:
        assert list(ordered_map(str, [1, 2, 3], threads=2, pool=pool)) == ["1", "2", "3"]
        assert pool.submit(int, "4").result() == 4
