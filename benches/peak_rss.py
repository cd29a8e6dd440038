#!/usr/bin/env python3
"""Peak memory and throughput of e2ebackup.encrypt_file / decrypt_file on a big file.

Not a test: a script. Every case runs in a fresh subprocess, which reads its peak RSS from
``/proc/self/status``: the growth is ``VmHWM`` after the call minus ``VmHWM`` measured right after
the imports. Throughput is reported relative to the in-memory ``encrypt_into`` /
``decrypt_into`` figure (all threads, ``--mem-mb`` MiB, median of several calls) measured in the
same run, also in a fresh subprocess. The file cases run once each (a multi-GiB file is long
enough to time once; the machine is shared, so read the ratios, not the absolute figures).

``encrypt_file`` to a path writes a temporary file, fsyncs it and renames it: for a file bigger
than the dirty page cache allows, that measures the disk. The ``progress`` callback gives the time
at which the last block was handed to the page cache, reported as "before the final fsync".
A plain copy of the same input file with a final fsync (no crypto, 1 MiB blocks, also in fresh
processes, run just before each e2ebackup run) is the ceiling: no file-to-file encryption can
beat it.
Every case starts after an ``os.sync()`` (untimed), so that it does not compete with the
writeback of the freshly generated source file.

Usage::

    python benches/peak_rss.py                # 4 GiB, in the system temporary directory
    python benches/peak_rss.py --gib 1 --dir /var/tmp --json rss.json

Needs about twice ``--gib`` of free disk (source + ciphertext, then ciphertext + plaintext); the
scratch directory is always removed. Exit status 3 means "not run": not enough free disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIB = 1 << 20
PIECE = 64 * MIB
RSS_TARGET_MIB = 64.0
THROUGHPUT_TARGET = 0.70
EXIT_NOT_RUN = 3


def vm_hwm_kib() -> int:
    """Peak resident set size of this process so far, in KiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


# --- child side ----------------------------------------------------------------------------------


def child_file(op: str, src: str, dst: str, key_hex: str, threads: int | None) -> dict[str, Any]:
    import e2ebackup

    key = bytes.fromhex(key_hex)
    baseline = vm_hwm_kib()
    last_progress = 0.0

    def progress(_done: int) -> None:
        nonlocal last_progress
        last_progress = time.perf_counter()

    func = e2ebackup.encrypt_file if op == "encrypt" else e2ebackup.decrypt_file
    start = time.perf_counter()
    func(src, dst, key, threads=threads, progress=progress)
    end = time.perf_counter()
    peak = vm_hwm_kib()
    plain_bytes = os.path.getsize(src if op == "encrypt" else dst)
    return {
        "case": f"{op}_file",
        "bytes": plain_bytes,
        "seconds": end - start,
        "seconds_to_last_block": (last_progress or end) - start,
        "hwm_baseline_kib": baseline,
        "hwm_kib": peak,
        "growth_kib": peak - baseline,
    }


def child_copy(src: str, dst: str) -> dict[str, Any]:
    """The ceiling: the same bytes copied (1 MiB blocks) with no crypto, fsynced at the end."""
    baseline = vm_hwm_kib()
    buf = bytearray(MIB)
    start = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while n := fin.readinto(buf):
            fout.write(memoryview(buf)[:n])
        fout.flush()
        last_block = time.perf_counter()
        os.fsync(fout.fileno())
    end = time.perf_counter()
    peak = vm_hwm_kib()
    return {
        "case": "copy+fsync",
        "bytes": os.path.getsize(src),
        "seconds": end - start,
        "seconds_to_last_block": last_block - start,
        "hwm_baseline_kib": baseline,
        "hwm_kib": peak,
        "growth_kib": peak - baseline,
    }


