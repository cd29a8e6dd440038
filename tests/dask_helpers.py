"""What the Dask tests share: a record of everything the scheduler holds while a run goes on."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import distributed


@contextmanager
def scheduler_view(client: distributed.Client) -> Iterator[list[tuple[str, bytes]]]:
    """Yields a list that fills, while the block runs and once after it, with one entry per task
    the scheduler holds: its key, state, run spec and holders as text, and the pickled run
    spec. What a test finds absent here never reached the scheduler."""
    seen: list[tuple[str, bytes]] = []

    def on_scheduler(dask_scheduler: distributed.Scheduler) -> list[tuple[str, bytes]]:
        out = []
        for ts in dask_scheduler.tasks.values():
            spec = pickle.dumps(ts.run_spec) if ts.run_spec is not None else b""
            out.append((f"{ts.key!r} {ts!r} {ts.run_spec!r} {ts.who_has!r}", spec))
        return out

    def snapshot() -> None:
        seen.extend(client.run_on_scheduler(on_scheduler))  # type: ignore[no-untyped-call]

    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            snapshot()
            stop.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()
    snapshot()
