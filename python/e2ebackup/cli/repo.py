"""The repository commands of the command line, with restic's conventions: ``init``,
``backup``, ``snapshots``, ``ls``, ``restore``, ``verify``, ``forget``, and ``key`` / ``rotate``
with ``-r``. The repository comes from ``-r/--repo`` or ``E2EBACKUP_REPOSITORY``."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, cast

from e2ebackup.cli.cluster import dask_client
from e2ebackup.cli.common import (
    EXPECT_HEAD_ENV,
    REPOSITORY_ENV,
    Command,
    Exit,
    count,
    open_repo,
    out,
    storage_location,
    storage_of,
)
from e2ebackup.cli.credentials import (
    add_kdf_option,
    add_password_options,
    add_recovery_key_options,
    kdf_from_args,
    read_password,
    read_recovery_key,
    show_recovery_key,
)
from e2ebackup.cli.progress import Bar, progress_bar
from e2ebackup.cli.recipients import (
    add_decrypt_options,
    add_encrypt_options as add_recipient_options,
    password_given,
    read_opening_credential,
    read_recipients,
)
from e2ebackup.cli.vault import add_encrypt_options, vault_from_args
from e2ebackup.cli.writers import (
    TOKEN_FILE_ENV,
    add_writer_options,
    add_writer_token_option,
    issue_writer,
    read_writer_token,
)
from e2ebackup.errors import E2EBackupError, HistoryForked, HistoryNotTrusted, InvalidArgument
from e2ebackup.keys import Password, RecoveryKey
from e2ebackup.repo import backup_as_writer
from e2ebackup.repo.backup import BackupStats, backup, backup_stream, scan_size
from e2ebackup.repo.check import Progress, VerifyReport, parse_subset, verify
from e2ebackup.repo.exclude import Excludes, read_lines
from e2ebackup.repo.heads import Head, TrustedHead
from e2ebackup.repo.prune import DEFAULT_GRACE, PruneStats, forget
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.restore import RestoreStats, restore
from e2ebackup.repo.retention import Retention, group_key, parse_duration
from e2ebackup.repo.rotate import rotate
from e2ebackup.storage import Storage

_PERIOD_NAMES = {
    "hourly": "hours",
    "daily": "days",
    "weekly": "weeks",
    "monthly": "months",
    "yearly": "years",
}


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
    add_decrypt_options(parser)  # -i/--identity FILE: a recipient slot's identity


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


def snapshot_filter(args: argparse.Namespace) -> SnapshotFilter:
    return SnapshotFilter(args.host, tuple(args.filter_paths), tuple(args.tag))


def _register_init(init: argparse.ArgumentParser) -> None:
    add_repo_option(init)
    init.add_argument(
        "--recovery-key", action="store_true", help="also make a recovery key (shown once)"
    )
    init.add_argument(
        "--no-password",
        action="store_true",
        help="no password slot: the recovery key and/or the recipients only",
    )
    add_recipient_options(
        init,
        short=None,  # -r is the repository
        recipient_help="the identity of this public key (e2ebackup1..., from `keygen "
        "--identity`) opens the repository too (-i FILE); repeatable; no password is asked "
        "unless one is given",
    )
    init.add_argument("--qr", metavar="PATH", help="QR code of the recovery key (.png, .svg or -)")
    add_kdf_option(init)
    add_encrypt_options(init)


def _register_backup(b: argparse.ArgumentParser) -> None:
    add_repo_option(b)
    b.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files and folders to back up (with --dask, or fsspec URLs: s3://bucket/media)",
    )
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
    b.add_argument("--threads", type=int, default=None, help="worker threads (all cores)")
    add_writer_token_option(b)
    b.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="the files are read, chunked, sealed and uploaded by the workers of the Dask "
        "cluster whose scheduler is ADDRESS (tcp://host:8786), or 'local' for a cluster of "
        "this machine's cores; the paths must be the same on every worker, and each worker "
        "opens the repository's storage itself (S3 credentials from its environment); the "
        "keys go to the workers, never through the scheduler; needs pip install "
        "'e2ebackup[dask]' (docs/SCALE.md)",
    )
    b.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for another process's lock (default: fail at once)",
    )


def _register_restore(r: argparse.ArgumentParser) -> None:
    add_repo_option(r)
    r.add_argument("snapshot", metavar="SNAPSHOT", help="id, unique prefix, or latest")
    r.add_argument("--target", help="folder to restore into")
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
        help="refuse a snapshot holding more (bytes, or 500M, 20G, 1T: SI units, as shown; "
        "20GiB for powers of 1024); for a repository from someone else. Always refused: more "
        "than the target's free space",
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
    r.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="the packs are read and the files written by the workers of the Dask cluster "
        "whose scheduler is ADDRESS (tcp://host:8786), or 'local' for a cluster of this "
        "machine's cores; the target must be the same folder on every worker (a shared file "
        "system), and each worker opens the repository's storage itself (S3 credentials from "
        "its environment); the keys go to the workers, never through the scheduler; needs "
        "pip install 'e2ebackup[dask]' (docs/SCALE.md)",
    )
    r.add_argument(
        "--to-s3",
        metavar="s3://BUCKET/PREFIX",
        help="with --dask, instead of --target: each file of the snapshot becomes the object "
        "PREFIX/<its path>, DECRYPTED (whoever can read the bucket reads the files); needs "
        "--plaintext-to-s3; the workers take the bucket's credentials from their environment; "
        "modification times and modes kept as metadata, owners, symlinks and empty folders "
        "not (docs/SCALE.md)",
    )
    r.add_argument(
        "--to-s3-endpoint",
        metavar="URL",
        help="the S3-compatible endpoint of --to-s3 (default: the workers' $AWS_ENDPOINT_URL)",
    )
    r.add_argument(
        "--plaintext-to-s3",
        action="store_true",
        help="agree that --to-s3 writes the files unencrypted into the bucket",
    )
    add_filter_options(r)
    add_no_lock_option(r)


def _register_verify(v: argparse.ArgumentParser) -> None:
    add_repo_option(v)
    add_no_lock_option(v)
    v.add_argument("--read-data", action="store_true", help="decrypt and check every object")
    v.add_argument(
        "--read-data-subset",
        metavar="n/t|x%",
        help="read only part of the packs: the n-th of t parts (run 1/t to t/t to cover all) "
        "or x percent picked at random",
    )
    v.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="with --read-data: the packs are read by the workers of the Dask cluster whose "
        "scheduler is ADDRESS (tcp://host:8786), or 'local' for a cluster of this machine's "
        "cores; each worker opens the repository's storage itself (S3 credentials from its "
        "environment); the keys go to the workers, never through the scheduler; needs pip "
        "install 'e2ebackup[dask]' (docs/SCALE.md)",
    )


def _register_forget(f: argparse.ArgumentParser) -> None:
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
    f.add_argument(
        "--grace",
        type=_grace,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="repositories of many writers (format 3): delete unused data and forgotten "
        "snapshots only this long after a prune marked them, longer than any backup runs "
        "(seconds, or 30m, 24h, 2d, 1w; default 24h; 0 deletes at once, safe only while no "
        "backup runs)",
    )


def _grace(text: str) -> float:
    """Seconds, or a number with a unit: s, m (minutes), h, d, w."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"a grace period is seconds or like 30m, 24h, 2d, 1w, not {text!r}"
        )
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]


