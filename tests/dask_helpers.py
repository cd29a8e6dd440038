# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""What the Dask tests share: a cluster of two worker processes that can reach the test S3
server, a way to write a tree of files, and a record of everything the scheduler holds while
a run goes on."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import distributed


@contextmanager
def s3_ready_cluster() -> Iterator[distributed.Client]:
    """Two single-threaded worker processes; the S3 credentials are in their environment, as
    on a real cluster (the coordinator's are its own)."""
    from servers import cloud

    aws = {
        "AWS_ACCESS_KEY_ID": cloud.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": cloud.SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", env=aws
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Writes each relative path's bytes below ``root``, making the folders on the way."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


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
        seen.extend(client.run_on_scheduler(on_scheduler))

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


def busy_workers(client: distributed.Client, prefix: str) -> list[str]:
    """The addresses of the workers running, right now, a task whose key starts with
    ``prefix`` (the kill tests pick their victim with it)."""

    def running(dask_scheduler: distributed.Scheduler) -> list[str]:
        return [
            ts.processing_on.address
            for ts in dask_scheduler.tasks.values()
            if str(ts.key).startswith(prefix) and ts.processing_on is not None
        ]

    return list(client.run_on_scheduler(running))


def wait_busy(
    client: distributed.Client,
    prefix: str,
    runner: threading.Thread,
    *,
    ready: Callable[[], bool] = lambda: True,
    workers: int = 1,
    seconds: float = 60.0,
) -> list[str]:
    """The kill tests' wait: until ``ready()`` holds and then ``workers`` workers are seen
    running a task of ``prefix`` (so those tasks still run when it holds), while the run in
    ``runner`` goes on. Returns their addresses; fails the test if the run ended first or
    nothing was seen within ``seconds``."""
    deadline = time.monotonic() + seconds
    busy: list[str] = []
    while runner.is_alive() and time.monotonic() < deadline:
        if ready():
            busy = busy_workers(client, prefix)
            if len(busy) >= workers:
                break
        time.sleep(0.005)
    assert runner.is_alive(), "the run ended before a worker was killed"
    assert len(busy) >= workers, f"{workers} task(s) {prefix}* were not seen running"
    return busy


def kill_workers(client: distributed.Client, *addresses: str) -> None:
    """SIGKILL to the processes of the workers at ``addresses`` (their nannies start new
    ones); their pids are asked for first, while every worker still answers."""
    pids = client.run(os.getpid)
    for address in addresses:
        os.kill(pids[address], signal.SIGKILL)
