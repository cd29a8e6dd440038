#!/usr/bin/env python3
"""Restore from a distant S3 store: ``e2ebackup restore`` against ``rclone copy`` of the same
repository objects, side by side in one run.

Not a test: a script. A real S3 server (``rclone serve s3``) runs on the loopback behind the
tests' fault proxy, which adds a fixed delay to every request, as the round trip to a cloud
store does. A media-like tree (photos of 0.1-4 MB, a few videos, many small chat files) is
backed up into ``s3://bench/repo`` directly; then, for each delay:

1. ``e2ebackup restore`` (Python API, its own process) of the latest snapshot through the
   proxy, checked against the source;
2. ``rclone copy`` of the repository's objects (the same packs, index and snapshot objects,
   so the same bytes) through the same proxy, with rclone's defaults (4 transfers).

The ratio is rclone's time over e2ebackup's: above 1, e2ebackup restores the files (decrypted,
checked, renamed into place) faster than rclone merely downloads the encrypted repository.
Both write to the same local disk; e2ebackup's time includes the sync that makes its restore
durable, so rclone's is given with a ``sync`` after it too (the fair column). Each case starts
after an untimed ``sync``. Wall time only; the machine is shared and noisy: read the ratios.

Usage::

    python benches/restore_from_cloud.py                       # 300 MB, delays 0 and 30 ms
    python benches/restore_from_cloud.py --mb 1000 --delays 0 0.05
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from e2ebackup.keys import RecoveryKey  # noqa: E402
from e2ebackup.repo import Repository, backup, restore  # noqa: E402
from e2ebackup.storage import open_storage  # noqa: E402
from e2ebackup.storage.rclone import rclone_binary  # noqa: E402
from servers import cloud as cloud_servers  # noqa: E402 - the tests' real S3 server
from servers.fault_proxy import FaultProxy  # noqa: E402 - the tests' proxy, here only adding delay

MB = 1_000_000


def make_tree(root: Path, total: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    made = 0
    chats = root / "chats"
    chats.mkdir(parents=True)
    for i in range(400):  # small chat files and thumbnails
        size = rng.randint(500, 20_000)
        (chats / f"msg-{i:04d}.bin").write_bytes(os.urandom(size))
        made += size
    photos = root / "photos"
    photos.mkdir()
    i = 0
    while made < total * 0.7:
        size = rng.randint(100_000, 4 * MB)
        (photos / f"IMG_{i:05d}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(size))
        made += size + 4
        i += 1
    videos = root / "videos"
    videos.mkdir()
    i = 0
    while made < total:
        size = min(40 * MB, total - made + 1)
        (videos / f"VID_{i:03d}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(size))
        made += size + 12
        i += 1


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def timed_restore(url: str, endpoint: str, key: RecoveryKey, target: Path) -> float:
    repo = Repository.open(open_storage(url, s3_endpoint=endpoint), recovery_key=key)
    os.sync()
    start = time.perf_counter()
    restore(repo, "latest", str(target))
    return time.perf_counter() - start


def timed_rclone(config: Path, target: Path) -> tuple[float, float]:
    """Seconds for the copy, and for the copy and a sync."""
    os.sync()
    start = time.perf_counter()
    subprocess.run(
        [rclone_binary(), "--config", str(config), "copy", "s3:bench/repo", str(target)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    copied = time.perf_counter() - start
    os.sync()
    return copied, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the tree (MB)")
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.03])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e2ebackup-bench-cloud-"))
    os.environ.update(
        AWS_ACCESS_KEY_ID=cloud_servers.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=cloud_servers.SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        E2EBACKUP_STATE_DIR=str(work / "state"),
    )
    s3 = cloud_servers.start_s3_server(work / "s3")
    try:
        s3.create_bucket("bench")
        src = work / "src"
        make_tree(src, args.mb * MB)
        expected = digest_tree(src)
        key = RecoveryKey.generate()
        url = "s3://bench/repo"
        repo = Repository.init(open_storage(url, s3_endpoint=s3.endpoint), recovery_key=key)
        backup(repo, [str(src / name) for name in ("chats", "photos", "videos")])
        print(f"tree: {len(expected)} files, {args.mb} MB", flush=True)
        rows = []
        for delay in args.delays:
            with FaultProxy(s3.endpoint, latency=delay) as proxy:
                out = work / f"restored-{delay}"
                mine = timed_restore(url, proxy.url, key, out)
                # The snapshot's top folders are chats, photos and videos, as in src.
                assert digest_tree(out) == expected, "the restore does not match the source"
                config = work / "rclone.conf"
                config.write_text(
                    f"[s3]\ntype = s3\nprovider = Rclone\nendpoint = {proxy.url}\n"
                    f"access_key_id = {cloud_servers.ACCESS_KEY}\n"
                    f"secret_access_key = {cloud_servers.SECRET_KEY}\n"
                )
                peer, peer_synced = timed_rclone(config, work / f"rclone-{delay}")
            rows.append((delay, mine, peer, peer_synced))
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / f"rclone-{delay}", ignore_errors=True)
            print(f"delay {delay * 1000:.0f} ms: e2ebackup restore {mine:.2f} s, rclone copy "
                  f"{peer:.2f} s ({peer_synced:.2f} s with sync)", flush=True)  # fmt: skip
        print("\n| delay per request | e2ebackup restore (synced) | rclone copy of the repository "
              "| + sync | ratio (synced) |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|")
        for delay, mine, peer, synced in rows:
            print(f"| {delay * 1000:.0f} ms | {mine:.2f} s | {peer:.2f} s | {synced:.2f} s "
                  f"| {synced / mine:.2f}x |")  # fmt: skip
    finally:
        s3.server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
