#!/usr/bin/env python3
"""Bulk encryption on Dask (``e2ebackup.dask.encrypt_files``) against the same tree encrypted
file by file in one process (``e2ebackup.encrypt_file``), side by side in one run.

Not a test: a script (issue 14). It writes a tree of ``--gib`` GiB of files of ``--min-mib`` to
``--max-mib`` MiB into ``--dir`` (default ``/dev/shm``, so that the disk is not what is
measured), starts a ``distributed.LocalCluster`` of ``--workers`` worker processes with one
thread each (untimed: a cluster is started once and serves many runs), then times, ``--repeat``
times in alternating order:

- **single process**: ``encrypt_file(src, dst, key)`` for every file in turn, all threads of
  the Rust encryptor (its default), outputs fsynced and renamed as always;
- **dask**: ``encrypt_files(tree, out, client=..., key=...)``: batches of ``--batch-mib``,
  ``--task-threads`` encryption threads per task (default 1, as ``encrypt_files``: the
  cluster's worker processes are the parallelism).

Outputs are deleted (untimed) between runs. It prints the medians and the ratio
single-process time / Dask time (>= 1 means Dask is at least as fast; the issue's goal is
>= 0.9x). Ratios only: the machine is shared and noisy.

Usage::

    python benches/dask_encrypt.py                    # 1 GiB of 1-8 MiB files, 2 workers
    python benches/dask_encrypt.py --gib 0.125 --repeat 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import distributed
from e2ebackup import encrypt_file, generate_key
from e2ebackup.dask import encrypt_files


def make_tree(root: Path, gib: float, min_mib: int, max_mib: int, seed: int) -> tuple[int, int]:
    """Files of random sizes until ``gib`` GiB, in folders of 50; returns (files, bytes)."""
    rng = random.Random(seed)
    block = os.urandom(max_mib << 20)
    total = files = 0
    while total < gib * (1 << 30):
        size = rng.randint(min_mib << 20, max_mib << 20)
        path = root / f"d{files // 50:03d}" / f"f{files:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(0, len(block) - size + 1)
        path.write_bytes(files.to_bytes(8, "big") + block[start : start + size - 8])
        total += size
        files += 1
    return files, total


def single_process(tree: Path, out: Path, key: bytes) -> float:
    start = time.perf_counter()
    for folder, _, names in os.walk(tree):
        target = out / os.path.relpath(folder, tree)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            encrypt_file(os.path.join(folder, name), target / (name + ".e2e"), key)
    return time.perf_counter() - start


def on_dask(
    tree: Path,
    out: Path,
    key: bytes,
    client: distributed.Client,
    batch_mib: int,
    threads: int | None,
    files: int,
) -> float:
    start = time.perf_counter()
    report = encrypt_files(
        tree, out, client=client, key=key, batch_bytes=batch_mib << 20, threads=threads
    )
    elapsed = time.perf_counter() - start
    if not report.ok or report.files != files:
        sys.exit(f"the Dask run failed: {report.files} files, {report.failures[:5]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--min-mib", type=int, default=1)
    parser.add_argument("--max-mib", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--task-threads", type=int, default=1, help="encryption threads per task (0: all)"
    )
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="e2ebackup-dask-bench-", dir=args.dir))
    try:
        tree, out = scratch / "tree", scratch / "out"
        files, total = make_tree(tree, args.gib, args.min_mib, args.max_mib, args.seed)
        key = generate_key()
        times: dict[str, list[float]] = {"single process": [], "dask": []}
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
            for i in range(args.repeat):
                order = ["single process", "dask"] if i % 2 == 0 else ["dask", "single process"]
                for case in order:
                    shutil.rmtree(out, ignore_errors=True)
                    if case == "dask":
                        threads = args.task_threads or None
                        seconds = on_dask(tree, out, key, client, args.batch_mib, threads, files)
                    else:
                        seconds = single_process(tree, out, key)
                    times[case].append(seconds)
        single = statistics.median(times["single process"])
        dask = statistics.median(times["dask"])
        mib = total / (1 << 20)
        per_task = args.task_threads or "all"
        print(f"{files} files, {mib:.0f} MiB in {scratch}")
        print(f"{args.workers} Dask workers x 1 thread, {per_task} encryption thread(s) per task")
        for case, runs in times.items():
            median = statistics.median(runs)
            print(f"{case:>15}: median {median:.2f} s, {mib / median:.0f} MiB/s, runs {runs}")
        print(f"ratio single-process time / Dask time: {single / dask:.2f}x (goal >= 0.9x)")
        if args.json:
            figures = {"files": files, "bytes": total, "workers": args.workers, "times": times}
            Path(args.json).write_text(json.dumps({**figures, "ratio": single / dask}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
