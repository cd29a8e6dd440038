"""The ``e2ebackup`` command line.

Exit codes: 0 success; 1 the data did not authenticate (wrong key, tampered or truncated) or
another e2ebackup error; 2 bad usage; 3 a file could not be read or written; 130 interrupted.
Keys are only ever read from files, never from the command line, where other users of the
machine could see them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from e2ebackup import _core, _files
from e2ebackup._hexkey import format_hex_key, read_key_file
from e2ebackup._paths import atomic_output
from e2ebackup.errors import E2EBackupError, InvalidArgument

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("e2ebackup")
    except PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ebackup", description="End-to-end encrypted backups and files."
    )
    parser.add_argument("--version", action="version", version=f"e2ebackup {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="make a new random 256-bit key (64 hex digits)")
    keygen.add_argument("-o", "--output", help="write the key to this file (mode 0600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")

    for name, verb in (("encrypt", "encrypt"), ("decrypt", "decrypt")):
        cmd = commands.add_parser(name, help=f"{verb} one file with a key file")
        cmd.add_argument("src", metavar="SRC", help="input file, or - for standard input")
        cmd.add_argument("dst", metavar="DST", help="output file, or - for standard output")
        cmd.add_argument("-k", "--key-file", required=True, help="file holding the key")
        cmd.add_argument("--context", default="", help="context string bound to the message")
        cmd.add_argument(
            "--algorithm", default="aes-256-gcm", choices=["aes-256-gcm", "chacha20-poly1305"]
        )
        cmd.add_argument("--threads", type=int, default=None, help="worker threads (all cores)")
        cmd.add_argument("--force", action="store_true", help="replace an existing DST")
        cmd.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def _progress_printer(total: int | None, quiet: bool) -> Callable[[int], None] | None:
    if quiet or not sys.stderr.isatty():
        return None
    start = time.monotonic()

    def show(done: int) -> None:
        elapsed = max(time.monotonic() - start, 1e-9)
        rate = done / elapsed / 1e6
        pct = f"{100 * done / total:5.1f}% " if total else ""
        sys.stderr.write(f"\r{pct}{done / 1e6:,.1f} MB  {rate:,.0f} MB/s ")
        sys.stderr.flush()

    return show


def _keygen(args: argparse.Namespace) -> int:
    text = format_hex_key(_core.generate_key()) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    if os.path.lexists(args.output) and not args.force:
        raise FileExistsError(f"{args.output} exists; use --force to replace it")
    with atomic_output(args.output) as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text.encode())
    return EXIT_OK


def _transform(args: argparse.Namespace) -> int:
    with open(args.key_file, "rb") as f:
        key = read_key_file(f.read())
    src: str | BinaryIO = sys.stdin.buffer if args.src == "-" else args.src
    dst: str | BinaryIO = sys.stdout.buffer if args.dst == "-" else args.dst
    if isinstance(dst, str) and os.path.lexists(dst) and not args.force:
        raise FileExistsError(f"{dst} exists; use --force to replace it")
    if isinstance(dst, str):
        # The storage folder of the quick start may not exist yet.
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    total = os.path.getsize(args.src) if isinstance(src, str) else None
    run = _files.encrypt_file if args.command == "encrypt" else _files.decrypt_file
    run(
        src,
        dst,
        key,
        context=args.context.encode(),
        algorithm=args.algorithm,
        threads=args.threads,
        progress=_progress_printer(total, args.quiet),
    )
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keygen":
            return _keygen(args)
        return _transform(args)
    except InvalidArgument as e:
        print(f"e2ebackup: {e}", file=sys.stderr)
        return EXIT_USAGE
    except E2EBackupError as e:
        print(f"e2ebackup: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"e2ebackup: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