def _register_writer(w: argparse.ArgumentParser) -> None:
    add_repo_option(w)
    add_writer_options(w)


def _register_trust(t: argparse.ArgumentParser) -> None:
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
    """A byte count: digits, optionally with K, M, G or T (SI, powers of 1000, as every size
    the command line shows: 20G or 20GB is 20,000,000,000 bytes), or KiB, MiB, GiB, TiB (powers
    of 1024)."""
    m = re.fullmatch(r"(\d+)(?:([KMGT])(I)?)?B?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or 500M, 20G, 1T)")
    power = " KMGT".index(m[2].upper()) if m[2] else 0
    unit: int = (1024 if m[3] else 1000) ** power
    return int(m[1]) * unit


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
    out(
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
    return Exit.OK


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _init(args: argparse.Namespace) -> int:
    # Everything that can fail for want of an option, a password or an extra (the vault's
    # client) comes before the storage is created: a failed init leaves nothing behind.
    recovery_key = read_recovery_key(args)
    if args.recovery_key:
        recovery_key = RecoveryKey.generate()
    recipients = read_recipients(args)
    if args.no_password and recovery_key is None and not recipients:
        raise InvalidArgument("--no-password needs --recovery-key or a recipient")
    # With recipients and no password option, no password is asked (as for encrypt).
    no_password = args.no_password or (recipients and not password_given(args))
    password = None if no_password else read_password(args, confirm=True)
    kdf = kdf_from_args(args)
    vault = vault_from_args(args, has_recovery_key=recovery_key is not None)
    storage = storage_of(args, create=True)
    if storage.exists("config"):
        return _already_there(args, storage, password, recovery_key)
    repo = Repository.init(
        storage,
        password=password,
        recovery_key=recovery_key,
        kdf=kdf,
        vault=vault,
        recipients=recipients,
    )
    value: dict[str, Any] = {"repository": storage.location, "id": repo.id, "created": True}
    if args.recovery_key and recovery_key is not None:
        value["recovery_key"] = recovery_key.reveal()
        if not args.json:
            show_recovery_key(recovery_key, args.qr)
    out(args, value, f"created repository {repo.id[:8]} at {storage.location}")
    return Exit.OK


def _already_there(
    args: argparse.Namespace,
    storage: Storage,
    password: Password | None,
    recovery_key: RecoveryKey | None,
) -> int:
    """``init`` where a repository is: done already if the same password opens it and no new
    key was asked for (a script or the quick start may run twice), else exit 1. Nothing is
    changed either way."""
    where = f"there is already a repository at {storage.location}"
    if args.recovery_key or args.no_password or args.vault or password is None:
        print(f"e2ebackup: {where}; nothing changed (new keys: `e2ebackup key add`)",
              file=sys.stderr)  # fmt: skip
        return Exit.FAILED
    try:
        repo = Repository.open(storage, password=password)
    except E2EBackupError as e:
        print(f"e2ebackup: {where}, and it does not open: {e}", file=sys.stderr)
        return Exit.FAILED
    value = {"repository": storage.location, "id": repo.id, "created": False}
    text = f"repository {repo.id[:8]} is already at {storage.location} and opens: nothing changed"
    out(args, value, text)
    return Exit.OK


def _backup(args: argparse.Namespace) -> int:
    for path in args.files_from:
        args.paths += read_lines(path)
    if args.dask and (args.stdin or args.dry_run):
        raise InvalidArgument("--dask backs up files and stores them: no --stdin or --dry-run")
    if args.stdin:
        if args.writer_token or os.environ.get(TOKEN_FILE_ENV):
            # Not a password prompt on a device that holds only a token: stream backups of
            # writers are not built yet.
            raise InvalidArgument(
                f"--stdin cannot back up with a writer token (--writer-token or "
                f"{TOKEN_FILE_ENV}): back up files, or use a reader's credential"
            )
        return _backup_stdin(args)
    if not args.paths:
        raise InvalidArgument("nothing to back up: give at least one path, or --stdin")
    # With --dask, fsspec URLs (s3://bucket/media, file:///data): listed by the library.
    urls = bool(args.dask) and any(_URL.match(path) for path in args.paths)
    for path in args.paths:
        if urls and _URL.match(path):
            continue
        if not os.path.lexists(path):  # a typo, not a file that vanished: save nothing
            raise FileNotFoundError(
                errno.ENOENT, "no such file or folder to back up; no snapshot saved", path
            )
    patterns = list(args.exclude)
    for path in args.exclude_file:
        patterns += read_lines(path)
    excludes = Excludes(patterns, exclude_caches=args.exclude_caches)  # bad patterns fail first
    token = read_writer_token(args)
    drop: list[str] = []
    repo: Repository | None = None
    run: Callable[..., tuple[str, BackupStats]]
    if token is not None:
        if args.dask or args.dry_run:
            raise InvalidArgument("--writer-token backs up here and stores: no --dask or --dry-run")
        storage = storage_of(args)

        def as_writer(_: object, paths: list[str], **kw: Any) -> tuple[str, BackupStats]:
            del kw["lock_wait"], kw["dry_run"]  # a writer takes no lock; it always stores
            assert token is not None
            kw["file_list"] = not args.no_file_list
            sid, stats, name = backup_as_writer(storage, token, paths, **kw)
            drop.append(name)
            return sid, stats

        run = as_writer
    else:
        # A missing extra (Dask) fails before the repository is opened.
        chosen = _backup_on_dask(args) if args.dask else backup
        run = cast(Callable[..., tuple[str, BackupStats]], chosen)
        repo = open_repo(args)
    warnings: list[str] = []

    def on_error(path: str, e: Exception) -> None:
        warnings.append(f"{path}: {e}")
        if not args.quiet:
            print(f"e2ebackup: warning: cannot read {path}: {e}", file=sys.stderr)

    start = time.monotonic()
    with progress_bar(args, "backup") as bar:
        # The total (for the ETA) is counted while the backup already runs.
        total: list[tuple[int, int]] = []
        if bar is not None and not urls:
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
                of = f"{files}/{count(all_files, 'file')}" if all_files is not None else None
                bar(
                    stats.bytes_read + stats.bytes_unmodified,
                    all_bytes,
                    f"backup: {of or count(files, 'file')}",
                )

        sid, stats = run(
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
        "head": None if args.dry_run or repo is None else _head_value(repo.head()),
        "drop": drop[0] if drop else None,
        "stats": asdict(stats),
        "seconds": round(elapsed, 3),
        "warnings": warnings,
    }
    files = stats.files_new + stats.files_changed + stats.files_unmodified
    out(
        args,
        value,
        ("dry run, nothing stored: " if args.dry_run else f"snapshot {sid[:8]} saved: ")
        + f"{count(files, 'file')} ({stats.files_new} new, {stats.files_changed} changed, "
        f"{stats.files_unmodified} unmodified), {stats.bytes_total / 1e6:,.1f} MB, "
        f"{stats.bytes_added / 1e6:,.1f} MB {'to add' if args.dry_run else 'added'}, "
        f"in {elapsed:.1f}s" + (f"; {stats.excluded} excluded" if stats.excluded else ""),
    )
    return Exit.INCOMPLETE if stats.errors else Exit.OK


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _backup_on_dask(args: argparse.Namespace) -> Callable[..., tuple[str, BackupStats]]:
    """``backup --dask``: :func:`backup`'s call, run with the files read by the cluster's
    workers (the repository is opened, and the credential read, by this process only)."""
    from e2ebackup.dask import backup as dask_backup  # the dask extra: a missing one is named

    def run(
        repo: Repository, paths: list[str], *, threads: int | None, dry_run: bool, **options: Any
    ) -> tuple[str, BackupStats]:
        with dask_client(args.dask) as client:
            # --threads: each task's; by default one (a worker process a core does the rest).
            return dask_backup(repo, paths, client=client, threads=threads or 1, **options)

    return run


def _restore_on_dask(args: argparse.Namespace) -> Callable[..., RestoreStats]:
    """``restore --dask``: :func:`restore`'s call, run with the files read and written by the
    cluster's workers (the repository is opened, the budget checked and the folders made by
    this process)."""
    from e2ebackup.dask import restore as dask_restore  # the dask extra: a missing one is named

    def run(repo: Repository, snapshot: str, target: str, **options: Any) -> RestoreStats:
        with dask_client(args.dask) as client:
            return dask_restore(repo, snapshot, target, client=client, **options)

    return run


def _restore_options(args: argparse.Namespace) -> dict[str, Any]:
    """What both restores (into a folder, into S3) take alike from the command line."""
    return {
        "subpath": args.include or None,
        "overwrite": args.overwrite,
        "where": snapshot_filter(args),
        "exclude": args.exclude,
        "max_size": args.max_size,
        "max_files": args.max_files,
    }


def _restore_progress(bar: Bar | None, noun: str) -> Callable[[RestoreStats, str], None]:
    """What a restore reports to the progress bar (None: no bar): bytes, and files counted as
    ``noun``."""

    def progress(stats: RestoreStats, path: str) -> None:
        if bar is not None:
            bar(stats.bytes, stats.bytes_total or None, f"restore: {count(stats.files, noun)}")

    return progress


def _restore(args: argparse.Namespace) -> int:
    if args.to_s3 or args.plaintext_to_s3 or args.to_s3_endpoint:
        return _restore_to_s3(args)
    if not args.target:
        raise InvalidArgument("give --target FOLDER (or, with --dask, --to-s3)")
    run = _restore_on_dask(args) if args.dask else restore  # a missing extra fails first
    repo = open_repo(args)
    with progress_bar(args, "restore") as bar:
        progress = _restore_progress(bar, "file")
        stats = run(
            repo,
            args.snapshot,
            args.target,
            progress=progress,
            keep_special_bits=args.keep_special_bits,
            same_owner=not args.no_same_owner,
            **_restore_options(args),
        )
    for path in stats.skipped_existing:
        print(f"e2ebackup: not replaced (exists; use --overwrite): {path}", file=sys.stderr)
    out(
        args,
        asdict(stats),
        f"restored {count(stats.files, 'file')}, {count(stats.dirs, 'folder')}, "
        f"{stats.bytes / 1e6:,.1f} MB into {args.target}",
    )
    return Exit.INCOMPLETE if stats.skipped_existing else Exit.OK


def _restore_to_s3(args: argparse.Namespace) -> int:
    """``restore --dask ADDRESS --to-s3 s3://bucket/prefix --plaintext-to-s3``: the files as
    plaintext objects, written by the cluster's workers; refused (before any password is
    asked) without each of those options."""
    if not args.to_s3:
        raise InvalidArgument("--plaintext-to-s3 and --to-s3-endpoint go with --to-s3")
    if args.target or not args.dask:
        raise InvalidArgument("--to-s3 is written by a Dask cluster: give --dask, not --target")
    if not args.plaintext_to_s3:
        raise InvalidArgument(
            "--to-s3 writes the files decrypted into the bucket: whoever can read it reads "
            "them; give --plaintext-to-s3 to agree"
        )
    if args.keep_special_bits or args.no_same_owner:
        raise InvalidArgument("objects keep no owner and no special bits: not with --to-s3")
    from e2ebackup.dask import restore_to_s3  # the dask extra: a missing one is named

    repo = open_repo(args)
    with progress_bar(args, "restore") as bar:
        progress = _restore_progress(bar, "object")
        with dask_client(args.dask) as client:
            stats = restore_to_s3(
                repo,
                args.snapshot,
                args.to_s3,
                client=client,
                plaintext_to_cloud=True,
                endpoint_url=args.to_s3_endpoint,
                progress=progress,
                **_restore_options(args),
            )
    for path in stats.skipped_existing:
        print(f"e2ebackup: not replaced (exists; use --overwrite): {path}", file=sys.stderr)
    for path in stats.names_not_kept:
        print(f"e2ebackup: left out (cannot be an S3 key): {path!r}", file=sys.stderr)
    left = [
        count(n, noun)
        for n, noun in (
            (stats.symlinks_not_kept, "symlink"),
            (stats.empty_dirs_not_kept, "empty folder"),
            (stats.special_bits_not_kept, "setuid/setgid/sticky file"),
        )
        if n
    ]
    out(
        args,
        asdict(stats),
        f"restored {count(stats.files, 'file')} as objects, {stats.bytes / 1e6:,.1f} MB into "
        f"{args.to_s3}" + (f"; not kept: {', '.join(left)}" if left else ""),
    )
    return Exit.INCOMPLETE if stats.skipped_existing or stats.names_not_kept else Exit.OK


def _verify(args: argparse.Namespace) -> int:
    if args.read_data_subset:
        parse_subset(args.read_data_subset)  # a bad spec fails before any password is asked
    if args.dask and not (args.read_data or args.read_data_subset):
        raise InvalidArgument("--dask reads the packs on a cluster: give --read-data")
    if args.dask:
        run = _on_dask(args)  # the credential is read now, before any progress is drawn
    else:
        repo = open_repo(args)

        def run(progress: Progress) -> VerifyReport:
            return verify(
                repo, read_data=args.read_data, progress=progress, subset=args.read_data_subset
            )

    with progress_bar(args, "verify", in_bytes=False) as bar:

        def progress(report: VerifyReport, pack: str) -> None:
            # First the pack headers (counted), then with --read-data the packs (in bytes).
            if bar is not None and report.packs_to_read:
                text = f"verify: {report.packs}/{count(report.packs_to_read, 'pack')} read"
                bar(report.bytes_read, report.bytes_to_read, text)
            elif bar is not None:
                total = report.headers_to_check
                text = f"verify: {count(total, 'pack header')}"
                bar(report.headers, total, text, in_bytes=False)

        report = run(progress)
    for w in report.warnings:
        print(f"e2ebackup: warning: {w}", file=sys.stderr)
    for e in report.errors:
        print(f"e2ebackup: error: {e}", file=sys.stderr)
    summary = (
        f"{count(report.snapshots, 'snapshot')}, {count(report.trees, 'tree')}, "
        f"{count(report.headers, 'pack header')}"
        + (
            f", {count(report.packs, 'pack')} and {count(report.blobs_read, 'blob')} read"
            if args.read_data or args.read_data_subset
            else ""
        )
        + (": no errors" if report.ok else f": {count(len(report.errors), 'error')}")
    )
    out(args, dict(asdict(report), ok=report.ok), summary)
    return Exit.OK if report.ok else Exit.FAILED


def _on_dask(args: argparse.Namespace) -> Callable[[Progress], VerifyReport]:
    """``verify --dask``: the credential, read once, here; then (when called) the repository is
    opened and its structure checked by this process, its packs read by the cluster's
    workers."""
    from e2ebackup.dask import verify_repository  # the dask extra: a missing one is named

    location = storage_location(args)
    credential = read_opening_credential(args)  # as open_repo: recovery key, identity, password

    def run(progress: Progress) -> VerifyReport:
        with dask_client(args.dask) as client:
            return verify_repository(
                location,
                client=client,
                **credential,
                read_data=args.read_data,
                subset=args.read_data_subset,
                s3_endpoint=args.s3_endpoint,
                limit_download=args.limit_download,
                no_lock=args.no_lock,
                expect_head=args.expect_head or os.environ.get(EXPECT_HEAD_ENV),
                progress=progress,
            )

    return run


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
    stats = forget(repo, policy=policy, prune=args.prune, group_by=group_by, grace=args.grace)
    out(
        args,
        asdict(stats),
        f"kept {count(stats.snapshots_kept, 'snapshot')}, forgot {stats.snapshots_removed}"
        + (_prune_summary(stats) if args.prune else ""),
    )
    return Exit.OK


def _prune_summary(stats: PruneStats) -> str:
    freed = stats.bytes_freed / 1e6
    text = f"; pruned {count(stats.packs_deleted, 'pack')}, " + (
        f"{freed:,.1f} MB freed"
        if freed >= 0
        else f"{-freed:,.1f} MB more stored (repacked copies) until the grace period passes"
    )
    if stats.packs_condemned or stats.packs_revived or stats.packs_kept_condemned:
        # Version 3 (two-phase prune): what waits for the grace period.
        text += (
            f"; {count(stats.packs_condemned, 'pack')} marked for deletion, "
            f"{stats.packs_revived} in use again, {stats.packs_kept_condemned} "
            f"({stats.bytes_condemned / 1e6:,.1f} MB) waiting for the grace period"
        )
    return text


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
        out(args, {"trusted": _head_value(head), "problem": None, "trusted_now": True}, text)
        return Exit.OK
    try:
        repo.head(refresh=True)
        problem = None
    except HistoryNotTrusted as e:
        problem = str(e)
    if args.yes and (problem is not None or args.head):
        newest = repo.trust(args.head)
    elif args.head and not any(
        str(h.digest).startswith(args.head.lower()) for h in newest.stored_heads
    ):
        raise InvalidArgument(f"the newest head is {newest.digest}, not {args.head}")
    accepted = problem is None or args.yes
    lines = [
        "this device trusts: "
        + (f"head seq {trusted.seq} {trusted.digest}" if trusted else "nothing yet (new device)"),
        f"the storage shows:  head seq {newest.seq} {newest.digest}, "
        f"{count(len(newest.snapshots), 'snapshot')}",
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
    out(args, value, "\n".join(lines))
    return Exit.OK if accepted else Exit.FAILED


class RepositoryKeys:
    """The key slots of a repository (its ``keys/`` objects), for ``key`` and ``rotate``. The
    repository is opened once, with the command's credential; each change takes the
    exclusive lock."""

    noun = "repository"
    messages_to_stderr = False

    def __init__(self, args: argparse.Namespace):
        self._args = args
        self._repo: Repository | None = None

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = open_repo(self._args)
        return self._repo

    def open(self) -> None:
        """Opens the repository: the credential is asked for here."""
        _ = self.repo

    def slots(self) -> list[dict[str, object]]:
        return self.repo.key_slots()[0].describe()

    def check(self) -> None:
        self.open()  # opening it was the check

    def add_password(self, new: Password, label: str) -> None:
        with self.repo.lock(exclusive=True):
            self.repo.add_password(new, label=label)

    def add_recovery_key(self, key: RecoveryKey, label: str) -> None:
        with self.repo.lock(exclusive=True):
            self.repo.add_recovery_key(key, label=label)

    def remove(self, index: int) -> None:
        with self.repo.lock(exclusive=True):
            self.repo.remove_key(index)

    def current_password(self) -> Password:
        return read_password(self._args)

    def change_password(self, old: Password, new: Password) -> None:
        with self.repo.lock(exclusive=True):
            self.repo.change_password(old, new)

    def has_recovery_key_slot(self) -> bool:
        return self.repo.has_recovery_key_slot()

    def rotate(
        self,
        password: Password | None,
        recovery_key: RecoveryKey | None,
        new_recovery_key: RecoveryKey | None,
    ) -> tuple[dict[str, Any], str]:
        """``rotate -r OLD --to NEW``: every snapshot copied under a new data key."""
        old, to = self.repo, self._args.to
        keep = new_recovery_key if new_recovery_key is not None else recovery_key
        new = rotate(old, storage_of(self._args, to, create=True), password=password,
                     recovery_key=keep)  # fmt: skip
        value = {"old": old.id, "new": new.id, "location": to}
        text = (
            f"rotated {old.id[:8]} into {new.id[:8]} at {to}; verify it, then delete the old "
            "repository"
        )
        return value, text


INIT = Command(
    "init",
    "create a repository",
    _register_init,
    _init,
    interrupted="interrupted; a half-made repository may be left: delete it, then init again",
)
BACKUP = Command(
    "backup",
    "back up files and folders",
    _register_backup,
    _backup,
    interrupted="interrupted; no snapshot was saved",
)
RESTORE = Command(
    "restore",
    "restore a snapshot",
    _register_restore,
    _restore,
    interrupted="interrupted; the files restored so far are in the target, the others are not",
)
# "check" is restic's name for it: users' fingers know it.
VERIFY = Command("verify", "check the repository", _register_verify, _verify, aliases=("check",))
FORGET = Command(
    "forget",
    "forget snapshots, optionally pruning their data",
    _register_forget,
    _forget,
    interrupted="interrupted; run forget again to finish",
)
WRITER = Command(
    "writer",
    "issue a writer token: a device that backs up and reads nothing",
    _register_writer,
    issue_writer,
)
TRUST = Command(
    "trust",
    "accept the repository's current state on purpose (after a rollback/fork)",
    _register_trust,
    _trust,
)
