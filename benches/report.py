#!/usr/bin/env python3
"""Runs the e2ebackup benchmarks and prints a Markdown table of ratios against the targets.

Steps, all in one run so that every figure is compared with peers measured under the same load:

1. ``openssl speed -evp aes-256-gcm`` / ``chacha20-poly1305`` at 16 KiB (one core);
2. the pytest-benchmark suites ``test_bench_memory.py``, ``test_bench_files.py`` and
   ``test_bench_repo.py`` (repository backup / restore, borg when installed) with
   ``--benchmark-json`` (one pytest run each);
3. ``peak_rss.py`` (peak RSS growth and file-vs-memory throughput on a big file), unless
   ``--rss-gib 0``; ``--rss-json`` reuses an earlier result instead.

Only ratios are printed (the machines are shared and noisy; absolute figures are in the JSON
files). A missed target is reported, never turned into a failure: the exit status is non-zero
only when a benchmark itself fails.

Usage::

    python benches/report.py --out bench-results/report.md      # 256 MiB + 4 GiB: minutes
    python benches/report.py --smoke                            # CI: tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
AES = "aes-256-gcm"
CHACHA = "chacha20-poly1305"
OPENSSL_NAMES = {AES: "AES-256-GCM", CHACHA: "ChaCha20-Poly1305"}
EXIT_RSS_NOT_RUN = 3  # peak_rss.py: not enough free disk

# (group, case) of the e2ebackup call every peer in a group is compared with.
REFERENCE = {
    f"{AES} encrypt": "e2ebackup encrypt_into all",
    f"{AES} decrypt": "e2ebackup decrypt_into all",
    f"{CHACHA} encrypt": "e2ebackup encrypt_into all",
    f"{CHACHA} decrypt": "e2ebackup decrypt_into all",
    "file encrypt": "e2ebackup encrypt_file",
    "file decrypt": "e2ebackup decrypt_file",
    "repo backup": "e2ebackup backup (CLI)",
    "repo backup unchanged": "e2ebackup backup (API)",
    "repo restore": "e2ebackup restore (CLI)",
}


@dataclass(frozen=True)
class Result:
    """One benchmark: payload bytes per second at the median, and its relative spread."""

    rate: float
    spread: float  # interquartile range / median
    rounds: int
    note: str


Results = dict[tuple[str, str], Result]


@dataclass(frozen=True)
class Row:
    metric: str
    ratio: float | None
    target: float | None  # a minimum ratio; None: shown for information
    unit: str = "x"  # "x" (ratio), "%" (fraction shown as percent) or "MiB" (a maximum)
    why_missing: str = ""

    def value(self) -> str:
        if self.ratio is None:
            return f"n/a{f' ({self.why_missing})' if self.why_missing else ''}"
        if self.unit == "%":
            return f"{self.ratio:.0%}"
        if self.unit == "MiB":
            return f"{self.ratio:.1f} MiB"
        return f"{self.ratio:.2f}x"

    def goal(self) -> str:
        if self.target is None:
            return "(info)"
        if self.unit == "%":
            return f">= {self.target:.0%}"
        if self.unit == "MiB":
            return f"<= {self.target:g} MiB"
        return f">= {self.target:g}x"

    def status(self) -> str:
        if self.target is None or self.ratio is None:
            return ""
        met = self.ratio <= self.target if self.unit == "MiB" else self.ratio >= self.target
        return "met" if met else "**MISSED**"


# --- measuring -----------------------------------------------------------------------------------


class CpuWatch:
    """How much of the machine other work took while a phase ran (Linux ``/proc/stat``).

    Busy CPU time of the whole machine (steal included: the hypervisor's share) minus the CPU
    time of this process and its waited-for children, as a fraction of wall time x cores.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return busy, ours, time.monotonic()

    def others(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        wall = end[2] - self._start[2]
        if wall <= 0:
            return None
        other = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return max(0.0, other) / (wall * (os.cpu_count() or 1))


def openssl_speed(algorithm: str, seconds: int) -> float | None:
    """Per-core bytes/s of ``openssl speed -evp ALG -bytes 16384``; None if unavailable."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-evp", algorithm, "-bytes", "16384", "-seconds", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    pattern = rf"^{re.escape(OPENSSL_NAMES[algorithm])}\s+([0-9.]+)k\s*$"
    match = re.search(pattern, proc.stdout, re.MULTILINE | re.IGNORECASE)
    return float(match.group(1)) * 1000 if match else None


def run_pytest(suite: str, json_path: Path, env: dict[str, str]) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCHES / suite),
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,iqr,rounds",
        "--benchmark-sort=name",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    # The pytest output goes to stderr, keeping stdout for the report.
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=sys.stderr, check=False).returncode


def load_results(json_path: Path) -> Results:
    data = json.loads(json_path.read_text(encoding="utf-8"))
    results: Results = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        stats = bench["stats"]
        median = float(stats["median"])
        if "case" not in info or median <= 0:
            continue
        results[(bench["group"], info["case"])] = Result(
            rate=float(info["bytes"]) / median,
            spread=float(stats["iqr"]) / median,
            rounds=int(stats["rounds"]),
            note=str(info.get("note", "")),
        )
    return results


def run_peak_rss(
    gib: float, mem_mb: int, repeat: int, json_path: Path
) -> tuple[dict[str, Any] | None, str]:
    cmd = [
        sys.executable,
        str(BENCHES / "peak_rss.py"),
        "--gib",
        str(gib),
        "--mem-mb",
        str(mem_mb),
        "--file-repeat",
        str(repeat),
        "--json",
        str(json_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode == EXIT_RSS_NOT_RUN:
        return None, proc.stderr.strip() or "not run"
    if proc.returncode != 0:
        raise RuntimeError(f"peak_rss.py failed ({proc.returncode})")
    rss: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    return rss, ""


# --- the report ----------------------------------------------------------------------------------


def ratio(results: Results, a: tuple[str, str], b: tuple[str, str]) -> float | None:
    if a in results and b in results:
        return results[a].rate / results[b].rate
    return None


def target_rows(
    results: Results, openssl: dict[str, float | None], rss: dict[str, Any] | None, rss_why: str
) -> list[Row]:
    rows: list[Row] = []
    for alg in (AES, CHACHA):
        one = results.get((f"{alg} encrypt", "e2ebackup encrypt_into 1t"))
        core = openssl[alg]
        rows.append(
            Row(
                f"{alg}: single-thread encrypt_into vs `openssl speed` per core (16 KiB)",
                one.rate / core if one and core else None,
                1.0,
                why_missing="" if core else "openssl speed unavailable",
            )
        )
    for alg in (AES, CHACHA):
        for op in ("encrypt", "decrypt"):
            g = f"{alg} {op}"
            rows.append(
                Row(
                    f"{alg}: {op}_into all threads vs single thread",
                    ratio(results, (g, f"e2ebackup {op}_into all"), (g, f"e2ebackup {op}_into 1t")),
                    1.8,
                )
            )
    for op in ("encrypt", "decrypt"):
        g = f"{AES} {op}"
        rows.append(
            Row(
                f"{op}_into vs cobblestone update_into + finalize",
                ratio(results, (g, f"e2ebackup {op}_into all"), (g, "cobblestone update_into")),
                2.0,
            )
        )
    for op in ("encrypt", "decrypt"):
        g = f"{AES} {op}"
        rows.append(
            Row(
                f"{op} (returns bytes) vs cobblestone update() + finalize()",
                ratio(results, (g, f"e2ebackup {op} all"), (g, "cobblestone update")),
                3.0,
            )
        )
    for op in ("encrypt", "decrypt"):
        g = f"file {op}"
        ours = (g, f"e2ebackup {op}_file")
        rows.append(
            Row(
                f"{op}_file (path: temp + fsync + rename) vs cobblestone loop",
                ratio(results, ours, (g, "cobblestone loop")),
                2.0,
            )
        )
        rows.append(
            Row(
                f"{op}_file (path) vs cobblestone loop + fsync (equal durability)",
                ratio(results, ours, (g, "cobblestone loop+fsync")),
                2.0,
            )
        )
        rows.append(
            Row(
                f"{op}_file (file objects, no fsync) vs cobblestone loop",
                ratio(results, (g, f"e2ebackup {op}_file fileobj"), (g, "cobblestone loop")),
                None,
            )
        )
    for op in ("encrypt", "decrypt"):
        g = f"file {op}"
        for case, ceiling in (
            (f"e2ebackup {op}_file fileobj", "copy"),
            (f"e2ebackup {op}_file", "copy+fsync"),
        ):
            rows.append(
                Row(
                    f"{case.removeprefix('e2ebackup ')} as % of a plain {ceiling} (no crypto)",
                    ratio(results, (g, case), ("file ceiling", ceiling)),
                    None,
                    unit="%",
                )
            )
    rows.append(
        Row(
            "ceiling: plain copy (no crypto) vs cobblestone loop",
            ratio(results, ("file ceiling", "copy"), ("file encrypt", "cobblestone loop")),
            None,
        )
    )
    rows.extend(rss_rows(rss, rss_why))
    return rows


def format_size(size: int) -> str:
    return f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):g} MiB"


def rss_rows(rss: dict[str, Any] | None, why: str) -> list[Row]:
    cases = {c["case"]: c for c in rss["cases"]} if rss else {}
    size = format_size(rss["file_bytes"]) if rss else "big"
    if rss:
        size += f" (median of {rss.get('repeat', 1)})"
    why = why or "peak_rss.py not run"
    rows = []
    for name in ("encrypt_file", "decrypt_file"):
        case = cases.get(name)
        rows.append(
            Row(
                f"{size} {name}: peak RSS growth",
                case["growth_mib"] if case else None,
                64.0,
                unit="MiB",
                why_missing=why,
            )
        )
    for name in ("encrypt_file", "decrypt_file"):
        case = cases.get(name)
        mem = f"{name[:7]}_into {rss['memory_mib']} MiB" if rss else "in-memory"
        rows.append(
            Row(
                f"{size} {name}: throughput as % of {mem} (all threads)",
                case["fraction_of_memory"] if case else None,
                0.70,
                unit="%",
                why_missing=why,
            )
        )
        rows.append(
            Row(
                f"{size} {name}: the same, up to the last block written (before the final fsync)",
                case["fraction_of_memory_before_final_fsync"] if case else None,
                None,
                unit="%",
                why_missing=why,
            )
        )
        rows.append(
            Row(
                f"{size} {name}: throughput as % of a plain copy+fsync of the same file",
                case.get("fraction_of_copy") if case else None,
                None,
                unit="%",
                why_missing=why if not rss else "not in this peak_rss.py result",
            )
        )
    rows.append(
        Row(
            f"{size} ceiling: plain copy+fsync (no crypto) as % of in-memory encrypt_into",
            rss.get("copy_fraction_of_memory") if rss else None,
            None,
            unit="%",
            why_missing=why if not rss else "not in this peak_rss.py result",
        )
    )
    return rows


def target_table(rows: list[Row]) -> list[str]:
    lines = ["| Metric | Ratio | Target | Status |", "|---|---:|---|---|"]
    lines += [f"| {r.metric} | {r.value()} | {r.goal()} | {r.status()} |" for r in rows]
    return lines


def peer_tables(results: Results) -> list[str]:
    lines: list[str] = []
    groups = sorted({g for g, _ in results}, key=lambda g: (g.startswith("file"), g))
    for group in groups:
        ref_case = REFERENCE.get(group)
        ref = results.get((group, ref_case)) if ref_case else None
        if ref is None and group == "file ceiling":
            ref_case = "e2ebackup encrypt_file"
            ref = results.get(("file encrypt", ref_case))
        cases = sorted(
            ((c, r) for (g, c), r in results.items() if g == group), key=lambda cr: -cr[1].rate
        )
        lines += [
            "",
            f"### {group} (relative to `{ref_case}`)",
            "",
            "| Case | Throughput vs e2ebackup | e2ebackup speed-up | IQR/median | Rounds | Note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for case, res in cases:
            rel = f"{res.rate / ref.rate:.3f}x" if ref else "n/a"
            speedup = f"{ref.rate / res.rate:.2f}x" if ref else "n/a"
            name = f"**{case}**" if case == ref_case else case
            lines.append(
                f"| {name} | {rel} | {speedup} | {res.spread:.1%} | {res.rounds} | {res.note} |"
            )
    return lines


def wait_for_idle(limit: float) -> None:
    """Waits (up to ``limit`` seconds) for a 3 s window in which other work took < 10% CPU."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        watch = CpuWatch()
        time.sleep(3)
        share = watch.others()
        if share is None or share < 0.10:
            return
        print(f"waiting for an idle machine: other work takes {share:.0%}", file=sys.stderr)
    print("machine still busy; running anyway", file=sys.stderr)


def contention_line(others: dict[str, float | None]) -> str:
    known = {phase: share for phase, share in others.items() if share is not None}
    if not known:
        return "CPU taken by other work: unknown (no /proc/stat)."
    phases = ", ".join(f"{phase} {share:.0%}" for phase, share in known.items())
    line = f"CPU taken by other work during the run (share of all cores): {phases}."
    cpu_bound = [share for phase, share in known.items() if "file" not in phase]
    if cpu_bound and max(cpu_bound) > 0.10:
        line += (
            " **The machine was busy: the thread-scaling ratios (and the openssl reference) "
            "are unreliable; re-run when it is idle.**"
        )
    return line


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def render(
    args: argparse.Namespace,
    results: Results,
    openssl: dict[str, float | None],
    rss: dict[str, Any] | None,
    rss_why: str,
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    smoke = " (smoke run: sizes too small to mean much)" if args.smoke else ""
    load = ", ".join(f"{x:.2f}" for x in args.load_before)
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# e2ebackup benchmark report",
        "",
        f"{now}, commit `{git_commit()}`, {cpu_model()}, {os.cpu_count()} logical cores, "
        f"Python {platform.python_version()}. In-memory data {args.mb:g} MiB, files "
        f"{args.file_mb:g} MiB{smoke}. Load average (1, 5, 15 min) at the start: {load}; "
        f"at the end: {load_after} (other work on the machine skews the thread-scaling and "
        "file ratios).",
        "",
        contention_line(args.others),
        "",
        "Ratios of medians of payload throughput; every figure in a ratio was measured in this "
        "run.",
        "",
        "## Targets",
        "",
        *target_table(target_rows(results, openssl, rss, rss_why)),
        "",
        "## Every peer relative to e2ebackup",
        "",
        "Throughput relative to the e2ebackup call in bold (higher is faster). Slow peers ran on "
        "a smaller slice and are normalised to bytes per second (see Note). pyrage (age) uses "
        "ChaCha20-Poly1305 and Fernet AES-128-CBC + HMAC-SHA256, whatever the group.",
        *peer_tables(results),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (seconds)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--mb", type=float, help="in-memory size in MiB (default 256, smoke 8)")
    parser.add_argument("--file-mb", type=float, help="file size in MiB (default 256, smoke 8)")
    parser.add_argument(
        "--repo-mb", type=float, help="repository suite tree in MiB (default 256, smoke 8)"
    )
    parser.add_argument("--seconds", type=float, help="per-benchmark budget (default 2)")
    parser.add_argument(
        "--rss-gib", type=float, help="peak_rss.py file size in GiB; 0 skips (default 4)"
    )
    parser.add_argument(
        "--rss-repeat", type=int, help="peak_rss.py runs per file case (default 3, smoke 1)"
    )
    parser.add_argument("--rss-json", type=Path, help="reuse a peak_rss.py --json result")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other work to use < 10%% of the CPUs (default 0)",
    )
    args = parser.parse_args(argv)
    if args.mb is None:
        args.mb = 8.0 if args.smoke else 256.0
    if args.file_mb is None:
        args.file_mb = 8.0 if args.smoke else 256.0
    if args.repo_mb is None:
        args.repo_mb = 8.0 if args.smoke else 256.0
    if args.seconds is None:
        args.seconds = 0.1 if args.smoke else 2.0
    if args.rss_gib is None:
        args.rss_gib = 1 / 64 if args.smoke else 4.0
    if args.rss_repeat is None:
        args.rss_repeat = 1 if args.smoke else 3

    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    args.load_before = os.getloadavg()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    watch = CpuWatch()
    openssl = {alg: openssl_speed(alg, 1 if args.smoke else 3) for alg in (AES, CHACHA)}
    args.others = {"openssl speed": watch.others()}
    env = dict(os.environ)
    env.update(
        E2EBACKUP_BENCH_MB=f"{args.mb:g}",
        E2EBACKUP_BENCH_FILE_MB=f"{args.file_mb:g}",
        E2EBACKUP_BENCH_REPO_MB=f"{args.repo_mb:g}",
        E2EBACKUP_BENCH_SECONDS=f"{args.seconds:g}",
    )
    status = 0
    results: Results = {}
    for suite, phase in (
        ("test_bench_memory.py", "in-memory suite"),
        ("test_bench_files.py", "file suite (kernel writeback counts here)"),
        ("test_bench_repo.py", "repository suite (file writes: kernel writeback counts here)"),
    ):
        watch = CpuWatch()
        bench_json = args.results_dir / f"{Path(suite).stem}-{stamp}.json"
        status = run_pytest(suite, bench_json, env) or status
        args.others[phase] = watch.others()
        if bench_json.exists():
            results.update(load_results(bench_json))
    watch = CpuWatch()

    rss: dict[str, Any] | None = None
    rss_why = ""
    if args.rss_json:
        rss = json.loads(args.rss_json.read_text(encoding="utf-8"))
    elif args.rss_gib > 0:
        mem_mb = max(1, int(args.mb))
        try:
            rss, rss_why = run_peak_rss(
                args.rss_gib, mem_mb, args.rss_repeat, args.results_dir / f"rss-{stamp}.json"
            )
        except RuntimeError as exc:
            rss_why = "peak_rss.py failed"
            print(exc, file=sys.stderr)
            status = status or 1
    else:
        rss_why = "skipped (--rss-gib 0)"

    if rss is not None and not args.rss_json:
        args.others["peak_rss.py"] = watch.others()
    report = render(args, results, openssl, rss, rss_why)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    if status != 0:
        print(f"benchmark suite failed (pytest exit status {status})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
