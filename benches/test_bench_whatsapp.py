"""WhatsApp crypt15: e2ebackup against wa-crypt-tools on a realistic msgstore, same run.

Group ``"whatsapp decrypt"``:

* ``e2ebackup decrypt_crypt15``   path to path: temporary file, fsync, rename (what users call)
* ``e2ebackup core, no fsync``    ``_core.whatsapp_decrypt`` between two open descriptors: the
                                  same work without the final fsync, as wa-crypt-tools does
* ``wa-crypt-tools``              its default (in-memory) path, as ``wadecrypt`` runs it: read
                                  the file, MD5 + pycryptodomex AES-GCM, ``zlib.decompress``,
                                  write

Group ``"whatsapp encrypt"``: ``encrypt_crypt15`` (zlib-rs level 2) against wa-crypt-tools'
``waencrypt`` path (``zlib.compress`` level 1, pycryptodomex AES-GCM, MD5).

``test_peak_rss`` decrypts once more in fresh subprocesses and reads their peak resident set
(``VmHWM`` in ``/proc/self/status``, minus the value right after the imports) and their CPU time
(user + system, all threads: unlike wall time, it hardly depends on what else the shared
machine runs).
``test_summary`` prints the ratios and writes ``bench-results/whatsapp.json``.

The database has ``E2EBACKUP_BENCH_WA_MB`` MiB (default 512) of message-like rows (Zipf-
distributed words, random message ids, increasing timestamps and an index), so it compresses
about as a real one does (~2x at zlib level 1). Generating it takes about 10 s per 100 MiB.
Scratch files live under ``E2EBACKUP_BENCH_DIR`` (default: the temporary directory) and are
removed at the end. Never a timing assertion: the machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import run

MIB = 1 << 20
WA_BYTES = int(float(os.environ.get("E2EBACKUP_BENCH_WA_MB", "") or 512) * MIB)
ROOT_HEX = "8d1e6a0c5b2f47e3a9c8d7b6e5f4031211f0e9d8c7b6a5948372615049382716"
RESULTS: dict[str, dict[str, float]] = {}


def make_msgstore(path: Path, target: int, seed: int = 7) -> None:
    """A SQLite database of about ``target`` bytes that looks like WhatsApp's msgstore."""
    rng = random.Random(seed)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ta",
        "ri",
        "so",
        "vu",
        "pe",
        "da",
        "ch",
        "ia",
        "on",
        "ar",
        "el",
        "us",
        "be",
        "go",
        "zi",
        "ha",
    ]
    vocab = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(5000)]
    cum: list[float] = []
    total = 0.0
    for i in range(len(vocab)):
        total += 1 / (i + 1)
        cum.append(total)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute(
        "CREATE TABLE message(_id INTEGER PRIMARY KEY, chat_row_id INTEGER, from_me INTEGER, "
        "key_id TEXT, sender_jid_row_id INTEGER, status INTEGER, timestamp INTEGER, "
        "received_timestamp INTEGER, text_data TEXT, starred INTEGER)"
    )
    con.execute("CREATE TABLE jid(_id INTEGER PRIMARY KEY, user TEXT, server TEXT)")
    con.executemany(
        "INSERT INTO jid VALUES(?,?,?)",
        [(i, str(rng.randrange(10**10, 10**12)), "s.whatsapp.net") for i in range(1, 2001)],
    )
    ts, rid = 1_600_000_000_000, 0
    # The index adds about 20% at the end.
    while path.stat().st_size < target * 0.8:
        rows = []
        for _ in range(20_000):
            rid += 1
            ts += rng.randint(1, 600_000)
            text = " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(1, 30)))
            rows.append(
                (
                    rid,
                    rng.randint(1, 300),
                    rng.randint(0, 1),
                    f"{rng.getrandbits(80):020X}",
                    rng.randint(1, 2000),
                    rng.choice((0, 4, 5, 13)),
                    ts,
                    ts + rng.randint(0, 5000),
                    text,
                    0,
                )
            )
        con.executemany("INSERT INTO message VALUES(?,?,?,?,?,?,?,?,?,?)", rows)
        con.commit()
    con.execute("CREATE INDEX message_chat_ts ON message(chat_row_id, timestamp)")
    con.commit()
    con.close()


