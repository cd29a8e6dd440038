#!/usr/bin/env python3
"""A writer that cannot read (``backup_as_writer``, a writer token) against a password
repository's backup of the same tree, side by side in one run (issue 15: <= 1.05x).

Not a test: a script. It writes a tree of ``--gib`` GiB into ``--dir`` (default ``/dev/shm``,
so that the software is measured, not the disk): media files of 1 to 8 MiB that start with
JPEG or MP4 magic (not compressed), and ``--small`` text files of 1-10 KB (compressed). Then,
``--repeat`` times in alternating order, each into a new repository made untimed:

- **password**: ``backup(repo, [tree])`` into a repository opened with its password;
- **writer**: ``backup_as_writer(storage, token, [tree])``: a fresh session key sealed to the
  repository's writer recipient (one hybrid X25519 + ML-KEM-768 encapsulation), the drop
  authenticated with the writer's key.

and then, in the same repositories, an unchanged second backup of each: the password
repository skips unchanged files by their metadata (the parent snapshot); a writer keeps no
file metadata (it would remember names of files since deleted: docs/FORMAT.md), so it reads
and chunks every file again and uploads nothing. It prints the medians and the ratios
writer / password (<= 1 is as fast or faster) of elapsed and CPU time. Ratios only: the
machine is shared and noisy.

Usage::

    python benches/write_only.py                    # 0.5 GiB, 3 rounds
    python benches/write_only.py --gib 2 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from e2ebackup.keys import Argon2idParams
from e2ebackup.repo import Repository, backup, backup_as_writer
from e2ebackup.storage import LocalStorage

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)  # opening is not measured
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"


def make_tree(root: Path, gib: float, small: int, rng: random.Random) -> int:
    total = 0
    target = int(gib * (1 << 30))
    n = 0
    while total < target:
        folder = root / "media" / f"{n // 50:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = min(rng.randint(1 << 20, 8 << 20), target - total)
        magic = JPEG if n % 3 else MP4
        (folder / f"{n:05d}.{'jpg' if n % 3 else 'mp4'}").write_bytes(
            magic + rng.randbytes(max(0, size - len(magic)))
        )
        total += size
        n += 1
    words = [rng.randbytes(6).hex() for _ in range(500)]
    for i in range(small):
        folder = root / "chats" / f"{i // 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choices(words, k=rng.randint(80, 800)))
        (folder / f"{i:05d}.txt").write_text(text)
        total += len(text)
    return total


def timed(run: Callable[[], object]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=0.5)
    p.add_argument("--small", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e2eb-wo-", dir=args.dir))
    os.environ["E2EBACKUP_STATE_DIR"] = str(work / "state")
    try:
        tree = work / "tree"
        size = make_tree(tree, args.gib, args.small, random.Random(15))
        print(f"tree: {size / 1e9:.2f} GB in {work}")
        results: dict[str, list[tuple[float, float]]] = {}

        def password_case(where: Path) -> list[tuple[float, float]]:
            repo = Repository.init(LocalStorage(where), password="bench", kdf=FAST)
            return [timed(lambda: backup(repo, [str(tree)])) for _ in range(2)]

        def writer_case(where: Path) -> list[tuple[float, float]]:
            repo = Repository.init(LocalStorage(where), password="bench", kdf=FAST)
            token = repo.issue_writer_token()
            storage = LocalStorage(where, create=False)
            return [timed(lambda: backup_as_writer(storage, token, [str(tree)])) for _ in range(2)]

        cases = {"password": password_case, "writer": writer_case}
        for round_ in range(args.repeat):
            order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
            for name in order:
                where = work / f"repo-{name}"
                first, again = cases[name](where)
                results.setdefault(f"{name} first", []).append(first)
                results.setdefault(f"{name} unchanged", []).append(again)
                shutil.rmtree(where)
                shutil.rmtree(work / "state", ignore_errors=True)
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
               for k, v in results.items()}  # fmt: skip
        for k, (wall, cpu) in med.items():
            print(f"{k:20s} wall {wall:7.2f} s   CPU {cpu:7.2f} s   {size / 1e6 / wall:7.0f} MB/s")
        for phase in ("first", "unchanged"):
            w, pw = med[f"writer {phase}"], med[f"password {phase}"]
            print(
                f"ratio writer/password, {phase:9s}: wall {w[0] / pw[0]:.3f}x   "
                f"CPU {w[1] / pw[1]:.3f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
