#!/usr/bin/env python3
"""``verify --read-data`` on Dask (``e2ebackup.dask.verify_repository``) against the same
repository verified by one process (``e2ebackup.repo.check.verify``), side by side in one run.

Not a test: a script (issue 14). It backs up ``--gib`` GiB of incompressible files of 1-8 MiB
into a new repository in ``--dir`` (default ``/dev/shm``, so that the disk is not what is
measured; untimed), starts a ``distributed.LocalCluster`` of ``--workers`` worker processes
with one thread each (untimed: a cluster is started once and serves many runs; its workers
import e2ebackup's modules, untimed too), then times,
``--repeat`` times in alternating order, the whole verify with ``read_data=True``:

- **single process**: ``verify(repo, read_data=True)``: the structure checks, then every pack
  read and every blob authenticated by the storage's read concurrency of threads;
- **dask**: ``verify_repository(path, client=..., password=...)``: the same structure checks
  on this process (the coordinator, which also opens the repository: one KDF run, cheap
  here), the packs read by the workers, ``--unit-mib`` MiB of packs a task (default: up to
  512 MiB, four tasks per worker thread at least).

The workers start without Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` (as ``--dask local`` starts
them; docs/SCALE.md): with it, glibc maps fresh pages for every pack and blob and the workers
read 3-5 times slower. ``--dask-malloc`` keeps Dask's setting, to see the difference.

Both reports must be equal. It prints the medians and the ratio single-process time / Dask
time (>= 1 means Dask is at least as fast). Ratios only: the machine is shared and noisy.

Usage::

    python benches/dask_verify.py                         # 1 GiB repository, 2 workers, 1 run
    python benches/dask_verify.py --gib 0.25 --repeat 3   # a quick look
"""

from __future__ import annotations

import argparse
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
from e2ebackup.dask import verify_repository
from e2ebackup.keys import Argon2idParams
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import VerifyReport, verify
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage

PASSWORD = "bench"
FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)


def make_repository(scratch: Path, gib: float, seed: int) -> tuple[Path, int]:
    """A repository holding one snapshot of ``gib`` GiB of random 1-8 MiB files; returns its
    path and its size on disk. The tree is deleted once backed up."""
    rng = random.Random(seed)
    tree, path = scratch / "tree", scratch / "repo"
    total = files = 0
    while total < gib * (1 << 30):
        size = rng.randint(1 << 20, 8 << 20)
        file = tree / f"d{files // 50:03d}" / f"f{files:05d}.bin"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(os.urandom(size))
        total += size
        files += 1
    repo = Repository.init(LocalStorage(path, create=True), password=PASSWORD, kdf=FAST)
    backup(repo, [tree])
    shutil.rmtree(tree)
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path, stored


def single_process(path: Path) -> tuple[float, VerifyReport]:
    start = time.perf_counter()
    repo = Repository.open(LocalStorage(path, create=False), password=PASSWORD)
    report = verify(repo, read_data=True)
    return time.perf_counter() - start, report


def on_dask(
    path: Path, client: distributed.Client, unit_mib: int | None
) -> tuple[float, VerifyReport]:
    start = time.perf_counter()
    report = verify_repository(
        path,
        client=client,
        password=PASSWORD,
        unit_bytes=None if unit_mib is None else unit_mib << 20,
    )
    return time.perf_counter() - start, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unit-mib", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--dask-malloc",
        action="store_true",
        help="keep Dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers' environment",
    )
    args = parser.parse_args()
    if not args.dask_malloc:
        dask.config.set({TRIM_SETTING: None})  # as `--dask local` starts its workers

    scratch = Path(tempfile.mkdtemp(prefix="e2ebackup-dask-verify-", dir=args.dir))
    try:
        path, stored = make_repository(scratch, args.gib, args.seed)
        times: dict[str, list[float]] = {"single process": [], "dask": []}
        reports: dict[str, VerifyReport] = {}
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
            client.run(importlib.import_module, "e2ebackup.dask.verify")
            for i in range(args.repeat):
                order = ["single process", "dask"] if i % 2 == 0 else ["dask", "single process"]
                for case in order:
                    if case == "dask":
                        seconds, report = on_dask(path, client, args.unit_mib)
                    else:
                        seconds, report = single_process(path)
                    if not report.ok:
                        sys.exit(f"{case}: verify failed: {report.errors[:5]}")
                    times[case].append(seconds)
                    reports[case] = report
        if reports["dask"] != reports["single process"]:
            sys.exit("the two reports differ")
        single = statistics.median(times["single process"])
        on_cluster = statistics.median(times["dask"])
        mib = stored / (1 << 20)
        report = reports["dask"]
        print(f"repository of {mib:.0f} MiB, {report.packs} packs, {report.blobs_read} blobs")
        malloc = "Dask's MALLOC_TRIM_THRESHOLD_" if args.dask_malloc else "glibc's malloc defaults"
        print(f"{args.workers} Dask workers x 1 thread ({malloc}); the reports are equal")
        for case, runs in times.items():
            median = statistics.median(runs)
            print(f"{case:>15}: median {median:.2f} s, {mib / median:.0f} MiB/s, runs {runs}")
        print(f"ratio single-process time / Dask time: {single / on_cluster:.2f}x")
        if args.json:
            figures = {"bytes": stored, "workers": args.workers, "times": times,
                       "dask_malloc": args.dask_malloc}  # fmt: skip
            Path(args.json).write_text(json.dumps({**figures, "ratio": single / on_cluster}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
