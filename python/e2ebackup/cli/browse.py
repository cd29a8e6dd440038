"""The read-only commands on a repository: ``snapshots``, ``ls``, ``find``, ``diff``, ``stats``."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from e2ebackup.cli.common import Command, Exit, count, open_repo, out
from e2ebackup.cli.repo import (
    add_filter_options,
    add_no_lock_option,
    add_repo_option,
    snapshot_filter,
)
from e2ebackup.repo.diff import diff
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.find import find
from e2ebackup.repo.tree import check_depth


def _snapshots(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    where = snapshot_filter(args)
    with repo.read_lock():
        snaps = [
            # A writer's snapshot says which writer (its authenticated id: the hostname in it
            # is whatever that writer wrote).
            dict(s, id=sid, writer=drop.writer if (drop := repo.drop_of(sid)) else None)
            for sid, s in repo.snapshots()
            if where.admits(s)
        ]
    lines = [f"{'ID':<10}{'TIME':<21}{'HOST':<16}{'SIZE':>10}  {'TAGS':<12}PATHS"]
    # What a user notes to pin on a new device (--expect-head): see docs/FORMAT.md, Heads.
    footer = f"head seq {repo.head().seq} {repo.head().digest}"
    for s in snaps:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["time"]))
        size = _human(int(s.get("stats", {}).get("bytes_total", 0)))
        tags = ",".join(s.get("tags", []))[:11]
        lines.append(
            f"{s['id'][:8]:<10}{when:<21}{s['hostname'][:15]:<16}{size:>10}  {tags:<12}"
            f"{' '.join(s['paths'])}" + (f"  (writer {s['writer'][:8]})" if s["writer"] else "")
        )
    out(args, snaps, "\n".join([*lines, footer]))
    return Exit.OK


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _ls(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    rows: list[dict[str, Any]] = []
    prefix = args.path.strip("/")

    def walk(tree: str, base: str) -> None:
        check_depth(len(base.split("/")) if base else 0, base)  # no RecursionError
        for e in repo.read_tree(tree):
            path = f"{base}/{e['name']}" if base else e["name"]
            if (
                not prefix
                or path == prefix
                or path.startswith(prefix + "/")
                or prefix.startswith(path + "/")
            ):
                if not prefix or path == prefix or path.startswith(prefix + "/"):
                    rows.append(
                        {
                            "path": path,
                            "type": e.get("type"),
                            "size": e.get("size", 0),
                            "mode": e.get("mode"),
                            "mtime_ns": e.get("mtime_ns"),
                        }
                    )
                if e.get("type") == "dir":
                    walk(e["subtree"], path)

    with repo.read_lock():  # no prune removes what is being read
        _, snap = repo.find_snapshot(args.snapshot, snapshot_filter(args))
        walk(str(snap["tree"]), "")
    text = "\n".join(
        f"{r['type'][0] if r['type'] else '?'} {r['size']:>12} {r['path']}" for r in rows
    )
    out(args, rows, text)
    return Exit.OK


def _find(args: argparse.Namespace) -> int:
    Excludes(args.patterns)  # a bad pattern fails before any password is asked
    repo = open_repo(args)
    rows = [asdict(f) for f in find(repo, args.patterns, snapshot_filter(args))]
    text = "\n".join(
        f"{r['snapshot'][:8]}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(r['time']))}  "
        f"{r['size']:>12}  {r['path']}"
        for r in rows
    )
    out(args, rows, text or "no match")
    return Exit.OK if rows else Exit.FAILED


def _diff(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    changes = list(diff(repo, args.old, args.new))
    counts = {k: sum(c.kind == k for c in changes) for k in "+-MTU"}
    summary = (
        f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified, "
        f"{counts['T']} changed type, {counts['U']} metadata only"
    )
    lines = [f"{c.kind}  {c.path}" + ("/" if c.type == "dir" else "") for c in changes]
    out(args, [asdict(c) for c in changes], "\n".join([*lines, summary]))
    return Exit.OK


def _stats(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with repo.read_lock():
        snaps = [s for _, s in repo.snapshots() if snapshot_filter(args).admits(s)]
        index = repo.index
        stored = sum(index.pack_sizes.values())
        value: dict[str, Any] = {
            "snapshots": len(snaps),
            "packs": len(index.pack_sizes),
            "blobs": len(index),
            "stored_bytes": stored,
            # What the snapshots hold, each counted whole: restoring all of them writes this.
            "snapshot_bytes": sum(int(s.get("stats", {}).get("bytes_total", 0)) for s in snaps),
            "latest_bytes": int(snaps[-1].get("stats", {}).get("bytes_total", 0)) if snaps else 0,
        }
    value["saving"] = round(value["snapshot_bytes"] / stored, 2) if stored else None
    text = (
        f"{count(value['snapshots'], 'snapshot')} {'holds' if value['snapshots'] == 1 else 'hold'} "
        f"{_human(value['snapshot_bytes'])} "
        f"(the newest {_human(value['latest_bytes'])}); stored: {_human(stored)} in "
        f"{count(value['packs'], 'pack')}, {count(value['blobs'], 'blob')}"
        + (f": {value['saving']}x less by deduplication and compression" if stored else "")
    )
    out(args, value, text)
    return Exit.OK


def _register_snapshots(s: argparse.ArgumentParser) -> None:
    add_repo_option(s)
    add_filter_options(s)
    add_no_lock_option(s)


def _register_ls(ls: argparse.ArgumentParser) -> None:
    add_repo_option(ls)
    ls.add_argument("snapshot", metavar="SNAPSHOT", help="id, unique prefix, or latest")
    ls.add_argument("path", nargs="?", default="", help="only under this path")
    add_filter_options(ls)
    add_no_lock_option(ls)


def _register_find(fd: argparse.ArgumentParser) -> None:
    add_repo_option(fd)
    fd.add_argument(
        "patterns",
        nargs="+",
        metavar="PATTERN",
        help="a name glob ('IMG_2024*.jpg') or path glob ('Pictures/**/beach*'), as --exclude",
    )
    add_filter_options(fd)
    add_no_lock_option(fd)


def _register_diff(df: argparse.ArgumentParser) -> None:
    add_repo_option(df)
    add_no_lock_option(df)
    df.add_argument("old", metavar="SNAPSHOT1", help="id, unique prefix, or latest")
    df.add_argument("new", metavar="SNAPSHOT2", help="id, unique prefix, or latest")


def _register_stats(st: argparse.ArgumentParser) -> None:
    add_repo_option(st)
    add_filter_options(st)
    add_no_lock_option(st)


SNAPSHOTS = Command("snapshots", "list snapshots", _register_snapshots, _snapshots)
LS = Command("ls", "list the files of a snapshot", _register_ls, _ls)
FIND = Command("find", "find files by name or path in every snapshot", _register_find, _find)
DIFF = Command("diff", "what changed between two snapshots", _register_diff, _diff)
STATS = Command("stats", "what the snapshots hold and what is stored", _register_stats, _stats)
