"""Running I/O-bound calls a few at once, with results in order and bounded memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    threads: int,
    pool: ThreadPoolExecutor | None = None,
) -> Iterator[R]:
    """``fn`` over ``items`` in up to ``threads`` threads (of ``pool``, or a pool of its own),
    yielding results in the order of ``items``; at most ``threads + 1`` results are computed
    ahead of the consumer, so memory stays bounded however many items there are. An exception
    from ``fn`` is raised where its result would have been yielded."""
    if threads <= 1 and pool is None:
        yield from map(fn, items)
        return
    own = pool is None
    executor = pool or ThreadPoolExecutor(threads, thread_name_prefix="e2ebackup-io")
    ahead: deque[Future[R]] = deque()
    try:
        for item in items:
            ahead.append(executor.submit(fn, item))
            if len(ahead) > threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:
        for pending in ahead:
            pending.cancel()
        if own:
            executor.shutdown(wait=True)
