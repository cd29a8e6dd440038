#!/usr/bin/env python3
"""The memory of a real ``dask scheduler`` process during a backup of many small files on Dask
(``e2ebackup.dask.backup``), and of the coordinator (this process).

Not a test: a script (issue 14: "the scheduler's memory stays under 200 MiB for 100k files").
It writes ``--files`` files of 1-10 KB (three in four random bytes behind a JPEG header, one
in four text) into nested folders of 100 files (``d00/d000/``, 100 folders a parent) under
``--workdir`` (default ``/dev/shm``, so that the disk is not what is measured), then starts
the processes docs/SCALE.md runs on a real cluster, on this machine's loopback:

- ``dask scheduler --host 127.0.0.1 --port <free port> --no-dashboard``;
- ``--workers`` times ``dask worker ADDRESS --nworkers 1 --nthreads 1 --no-dashboard``, with
  the allocator settings docs/SCALE.md recommends (``MALLOC_TRIM_THRESHOLD_`` /
  ``MALLOC_MMAP_THRESHOLD_``).

It connects a ``distributed.Client``, has the workers import e2ebackup (untimed), reads the
scheduler's RSS at idle, and runs a first backup of the tree into a new local-folder
repository with ``e2ebackup.dask.backup`` while a thread samples every ``--interval`` seconds
the RSS of the scheduler process and of this one. Then, for the ratio, the same tree backed
up by one process (``e2ebackup.repo.backup.backup``, all cores) into another new repository.
Every process started is stopped at the end, also on an error or Ctrl-C.

Printed: the scheduler's RSS at idle, its peak during the backup and after it; this process's
RSS before the backup and its peak (``VmHWM`` after resetting it through
``/proc/self/clear_refs``, and the sampled peak); the number of tasks (units); the wall times
of both backups and their ratio; how long the coordinator walked before the first task
started, how long tasks ran and how long the commit took after the last result; whether the
scheduler imported e2ebackup (it unpickles the tasks). ``--unit-kib`` makes the units small,
so that many tasks show what the scheduler holds per task.

Usage::

    python benches/dask_scheduler_memory.py                   # 100,000 files
    python benches/dask_scheduler_memory.py --files 10000     # a quicker look
    python benches/dask_scheduler_memory.py --unit-kib 64     # ~9,000 tasks: a task's cost
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import psutil  # type: ignore[import-untyped]  # a dependency of distributed
from distributed.diagnostics.plugin import SchedulerPlugin
from e2ebackup.dask import backup as dask_backup
from e2ebackup.keys import Argon2idParams
from e2ebackup.repo.backup import BackupStats, backup
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)  # opening is not measured
PASSWORD = "bench"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
MIB = 1 << 20
#: The allocator settings docs/SCALE.md gives for real workers (Dask's own pin glibc's mmap
#: threshold; irrelevant to the scheduler, but the workers run as documented).
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": "268435456", "MALLOC_MMAP_THRESHOLD_": "67108864"}


def make_tree(root: Path, count: int, seed: int) -> int:
    """``count`` files of 1-10 KB, 100 a folder, 100 folders a parent folder. Returns the
    bytes written."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(1, 5)).hex() for _ in range(500)]
    total = 0
    for i in range(count):
        folder = root / f"d{i // 10_000:02d}" / f"d{i // 100 % 100:03d}"
        if i % 100 == 0:
            folder.mkdir(parents=True)
        size = rng.randint(1_000, 10_000)
        if i % 4 == 3:
            text = " ".join(rng.choices(words, k=size // 4)).encode()[:size]
            (folder / f"note_{i:06d}.txt").write_bytes(text)
            total += len(text)
        else:
            (folder / f"img_{i:06d}.jpg").write_bytes(JPEG + rng.randbytes(size - len(JPEG)))
            total += size
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def status_kib(field: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` line of ``/proc/self/status``, in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Sets this process's ``VmHWM`` to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


class Sampler(threading.Thread):
    """The RSS of some processes every ``interval`` seconds, keeping each one's peak."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.peak = {name: 0 for name in pids}
        self.samples = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                self.peak[name] = max(self.peak[name], rss(pid))
        self.samples += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()  # and once at the end


def stop_processes(started: list[subprocess.Popen[bytes]]) -> None:
    """Each started process (the workers first, then the scheduler), and what it started (a
    worker's nanny runs the worker as its child), terminated, then killed if it lingers."""
    for process in reversed(started):
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


@contextlib.contextmanager
def real_cluster(scratch: Path, workers: int) -> Iterator[tuple[str, int]]:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes; yields the scheduler's
    address and process id. Their output goes to ``scratch/*.log``."""
    started: list[subprocess.Popen[bytes]] = []
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler_file = scratch / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    scheduler = ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    try:
        with (scratch / "scheduler.log").open("wb") as log:
            started.append(
                subprocess.Popen(
                    [*dask, *scheduler, "--scheduler-file", str(scheduler_file)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for _ in range(1200):  # the scheduler writes its address once it listens
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            if started[0].poll() is not None:
                log_text = (scratch / "scheduler.log").read_text(errors="replace")
                raise RuntimeError(f"dask scheduler exited:\n{log_text[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("dask scheduler did not start in 120 s")
        worker = ["worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]
        for n in range(workers):
            with (scratch / f"worker{n}.log").open("wb") as log:
                started.append(
                    subprocess.Popen(
                        [*dask, *worker, "--name", f"bench-{n}"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **WORKER_ENV},
                    )
                )
        yield address, started[0].pid
    finally:
        stop_processes(started)


def new_repo(path: Path) -> Repository:
    Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST)
    return Repository.open(LocalStorage(path, create=False), password=PASSWORD)


def check(stats: BackupStats, files: int, case: str) -> None:
    if stats.errors or stats.files_new != files:
        sys.exit(f"the {case} backup failed: {stats}")


class TaskCounter(SchedulerPlugin):
    """Registered on the scheduler: counts the backup's tasks (keys ``e2ebackup-backup-...``)
    as they start and finish, and the most keys the scheduler held at once."""

    name = "e2ebackup-bench-task-counter"

    def __init__(self) -> None:
        self.started = 0  # attempts: a task run again counts again
        self.finished = 0
        self.most_held = 0
        self.first_started = 0.0  # time.time() on the scheduler (the same clock here)
        self.last_finished = 0.0
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if self.scheduler is not None:
            self.most_held = max(self.most_held, len(self.scheduler.tasks))
        if not str(key).startswith("e2ebackup-backup-"):
            return
        if finish == "processing":
            self.started += 1
            self.first_started = self.first_started or time.time()
        elif start == "processing" and finish == "memory":
            self.finished += 1
            self.last_finished = time.time()


def scheduler_state(dask_scheduler: Any) -> dict[str, int]:
    """Run on the scheduler: what it holds now, and what the counter saw."""
    counter = dask_scheduler.plugins[TaskCounter.name]
    return {
        "tasks_held": len(dask_scheduler.tasks),
        "started": counter.started,
        "finished": counter.finished,
        "most_held": counter.most_held,
        "first_started": counter.first_started,
        "last_finished": counter.last_finished,
        "e2ebackup_imported": int("e2ebackup" in sys.modules),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument(
        "--workdir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where the tree and the repositories go (default /dev/shm: tmpfs)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--unit-kib",
        type=int,
        default=None,
        help="KiB of files a task reads (default: the library's choice; small values make "
        "many tasks, to see the scheduler's cost per task)",
    )
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="e2ebackup-dask-sched-mem-", dir=args.workdir))
    try:
        tree = scratch / "tree"
        start = time.perf_counter()
        total = make_tree(tree, args.files, args.seed)
        print(
            f"{args.files:,} files, {total / MIB:.0f} MiB in {tree} "
            f"(written in {time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        with (
            real_cluster(scratch, args.workers) as (address, scheduler_pid),
            distributed.Client(address, timeout=60) as client,  # type: ignore[no-untyped-call]
        ):
            client.wait_for_workers(args.workers, timeout=120)
            client.run(lambda: __import__("e2ebackup.dask.backup"))  # imported, untimed
            repo = new_repo(scratch / "repo-dask")
            client.register_plugin(TaskCounter())
            before_state = client.run_on_scheduler(scheduler_state)
            gc.collect()
            time.sleep(1.0)
            idle = 0
            for _ in range(5):  # the largest of a second's samples
                idle = max(idle, rss(scheduler_pid))
                time.sleep(0.2)
            sampler = Sampler(
                {"scheduler": scheduler_pid, "coordinator": os.getpid()}, args.interval
            )
            coordinator_before = status_kib("VmRSS") * 1024
            hwm_reset = reset_peak()
            sampler.start()
            merged: list[float] = []

            def progress(stats: BackupStats, path: str) -> None:
                if path:  # a unit's results merged (the walk reports nothing for new files)
                    merged.append(time.time())

            start = time.perf_counter()
            wall_start = time.time()
            try:
                _, stats = dask_backup(
                    repo,
                    [tree],
                    client=client,
                    progress=progress,
                    unit_bytes=args.unit_kib << 10 if args.unit_kib else None,
                )
            finally:
                sampler.stop()
            dask_seconds = time.perf_counter() - start
            wall_end = time.time()
            coordinator_hwm = status_kib("VmHWM") * 1024
            check(stats, args.files, "dask")
            time.sleep(1.0)
            after = rss(scheduler_pid)
            after_state = client.run_on_scheduler(scheduler_state)
            del repo
        gc.collect()

        repo = new_repo(scratch / "repo-single")
        single_before = status_kib("VmRSS") * 1024
        reset_peak()
        start = time.perf_counter()
        _, single_stats = backup(repo, [tree])
        single_seconds = time.perf_counter() - start
        single_hwm = status_kib("VmHWM") * 1024
        check(single_stats, args.files, "single-process")

        peak = sampler.peak["scheduler"]
        coordinator_peak = coordinator_hwm if hwm_reset else sampler.peak["coordinator"]
        print(f"{args.workers} `dask worker` processes x 1 thread, a `dask scheduler` process")
        print(
            f"scheduler RSS: idle {idle / MIB:.1f} MiB, peak during the backup "
            f"{peak / MIB:.1f} MiB (+{(peak - idle) / MIB:.1f}), after it {after / MIB:.1f} MiB "
            f"({sampler.samples} samples every {args.interval} s); goal < 200 MiB"
        )
        print(
            f"coordinator (this process) RSS: {coordinator_before / MIB:.1f} MiB before, peak "
            f"{coordinator_peak / MIB:.1f} MiB "
            f"(+{(coordinator_peak - coordinator_before) / MIB:.1f}; "
            f"sampled peak {sampler.peak['coordinator'] / MIB:.1f} MiB)"
        )
        print(
            f"single-process backup RSS: {single_before / MIB:.1f} MiB before, peak "
            f"{single_hwm / MIB:.1f} MiB (+{(single_hwm - single_before) / MIB:.1f})"
        )
        tasks = after_state["finished"]
        walk = after_state["first_started"] - wall_start
        on_cluster = after_state["last_finished"] - after_state["first_started"]
        tail = wall_end - max(merged[-1] if merged else 0.0, after_state["last_finished"])
        print(
            f"dask backup phases: walk, units and scatter until the first task starts "
            f"{walk:.1f} s; tasks running {on_cluster:.1f} s; after the last result is merged "
            f"(folder listings, index, snapshot, head) {tail:.1f} s"
        )
        print(
            f"tasks (work units): {tasks} ({after_state['started']} started); the most keys "
            f"the scheduler held at once: {after_state['most_held']} (tasks and scattered "
            f"objects); keys held before / after: {before_state['tasks_held']} / "
            f"{after_state['tasks_held']}"
        )
        imported = ["no", "yes"]
        print(
            "e2ebackup imported on the scheduler (it unpickles the tasks): before "
            f"{imported[before_state['e2ebackup_imported']]}, "
            f"after {imported[after_state['e2ebackup_imported']]}"
        )
        print(
            f"blobs stored: dask {stats.blobs_added:,}, single {single_stats.blobs_added:,}; "
            f"bytes stored: dask {stats.bytes_added / MIB:.0f} MiB, "
            f"single {single_stats.bytes_added / MIB:.0f} MiB"
        )
        print(
            f"wall time: dask {dask_seconds:.1f} s, single process {single_seconds:.1f} s; "
            f"ratio single / dask {single_seconds / dask_seconds:.2f}x"
        )
        if args.json:
            figures = {
                "files": args.files,
                "bytes": total,
                "workers": args.workers,
                "scheduler_rss_idle": idle,
                "scheduler_rss_peak": peak,
                "scheduler_rss_after": after,
                "coordinator_rss_before": coordinator_before,
                "coordinator_rss_peak": coordinator_peak,
                "single_rss_before": single_before,
                "single_rss_peak": single_hwm,
                "tasks": tasks,
                "most_keys_held": after_state["most_held"],
                "blobs": stats.blobs_added,
                "dask_seconds": dask_seconds,
                "phases": {"walk": walk, "tasks": on_cluster, "tail": tail},
                "single_seconds": single_seconds,
                "ratio": single_seconds / dask_seconds,
            }
            Path(args.json).write_text(json.dumps(figures, indent=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
