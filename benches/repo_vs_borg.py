#!/usr/bin/env python3
"""e2ebackup's repository (backup / restore) against borgbackup 1.4, side by side in one run.

Not a test: a script (issue #4). It generates a media-like tree of ``--gib`` GiB: mostly
incompressible photos and videos (files that start with real JPEG / MP4 ``ftyp`` magic bytes
followed by random data, 100 KB to 200 MB), a 1 GiB binary "chat archive", some compressible
text and a few SQLite databases; optionally a second tree of ``--small-files`` files of 1-10 KB.
Then, each tool as a fresh command-line process (``python -m e2ebackup`` / ``borg``):

1. ceilings without any backup tool: ``dd ... oflag=direct`` (the disk), one 1 GiB write +
   fsync, and a copy of the whole tree with one fsync per file (what a durable restore must do);
2. a first backup into a fresh repository on the same disk: ``e2ebackup backup`` against
   ``borg create`` into a ``repokey-blake2`` repository with borg's default compression (lz4)
   and with ``--compression auto,zstd,3`` (the closest to e2ebackup's zstd-3-unless-compressed);
3. a second backup of the unchanged tree, then one after appending 1 MiB to the 1 GiB file
   (bytes the tool says it added, and growth of the repository directory);
4. restores: ``e2ebackup restore`` against ``borg extract``, checked against the source;
5. peak memory: e2ebackup's backup and restore through the API in a fresh process that resets
   its peak-RSS mark after opening the repository (``/proc/self/clear_refs``), so the figure is
   the operation's own, without the interpreter and the Argon2id key derivation;
6. the same backup / restore / memory runs on the small-files tree.

The tree is read once (page cache warm) before every backup, each repository is read once
before every restore, and ``sync`` runs (untimed) before every case and (timed, reported
apart) right after it: e2ebackup fsyncs what it writes, borg does not fsync extracted files,
so "incl. sync" is the fair restore comparison. Each command's wall time, CPU time and peak
RSS come from ``os.wait4`` (``ru_maxrss``). The machine is shared and small: read the ratios,
check the "others" column (CPU that other work took during the case, in cores; kernel
writeback threads count there too) and re-run when it is high.

borg is an optional peer: ``bash benches/install_borg.sh`` (or ``--install-borg``) builds it;
without it the borg cases are skipped with a message.

Usage::

    python benches/repo_vs_borg.py --out bench-results/repo_vs_borg.md   # 4 GiB + 100k files
    python benches/repo_vs_borg.py --gib 0.25 --small-files 2000         # a quick look

Needs about 5.5 x ``--gib`` GiB free (tree, three repositories, a restore); the scratch
directory is always removed. Exit status 3 means "not run" (not enough free disk).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
PIECE = 16 * MIB
EXIT_NOT_RUN = 3
SPEEDUP_TARGET = 3.0
PASSWORD = "repo_vs_borg benchmark password"
BENCHES = Path(__file__).resolve().parent
INSTALL_BORG = BENCHES / "install_borg.sh"

# Real file-format magic: e2ebackup (and borg's "auto" mode) decide compressibility by content.
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41\x00\x00\x00\x08free"

# The borg configurations: (case suffix, --compression value or None for borg's default).
BORG_CONFIGS: tuple[tuple[str, str | None], ...] = (
    ("default (lz4)", None),
    ("auto,zstd,3", "auto,zstd,3"),
)


# --- data generation -----------------------------------------------------------------------------


class RandomStream:
    """Unique incompressible bytes: an AES-256-CTR keystream from the seed. Much faster than
    ``os.urandom`` here, reproducible, and never repeats (so no tool can deduplicate it)."""

    def __init__(self, seed: int) -> None:
        key = hashlib.sha256(f"repo_vs_borg {seed}".encode()).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = memoryview(bytes(PIECE))

    def write(self, f: Any, size: int, head: bytes = b"") -> None:
        """Writes ``head`` then random bytes, ``size`` bytes in all."""
        head = head[:size]
        f.write(head)
        left = size - len(head)
        while left > 0:
            n = min(PIECE, left)
            f.write(self._enc.update(self._zeros[:n]))
            left -= n


class TextMaker:
    """Compressible text (zstd takes it to about a third): sentences of pseudo-words."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        letters = string.ascii_lowercase
        words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(600)]
        self._sentences = [
            " ".join(rng.choices(words, k=rng.randint(4, 18))).capitalize() + ". "
            for _ in range(4000)
        ]
        self._avg = statistics.fmean(len(s) for s in self._sentences)

    def text(self, size: int) -> bytes:
        k = int(size / self._avg) + 2
        body = "".join(self._rng.choices(self._sentences, k=k))
        return body.encode()[:size]


