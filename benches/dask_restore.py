#!/usr/bin/env python3
"""A restore on Dask (``e2ebackup.dask.restore``) against the same snapshot restored by one
process (``e2ebackup.repo.restore.restore``), side by side in one run.

Not a test: a script (issue 14). It backs up ``--gib`` GiB of incompressible files of 1-8 MiB,
plus ``--small`` files of 1-16 KiB in folders of 200, into a new repository in ``--dir``
(default ``/dev/shm``, so that the disk is not what is measured; untimed), starts a
``distributed.LocalCluster`` of ``--workers`` worker processes with one thread each (untimed:
a cluster is started once and serves many runs; its workers import e2ebackup's modules,
untimed too), then times, ``--repeat`` times in alternating order, the whole restore into a
new folder of ``--dir`` (removed after each run, untimed):

- **single process**: ``restore(repo, "latest", target)``: the budget, then every pack read,
  every blob authenticated and every file written by the storage's read concurrency of
  threads and the writer's threads, then a sync of the target's file system;
- **dask**: ``e2ebackup.dask.restore(repo, "latest", target, client=...)``: the budget, the
  folders and the symlinks on this process (the coordinator), the files read and written by
  the workers (each syncs the file system at the end of its unit), then the folders' metadata
  and a sync on this process; ``--unit-mib`` MiB of files a task (default: up to 256 MiB,
  four tasks per worker thread at least). Both open the repository (one KDF run, cheap here).

The workers start without Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` (as ``--dask local`` starts
them; docs/SCALE.md). Both trees must be equal (names, sizes, modes, times, a hash of the
content). It prints the medians and the ratio single-process time / Dask time (>= 1 means Dask
is at least as fast). Ratios only: the machine is shared and noisy.

Usage::

    python benches/dask_restore.py                         # 1 GiB, 2 workers, 1 run each
    python benches/dask_restore.py --gib 0.25 --repeat 3   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask.config
import distributed
from e2ebackup.cli.cluster import TRIM_SETTING
from e2ebackup.dask import restore as dask_restore
from e2ebackup.keys import Argon2idParams
from e2ebackup.repo.backup import backup
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import RestoreStats, restore
from e2ebackup.storage import LocalStorage

PASSWORD = "bench"
FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)


def make_repository(scratch: Path, gib: float, small: int, seed: int) -> tuple[Path, int]:
    """A repository holding one snapshot of ``gib`` GiB of random 1-8 MiB files and ``small``
    files of 1-16 KiB; returns its path and the bytes of the tree. The tree is deleted once
    backed up."""
    rng = random.Random(seed)
    tree, path = scratch / "tree", scratch / "repo"
    total = files = 0
    while total < gib * (1 << 30):
        size = rng.randint(1 << 20, 8 << 20)
        file = tree / "media" / f"d{files // 50:03d}" / f"f{files:05d}.bin"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(os.urandom(size))
        total += size
        files += 1
    for i in range(small):
        file = tree / "small" / f"d{i // 200:03d}" / f"s{i:06d}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(rng.randint(1 << 10, 16 << 10))
        file.write_bytes(data)
        total += len(data)
    repo = Repository.init(LocalStorage(path, create=True), password=PASSWORD, kdf=FAST)
    backup(repo, [tree])
    shutil.rmtree(tree)
    return path, total


def digest(root: Path) -> str:
    """One hash of every path, type, size, mode, modification time and content below root."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(folder, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if name in files and not os.path.islink(p):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalStorage(path, create=False), password=PASSWORD)


def single_process(path: Path, target: Path) -> tuple[float, RestoreStats]:
    start = time.perf_counter()
    stats = restore(open_repo(path), "latest", target)
    return time.perf_counter() - start, stats


def on_dask(
    path: Path, target: Path, client: distributed.Client, unit_mib: int | None
) -> tuple[float, RestoreStats]:
    start = time.perf_counter()
    stats = dask_restore(
        open_repo(path),
        "latest",
        target,
        client=client,
        unit_bytes=None if unit_mib is None else unit_mib << 20,
    )
    return time.perf_counter() - start, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unit-mib", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    dask.config.set({TRIM_SETTING: None})  # as `--dask local` starts its workers

    scratch = Path(tempfile.mkdtemp(prefix="e2ebackup-dask-restore-", dir=args.dir))
    try:
        path, total = make_repository(scratch, args.gib, args.small, args.seed)
        times: dict[str, list[float]] = {"single process": [], "dask": []}
        trees: dict[str, str] = {}
        stats: dict[str, RestoreStats] = {}
        with (
            distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=40,
            ) as cluster,
            distributed.Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            # Untimed, as the cluster's start: the workers import the code the tasks run.
            client.run(importlib.import_module, "e2ebackup.dask.restore")
            for i in range(args.repeat):
                order = ["single process", "dask"] if i % 2 == 0 else ["dask", "single process"]
                for case in order:
                    target = scratch / "target"
                    if case == "dask":
                        seconds, stats[case] = on_dask(path, target, client, args.unit_mib)
                    else:
                        seconds, stats[case] = single_process(path, target)
                    times[case].append(seconds)
                    trees[case] = digest(target)
                    shutil.rmtree(target)
        if trees["dask"] != trees["single process"]:
            sys.exit("the two trees differ")
        if stats["dask"] != stats["single process"]:
            sys.exit(f"the statistics differ: {stats}")
        single = statistics.median(times["single process"])
        on_cluster = statistics.median(times["dask"])
        mib = total / (1 << 20)
        done = stats["dask"]
        print(f"snapshot of {mib:.0f} MiB, {done.files} files, {done.dirs} folders")
        print(f"{args.workers} Dask workers x 1 thread; the trees are equal")
        for case, runs in times.items():
            median = statistics.median(runs)
            print(f"{case:>15}: median {median:.2f} s, {mib / median:.0f} MiB/s, runs {runs}")
        print(f"ratio single-process time / Dask time: {single / on_cluster:.2f}x")
        if args.json:
            figures = {"bytes": total, "files": done.files, "workers": args.workers,
                       "times": times}  # fmt: skip
            Path(args.json).write_text(json.dumps({**figures, "ratio": single / on_cluster}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