def child_memory(mib: int, threads: int | None, repeat: int) -> dict[str, Any]:
    import e2ebackup

    size = mib * MIB
    data = os.urandom(size)
    key = e2ebackup.generate_key()
    ciphertext = bytearray(e2ebackup.ciphertext_length(size))
    plaintext = bytearray(size)

    def median_seconds(fn: Any) -> float:
        fn()  # warm-up: page faults, thread pool
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    enc = median_seconds(lambda: e2ebackup.encrypt_into(key, data, ciphertext, threads=threads))
    dec = median_seconds(
        lambda: e2ebackup.decrypt_into(key, ciphertext, plaintext, threads=threads)
    )
    if plaintext != data:
        raise AssertionError("in-memory round trip failed")
    return {
        "case": "memory",
        "bytes": size,
        "encrypt_into_seconds": enc,
        "decrypt_into_seconds": dec,
        "repeat": repeat,
    }


def child_main(args: argparse.Namespace) -> int:
    if args.child == "memory":
        result = child_memory(args.mem_mb, args.threads, args.repeat)
    elif args.child == "copy":
        result = child_copy(args.src, args.dst)
    else:
        result = child_file(args.child, args.src, args.dst, args.key_hex, args.threads)
    print(json.dumps(result))
    return 0


# --- parent side ---------------------------------------------------------------------------------