@dataclass
class Tree:
    root: Path
    files: int = 0
    bytes: int = 0
    kinds: dict[str, list[int]] = field(default_factory=dict)  # kind -> [files, bytes]
    big_file: Path | None = None
    sqlite: list[Path] = field(default_factory=list)

    def add(self, kind: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        counts = self.kinds.setdefault(kind, [0, 0])
        counts[0] += 1
        counts[1] += size

    def describe(self) -> str:
        parts = [
            f"{kind} {n:,} files / {size / 1e6:,.1f} MB"
            for kind, (n, size) in sorted(self.kinds.items(), key=lambda kv: -kv[1][1])
        ]
        return f"{self.files:,} files, {self.bytes / 1e9:.3f} GB: " + "; ".join(parts)


def log_uniform(rng: random.Random, low: float, high: float) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def make_sqlite(path: Path, size: int, text: TextMaker, rng: random.Random) -> int:
    """A chat-like SQLite database of about ``size`` bytes; returns its real size."""
    con = sqlite3.connect(path)
    try:
        con.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, chat INTEGER, ts INTEGER,"
            " sender TEXT, body TEXT);"
            "CREATE INDEX messages_chat_ts ON messages (chat, ts);"
        )
        ts = 1_600_000_000_000
        while (left := size - path.stat().st_size) > 0:
            rows = []
            for _ in range(max(20, min(5000, left // 300))):
                ts += rng.randint(1, 600_000)
                body = text.text(rng.randint(10, 400)).decode()
                rows.append((rng.randint(1, 300), ts, f"+4915{rng.randint(0, 10**8):08d}", body))
            con.executemany("INSERT INTO messages (chat, ts, sender, body) VALUES (?,?,?,?)", rows)
            con.commit()
    finally:
        con.close()
    return path.stat().st_size


def make_media_tree(root: Path, total: int, big: int, seed: int) -> Tree:
    """Photos, videos, a big binary file, text and SQLite: about ``total`` bytes."""
    rng = random.Random(seed)
    stream = RandomStream(seed)
    text = TextMaker(rng)
    tree = Tree(root)
    root.mkdir(parents=True)

    def new_file(rel: str, kind: str, size: int, head: bytes = b"") -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            stream.write(f, size, head)
        tree.add(kind, size)
        return path

    big = max(MIB, min(big, total // 4) // MIB * MIB)
    tree.big_file = new_file("chats/archive/chat-media-2019.bin", "big binary", big)
    text_budget = total * 3 // 100
    sqlite_budget = total * 2 // 100
    rest = max(0, total - big - text_budget - sqlite_budget)
    photo_budget = rest * 2 // 5
    video_budget = rest - photo_budget

    i = 0
    while photo_budget > 0:
        size = min(photo_budget, log_uniform(rng, 100_000, 8_000_000))
        month = 1 + i % 12
        new_file(f"DCIM/Camera/2024-{month:02d}/IMG_{i:05d}.jpg", "JPEG photo", size, JPEG_HEAD)
        photo_budget -= size
        i += 1
    i = 0
    while video_budget > 0:
        size = min(video_budget, log_uniform(rng, 5_000_000, 200_000_000))
        new_file(f"Movies/VID_{i:04d}.mp4", "MP4 video", size, MP4_HEAD)
        video_budget -= size
        i += 1
    i = 0
    while text_budget > 0:
        size = min(text_budget, log_uniform(rng, 2_000, 2_000_000))
        path = root / f"Documents/notes/{i // 50:03d}/note_{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.text(size))
        tree.add("text", size)
        text_budget -= size
        i += 1
    count = max(1, min(4, sqlite_budget // (8 * MIB)))
    for i in range(count):
        path = root / f"chats/databases/msgstore-{i}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        tree.add("SQLite", make_sqlite(path, sqlite_budget // count, text, rng))
        tree.sqlite.append(path)
    return tree


def make_small_tree(root: Path, count: int, seed: int) -> Tree:
    """``count`` files of 1-10 KB (thumbnails and notes), 100 a folder."""
    rng = random.Random(seed + 1)
    stream = RandomStream(seed + 1)
    text = TextMaker(rng)
    tree = Tree(root)
    for i in range(count):
        folder = root / f"thumbs/{i // 100:05d}"
        if i % 100 == 0:
            folder.mkdir(parents=True)
        size = rng.randint(1 * KIB, 10 * KIB)
        if i % 4 == 3:
            (folder / f"note_{i:06d}.txt").write_bytes(text.text(size))
            tree.add("small text", size)
        else:
            with (folder / f"thumb_{i:06d}.jpg").open("wb") as f:
                stream.write(f, size, JPEG_HEAD)
            tree.add("small JPEG", size)
    return tree


# --- measurement ---------------------------------------------------------------------------------


def cpu_busy_seconds() -> float | None:
    """Machine-wide busy CPU time (steal included) from /proc/stat, in seconds."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    case: str
    phase: str
    tool: str
    source_bytes: int
    seconds: float
    sync_seconds: float
    user: float
    system: float
    maxrss_kib: int
    others_cores: float | None
    load1: float
    added_bytes: int | None = None
    repo_growth: int | None = None
    note: str = ""

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def gbps(self, with_sync: bool = False) -> float:
        seconds = self.seconds + (self.sync_seconds if with_sync else 0.0)
        return self.source_bytes / seconds / 1e9


def run_cmd(
    cmd: list[str],
    *,
    case: str,
    phase: str,
    tool: str,
    source_bytes: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Run, str]:
    """Runs ``cmd`` after an untimed sync; wall time, CPU and peak RSS from ``os.wait4``, then
    a timed sync (reported apart)."""
    os.sync()
    load1 = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0 = cpu_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        busy1 = cpu_busy_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
        start = time.perf_counter()
        os.sync()
        sync_seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-4000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0 - cpu) / seconds)
    run = Run(
        case=case,
        phase=phase,
        tool=tool,
        source_bytes=source_bytes,
        seconds=seconds,
        sync_seconds=sync_seconds,
        user=usage.ru_utime,
        system=usage.ru_stime,
        maxrss_kib=usage.ru_maxrss,
        others_cores=others,
        load1=load1,
    )
    print(
        f"  {case:<44} {seconds:8.2f} s  {run.gbps():6.3f} GB/s  +sync {sync_seconds:5.2f} s  "
        f"cpu {cpu:7.1f} s  rss {usage.ru_maxrss / KIB:7.1f} MiB",
        file=sys.stderr,
    )
    return run, stdout


def walk_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def warm(root: Path) -> int:
    """Reads every file under ``root`` once (into the page cache); returns the bytes read."""
    buf = bytearray(8 * MIB)
    total = 0
    for path in walk_files(root):
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def du(root: Path) -> int:
    """Apparent size of everything under ``root``."""
    return sum(p.stat().st_size for p in walk_files(root) if not p.is_symlink())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(8 * MIB)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(memoryview(buf)[:n])
    return digest.hexdigest()


def verify_restore(tree: Tree, restored: Path, sample: int = 20) -> None:
    """Same files and sizes (SQLite sizes may differ: e2ebackup stores a consistent copy made
    with SQLite's backup API), and identical content for the big file and a sample."""
    src = {p.relative_to(tree.root): p for p in walk_files(tree.root)}
    dst = {p.relative_to(restored): p for p in walk_files(restored)}
    if set(src) != set(dst):
        missing = sorted(set(src) - set(dst))[:5]
        extra = sorted(set(dst) - set(src))[:5]
        raise AssertionError(f"restored tree differs: missing {missing}, extra {extra}")
    sqlite = {p.relative_to(tree.root) for p in tree.sqlite}
    for rel, path in src.items():
        if rel not in sqlite and path.stat().st_size != dst[rel].stat().st_size:
            raise AssertionError(f"{rel}: restored size differs")
    rng = random.Random(len(src))
    names = [rel for rel in src if rel not in sqlite]
    check = rng.sample(names, min(sample, len(names)))
    if tree.big_file is not None:
        check.append(tree.big_file.relative_to(tree.root))
    for rel in check:
        if sha256_file(src[rel]) != sha256_file(dst[rel]):
            raise AssertionError(f"{rel}: restored content differs")
    for rel in sqlite:
        con = sqlite3.connect(f"file:{dst[rel]}?mode=ro", uri=True)
        try:
            if con.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise AssertionError(f"{rel}: restored database is damaged")
        finally:
            con.close()


def vm_status_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status (Linux only)")


# --- child processes -----------------------------------------------------------------------------


def child_api(op: str, repo_path: str, path: str) -> dict[str, Any]:
    """e2ebackup's backup or restore through the API, with the peak-RSS mark reset after the
    repository is open: the growth is the operation's own (index loading included)."""
    from e2ebackup.repo.backup import backup
    from e2ebackup.repo.repository import Repository
    from e2ebackup.repo.restore import restore
    from e2ebackup.storage import LocalStorage

    repo = Repository.open(LocalStorage(repo_path, create=False), password=PASSWORD)
    reset = True
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        reset = False
    before = vm_status_kib("VmRSS")
    hwm_before = vm_status_kib("VmHWM")
    start = time.perf_counter()
    if op == "backup":
        _, stats = backup(repo, [path])
        nbytes = stats.bytes_total
    else:
        nbytes = restore(repo, "latest", path).bytes
    seconds = time.perf_counter() - start
    peak = vm_status_kib("VmHWM")
    return {
        "op": op,
        "seconds": seconds,
        "bytes": nbytes,
        "rss_before_kib": before,
        "hwm_before_kib": hwm_before,
        "hwm_kib": peak,
        "growth_kib": peak - (before if reset else hwm_before),
        "hwm_reset": reset,
        "blobs": len(repo.index),
    }


def child_copy_tree(src: str, dst: str, fsync: bool) -> dict[str, Any]:
    """The restore ceilings: every file copied (8 MiB blocks, no crypto), each fsynced (what a
    restore that never leaves a file looking complete before it is durable must at least do),
    or none (the parent syncs once after it: what borg extract does)."""
    buf = bytearray(8 * MIB)
    total = 0
    for path in walk_files(Path(src)):
        out = Path(dst) / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb", buffering=0) as fin, out.open("wb", buffering=0) as fout:
            while n := fin.readinto(buf):
                fout.write(memoryview(buf)[:n])
                total += n
            if fsync:
                os.fsync(fout.fileno())
    return {"bytes": total}


def child_write_fsync(dst: str, size: int) -> dict[str, Any]:
    """The disk ceiling as a program sees it: ``size`` bytes written in 16 MiB blocks, one
    fsync at the end."""
    block = os.urandom(PIECE)
    with open(dst, "wb", buffering=0) as f:
        for off in range(0, size, PIECE):
            f.write(block[: min(PIECE, size - off)])
        os.fsync(f.fileno())
    return {"bytes": size}


def child_main(args: argparse.Namespace) -> int:
    op, *rest = args.child
    if op in ("backup", "restore"):
        result = child_api(op, rest[0], rest[1])
    elif op == "copy-tree":
        result = child_copy_tree(rest[0], rest[1], rest[2] == "fsync")
    elif op == "write-fsync":
        result = child_write_fsync(rest[0], int(rest[1]))
    else:
        raise SystemExit(f"unknown child {op!r}")
    print(json.dumps(result))
    return 0


def child_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


# --- the tools -----------------------------------------------------------------------------------


class E2E:
    name = "e2ebackup"

    def __init__(self, scratch: Path) -> None:
        self.env = dict(os.environ)
        self.env.update(E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_STATE_DIR=str(scratch / "state"))

    @staticmethod
    def cmd(*args: str) -> list[str]:
        return [sys.executable, "-m", "e2ebackup", *args]

    def init(self, repo: Path) -> None:
        subprocess.run(self.cmd("init", "-r", str(repo), "-q"), env=self.env, check=True)

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("e2ebackup")
        except PackageNotFoundError:
            return "?"


class Borg:
    name = "borg"

    def __init__(self, exe: str, scratch: Path) -> None:
        self.exe = exe
        self.env = dict(os.environ)
        self.env.update(
            BORG_PASSPHRASE=PASSWORD,
            BORG_BASE_DIR=str(scratch / "borg-home"),  # fresh config, keys cache and files cache
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_DISPLAY_PASSPHRASE="no",
        )

    def init(self, repo: Path) -> None:
        cmd = [self.exe, "init", "-e", "repokey-blake2", str(repo)]
        subprocess.run(cmd, env=self.env, check=True, capture_output=True)

    def create(self, repo: Path, archive: str, compression: str | None, path: str) -> list[str]:
        extra = ["--compression", compression] if compression else []
        return [self.exe, "create", "--json", *extra, f"{repo}::{archive}", path]

    def version(self) -> str:
        proc = subprocess.run([self.exe, "--version"], capture_output=True, text=True, check=True)
        return proc.stdout.strip().removeprefix("borg ")


def find_borg(install: bool) -> tuple[str | None, str]:
    """borg's path, or None and why not."""
    candidates = [str(Path(sys.executable).parent / "borg"), shutil.which("borg") or ""]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None and install:
        print(f"installing borg: bash {INSTALL_BORG}", file=sys.stderr)
        env = dict(os.environ, PYTHON=sys.executable)
        subprocess.run(["bash", str(INSTALL_BORG)], env=env, check=False)
        return find_borg(False)
    if found is None:
        return None, f"borg is not installed (bash {INSTALL_BORG.relative_to(BENCHES.parent)})"
    return found, ""


# --- the comparison ------------------------------------------------------------------------------


@dataclass
class Report:
    started: str
    machine: dict[str, Any]
    versions: dict[str, str]
    trees: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    borg_skipped: str = ""
    commit: str = ""

    def pick(self, case: str) -> Run | None:
        """The run of median wall time (lower median) among those of ``case``."""
        runs = [r for r in self.runs if r.case == case]
        if not runs:
            return None
        median = statistics.median_low(r.seconds for r in runs)
        return next(r for r in runs if r.seconds == median)


def borg_case(verb: str, config: str) -> str:
    return f"borg {verb} {config}"


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path, borg: str | None) -> None:
        self.args = args
        self.scratch = scratch
        self.e2e = E2E(scratch)
        self.borg = Borg(borg, scratch) if borg else None
        self.report = Report(
            started=datetime.datetime.now().isoformat(timespec="seconds"),
            machine=machine_info(),
            versions={"e2ebackup": self.e2e.version(), "python": platform.python_version()},
        )
        if self.borg:
            self.report.versions["borg"] = self.borg.version()

    def add(self, run: Run) -> Run:
        self.report.runs.append(run)
        return run

    # -- ceilings

    def ceilings(self, tree: Tree) -> None:
        out = self.scratch / "ceiling"
        out.mkdir()
        size = GIB if tree.bytes >= GIB else max(MIB, tree.bytes // MIB * MIB)
        blocks = size // PIECE or 1
        dd = shutil.which("dd")
        if dd:
            cmd = [dd, "if=/dev/zero", f"of={out / 'dd'}", "bs=16M", f"count={blocks}"]
            self.add(
                run_cmd(
                    [*cmd, "oflag=direct", "status=none"],
                    case="ceiling: dd oflag=direct",
                    phase="ceiling",
                    tool="dd",
                    source_bytes=blocks * PIECE,
                )[0]
            )
            (out / "dd").unlink()
        self.add(
            run_cmd(
                child_cmd("write-fsync", str(out / "write"), str(size)),
                case="ceiling: write + fsync",
                phase="ceiling",
                tool="python",
                source_bytes=size,
            )[0]
        )
        (out / "write").unlink()
        shutil.rmtree(out)
        self.copy_ceilings(tree, "")

    def copy_ceilings(self, tree: Tree, suffix: str) -> None:
        out = self.scratch / "ceiling"
        for mode, label in (("fsync", "fsync each file"), ("nofsync", "no fsync")):
            warm(tree.root)
            self.add(
                run_cmd(
                    child_cmd("copy-tree", str(tree.root), str(out / "tree"), mode),
                    case=f"ceiling: copy tree, {label}{suffix}",
                    phase="ceiling",
                    tool="python",
                    source_bytes=tree.bytes,
                )[0]
            )
            self.discard(tree, out)

    # -- backups

    def e2e_backup(self, repo: Path, tree: Tree, case: str, phase: str) -> Run:
        warm(tree.root)
        before = du(repo)
        run, out = run_cmd(
            self.e2e.cmd("backup", "-r", str(repo), str(tree.root), "--json", "-q"),
            case=case,
            phase=phase,
            tool="e2ebackup",
            source_bytes=tree.bytes,
            env=self.e2e.env,
        )
        stats = json.loads(out)["stats"]
        run.added_bytes = int(stats["bytes_added"])
        run.repo_growth = du(repo) - before
        run.note = f"{stats['bytes_read'] / 1e6:,.1f} MB read"
        return self.add(run)

    def borg_backup(
        self, repo: Path, tree: Tree, archive: str, config: tuple[str, str | None], phase: str
    ) -> Run:
        assert self.borg is not None
        warm(tree.root)
        before = du(repo)
        verb = "create" if phase == "backup" else f"create ({phase})"
        run, out = run_cmd(
            self.borg.create(repo, archive, config[1], tree.root.name),
            case=borg_case(verb, config[0]),
            phase=phase,
            tool="borg",
            source_bytes=tree.bytes,
            env=self.borg.env,
            cwd=tree.root.parent,
        )
        stats = json.loads(out)["archive"]["stats"]
        run.added_bytes = int(stats["deduplicated_size"])
        run.repo_growth = du(repo) - before
        return self.add(run)

    def fresh_backups(self, tree: Tree, label: str) -> tuple[Path, dict[str, Path]]:
        """First backups into fresh repositories, ``--repeat`` times in rotating order; the
        repositories of the last repetition are kept."""
        repos: dict[str, Path] = {}
        e2e_repo = self.scratch / f"{label}-e2e"
        configs = list(BORG_CONFIGS) if self.borg else []
        if label != "media":
            configs = configs[:1]
        jobs: list[tuple[int, str, str | None]] = [(-1, "e2e", None)]
        jobs += [(i, name, compression) for i, (name, compression) in enumerate(configs)]
        for r in range(self.args.repeat):
            order = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]
            for i, name, compression in order:
                if i < 0:
                    shutil.rmtree(e2e_repo, ignore_errors=True)
                    self.e2e.init(e2e_repo)
                    suffix = "" if label == "media" else f" ({label})"
                    self.e2e_backup(e2e_repo, tree, f"e2ebackup backup{suffix}", "backup")
                    continue
                assert self.borg is not None
                for old in self.scratch.glob(f"{label}-borg-{i}-*"):
                    shutil.rmtree(old)
                repo = self.scratch / f"{label}-borg-{i}-{r}"
                self.borg.init(repo)
                run = self.borg_backup(repo, tree, "a1", (name, compression), "backup")
                if label != "media":
                    run.case += f" ({label})"
                repos[name] = repo
        return e2e_repo, repos

    # -- restores

    def restore_case(self, tree: Tree, repo: Path, case: str, cmd: list[str], env: Any) -> Run:
        warm(repo)
        target = self.scratch / "restore"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        cwd = target if cmd[0] != sys.executable else None
        run, _ = run_cmd(
            cmd,
            case=case,
            phase="restore",
            tool=case.split()[0],
            source_bytes=tree.bytes,
            env=env,
            cwd=cwd,
        )
        verify_restore(tree, target / tree.root.name)
        run.note = "checked against the source"
        self.discard(tree, target)
        return self.add(run)

    def restores(
        self, tree: Tree, e2e_repo: Path, borg_repos: dict[str, Path], label: str, borg_archive: str
    ) -> None:
        suffix = "" if label == "media" else f" ({label})"
        target = str(self.scratch / "restore")
        cmd = self.e2e.cmd("restore", "-r", str(e2e_repo), "latest", "--target", target, "-q")
        self.restore_case(tree, e2e_repo, f"e2ebackup restore{suffix}", cmd, self.e2e.env)
        if self.borg is None:
            return
        for name, repo in borg_repos.items():
            cmd = [self.borg.exe, "extract", f"{repo}::{borg_archive}"]
            self.restore_case(tree, repo, borg_case("extract", name) + suffix, cmd, self.borg.env)

    # -- memory

    def memory(self, tree: Tree, label: str) -> None:
        repo = self.scratch / f"{label}-e2e-api"
        self.e2e.init(repo)
        warm(tree.root)
        for op, path in (("backup", str(tree.root)), ("restore", str(self.scratch / "restore"))):
            if op == "restore":
                warm(repo)
            run, out = run_cmd(
                child_cmd(op, str(repo), path),
                case=f"e2ebackup API {op} ({label})",
                phase="memory",
                tool="e2ebackup",
                source_bytes=tree.bytes,
                env=self.e2e.env,
            )
            result = json.loads(out.strip().splitlines()[-1])
            result.update(
                tree=label,
                files=tree.files,
                source_bytes=tree.bytes,
                seconds_incl_sync=run.seconds + run.sync_seconds,
                process_maxrss_kib=run.maxrss_kib,
            )
            self.report.memory.append(result)
            if op == "restore":
                verify_restore(tree, self.scratch / "restore" / tree.root.name, sample=5)
                self.discard(tree, self.scratch / "restore")
        shutil.rmtree(repo)

    # -- the whole run

    def discard(self, tree: Tree, path: Path) -> None:
        """Removes a case's output; for a tree of many files it is only moved aside until the
        end of the run: ext4 scans past recently deleted inodes (``recently_deleted()``, 60 s
        or more) when it allocates new ones, so deleting 100,000 files makes the next case that
        creates 100,000 files several times slower, whichever tool it runs."""
        if tree.files < 10_000:
            shutil.rmtree(path)
            return
        kept = self.scratch / "kept"
        kept.mkdir(exist_ok=True)
        path.rename(kept / str(len(list(kept.iterdir()))))

    def run(self) -> Report:
        args = self.args
        if args.gib > 0:
            self.run_media()
        if args.small_files > 0:
            self.run_small()
        return self.report

    def run_media(self) -> None:
        args = self.args
        total = int(args.gib * GIB)
        t0 = time.perf_counter()
        media = make_media_tree(
            self.scratch / "media" / "tree", total, int(args.big_mib * MIB), args.seed
        )
        os.sync()
        self.report.trees["media"] = media.describe()
        print(f"media tree: {media.describe()} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if not args.no_ceilings:
            self.ceilings(media)

        e2e_repo, borg_repos = self.fresh_backups(media, "media")
        # The cost of a command that only opens the repository (interpreter, key derivation).
        self.add(
            run_cmd(
                self.e2e.cmd("snapshots", "-r", str(e2e_repo), "-q"),
                case="e2ebackup snapshots (fixed cost)",
                phase="fixed",
                tool="e2ebackup",
                source_bytes=0,
                env=self.e2e.env,
            )[0]
        )
        if self.borg:
            repo = next(iter(borg_repos.values()))
            self.add(
                run_cmd(
                    [self.borg.exe, "list", str(repo)],
                    case="borg list (fixed cost)",
                    phase="fixed",
                    tool="borg",
                    source_bytes=0,
                    env=self.borg.env,
                )[0]
            )

        for phase, archive in (("unchanged", "a2"), ("append 1 MiB", "a3")):
            if phase.startswith("append"):
                assert media.big_file is not None
                with media.big_file.open("ab") as f:
                    RandomStream(args.seed + 7).write(f, MIB)
                media.bytes += MIB
                media.kinds["big binary"][1] += MIB
            self.e2e_backup(e2e_repo, media, f"e2ebackup backup ({phase})", phase)
            for name, compression in BORG_CONFIGS:
                if name in borg_repos:
                    self.borg_backup(borg_repos[name], media, archive, (name, compression), phase)
        self.restores(media, e2e_repo, borg_repos, "media", "a3")
        for repo in [e2e_repo, *borg_repos.values()]:
            shutil.rmtree(repo)
        if not args.no_memory:
            self.memory(media, "media")

    def run_small(self) -> None:
        args = self.args
        t0 = time.perf_counter()
        small = make_small_tree(self.scratch / "small" / "tree", args.small_files, args.seed)
        os.sync()
        self.report.trees["small"] = small.describe()
        print(
            f"small tree: {small.describe()} ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
        if not args.no_ceilings:
            self.copy_ceilings(small, " (small files)")
        e2e_repo, borg_repos = self.fresh_backups(small, "small files")
        self.restores(small, e2e_repo, borg_repos, "small files", "a1")
        for repo in [e2e_repo, *borg_repos.values()]:
            shutil.rmtree(repo)
        if not args.no_memory:
            self.memory(small, "small files")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / GIB, 1),
        "load_at_start": os.getloadavg(),
        "kernel": platform.release(),
    }


def git_commit() -> str:
    """The checkout's commit, with "+changes" if python/ or rust/ differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BENCHES, text=True, capture_output=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "python", "rust"],
        cwd=BENCHES.parent,
        text=True,
        capture_output=True,
    )
    commit = head.stdout.strip() or "unknown"
    return commit + (" +changes" if dirty.stdout.strip() else "")


def freeze_package(scratch: Path) -> dict[str, str]:
    """Copies the e2ebackup package in use (Python modules and the built extension) into the
    scratch directory and puts it first on ``PYTHONPATH`` for every child process: on a shared
    checkout with an editable install, a rebuild or an edit during the run cannot change the
    code under test half-way."""
    import importlib.util

    spec = importlib.util.find_spec("e2ebackup")
    if spec is None or spec.origin is None:
        raise SystemExit("e2ebackup is not installed")
    src = Path(spec.origin).parent
    dst = scratch / "pkg" / "e2ebackup"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    paths = [str(dst.parent), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    extension = next(iter(sorted(dst.glob("_core*.so"))), None)
    return {
        "e2ebackup package": str(src),
        "extension sha256": sha256_file(extension)[:16] if extension else "none",
    }


# --- rendering -----------------------------------------------------------------------------------


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    if n >= 10 * MIB:
        return f"{n / 1e6:,.0f} MB"
    return f"{n:,} B"


def run_table(runs: list[Run]) -> list[str]:
    lines = [
        "| Case | Wall s | GB/s | +sync s | GB/s incl. sync | CPU s user / sys | CPU cores "
        "| Peak RSS MiB | Others (cores) | Load 1 min | Added (tool) | Repo growth | Note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        rate = f"{r.gbps():.3f}" if r.source_bytes else ""
        rate_sync = f"{r.gbps(True):.3f}" if r.source_bytes else ""
        others = "?" if r.others_cores is None else f"{r.others_cores:.2f}"
        lines.append(
            f"| {r.case} | {r.seconds:.2f} | {rate} | {r.sync_seconds:.2f} | {rate_sync} "
            f"| {r.user:.1f} / {r.system:.1f} | {r.cpu / r.seconds:.2f} "
            f"| {r.maxrss_kib / KIB:.0f} | {others} "
            f"| {r.load1:.2f} | {fmt_bytes(r.added_bytes)} | {fmt_bytes(r.repo_growth)} "
            f"| {r.note} |"
        )
    return lines


def ratio_rows(report: Report) -> list[str]:
    lines = [
        "| Comparison | e2ebackup | Peer | Speed-up (peer time / e2ebackup time) | Target |",
        "|---|---:|---:|---:|---|",
    ]

    def row(label: str, mine: str, peer: str, with_sync: bool = False, target: bool = True) -> None:
        a, b = report.pick(mine), report.pick(peer)
        if a is None or b is None:
            return
        ta = a.seconds + (a.sync_seconds if with_sync else 0.0)
        tb = b.seconds + (b.sync_seconds if with_sync else 0.0)
        speedup = tb / ta
        goal = ""
        if target:
            met = "met" if speedup >= SPEEDUP_TARGET else "**missed**"
            goal = f">= {SPEEDUP_TARGET:g}x: {met}"
        lines.append(f"| {label} | {ta:.2f} s | {tb:.2f} s | {speedup:.2f}x | {goal} |")

    for config, _ in BORG_CONFIGS:
        row(f"backup vs borg create {config}", "e2ebackup backup", borg_case("create", config))
    for config, _ in BORG_CONFIGS:
        row(f"restore vs borg extract {config}", "e2ebackup restore", borg_case("extract", config))
        row(
            f"restore incl. sync vs borg extract {config} + sync",
            "e2ebackup restore",
            borg_case("extract", config),
            with_sync=True,
        )
    config = BORG_CONFIGS[0][0]
    for phase in ("unchanged", "append 1 MiB"):
        row(
            f"backup ({phase}) vs borg",
            f"e2ebackup backup ({phase})",
            borg_case(f"create ({phase})", config),
            target=False,
        )
    row(
        "backup (small files) vs borg",
        "e2ebackup backup (small files)",
        borg_case("create", config) + " (small files)",
    )
    row(
        "restore (small files) vs borg",
        "e2ebackup restore (small files)",
        borg_case("extract", config) + " (small files)",
    )
    row(
        "restore incl. sync (small files) vs borg + sync",
        "e2ebackup restore (small files)",
        borg_case("extract", config) + " (small files)",
        with_sync=True,
    )

    ceilings = [
        ("backup", "e2ebackup backup", "ceiling: write + fsync"),
        ("restore", "e2ebackup restore", "ceiling: write + fsync"),
        ("restore", "e2ebackup restore", "ceiling: copy tree, fsync each file"),
        ("restore", "e2ebackup restore", "ceiling: copy tree, no fsync"),
        (
            "restore (small files)",
            "e2ebackup restore (small files)",
            "ceiling: copy tree, fsync each file (small files)",
        ),
        (
            "restore (small files)",
            "e2ebackup restore (small files)",
            "ceiling: copy tree, no fsync (small files)",
        ),
    ]
    for label, case, ceiling in ceilings:
        mine, top = report.pick(case), report.pick(ceiling)
        if mine and top:
            lines.append(
                f"| {label} throughput incl. sync as % of `{ceiling[9:]}` "
                f"| {mine.gbps(True):.3f} GB/s | {top.gbps(True):.3f} GB/s "
                f"| {mine.gbps(True) / top.gbps(True):.0%} | |"
            )
    return lines


def memory_table(report: Report) -> list[str]:
    lines = [
        "| Tree | Operation | Files | Blobs in index | Seconds | Growth MiB (after open) "
        "| RSS before MiB | Process peak MiB | Design bound MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.memory:
        bound = (8 * MIB + 32 * MIB + 3 * 16 * MIB + 150 * m["blobs"]) / MIB
        lines.append(
            f"| {m['tree']} | {m['op']} | {m['files']:,} | {m['blobs']:,} | {m['seconds']:.1f} "
            f"| {m['growth_kib'] / KIB:.0f} | {m['rss_before_kib'] / KIB:.0f} "
            f"| {m['process_maxrss_kib'] / KIB:.0f} | {bound:.0f} |"
        )
    return lines


def render(report: Report) -> str:
    m = report.machine
    load = ", ".join(f"{x:.2f}" for x in m["load_at_start"])
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    lines = [
        f"# e2ebackup repository vs borg ({report.started}, commit {report.commit})",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"{versions}. Load average (1, 5, 15 min) at the start: {load}.",
        "",
    ]
    lines += [f"- {name} tree: {desc}" for name, desc in report.trees.items()]
    if report.borg_skipped:
        lines += ["", f"borg cases skipped: {report.borg_skipped}."]
    lines += ["", "## Ratios", "", *ratio_rows(report), "", "## Runs", "", *run_table(report.runs)]
    if report.memory:
        lines += [
            "",
            "## e2ebackup peak memory (API, peak-RSS mark reset after opening)",
            "",
            *memory_table(report),
        ]
    lines += ["", *report.notes]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def wait_for_idle(limit: float) -> None:
    """Waits (up to ``limit`` seconds) for a 5 s window in which other work took < 0.2 cores."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_busy_seconds()
        time.sleep(5)
        after = cpu_busy_seconds()
        if before is None or after is None or (after - before) / 5 < 0.2:
            return
        print(
            f"waiting for an idle machine: others use {(after - before) / 5:.2f} cores",
            file=sys.stderr,
        )
    print("machine still busy; running anyway", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--gib", type=float, default=4.0, help="media tree size in GiB (default 4; 0 skips it)"
    )
    p.add_argument(
        "--big-mib",
        type=float,
        default=1024,
        help="the big file appended to, MiB (default 1024; at most a quarter of --gib)",
    )
    p.add_argument(
        "--small-files",
        type=int,
        default=100_000,
        help="files of 1-10 KB in the second tree (default 100000; 0 skips it)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="first backups per tool, in rotating order (median kept; default 1)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="parent of the scratch directory (default: system temp)")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--json", type=Path, help="write every measurement here")
    p.add_argument("--no-borg", action="store_true", help="e2ebackup only")
    p.add_argument(
        "--install-borg", action="store_true", help=f"run {INSTALL_BORG.name} if borg is missing"
    )
    p.add_argument("--no-ceilings", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the API peak-memory runs")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    borg, why = (None, "--no-borg") if args.no_borg else find_borg(args.install_borg)
    if borg is None:
        print(f"borg cases skipped: {why}", file=sys.stderr)
    parent = args.dir or tempfile.gettempdir()
    need = int(args.gib * GIB * 5.5) + args.small_files * 12 * KIB * 8 + GIB
    free = shutil.disk_usage(parent).free
    if free < need:
        print(
            f"not run: {parent} has {free / GIB:.1f} GiB free, needs {need / GIB:.1f} GiB",
            file=sys.stderr,
        )
        return EXIT_NOT_RUN
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    scratch = Path(tempfile.mkdtemp(prefix="repo_vs_borg-", dir=parent))
    try:
        frozen = freeze_package(scratch)
        commit = git_commit()
        bench = Bench(args, scratch, borg)
        bench.report.commit = commit
        bench.report.versions.update(frozen)
        bench.report.borg_skipped = why
        report = bench.run()
        if (end := git_commit()) != commit:
            report.notes.append(
                f"The checkout moved from {commit} to {end} during the run; every e2ebackup "
                f"figure is of the copy of the package frozen at the start ({commit})."
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = render(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(report)
        args.json.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
