"""The repository commands of the command line, with restic's conventions: ``init``,
``backup``, ``snapshots``, ``ls``, ``restore``, ``verify``, ``forget``, and ``key`` / ``rotate``
with ``-r``. The repository comes from ``-r/--repo`` or ``E2EBACKUP_REPOSITORY``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from e2ebackup._credentials import (
    add_password_options,
    add_recovery_key_options,
    read_password,
    read_recovery_key,
    show_recovery_key,
)
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import Argon2idParams, RecoveryKey, ScryptParams
from e2ebackup.repo.backup import BackupStats, backup, backup_stream, scan_size
from e2ebackup.repo.check import VerifyReport, parse_subset, verify
from e2ebackup.repo.exclude import Excludes, read_lines
from e2ebackup.repo.heads import Head, TrustedHead
from e2ebackup.repo.objects import HistoryForked, HistoryNotTrusted
from e2ebackup.repo.prune import forget
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.restore import RestoreStats, restore
from e2ebackup.repo.retention import Retention, group_key, parse_duration
from e2ebackup.storage import open_storage
from e2ebackup.vault import cli as vault_cli

REPOSITORY_ENV = "E2EBACKUP_REPOSITORY"
EXPECT_HEAD_ENV = "E2EBACKUP_EXPECT_HEAD"
EXIT_OK, EXIT_FAILED, EXIT_INCOMPLETE = 0, 1, 3
_PERIOD_NAMES = {
    "hourly": "hours",
    "daily": "days",
    "weekly": "weeks",
    "monthly": "months",
    "yearly": "years",
}
COMMANDS = (
    "init",
    "backup",
    "snapshots",
    "ls",
    "find",
    "diff",
    "stats",
    "restore",
    "verify",
    "check",
    "forget",
    "trust",
)
_ALIASES = {"check": "verify"}


def add_repo_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-r",
        "--repo",
        help=f"a folder, s3://bucket/prefix or rclone:remote:path (or ${REPOSITORY_ENV})",
    )
    parser.add_argument(
        "--s3-endpoint", metavar="URL", help="S3-compatible endpoint (or $AWS_ENDPOINT_URL)"
    )
    parser.add_argument(
        "--limit-upload", type=_rate, metavar="KiB/s", help="average upload bandwidth limit"
    )
    parser.add_argument(
        "--limit-download", type=_rate, metavar="KiB/s", help="average download bandwidth limit"
    )
    parser.add_argument(
        "--expect-head",
        metavar="HASH",
        help="refuse the repository unless its newest head is this one or descends from it "
        f"(16-64 hex digits, as `snapshots` shows; or ${EXPECT_HEAD_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_password_options(parser)
    add_recovery_key_options(parser)


def add_no_lock_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-lock",
        action="store_true",
        help="take no lock: for storage this device may only read (safe while no prune runs)",
    )


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """Which snapshots ``latest`` (and the list) means, as restic's filters."""
    parser.add_argument("--host", help="only snapshots from this host")
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        dest="filter_paths",
        metavar="PATH",
        help="only snapshots of exactly these backed-up paths (repeatable)",
    )
    parser.add_argument(
        "--tag", action="append", default=[], help="only snapshots with this tag (repeatable)"
    )


def _filter(args: argparse.Namespace) -> SnapshotFilter:
    return SnapshotFilter(args.host, tuple(args.filter_paths), tuple(args.tag))


