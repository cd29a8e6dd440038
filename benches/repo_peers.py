#!/usr/bin/env python3
"""e2ebackup against its peers (rustic, restic, borg) and ``cp -a``, side by side in one run.

Not a test: a script (issue #13). For each generated tree and each place (tmpfs, disk), every
tool found runs as a fresh command-line process, with its defaults and compression on
(passwords through the environment):

1. a first backup into a fresh repository (next to the tree, on the same file system);
2. an unchanged re-run;
3. 1 MiB appended to one file (the largest), then a backup;
4. a restore of the newest snapshot into a fresh folder, checked (file count and bytes)
   against the source.

``cp -a`` of the same tree is the limit: the table gives each tool's speed as a ratio to
rustic's and to the copy's (``rustic s / tool s``: above 1 is faster). Every timing runs from
the start of the command to its exit; on disk it also covers a ``sync`` (so written data is on
the disk, not only in the page cache). Wall time, CPU time (user + system, children included) and
peak RSS (``ru_maxrss``) come from ``os.wait4``. The tree is read once before the first backup
(warm page cache, as the copy sees it).

Trees (``--quick`` scales them down so the whole run takes a couple of minutes):

- ``media``: ~150 JPEG-like incompressible files (1 GiB), 5,000 small texts, a 100 MB SQLite
  database;
- ``small``: 100,000 files of 1-10 KB (text) in nested folders;
- ``big``: one 4 GiB incompressible file.

Tools: e2ebackup (``python -m e2ebackup``, the package in use, frozen into the scratch folder
so an edit during the run changes nothing), rustic (``PATH`` or
``<workdir>/tools/bin/rustic``; ``--install-rustic`` runs ``cargo install --locked rustic-rs
--no-default-features --root <workdir>/tools``, many minutes), restic (``PATH``; Debian's
``apt-get install restic``), borg (``PATH`` or the virtualenv), ``cp``. A tool that is absent is
skipped with a note. The machine is shared: read ratios from one run, never absolute times alone.

Usage::

    python benches/repo_peers.py --quick
    python benches/repo_peers.py --trees media --where tmpfs,disk --out bench-results/peers.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
PIECE = 16 * MIB
PASSWORD = "repo_peers benchmark password"
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
TMPFS = Path("/dev/shm")
DEFAULT_WORKDIR = Path.home() / ".cache" / "e2ebackup-bench"
ALL_TOOLS = ("e2ebackup", "rustic", "restic", "borg", "cp")
#: The tools the ratios are to, the first one present: rustic, else restic.
ANCHORS = ("rustic", "restic")
WORDS = [
    "backup",
    "restore",
    "photo",
    "holiday",
    "family",
    "garden",
    "invoice",
    "letter",
    "report",
    "draft",
    "meeting",
    "budget",
    "travel",
    "summer",
    "winter",
    "school",
    "music",
    "video",
    "archive",
    "project",
    "notes",
    "recipe",
    "address",
    "phone",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "at",
    "by",
    "this",
    "had",
    "not",
    "are",
    "but",
    "from",
]


@dataclass(frozen=True)
class TreeSpec:
    name: str
    media_files: int = 0
    media_bytes: int = 0
    texts: int = 0
    sqlite_bytes: int = 0
    small_files: int = 0
    big_bytes: int = 0


FULL_TREES = {
    "media": TreeSpec(
        "media", media_files=150, media_bytes=GIB, texts=5000, sqlite_bytes=100 * MIB
    ),
    "small": TreeSpec("small", small_files=100_000),
    "big": TreeSpec("big", big_bytes=4 * GIB),
}
QUICK_TREES = {
    "media": TreeSpec(
        "media", media_files=20, media_bytes=48 * MIB, texts=400, sqlite_bytes=4 * MIB
    ),
    "small": TreeSpec("small", small_files=3000),
    "big": TreeSpec("big", big_bytes=256 * MIB),
}


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Measure:
    seconds: float
    cpu: float
    rss_mib: float


class ToolFailed(RuntimeError):
    pass


# GNU time, when there is one, reports the command's peak RSS from a small process: Linux
# carries a process's peak RSS across exec, so through ``os.wait4`` a child of this (larger)
# Python process would report at least this process's own peak.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def timed(cmd: list[str], *, env: dict[str, str], cwd: Path, sync: bool, log: Path) -> Measure:
    """Runs ``cmd`` after an untimed sync; wall time until it exits (and, with ``sync``, until a
    ``sync`` returns), its CPU time and peak RSS (GNU time's, else ``os.wait4``'s)."""
    os.sync()
    usage_file = log.with_suffix(".time")
    wrapped = [GNU_TIME, "-f", "%U %S %M", "-o", str(usage_file), *cmd] if GNU_TIME else cmd
    with log.open("ab") as err:
        err.write(f"\n$ {' '.join(cmd)}\n".encode())
        err.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        if sync:
            os.sync()
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise ToolFailed(f"{cmd[0]} exited with {proc.returncode}:\n{tail}")
    if GNU_TIME:
        user, system, rss_kib = usage_file.read_text().split()[-3:]
        return Measure(seconds, float(user) + float(system), int(rss_kib) / KIB)
    return Measure(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / KIB)


def tree_totals(root: Path) -> tuple[int, int]:
    """(regular files, their bytes) under ``root``."""
    files = total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if not os.path.islink(os.path.join(folder, name)):
                files += 1
                total += st.st_size
    return files, total


def stored_bytes(root: Path) -> int:
    return tree_totals(root)[1]


# --- the trees -----------------------------------------------------------------------------------


def text_pool(rng: random.Random, size: int) -> bytes:
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + "\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def write_random(path: Path, size: int, head: bytes = b"") -> None:
    with path.open("wb") as f:
        f.write(head)
        left = size - len(head)
        while left > 0:
            n = min(PIECE, left)
            f.write(os.urandom(n))
            left -= n


def write_texts(root: Path, count: int, rng: random.Random, pool: bytes, fanout: int) -> None:
    """``count`` distinct text files of 1-10 KB in folders of about ``fanout`` files."""
    for i in range(count):
        folder = root / f"d{i // (fanout * 10):03d}" / f"e{(i // fanout) % 10}"
        if i % fanout == 0:
            folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(KIB, 10 * KIB)
        start = rng.randrange(len(pool) - size)
        (folder / f"note{i:06d}.txt").write_bytes(b"%d\n" % i + pool[start : start + size])


def write_sqlite(path: Path, size: int, rng: random.Random, pool: bytes) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT, attachment BLOB)")
    row_bytes = 1200

    def rows() -> Iterator[tuple[int, str, bytes]]:  # streamed: this process stays small
        for i in range(size // row_bytes):
            start = rng.randrange(len(pool) - 1000)
            yield i, pool[start : start + 1000].decode(), os.urandom(200)

    db.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows())
    db.commit()
    db.close()


def make_tree(root: Path, spec: TreeSpec) -> Path:
    """Writes the tree; returns the file that gets 1 MiB appended (the largest)."""
    rng = random.Random(13)
    pool = text_pool(rng, 4 * MIB)
    root.mkdir(parents=True)
    largest = root
    if spec.media_files:
        media = root / "Pictures"
        media.mkdir()
        weights = [rng.uniform(0.2, 3.0) for _ in range(spec.media_files)]
        scale = spec.media_bytes / sum(weights)
        for i, w in enumerate(weights):
            write_random(media / f"IMG_{i:04d}.jpg", max(64 * KIB, int(w * scale)), JPEG_HEAD)
        largest = max(media.iterdir(), key=lambda p: p.stat().st_size)
    if spec.texts:
        write_texts(root / "Documents", spec.texts, rng, pool, fanout=50)
    if spec.sqlite_bytes:
        write_sqlite(root / "messages.db", spec.sqlite_bytes, rng, pool)
    if spec.small_files:
        write_texts(root / "files", spec.small_files, rng, pool, fanout=100)
        largest = root / "files" / "d000" / "e0" / "note000000.txt"
    if spec.big_bytes:
        largest = root / "disk.img"
        write_random(largest, spec.big_bytes)
    return largest


def read_tree(root: Path) -> None:
    """Reads every file once: the page cache is warm for every tool alike."""
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                while f.read(PIECE):
                    pass


# --- the tools -----------------------------------------------------------------------------------


class Tool:
    """One backup program: how to init, back up ``tree`` (from its parent folder) and restore."""

    name = ""

    def __init__(self, exe: str, home: Path) -> None:
        self.exe = exe
        self.home = home
        self.env = dict(os.environ)

    def init(self, repo: Path) -> list[str]:
        raise NotImplementedError

    def backup(self, repo: Path) -> list[str]:
        raise NotImplementedError

    def restore(self, repo: Path, target: Path) -> list[str]:
        raise NotImplementedError

    def version(self) -> str:
        proc = subprocess.run([self.exe, "--version"], capture_output=True, text=True, env=self.env)
        if proc.returncode != 0 or not (proc.stdout or proc.stderr).strip():
            return "?"
        first = (proc.stdout or proc.stderr).strip().splitlines()[0]
        return first.removeprefix(self.name).strip()


class E2E(Tool):
    name = "e2ebackup"

    def __init__(self, exe: str, home: Path) -> None:
        super().__init__(exe, home)
        self.env.update(E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_STATE_DIR=str(home / "state"))

    def init(self, repo: Path) -> list[str]:
        return [self.exe, "-m", "e2ebackup", "init", "-r", str(repo), "-q"]

    def backup(self, repo: Path) -> list[str]:
        return [self.exe, "-m", "e2ebackup", "backup", "-r", str(repo), "-q", "tree"]

    def restore(self, repo: Path, target: Path) -> list[str]:
        return [
            self.exe,
            "-m",
            "e2ebackup",
            "restore",
            "-r",
            str(repo),
            "-q",
            "--target",
            str(target),
            "latest",
        ]

    def version(self) -> str:
        import importlib.metadata

        try:
            return importlib.metadata.version("e2ebackup")
        except importlib.metadata.PackageNotFoundError:
            return "?"


class Restic(Tool):
    name = "restic"

    def version(self) -> str:
        proc = subprocess.run([self.exe, "version"], capture_output=True, text=True, env=self.env)
        return proc.stdout.split(" compiled")[0].removeprefix("restic ").strip() or "?"

    def __init__(self, exe: str, home: Path) -> None:
        super().__init__(exe, home)
        self.env.update(RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(home / "cache"))

    def init(self, repo: Path) -> list[str]:
        return [self.exe, "-r", str(repo), "init"]

    def backup(self, repo: Path) -> list[str]:
        return [self.exe, "-r", str(repo), "backup", "-q", "tree"]

    def restore(self, repo: Path, target: Path) -> list[str]:
        return [self.exe, "-r", str(repo), "restore", "latest", "--target", str(target)]


class Rustic(Tool):
    name = "rustic"

    def __init__(self, exe: str, home: Path) -> None:
        super().__init__(exe, home)
        # A fresh HOME: no user profile (~/.config/rustic) changes the defaults; fresh cache.
        self.env.update(
            RUSTIC_PASSWORD=PASSWORD,
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_CACHE_HOME=str(home / "cache"),
        )

    def init(self, repo: Path) -> list[str]:
        return [self.exe, "-r", str(repo), "init"]

    def backup(self, repo: Path) -> list[str]:
        return [self.exe, "-r", str(repo), "backup", "tree"]

    def restore(self, repo: Path, target: Path) -> list[str]:
        return [self.exe, "-r", str(repo), "restore", "latest", str(target)]


class Borg(Tool):
    name = "borg"

    def __init__(self, exe: str, home: Path) -> None:
        super().__init__(exe, home)
        self.env.update(
            BORG_PASSPHRASE=PASSWORD,
            BORG_BASE_DIR=str(home),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_DISPLAY_PASSPHRASE="no",
        )
        self.archives = 0

    def init(self, repo: Path) -> list[str]:
        return [self.exe, "init", "-e", "repokey-blake2", str(repo)]

    def backup(self, repo: Path) -> list[str]:
        self.archives += 1
        return [self.exe, "create", f"{repo}::a{self.archives}", "tree"]

    def restore(self, repo: Path, target: Path) -> list[str]:
        # borg extracts into the current folder: a shell changes into the target first.
        script = f'mkdir -p "$1" && cd "$1" && exec "$0" extract "$2::a{self.archives}"'
        return ["sh", "-c", script, self.exe, str(target), str(repo)]


def find_exe(name: str, *extra: Path) -> str | None:
    for candidate in (*extra, Path(shutil.which(name) or "/nonexistent")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def install_rustic(workdir: Path) -> None:
    cmd = [
        "cargo",
        "install",
        "--locked",
        "rustic-rs",
        "--no-default-features",
        "--root",
        str(workdir / "tools"),
    ]
    print("installing rustic (many minutes): " + " ".join(cmd), file=sys.stderr)
    subprocess.run(["nice", *cmd], check=False)


def find_tools(wanted: list[str], workdir: Path, scratch: Path, notes: list[str]) -> list[Tool]:
    found: list[Tool] = []
    makers: dict[str, tuple[type[Tool], str | None, str]] = {
        "e2ebackup": (E2E, sys.executable, ""),
        "rustic": (
            Rustic,
            find_exe("rustic", workdir / "tools" / "bin" / "rustic"),
            f"rustic is not installed (--install-rustic, or cargo install --locked rustic-rs "
            f"--no-default-features --root {workdir / 'tools'})",
        ),
        "restic": (Restic, find_exe("restic"), "restic is not installed (apt-get install restic)"),
        "borg": (
            Borg,
            find_exe("borg", Path(sys.executable).parent / "borg"),
            "borg is not installed (bash benches/install_borg.sh)",
        ),
    }
    for name in wanted:
        if name == "cp":
            continue
        kind, exe, why = makers[name]
        if exe is None:
            notes.append(f"{name} skipped: {why}")
            continue
        home = scratch / f"home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        found.append(kind(exe, home))
    return found


def freeze_package(scratch: Path) -> str:
    """Copies the e2ebackup package in use into the scratch folder, first on ``PYTHONPATH`` of
    every child: on a shared checkout, an edit or a rebuild during the run changes nothing."""
    spec = importlib.util.find_spec("e2ebackup")
    if spec is None or spec.origin is None:
        raise SystemExit("e2ebackup is not importable")
    src = Path(spec.origin).parent
    dst = scratch / "pkg" / "e2ebackup"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    paths = [str(dst.parent), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return str(src)


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Row:
    tree: str
    where: str
    tool: str
    tree_bytes: int
    backup: Measure | None = None
    rerun: Measure | None = None
    append: Measure | None = None
    restore: Measure | None = None
    stored: int = 0
    note: str = ""


@dataclass
class Report:
    started: str
    machine: str
    versions: dict[str, str] = field(default_factory=dict)
    trees: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_tool(tool: Tool, base: Path, sync: bool, appended: Path, row: Row, log: Path) -> None:
    repo, target = base / f"repo-{tool.name}", base / f"restore-{tool.name}"
    init = subprocess.run(tool.init(repo), env=tool.env, cwd=base, capture_output=True, text=True)
    if init.returncode != 0:
        raise ToolFailed(f"{tool.name} init exited with {init.returncode}: {init.stderr[-2000:]}")
    original = appended.stat().st_size
    try:
        row.backup = timed(tool.backup(repo), env=tool.env, cwd=base, sync=sync, log=log)
        row.rerun = timed(tool.backup(repo), env=tool.env, cwd=base, sync=sync, log=log)
        with appended.open("ab") as f:
            f.write(os.urandom(MIB))
        row.append = timed(tool.backup(repo), env=tool.env, cwd=base, sync=sync, log=log)
        row.stored = stored_bytes(repo)
        row.restore = timed(tool.restore(repo, target), env=tool.env, cwd=base, sync=sync, log=log)
        want, got = tree_totals(base / "tree"), tree_totals(target)
        if want != got:
            raise ToolFailed(f"{tool.name} restored {got} (files, bytes), the tree holds {want}")
    finally:
        os.truncate(appended, original)
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)


def run_copy(base: Path, sync: bool, row: Row, log: Path) -> None:
    target = base / "copy"
    try:
        row.restore = timed(
            ["cp", "-a", "tree", str(target)], env=dict(os.environ), cwd=base, sync=sync, log=log
        )
        row.backup = row.restore
    finally:
        shutil.rmtree(target, ignore_errors=True)


def run_place(args: argparse.Namespace, where: str, root: Path, report: Report) -> None:
    specs = QUICK_TREES if args.quick else FULL_TREES
    tools_wanted = args.tools.split(",")
    base_root = Path(tempfile.mkdtemp(prefix="repo-peers-", dir=root))
    try:
        tools = find_tools(tools_wanted, args.workdir, base_root, report.notes)
        for tool in tools:
            report.versions.setdefault(tool.name, tool.version())
        for tree_name in args.trees.split(","):
            spec = specs[tree_name]
            base = base_root / tree_name
            base.mkdir()
            print(f"[{where}] generating the {tree_name} tree", file=sys.stderr)
            appended = make_tree(base / "tree", spec)
            files, size = tree_totals(base / "tree")
            report.trees[tree_name] = f"{files:,} files, {size / 1e9:.2f} GB"
            free = shutil.disk_usage(base).free
            if free < 2.5 * size:
                report.notes.append(f"{tree_name} on {where} skipped: {free / 1e9:.1f} GB free")
                shutil.rmtree(base)
                continue
            read_tree(base / "tree")
            log = base_root / f"{tree_name}.log"
            if "cp" in tools_wanted:
                row = Row(tree_name, where, "cp -a", size)
                run_copy(base, where == "disk", row, log)
                report.rows.append(row)
            for tool in tools:
                print(f"[{where}] {tree_name}: {tool.name}", file=sys.stderr)
                row = Row(tree_name, where, tool.name, size)
                try:
                    run_tool(tool, base, where == "disk", appended, row, log)
                except ToolFailed as exc:
                    row.note = f"failed: {str(exc).strip().splitlines()[-1][:120]}"
                    print(f"{tool.name} failed: {exc}", file=sys.stderr)
                    if args.strict:
                        raise
                report.rows.append(row)
            shutil.rmtree(base)
    finally:
        shutil.rmtree(base_root, ignore_errors=True)


# --- rendering -----------------------------------------------------------------------------------


def ratio(ref: Measure | None, mine: Measure | None) -> str:
    """Speed relative to ``ref``: ref seconds / my seconds (above 1: faster than ``ref``)."""
    if ref is None or mine is None or mine.seconds <= 0:
        return ""
    return f"{ref.seconds / mine.seconds:.2f}"


def render(report: Report) -> str:
    lines = [
        f"Run {report.started} on {report.machine}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()) + ".",
        "Trees: " + "; ".join(f"{k}: {v}" for k, v in report.trees.items()) + ".",
        "",
        "Times in seconds (on disk: `sync` included); `x rustic` (`x restic` where rustic is "
        "absent) and `x cp` are speed ratios "
        "(their seconds / the tool's seconds: above 1 is faster); CPU in s/GB of the tree; RSS "
        "= peak resident memory, MiB.",
    ]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in report.rows:
        groups.setdefault((row.tree, row.where), []).append(row)
    for (tree, where), rows in groups.items():
        # The anchor is rustic; where it is absent (not installed, or it failed), restic.
        anchor = next(
            (r for name in ANCHORS for r in rows if r.tool == name and r.backup is not None),
            None,
        )
        name = anchor.tool if anchor else ANCHORS[0]
        copy = next((r for r in rows if r.tool == "cp -a"), None)
        lines += [
            "",
            f"### {tree} tree on {where} ({report.trees.get(tree, '')})",
            "",
            f"| tool | backup | x {name} | x cp | CPU s/GB | RSS | unchanged | +1 MiB | stored MB "
            f"| restore | x {name} | x cp | CPU s/GB | RSS |",
            "|---" * 14 + "|",
        ]
        for r in rows:
            gb = r.tree_bytes / 1e9

            def cell(m: Measure | None, what: Callable[[Measure], float], fmt: str) -> str:
                return fmt.format(what(m)) if m is not None else ""

            def per_gb(m: Measure, gb: float = gb) -> float:
                return m.cpu / gb

            is_copy = r.tool == "cp -a"
            cells = [
                r.tool + (f" ({r.note})" if r.note else ""),
                cell(r.backup, lambda m: m.seconds, "{:.2f}"),
                ratio(anchor.backup if anchor else None, r.backup),
                ratio(copy.backup if copy else None, r.backup),
                cell(r.backup, per_gb, "{:.2f}"),
                cell(r.backup, lambda m: m.rss_mib, "{:.0f}"),
                cell(r.rerun, lambda m: m.seconds, "{:.2f}"),
                cell(r.append, lambda m: m.seconds, "{:.2f}"),
                "" if is_copy else f"{r.stored / 1e6:.0f}",
                cell(r.restore, lambda m: m.seconds, "{:.2f}"),
                ratio(anchor.restore if anchor else None, r.restore),
                ratio(copy.restore if copy else None, r.restore),
                cell(r.restore, per_gb, "{:.2f}"),
                cell(r.restore, lambda m: m.rss_mib, "{:.0f}"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if report.notes:
        lines += ["", *[f"- {n}" for n in dict.fromkeys(report.notes)]]
    return "\n".join(lines) + "\n"


def places(spec: str, workdir: Path, notes: list[str]) -> Iterator[tuple[str, Path]]:
    for where in spec.split(","):
        if where == "tmpfs":
            if not TMPFS.is_dir() or not os.access(TMPFS, os.W_OK):
                notes.append(f"tmpfs skipped: {TMPFS} is not a writable folder")
                continue
            yield where, TMPFS
        elif where == "disk":
            (workdir / "scratch").mkdir(parents=True, exist_ok=True)
            yield where, workdir / "scratch"
        else:
            raise SystemExit(f"--where: unknown place {where!r} (tmpfs, disk)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="scaled-down trees (a couple of minutes)")
    p.add_argument("--trees", default="media,small,big", help="media, small, big (comma-separated)")
    p.add_argument("--where", default="tmpfs,disk", help="tmpfs, disk (comma-separated)")
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="subset of " + ",".join(ALL_TOOLS))
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="tools and disk scratch")
    p.add_argument("--install-rustic", action="store_true", help="cargo install rustic if absent")
    p.add_argument("--strict", action="store_true", help="a failing tool stops the run")
    p.add_argument("--out", type=Path, help="also write the Markdown here")
    p.add_argument("--json", type=Path, help="raw figures as JSON")
    args = p.parse_args(argv)
    for name in args.tools.split(","):
        if name not in ALL_TOOLS:
            p.error(f"--tools: unknown tool {name!r}")
    for name in args.trees.split(","):
        if name not in FULL_TREES:
            p.error(f"--trees: unknown tree {name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if (
        args.install_rustic
        and find_exe("rustic", args.workdir / "tools" / "bin" / "rustic") is None
    ):
        install_rustic(args.workdir)
    report = Report(
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    )
    with contextlib.ExitStack() as stack:
        frozen = Path(tempfile.mkdtemp(prefix="repo-peers-pkg-"))
        stack.callback(shutil.rmtree, frozen, True)
        if "e2ebackup" in args.tools.split(","):
            report.notes.append(f"e2ebackup from {freeze_package(frozen)}")
        for where, root in places(args.where, args.workdir, report.notes):
            run_place(args, where, root, report)
    text = render(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    failed = [r for r in report.rows if r.note.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