# --- the two implementations, as plain functions (also run by the RSS child) ---------------


def e2ebackup_decrypt(src: str, dst: str) -> None:
    from e2ebackup import whatsapp

    whatsapp.decrypt_crypt15(src, dst, ROOT_HEX)


def e2ebackup_core_decrypt(src: str, dst: str) -> None:
    from e2ebackup import _core

    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _core.whatsapp_decrypt(bytes.fromhex(ROOT_HEX), "crypt15", fin, fout)
    finally:
        os.close(fin)
        os.close(fout)


def wa_crypt_tools_decrypt(src: str, dst: str) -> None:
    """What ``wadecrypt KEY SRC DST`` does by default, without its logging set-up."""
    from wa_crypt_tools.lib.db.dbfactory import (  # type: ignore[import-untyped]
        DatabaseFactory,
    )
    from wa_crypt_tools.lib.key.key15 import Key15  # type: ignore[import-untyped]

    key = Key15(keyarray=bytes.fromhex(ROOT_HEX))
    with open(src, "rb") as f:
        db = DatabaseFactory.from_file(f)
        decrypted = db.decrypt(key, f.read())
    z = zlib.decompressobj()
    out = z.decompress(decrypted)
    if not z.eof:
        raise RuntimeError("wa-crypt-tools: truncated payload")
    with open(dst, "wb") as g:
        g.write(out)


def wa_crypt_tools_encrypt(src: str, dst: str) -> None:
    """What ``waencrypt KEY SRC DST`` does."""
    from wa_crypt_tools.lib.db.db15 import Database15  # type: ignore[import-untyped]
    from wa_crypt_tools.lib.key.key15 import Key15
    from wa_crypt_tools.lib.props import Props  # type: ignore[import-untyped]

    key = Key15(keyarray=bytes.fromhex(ROOT_HEX))
    with open(src, "rb") as f:
        data = f.read()
    out = Database15(key=key).encrypt(key, Props(), zlib.compress(data, 1))
    with open(dst, "wb") as g:
        g.write(out)


def e2ebackup_encrypt(src: str, dst: str) -> None:
    from e2ebackup import whatsapp

    whatsapp.encrypt_crypt15(src, dst, ROOT_HEX)


IMPLEMENTATIONS: dict[str, Callable[[str, str], None]] = {
    "e2ebackup": e2ebackup_decrypt,
    "e2ebackup-core": e2ebackup_core_decrypt,
    "wa-crypt-tools": wa_crypt_tools_decrypt,
}


# --- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    directory: Path
    db: Path
    backup: Path  # written by wa-crypt-tools

    def out(self, name: str) -> Path:
        return self.directory / name


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    pytest.importorskip("wa_crypt_tools")
    directory = Path(
        tempfile.mkdtemp(prefix="e2ebackup-wa-", dir=os.environ.get("E2EBACKUP_BENCH_DIR"))
    )
    try:
        db = directory / "msgstore.db"
        make_msgstore(db, WA_BYTES)
        backup = directory / "msgstore.db.crypt15"
        wa_crypt_tools_encrypt(str(db), str(backup))
        RESULTS["sizes"] = {
            "database_bytes": db.stat().st_size,
            "backup_bytes": backup.stat().st_size,
        }
        yield Files(directory, db, backup)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _fresh(path: Path) -> Callable[[], None]:
    def setup() -> None:
        path.unlink(missing_ok=True)
        os.sync()

    return setup


def _timed(
    benchmark: Any, fn: Callable[[], object], *, group: str, case: str, nbytes: int, out: Path
) -> None:
    run(benchmark, fn, group=group, case=case, nbytes=nbytes, setup=_fresh(out), seconds=1.5)
    if not benchmark.disabled:
        RESULTS.setdefault(group, {})[case] = benchmark.stats.stats.median


# --- benchmarks -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_decrypt(benchmark: Any, files: Files, name: str) -> None:
    out = files.out(f"out-{name}.db")
    impl = IMPLEMENTATIONS[name]
    _timed(
        benchmark,
        lambda: impl(str(files.backup), str(out)),
        group="whatsapp decrypt",
        case=name,
        nbytes=files.db.stat().st_size,
        out=out,
    )
    assert out.stat().st_size == files.db.stat().st_size
    out.unlink()