def add_parsers(commands: Any) -> None:
    init = commands.add_parser("init", help="create a repository")
    add_repo_option(init)
    init.add_argument(
        "--recovery-key", action="store_true", help="also make a recovery key (shown once)"
    )
    init.add_argument("--no-password", action="store_true", help="recovery key only")
    init.add_argument("--qr", metavar="PATH", help="QR code of the recovery key (.png, .svg or -)")
    init.add_argument("--kdf", choices=["argon2id", "scrypt"], default="argon2id")
    vault_cli.add_encrypt_options(init)

    b = commands.add_parser("backup", help="back up files and folders")
    add_repo_option(b)
    b.add_argument("paths", nargs="*", metavar="PATH")
    b.add_argument(
        "--files-from",
        action="append",
        default=[],
        metavar="FILE",
        help="more paths, one a line ('#' starts a comment)",
    )
    b.add_argument(
        "--stdin",
        action="store_true",
        help="back up what comes on standard input as one file (sqlite3 db .dump | ...)",
    )
    b.add_argument(
        "--stdin-filename", default="stdin", metavar="NAME", help="its name (default: stdin)"
    )
    b.add_argument("--tag", action="append", default=[], help="tag the snapshot (repeatable)")
    b.add_argument(
        "-e",
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out matching files and folders (repeatable): a name glob like '*.tmp' or "
        "'node_modules', or a path glob like 'Pictures/thumbnails' or '/data/**/cache'",
    )
    b.add_argument(
        "--exclude-file",
        action="append",
        default=[],
        metavar="FILE",
        help="patterns from FILE, one a line ('#' starts a comment)",
    )
    b.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="read and seal everything, store nothing: what a backup would add",
    )
    b.add_argument(
        "-x",
        "--one-file-system",
        action="store_true",
        help="do not descend into other file systems mounted inside the paths",
    )
    b.add_argument(
        "--exclude-caches",
        action="store_true",
        help="leave out the contents of folders tagged with a CACHEDIR.TAG file",
    )
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")

    s = commands.add_parser("snapshots", help="list snapshots")
    add_repo_option(s)
    add_filter_options(s)
    add_no_lock_option(s)

    ls = commands.add_parser("ls", help="list the files of a snapshot")
    add_repo_option(ls)
    ls.add_argument("snapshot", metavar="SNAPSHOT", help="id, unique prefix, or latest")
    ls.add_argument("path", nargs="?", default="", help="only under this path")
    add_filter_options(ls)
    add_no_lock_option(ls)

    fd = commands.add_parser("find", help="find files by name or path in every snapshot")
    add_repo_option(fd)
    fd.add_argument(
        "patterns",
        nargs="+",
        metavar="PATTERN",
        help="a name glob ('IMG_2024*.jpg') or path glob ('Pictures/**/beach*'), as --exclude",
    )
    add_filter_options(fd)
    add_no_lock_option(fd)

    df = commands.add_parser("diff", help="what changed between two snapshots")
    add_repo_option(df)
    add_no_lock_option(df)
    df.add_argument("old", metavar="SNAPSHOT1", help="id, unique prefix, or latest")
    df.add_argument("new", metavar="SNAPSHOT2", help="id, unique prefix, or latest")

    st = commands.add_parser("stats", help="what the snapshots hold and what is stored")
    add_repo_option(st)
    add_filter_options(st)
    add_no_lock_option(st)

    r = commands.add_parser("restore", help="restore a snapshot")
    add_repo_option(r)
    r.add_argument("snapshot", metavar="SNAPSHOT", help="id, unique prefix, or latest")
    r.add_argument("--target", required=True, help="folder to restore into")
    r.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="only this file or folder of the snapshot (repeatable)",
    )
    r.add_argument("--overwrite", action="store_true", help="replace existing files")
    r.add_argument(
        "--max-size",
        type=_size,
        metavar="SIZE",
        help="refuse a snapshot holding more (bytes, or 500M, 20G, 1T); for a repository from "
        "someone else. Always refused: more than the target's free space",
    )
    r.add_argument(
        "--max-files",
        type=int,
        metavar="N",
        help="refuse a snapshot holding more files, folders and links than N",
    )
    r.add_argument(
        "--keep-special-bits",
        action="store_true",
        help="restore setuid, setgid and sticky bits (cleared by default)",
    )
    r.add_argument(
        "--no-same-owner",
        action="store_true",
        help="as root, do not restore owners (by default root restores them, as tar)",
    )
    r.add_argument(
        "-e",
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out what matches (repeatable; as backup's, on paths in the snapshot)",
    )
    add_filter_options(r)
    add_no_lock_option(r)

    # "check" is restic's name for it: users' fingers know it.
    v = commands.add_parser("verify", aliases=["check"], help="check the repository")
    add_repo_option(v)
    add_no_lock_option(v)
    v.add_argument("--read-data", action="store_true", help="decrypt and check every object")
    v.add_argument(
        "--read-data-subset",
        metavar="n/t|x%",
        help="read only part of the packs: the n-th of t parts (run 1/t to t/t to cover all) "
        "or x percent picked at random",
    )

    f = commands.add_parser("forget", help="forget snapshots, optionally pruning their data")
    add_repo_option(f)
    f.add_argument("--keep-last", type=int, default=0, metavar="N", help="the N newest")
    for period in ("hourly", "daily", "weekly", "monthly", "yearly"):
        f.add_argument(
            f"--keep-{period}",
            type=int,
            default=0,
            metavar="N",
            help=f"the newest snapshot of each of the last N {_PERIOD_NAMES[period]} with one",
        )
    f.add_argument(
        "--keep-within",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="every snapshot this much younger than the newest (30d, 2w, 6m, 1y6m)",
    )
    f.add_argument(
        "--group-by",
        default="host,paths",
        metavar="FIELDS",
        help="apply the policies to each group of snapshots with the same of these: host, "
        "paths, tags (default host,paths; '' for all snapshots as one group)",
    )
    f.add_argument("--prune", action="store_true", help="remove data no snapshot uses")

    t = commands.add_parser(
        "trust", help="accept the repository's current state on purpose (after a rollback/fork)"
    )
    add_repo_option(t)
    t.add_argument("--head", metavar="HASH", help="only if its newest head is this one")
    t.add_argument("--yes", action="store_true", help="trust it (without: only show it)")


def _rate(text: str) -> float:
    try:
        kib = float(text)
    except ValueError:
        kib = 0.0
    if not 0 < kib < float("inf"):
        raise argparse.ArgumentTypeError(f"a rate in KiB/s greater than 0, not {text!r}")
    return kib * 1024


def _size(text: str) -> int:
    """A byte count: digits, optionally with K, M, G or T (powers of 1024)."""
    m = re.fullmatch(r"(\d+)([KMGT]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or 500M, 20G, 1T)")
    return int(m[1]) << (10 * " KMGT".index(m[2].upper() or " "))


def _backup_stdin(args: argparse.Namespace) -> int:
    if args.paths or args.exclude or args.exclude_file or args.one_file_system:
        raise InvalidArgument("--stdin backs up standard input only: no paths or excludes")
    if args.dry_run:
        raise InvalidArgument("--dry-run cannot read standard input without storing it")
    if sys.stdin.isatty():
        raise InvalidArgument("--stdin wants data piped in, not a terminal")
    repo = open_repo(args)
    start = time.monotonic()
    sid, stats = backup_stream(
        repo,
        sys.stdin.buffer,
        args.stdin_filename,
        threads=args.threads,
        tags=args.tag,
        lock_wait=args.lock_wait,
    )
    elapsed = time.monotonic() - start
    _out(
        args,
        {
            "snapshot": sid,
            "head": _head_value(repo.head()),
            "stats": asdict(stats),
            "seconds": round(elapsed, 3),
            "warnings": [],
        },
        f"snapshot {sid[:8]} saved: /{args.stdin_filename}, {stats.bytes_read / 1e6:,.1f} MB "
        f"read, {stats.bytes_added / 1e6:,.1f} MB added, in {elapsed:.1f}s",
    )
    return EXIT_OK


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _storage_location(args: argparse.Namespace) -> str:
    location = args.repo or os.environ.get(REPOSITORY_ENV)
    if not location:
        raise InvalidArgument(f"no repository given: use -r/--repo or ${REPOSITORY_ENV}")
    return str(location)


def _storage(args: argparse.Namespace, location: str | None = None, *, create: bool = False) -> Any:
    return open_storage(
        location or _storage_location(args),
        create=create,
        s3_endpoint=getattr(args, "s3_endpoint", None),
        limit_upload=getattr(args, "limit_upload", None),
        limit_download=getattr(args, "limit_download", None),
    )


def open_repo(args: argparse.Namespace) -> Repository:
    storage = _storage(args)
    recovery_key = read_recovery_key(args)
    if recovery_key is not None:
        repo = Repository.open(storage, recovery_key=recovery_key)
    else:
        repo = Repository.open(storage, password=read_password(args))
    repo.no_lock = bool(getattr(args, "no_lock", False))
    repo.expect_head = getattr(args, "expect_head", None) or os.environ.get(EXPECT_HEAD_ENV)
    repo.on_missing_snapshot = lambda text: print(f"e2ebackup: warning: {text}", file=sys.stderr)
    return repo


def _out(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        print(json.dumps(value, indent=2, default=str))
    elif not args.quiet:
        print(text)


@contextlib.contextmanager
def _bar(args: argparse.Namespace, what: str) -> Iterator[Any]:
    """A rich progress bar (bytes, files, throughput, ETA) on an interactive terminal."""
    if args.quiet or args.json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(what, total=None)
        yield lambda done, total, text: progress.update(
            task, completed=done, total=total, description=text
        )


def run(args: argparse.Namespace) -> int:
    from e2ebackup import _cli_browse

    command = _ALIASES.get(args.command, args.command)
    handler = getattr(_cli_browse, f"_{command}", None) or globals()[f"_{command}"]
    return int(handler(args))


def _init(args: argparse.Namespace) -> int:
    storage = _storage(args, create=True)
    recovery_key = read_recovery_key(args)
    if args.recovery_key:
        recovery_key = RecoveryKey.generate()
    if args.no_password and recovery_key is None:
        raise InvalidArgument("--no-password needs --recovery-key")
    password = None if args.no_password else read_password(args, confirm=True)
    kdf = ScryptParams() if args.kdf == "scrypt" else Argon2idParams()
    vault = vault_cli.vault_from_args(args, has_recovery_key=recovery_key is not None)
    repo = Repository.init(
        storage, password=password, recovery_key=recovery_key, kdf=kdf, vault=vault
    )
    value: dict[str, Any] = {"repository": storage.location, "id": repo.id}
    if args.recovery_key and recovery_key is not None:
        value["recovery_key"] = recovery_key.reveal()
        if not args.json:
            show_recovery_key(recovery_key, args.qr)
    _out(args, value, f"created repository {repo.id[:8]} at {storage.location}")
    return EXIT_OK


def _backup(args: argparse.Namespace) -> int:
    for path in args.files_from:
        args.paths += read_lines(path)
    if args.stdin:
        return _backup_stdin(args)
    if not args.paths:
        raise InvalidArgument("nothing to back up: give at least one path, or --stdin")
    patterns = list(args.exclude)
    for path in args.exclude_file:
        patterns += read_lines(path)
    excludes = Excludes(patterns, exclude_caches=args.exclude_caches)  # bad patterns fail first
    repo = open_repo(args)
    warnings: list[str] = []

    def on_error(path: str, e: Exception) -> None:
        warnings.append(f"{path}: {e}")
        if not args.quiet:
            print(f"e2ebackup: warning: cannot read {path}: {e}", file=sys.stderr)

    start = time.monotonic()
    with _bar(args, "backup") as bar:
        # The total (for the ETA) is counted while the backup already runs.
        total: list[tuple[int, int]] = []
        if bar is not None:
            threading.Thread(
                target=lambda: total.append(
                    scan_size(args.paths, excludes, one_file_system=args.one_file_system)
                ),
                daemon=True,
            ).start()

        def progress(stats: BackupStats, path: str) -> None:
            if bar is not None:
                files = stats.files_new + stats.files_changed + stats.files_unmodified
                all_files, all_bytes = total[0] if total else (None, None)
                of = f"/{all_files}" if all_files is not None else ""
                bar(
                    stats.bytes_read + stats.bytes_unmodified,
                    all_bytes,
                    f"backup: {files}{of} files",
                )

        sid, stats = backup(
            repo,
            args.paths,
            threads=args.threads,
            progress=progress,
            on_error=on_error,
            tags=args.tag,
            lock_wait=args.lock_wait,
            exclude=patterns,
            exclude_caches=args.exclude_caches,
            one_file_system=args.one_file_system,
            dry_run=args.dry_run,
        )
    elapsed = time.monotonic() - start
    value = {
        "snapshot": sid,
        "head": None if args.dry_run else _head_value(repo.head()),
        "stats": asdict(stats),
        "seconds": round(elapsed, 3),
        "warnings": warnings,
    }
    files = stats.files_new + stats.files_changed + stats.files_unmodified
    _out(
        args,
        value,
        ("dry run, nothing stored: " if args.dry_run else f"snapshot {sid[:8]} saved: ")
        + f"{files} files ({stats.files_new} new, {stats.files_changed} changed, "
        f"{stats.files_unmodified} unmodified), {stats.bytes_total / 1e6:,.1f} MB, "
        f"{stats.bytes_added / 1e6:,.1f} MB {'to add' if args.dry_run else 'added'}, "
        f"in {elapsed:.1f}s" + (f"; {stats.excluded} excluded" if stats.excluded else ""),
    )
    return EXIT_INCOMPLETE if stats.errors else EXIT_OK


def _restore(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with _bar(args, "restore") as bar:

        def progress(stats: RestoreStats, path: str) -> None:
            if bar is not None:
                bar(stats.bytes, stats.bytes_total or None, f"restore: {stats.files} files")

        stats = restore(
            repo,
            args.snapshot,
            args.target,
            subpath=args.include or None,
            overwrite=args.overwrite,
            progress=progress,
            where=_filter(args),
            exclude=args.exclude,
            max_size=args.max_size,
            max_files=args.max_files,
            keep_special_bits=args.keep_special_bits,
            same_owner=not args.no_same_owner,
        )
    for path in stats.skipped_existing:
        print(f"e2ebackup: not replaced (exists; use --overwrite): {path}", file=sys.stderr)
    _out(
        args,
        asdict(stats),
        f"restored {stats.files} files, {stats.dirs} folders, "
        f"{stats.bytes / 1e6:,.1f} MB into {args.target}",
    )
    return EXIT_INCOMPLETE if stats.skipped_existing else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    if args.read_data_subset:
        parse_subset(args.read_data_subset)  # a bad spec fails before any password is asked
    repo = open_repo(args)
    with _bar(args, "verify") as bar:

        def progress(report: VerifyReport, pack: str) -> None:
            if bar is not None:
                bar(report.bytes_read, None, f"verify: {report.packs} packs")

        report = verify(
            repo, read_data=args.read_data, progress=progress, subset=args.read_data_subset
        )
    for w in report.warnings:
        print(f"e2ebackup: warning: {w}", file=sys.stderr)
    for e in report.errors:
        print(f"e2ebackup: error: {e}", file=sys.stderr)
    summary = (
        f"{report.snapshots} snapshots, {report.trees} trees, {report.headers} pack headers"
        + (
            f", {report.packs} packs and {report.blobs_read} blobs read"
            if args.read_data or args.read_data_subset
            else ""
        )
        + (": no errors" if report.ok else f": {len(report.errors)} errors")
    )
    _out(args, dict(asdict(report), ok=report.ok), summary)
    return EXIT_OK if report.ok else EXIT_FAILED


def _forget(args: argparse.Namespace) -> int:
    policy = Retention(
        keep_last=args.keep_last,
        keep_hourly=args.keep_hourly,
        keep_daily=args.keep_daily,
        keep_weekly=args.keep_weekly,
        keep_monthly=args.keep_monthly,
        keep_yearly=args.keep_yearly,
        keep_within=args.keep_within,
    )
    group_by = [f.strip() for f in args.group_by.split(",") if f.strip()]
    group_key({}, group_by)  # an unknown field fails here, before the repository is opened
    repo = open_repo(args)  # after checking the policy: no password asked for nothing
    stats = forget(repo, policy=policy, prune=args.prune, group_by=group_by)
    _out(
        args,
        asdict(stats),
        f"kept {stats.snapshots_kept} snapshots, forgot {stats.snapshots_removed}"
        + (
            f"; pruned {stats.packs_deleted} packs, {stats.bytes_freed / 1e6:,.1f} MB freed"
            if args.prune
            else ""
        ),
    )
    return EXIT_OK


def _head_value(head: Head | TrustedHead | None) -> dict[str, Any] | None:
    return None if head is None else {"seq": head.seq, "name": head.name, "sha256": head.digest}


def _trust(args: argparse.Namespace) -> int:
    """Shows the head this device trusts and the newest the storage shows; with --yes trusts
    the newest (only if it is --head, when given)."""
    repo = open_repo(args)
    repo.expect_head = None  # --head is what the user checks here
    trusted = repo.trusted_head()
    try:
        newest = repo.newest_head()
    except HistoryForked:
        if not (args.yes and args.head):
            raise
        head = repo.trust(args.head)  # two heads with the newest seq: go on from the chosen one
        text = f"trusted the branch {args.head}; wrote head seq {head.seq} {head.digest} on it"
        _out(args, {"trusted": _head_value(head), "problem": None, "trusted_now": True}, text)
        return EXIT_OK
    try:
        repo.head(refresh=True)
        problem = None
    except HistoryNotTrusted as e:
        problem = str(e)
    if args.yes and (problem is not None or args.head):
        newest = repo.trust(args.head)
    elif args.head and not str(newest.digest).startswith(args.head.lower()):
        raise InvalidArgument(f"the newest head is {newest.digest}, not {args.head}")
    accepted = problem is None or args.yes
    lines = [
        "this device trusts: "
        + (f"head seq {trusted.seq} {trusted.digest}" if trusted else "nothing yet (new device)"),
        f"the storage shows:  head seq {newest.seq} {newest.digest}, "
        f"{len(newest.snapshots)} snapshots",
        problem or "it extends what this device trusted: nothing to accept",
    ]
    if problem is not None:
        lines.append("trusted from now on" if args.yes else "run again with --yes to trust it")
    value = {
        "trusted": _head_value(trusted),
        "newest": _head_value(newest),
        "problem": problem,
        "trusted_now": accepted,
    }
    _out(args, value, "\n".join(lines))
    return EXIT_OK if accepted else EXIT_FAILED


def key_command(args: argparse.Namespace) -> int:
    """``key list|check|add|remove|passwd -r REPO``."""
    repo = open_repo(args)
    if args.key_command == "list":
        slots, _ = repo.key_slots()
        rows = slots.describe()
        _out(
            args,
            rows,
            "\n".join(
                f"{i}  {r['kind']:<13} {r['created']}  {r['kdf'] or ''}  {r['label']}"
                for i, r in enumerate(rows)
            ),
        )
    elif args.key_command == "check":
        _out(args, {"ok": True}, "ok: the credential opens this repository")
    elif args.key_command == "remove":
        with repo.lock(exclusive=True):
            repo.remove_key(args.slot)
    elif args.key_command == "passwd":
        from e2ebackup.cli import _new_password

        password = read_password(args)
        with repo.lock(exclusive=True):
            repo.change_password(password, _new_password(args))
    elif args.new_recovery_key:
        key = RecoveryKey.generate()
        with repo.lock(exclusive=True):
            repo.add_recovery_key(key, label=args.label)
        show_recovery_key(key, args.qr)
    else:
        from e2ebackup.cli import _new_password

        with repo.lock(exclusive=True):
            repo.add_password(_new_password(args), label=args.label)
    return EXIT_OK


def rotate_command(args: argparse.Namespace) -> int:
    """``rotate -r OLD --to NEW``: every snapshot copied under a new data key."""
    from e2ebackup.repo.rotate import rotate

    if not args.to:
        raise InvalidArgument("rotating a repository needs --to NEW_LOCATION")
    old = open_repo(args)
    # The new repository keeps the old one's kinds of credential (keyring.policy.rotate): a
    # vault stays a vault; without the old recovery key a new one replaces its slot.
    recovery_key = read_recovery_key(args)
    made = args.new_recovery_key or (recovery_key is None and old.has_recovery_key_slot())
    if made:
        recovery_key = RecoveryKey.generate()
    password = None if args.no_password else read_password(args)
    new = rotate(
        old, _storage(args, args.to, create=True), password=password, recovery_key=recovery_key
    )
    if made and recovery_key is not None and not args.json:
        show_recovery_key(recovery_key, args.qr)
    value = {"old": old.id, "new": new.id, "location": args.to}
    if made and recovery_key is not None:
        value["recovery_key"] = recovery_key.reveal()
    _out(
        args,
        value,
        f"rotated {old.id[:8]} into {new.id[:8]} at {args.to}; verify it, then "
        "delete the old repository",
    )
    return EXIT_OK