def run_child(extra: list[str], threads: int | None) -> dict[str, Any]:
    # Start every case from the same clean state: no dirty pages of the source just written
    # (or of the file just deleted) being written back while the case runs.
    os.sync()
    cmd = [sys.executable, os.path.abspath(__file__), *extra]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {extra[:2]} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def write_random_file(path: Path, size: int) -> str:
    """Writes ``size`` random bytes; returns their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for off in range(0, size, PIECE):
            piece = os.urandom(min(PIECE, size - off))
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(8 * MIB)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(memoryview(buf)[:n])
    return digest.hexdigest()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median times and the worst (largest) RSS growth over the repeats of one case."""
    return {
        "case": runs[0]["case"],
        "bytes": runs[0]["bytes"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "seconds_to_last_block": statistics.median(r["seconds_to_last_block"] for r in runs),
        "hwm_baseline_kib": max(r["hwm_baseline_kib"] for r in runs),
        "growth_kib": max(r["growth_kib"] for r in runs),
        "runs": runs,
    }


def measure(
    size: int, directory: str | None, mem_mb: int, threads: int | None, repeat: int
) -> dict[str, Any]:
    memory = run_child(["--child", "memory", "--mem-mb", str(mem_mb), "--repeat", "7"], threads)
    scratch = Path(tempfile.mkdtemp(prefix="e2ebackup-rss-", dir=directory))
    try:
        src, ct, out = scratch / "plain.bin", scratch / "plain.bin.e2e", scratch / "out.bin"
        common = ["--key-hex", secrets.token_bytes(32).hex()]
        expected = write_random_file(src, size)
        # Each repeat runs the plain copy (the ceiling) and the e2ebackup case back to back, so
        # that a slow spell of the (virtual) disk hits both rather than one of them.
        copy_runs: dict[str, list[dict[str, Any]]] = {"encrypt": [], "decrypt": []}
        enc_runs = []
        for _ in range(repeat):
            ct.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
            copy_runs["encrypt"].append(
                run_child(["--child", "copy", "--src", str(src), "--dst", str(out)], None)
            )
            out.unlink()
            args = ["--child", "encrypt", "--src", str(src), "--dst", str(ct), *common]
            enc_runs.append(run_child(args, threads))
        src.unlink()  # keep the disk footprint at two files
        dec_runs = []
        for _ in range(repeat):
            out.unlink(missing_ok=True)
            copy_runs["decrypt"].append(
                run_child(["--child", "copy", "--src", str(ct), "--dst", str(out)], None)
            )
            out.unlink()
            args = ["--child", "decrypt", "--src", str(ct), "--dst", str(out), *common]
            dec_runs.append(run_child(args, threads))
        if file_sha256(out) != expected:
            raise AssertionError("decrypted file differs from the source")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mem_rates = {
        "encrypt": memory["bytes"] / memory["encrypt_into_seconds"],
        "decrypt": memory["bytes"] / memory["decrypt_into_seconds"],
    }
    copies = {op: summarise(runs) for op, runs in copy_runs.items()}
    copy_rates = {op: c["bytes"] / c["seconds"] for op, c in copies.items()}
    cases = []
    for op, res in (("encrypt", summarise(enc_runs)), ("decrypt", summarise(dec_runs))):
        rate = res["bytes"] / res["seconds"]
        rate_no_fsync = res["bytes"] / res["seconds_to_last_block"]
        cases.append(
            {
                **res,
                "bytes_per_second": rate,
                "memory_bytes_per_second": mem_rates[op],
                "fraction_of_copy": rate / copy_rates[op],
                "fraction_of_memory": rate / mem_rates[op],
                "fraction_of_memory_before_final_fsync": rate_no_fsync / mem_rates[op],
                "growth_mib": res["growth_kib"] / 1024,
                "rss_target_met": res["growth_kib"] / 1024 <= RSS_TARGET_MIB,
                "throughput_target_met": rate / mem_rates[op] >= THROUGHPUT_TARGET,
            }
        )
    return {
        "file_bytes": size,
        "memory_mib": mem_mb,
        "threads": threads,
        "repeat": repeat,
        "cpu_count": os.cpu_count(),
        "memory": memory,
        "copy": copies,
        "copy_fraction_of_memory": copy_rates["encrypt"] / mem_rates["encrypt"],
        "cases": cases,
        "targets": {"rss_growth_mib": RSS_TARGET_MIB, "fraction_of_memory": THROUGHPUT_TARGET},
    }


def format_size(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:g} MiB"


def table(result: dict[str, Any]) -> str:
    size = format_size(result["file_bytes"])
    lines = [
        f"| {size} file, {result['repeat']} run(s), fresh process each "
        f"| peak RSS growth (<= {RSS_TARGET_MIB:g} MiB) "
        f"| throughput vs in-memory {result['memory_mib']} MiB "
        f"(>= {THROUGHPUT_TARGET:.0%}) | before final fsync | vs plain copy+fsync |",
        "|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        rss = "met" if case["rss_target_met"] else "MISSED"
        thr = "met" if case["throughput_target_met"] else "MISSED"
        op = "encrypt_into" if case["case"] == "encrypt_file" else "decrypt_into"
        lines.append(
            f"| {case['case']} | {case['growth_mib']:.1f} MiB ({rss}) "
            f"| {case['fraction_of_memory']:.1%} of {op} ({thr}) "
            f"| {case['fraction_of_memory_before_final_fsync']:.1%} "
            f"| {case['fraction_of_copy']:.0%} |"
        )
    copy_growth = result["copy"]["encrypt"]["growth_kib"] / 1024
    lines.append(
        f"| plain copy+fsync (no crypto) | {copy_growth:.1f} MiB "
        f"| {result['copy_fraction_of_memory']:.1%} of encrypt_into | | 100% |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="file size in GiB (default 4)")
    parser.add_argument("--dir", default=None, help="scratch parent directory (default: tmp)")
    parser.add_argument("--mem-mb", type=int, default=256, help="in-memory reference size")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument(
        "--file-repeat",
        type=int,
        default=1,
        help="runs per file case, each in a fresh process: median time, largest RSS (default 1)",
    )
    # Internal: the child side.
    parser.add_argument(
        "--child", choices=["encrypt", "decrypt", "copy", "memory"], help=argparse.SUPPRESS
    )
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    parser.add_argument("--key-hex", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    size = int(args.gib * GIB)
    if size <= 0:
        parser.error("--gib must be positive")
    directory = args.dir or tempfile.gettempdir()
    needed = 2 * size + 256 * MIB
    free = shutil.disk_usage(directory).free
    if free < needed:
        print(
            f"not run: {directory} has {format_size(free)} free, "
            f"{format_size(needed)} needed for a {format_size(size)} file",
            file=sys.stderr,
        )
        return EXIT_NOT_RUN
    if args.file_repeat < 1:
        parser.error("--file-repeat must be at least 1")
    result = measure(size, args.dir, args.mem_mb, args.threads, args.file_repeat)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
