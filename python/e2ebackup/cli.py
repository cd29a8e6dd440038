"""The ``e2ebackup`` command line.

Exit codes: 0 success; 1 the data did not authenticate (wrong key, tampered or truncated) or
another e2ebackup error; 2 bad usage; 3 a file could not be read or written; 130 interrupted.
Keys and passwords are only ever read from files, file descriptors, the environment or a
prompt, never from the command line, where other users of the machine could see them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from e2ebackup import _cli_repo, _files, sealed
from e2ebackup._credentials import (
    add_password_options,
    add_recovery_key_options,
    read_password,
    read_recovery_key,
    show_recovery_key,
)
from e2ebackup._hexkey import read_key_file
from e2ebackup._paths import atomic_output
from e2ebackup.errors import E2EBackupError, InvalidArgument
from e2ebackup.keys import Argon2idParams, Password, RecoveryKey, ScryptParams
from e2ebackup.vault import cli as vault_cli

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# What `decrypt SRC -` holds in memory when standard output cannot take bytes back.
PIPE_BUFFER_MIB = 256


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

    keygen = commands.add_parser(
        "keygen", help="make a new random 256-bit key (64 hex digits, usable as a recovery key)"
    )
    keygen.add_argument("-o", "--output", help="write the key to this file (mode 0600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.add_argument("--qr", metavar="PATH", help="also a QR code: PATH.png, PATH.svg, or -")

    for name in ("encrypt", "decrypt"):
        cmd = commands.add_parser(
            name,
            help=f"{name} one file: sealed with a password and/or recovery key, or with -k KEYFILE",
        )
        cmd.add_argument("src", metavar="SRC", help="input file, or - for standard input")
        cmd.add_argument("dst", metavar="DST", help="output file, or - for standard output")
        cmd.add_argument(
            "-k", "--key-file", help="raw key file: a plain C2SP message (Cobblestone-compatible)"
        )
        cmd.add_argument("--context", default="", help="with -k: context bound to the message")
        cmd.add_argument(
            "--algorithm", default="aes-256-gcm", choices=["aes-256-gcm", "chacha20-poly1305"]
        )
        cmd.add_argument("--threads", type=int, default=None, help="worker threads (all cores)")
        cmd.add_argument("--force", action="store_true", help="replace an existing DST")
        cmd.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        add_password_options(cmd)
        add_recovery_key_options(cmd)
        if name == "encrypt":
            cmd.add_argument(
                "--no-password", action="store_true", help="recovery key only, no password slot"
            )
            cmd.add_argument(
                "--new-recovery-key", action="store_true", help="add a new recovery key, shown once"
            )
            cmd.add_argument("--qr", metavar="PATH", help="QR code of the new recovery key")
            cmd.add_argument("--kdf", choices=["argon2id", "scrypt"], default="argon2id")
            vault_cli.add_encrypt_options(cmd)
        else:
            cmd.add_argument(
                "--stream",
                action="store_true",
                help="when DST is - and standard output is a pipe or terminal: write plaintext "
                "as it authenticates; a damaged file then releases a prefix before the error "
                "(exit 1). Default: hold it in memory and write nothing unless all of it "
                "authenticated",
            )
            cmd.add_argument(
                "--pipe-buffer",
                type=int,
                default=PIPE_BUFFER_MIB,
                metavar="MiB",
                help=f"the most held in memory without --stream (default {PIPE_BUFFER_MIB})",
            )

    key = commands.add_parser("key", help="list, add, remove or change the key slots of a file")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    for action, text in (
        ("list", "show the key slots (nothing secret)"),
        ("check", "check that the password or recovery key opens the file"),
        ("add", "add a password or a new recovery key"),
        ("remove", "remove a key slot (never the last)"),
        ("passwd", "change a password (rewrites only its slot)"),
    ):
        cmd = key_commands.add_parser(action, help=text)
        cmd.add_argument("file", metavar="FILE", nargs="?", help="a sealed file, or use -r REPO")
        cmd.add_argument("-r", "--repo", help="a repository (or $E2EBACKUP_REPOSITORY)")
        cmd.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
        cmd.add_argument("--json", action="store_true")
        cmd.add_argument("-q", "--quiet", action="store_true")
        add_password_options(cmd)
        add_recovery_key_options(cmd)
        if action in ("add", "passwd"):
            cmd.add_argument("--new-password-file", metavar="FILE", help="the new password")
        if action == "add":
            cmd.add_argument("--new-recovery-key", action="store_true")
            cmd.add_argument("--qr", metavar="PATH", help="QR code of the new recovery key")
            cmd.add_argument("--label", default="")
        if action == "remove":
            cmd.add_argument("--slot", type=int, required=True, help="index from `key list`")

    _cli_repo.add_parsers(commands)

    rotate = commands.add_parser(
        "rotate", help="re-encrypt a sealed file under a new data key (streaming)"
    )
    rotate.add_argument("file", metavar="FILE", nargs="?", help="a sealed file, or use -r REPO")
    rotate.add_argument("-r", "--repo", help="with --to: the repository to rotate")
    rotate.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
    rotate.add_argument("--to", metavar="REPO", help="the new repository (a new location)")
    rotate.add_argument("--new-recovery-key", action="store_true")
    rotate.add_argument("--qr", metavar="PATH")
    rotate.add_argument("--json", action="store_true")
    rotate.add_argument("-q", "--quiet", action="store_true")
    rotate.add_argument(
        "--no-password", action="store_true", help="keep only the recovery-key slot"
    )
    add_password_options(rotate)
    add_recovery_key_options(rotate)
    vault_cli.add_vault_parser(commands)
    from e2ebackup import _cli_whatsapp

    _cli_whatsapp.add_parser(commands)
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
    key = RecoveryKey.generate()
    text = key.reveal() + "\n"
    if args.qr == "-":
        sys.stderr.write(key.qr_terminal())
    elif args.qr:
        key.save_qr(args.qr)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    if os.path.lexists(args.output) and not args.force:
        raise FileExistsError(f"{args.output} exists; use --force to replace it")
    with atomic_output(args.output) as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text.encode())
    return EXIT_OK


def _is_regular_file(f: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _transform(args: argparse.Namespace) -> int:
    src: str | BinaryIO = sys.stdin.buffer if args.src == "-" else args.src
    dst: str | BinaryIO = sys.stdout.buffer if args.dst == "-" else args.dst
    if args.command == "decrypt" and args.dst == "-" and not _is_regular_file(sys.stdout.buffer):
        # A pipe, terminal or socket cannot take back bytes of a file that then fails to
        # authenticate (a regular file is truncated back instead): see _decrypt_to_stream.
        return _decrypt_to_stream(args, src)
    if isinstance(dst, str) and os.path.lexists(dst) and not args.force:
        raise FileExistsError(f"{dst} exists; use --force to replace it")
    if isinstance(dst, str):
        # The storage folder of the quick start may not exist yet.
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    return _transform_to(args, src, dst)


def _transform_to(args: argparse.Namespace, src: str | BinaryIO, dst: str | BinaryIO) -> int:
    total = os.path.getsize(src) if isinstance(src, str) else None
    common: dict[str, Any] = {
        "threads": args.threads,
        "progress": _progress_printer(total, args.quiet),
    }
    if args.key_file:
        with open(args.key_file, "rb") as f:
            key = read_key_file(f.read())
        run = _files.encrypt_file if args.command == "encrypt" else _files.decrypt_file
        run(src, dst, key, context=args.context.encode(), algorithm=args.algorithm, **common)
    elif args.command == "encrypt":
        recovery_key = read_recovery_key(args)
        if args.new_recovery_key:
            recovery_key = RecoveryKey.generate()
        if args.no_password and recovery_key is None:
            raise InvalidArgument("--no-password needs --new-recovery-key or a recovery key")
        password = None if args.no_password else read_password(args, confirm=True)
        sealed.seal_file(
            src,
            dst,
            password=password,
            recovery_key=recovery_key,
            kdf=ScryptParams() if args.kdf == "scrypt" else Argon2idParams(),
            vault=vault_cli.vault_from_args(args, has_recovery_key=recovery_key is not None),
            algorithm=args.algorithm,
            **common,
        )
        if args.new_recovery_key and recovery_key is not None:
            show_recovery_key(recovery_key, args.qr)
    else:
        recovery_key = read_recovery_key(args)
        password = None if recovery_key else read_password(args)
        sealed.unseal_file(src, dst, password=password, recovery_key=recovery_key, **common)
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    return EXIT_OK


def _decrypt_to_stream(args: argparse.Namespace, src: str | BinaryIO) -> int:
    """``decrypt SRC -`` into a pipe, terminal or socket. By default the plaintext is held in
    memory (up to --pipe-buffer MiB) and written only once the final chunk authenticated, so a
    truncated or altered file releases nothing. --stream writes as chunks authenticate, as age
    does; a failure then says the bytes already written are not authentic."""
    out = sys.stdout.buffer
    if args.stream:
        try:
            return _transform_to(args, src, out)
        except E2EBackupError:
            print(
                "e2ebackup: --stream: any output already written is not authentic (the "
                "file failed to authenticate after it): discard it",
                file=sys.stderr,
            )
            raise
    if args.pipe_buffer <= 0:
        raise InvalidArgument("--pipe-buffer must be at least 1 (MiB)")
    held = _files.HeldOutput(args.pipe_buffer << 20)
    try:
        if isinstance(src, str) and os.path.getsize(src) > held.limit:
            raise _files.OutputTooLarge(held.limit)  # known before reading: fail at once
        _transform_to(args, src, held)
        held.release(out)
    finally:
        held.wipe()
    return EXIT_OK


def _unlock_args(args: argparse.Namespace) -> dict[str, Any]:
    recovery_key = read_recovery_key(args)
    if recovery_key is not None:
        return {"recovery_key": recovery_key}
    return {"password": read_password(args)}


def _new_password(args: argparse.Namespace) -> Password:
    if args.new_password_file:
        with open(args.new_password_file, encoding="utf-8") as f:
            text = f.read()
        return Password(text[:-1] if text.endswith("\n") else text)
    ns = argparse.Namespace()
    return read_password(ns, confirm=True, prompt="New password: ")


def _key(args: argparse.Namespace) -> int:
    if args.file is None:
        return _cli_repo.key_command(args)
    if args.key_command == "list":
        slots = sealed.list_slots(args.file)
        if args.json:
            print(json.dumps(slots, indent=2))
        else:
            for i, slot in enumerate(slots):
                kdf = f"  {slot['kdf']}" if slot["kdf"] else ""
                if isinstance(vault := slot.get("vault"), dict):
                    kdf = f"  {vault['url']}  key {vault['public_key'][:16]}"
                label = f"  {slot['label']!r}" if slot["label"] else ""
                print(f"{i}  {slot['kind']:<13} {slot['created']}{kdf}{label}")
        return EXIT_OK
    unlock = _unlock_args(args)
    if args.key_command == "check":
        sealed.check(args.file, **unlock)
        print("ok: the credential opens this file", file=sys.stderr)
    elif args.key_command == "remove":
        sealed.remove_slot(args.file, args.slot, **unlock)
    elif args.key_command == "passwd":
        if "password" not in unlock:
            raise InvalidArgument("key passwd needs the current password")
        sealed.change_password(args.file, unlock["password"], _new_password(args))
    elif args.new_recovery_key:
        new_key = sealed.add_recovery_key(args.file, label=args.label, **unlock)
        show_recovery_key(new_key, args.qr)
    else:
        sealed.add_password(args.file, _new_password(args), label=args.label, **unlock)
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    if args.file is None:
        return _cli_repo.rotate_command(args)
    # The new file keeps the old one's kinds of credential (keyring.policy.rotate): a vault
    # stays a vault; a recovery-key slot cannot move to a new data key, so without the old
    # recovery key a new one is made and shown.
    recovery_key = read_recovery_key(args)
    new_key = None
    had_recovery_key = any(s["kind"] == "recovery-key" for s in sealed.list_slots(args.file))
    if args.new_recovery_key or (recovery_key is None and had_recovery_key):
        new_key = RecoveryKey.generate()
    password = None if args.no_password else read_password(args)
    sealed.rotate(args.file, password=password, recovery_key=recovery_key, new_recovery_key=new_key)
    kept = ", ".join(str(s["kind"]) for s in sealed.list_slots(args.file))
    print(f"rotated: new data key; slots: {kept}", file=sys.stderr)
    if new_key is not None:
        show_recovery_key(new_key, args.qr)
    return EXIT_OK


class _Warnings(logging.Handler):
    """Warnings of the library (a vault's failed-attempt report, a retried upload) reach the
    user on stderr as one line each, like the command's own errors. sys.stderr is looked up
    at each line, so a replaced stderr (a test, a redirect) gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"e2ebackup: {record.getMessage()}", file=sys.stderr)


def _show_warnings() -> None:
    logger = logging.getLogger("e2ebackup")
    if not any(isinstance(h, _Warnings) for h in logger.handlers):
        logger.addHandler(_Warnings(logging.WARNING))
        logger.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (args.command == "vault" and args.vault_command == "serve"):  # a server logs itself
        _show_warnings()
    try:
        if args.command == "whatsapp":
            from e2ebackup import _cli_whatsapp

            return _cli_whatsapp.run(args)
        if args.command == "vault":
            return vault_cli.run_vault(args)
        if args.command == "keygen":
            return _keygen(args)
        if args.command == "key":
            return _key(args)
        if args.command == "rotate":
            return _rotate(args)
        if args.command in _cli_repo.COMMANDS:
            return _cli_repo.run(args)
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