@pytest.mark.parametrize("name", ["e2ebackup", "wa-crypt-tools"])
def test_encrypt(benchmark: Any, files: Files, name: str) -> None:
    out = files.out(f"out-{name}.crypt15")
    impl = e2ebackup_encrypt if name == "e2ebackup" else wa_crypt_tools_encrypt
    _timed(
        benchmark,
        lambda: impl(str(files.db), str(out)),
        group="whatsapp encrypt",
        case=name,
        nbytes=files.db.stat().st_size,
        out=out,
    )
    RESULTS.setdefault("encrypted sizes", {})[name] = out.stat().st_size
    out.unlink()


# --- peak memory ----------------------------------------------------------------------------


def vm_hwm_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(name: str, src: str, dst: str) -> dict[str, Any]:
    impl = IMPLEMENTATIONS[name]
    # Import everything first, so that the baseline includes the interpreter and the modules.
    import e2ebackup.whatsapp  # noqa: F401
    import wa_crypt_tools.lib.db.dbfactory  # type: ignore[import-untyped]  # noqa: F401

    baseline = vm_hwm_kib()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    impl(src, dst)
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = vm_hwm_kib()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "baseline_kib": baseline,
        "peak_kib": peak,
        "growth_kib": peak - baseline,
        "wall_s": seconds,
        "cpu_s": cpu,
    }


def test_peak_rss(files: Files) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux)")
    for name in IMPLEMENTATIONS:
        out = files.out(f"rss-{name}.db")
        os.sync()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, str(files.backup), str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        RESULTS.setdefault("peak rss growth MiB", {})[name] = result["growth_kib"] / 1024
        RESULTS.setdefault("decrypt cpu seconds (all threads)", {})[name] = result["cpu_s"]
        out.unlink()


def test_summary(files: Files) -> None:
    decrypt = RESULTS.get("whatsapp decrypt", {})
    summary: dict[str, Any] = {"database_mib": files.db.stat().st_size / MIB, **RESULTS}
    lines = [f"WhatsApp crypt15, {summary['database_mib']:.0f} MiB database:"]
    peer = decrypt.get("wa-crypt-tools")
    for case in ("e2ebackup", "e2ebackup-core"):
        if peer and case in decrypt:
            ratio = peer / decrypt[case]
            summary.setdefault("decrypt speedup vs wa-crypt-tools", {})[case] = ratio
            lines.append(
                f"  decrypt {case}: {decrypt[case]:.2f} s vs {peer:.2f} s -> {ratio:.2f}x "
                f"(target 5x: {'met' if ratio >= 5 else 'missed'})"
            )
    encrypt = RESULTS.get("whatsapp encrypt", {})
    if "e2ebackup" in encrypt and "wa-crypt-tools" in encrypt:
        ratio = encrypt["wa-crypt-tools"] / encrypt["e2ebackup"]
        summary["encrypt speedup vs wa-crypt-tools"] = ratio
        lines.append(f"  encrypt: {ratio:.2f}x")
    cpu = RESULTS.get("decrypt cpu seconds (all threads)", {})
    if "wa-crypt-tools" in cpu and "e2ebackup" in cpu:
        ratio = cpu["wa-crypt-tools"] / cpu["e2ebackup"]
        summary["decrypt cpu-time ratio"] = ratio
        lines.append(
            f"  decrypt CPU time (user+sys, all threads): {cpu['e2ebackup']:.2f} s vs "
            f"{cpu['wa-crypt-tools']:.2f} s -> {ratio:.2f}x less"
        )
    for name, mib in RESULTS.get("peak rss growth MiB", {}).items():
        lines.append(f"  peak RSS growth, decrypt {name}: {mib:.1f} MiB")
    print("\n" + "\n".join(lines))
    results_dir = Path(__file__).resolve().parent.parent / "bench-results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "whatsapp.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="peak-RSS child of test_bench_whatsapp.py")
    parser.add_argument("--child", choices=list(IMPLEMENTATIONS), required=True)
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args()
    print(json.dumps(child(args.child, args.src, args.dst)))
