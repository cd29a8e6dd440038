"""Shared test data helpers."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import e2ebackup

CHUNK = e2ebackup.CHUNK_SIZE
# Lengths around chunk boundaries, where C2SP's "the last chunk is shorter" rule bites.
BOUNDARY_LENGTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1]


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def runs_without_the_gil(fn: Callable[[], object]) -> bool:
    """Whether another Python thread made progress while ``fn`` ran.

    With a huge switch interval, a thread that keeps handing the GIL back can only run while the
    caller does not hold the GIL, that is, while ``fn`` released it."""
    count = 0
    stop = threading.Event()

    def counter() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1
            time.sleep(0.0001)  # hands the GIL back at once

    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    t = threading.Thread(target=counter)
    t.start()
    try:
        time.sleep(0.01)
        before = count
        fn()
        after = count
    finally:
        stop.set()
        sys.setswitchinterval(old)
        t.join()
    return after > before
