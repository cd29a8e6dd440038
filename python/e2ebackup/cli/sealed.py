"""One file at a time: ``keygen``, ``encrypt``, ``decrypt``, and the key slots of a sealed file
(:class:`SealedFileKeys`, which ``key`` and ``rotate`` use beside a repository's)."""

from __future__ import annotations

import argparse
import functools
import io
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from e2ebackup import sealed
from e2ebackup.cli import cluster, recipients as recipient_options
from e2ebackup.cli.common import Command, Exit, refuse_existing
from e2ebackup.cli.credentials import (
    add_kdf_option,
    add_password_options,
    add_recovery_key_options,
    kdf_from_args,
    read_password,
    read_recovery_key,
    show_recovery_key,
)
from e2ebackup.cli.progress import byte_progress, regular_size
from e2ebackup.cli.vault import add_encrypt_options, vault_from_args
from e2ebackup.errors import E2EBackupError, InvalidArgument, OutputTooLarge
from e2ebackup.files import decrypt_file, encrypt_file
from e2ebackup.keys import Password, RecoveryKey, read_key_file
from e2ebackup.paths import atomic_output
from e2ebackup.streams import HeldOutput

# What `decrypt SRC -` holds in memory when standard output cannot take bytes back.
PIPE_BUFFER_MIB = 256


def _register_keygen(keygen: argparse.ArgumentParser) -> None:
    keygen.add_argument("-o", "--output", help="write the key to this file (mode 0600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.add_argument("--qr", metavar="PATH", help="also a QR code: PATH.png, PATH.svg, or -")
    recipient_options.add_keygen_options(keygen)
    add_password_options(keygen)


def _keygen(args: argparse.Namespace) -> int:
    if args.identity:
        return recipient_options.keygen_identity(args)
    key = RecoveryKey.generate()
    text = key.reveal() + "\n"
    if args.qr == "-":
        sys.stderr.write(key.qr_terminal())
    elif args.qr:
        key.save_qr(args.qr)
    if args.output is None:
        sys.stdout.write(text)
        return Exit.OK
    refuse_existing(args.output, args.force)
    with atomic_output(args.output) as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text.encode())
    return Exit.OK


def _register_common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("src", metavar="SRC", help="input file, or - for standard input")
    cmd.add_argument("dst", metavar="DST", help="output file, or - for standard output")
    cmd.add_argument(
        "-k", "--key-file", help="raw key file: a plain C2SP message (Cobblestone-compatible)"
    )
    cmd.add_argument("--context", default="", help="with -k: context bound to the message")
    cmd.add_argument(
        "--algorithm",
        default="aes-256-gcm",
        choices=["aes-256-gcm", "chacha20-poly1305"],
        help="the AEAD (default aes-256-gcm); a sealed file records it in its header",
    )
    cmd.add_argument("--threads", type=int, default=None, help="worker threads (all cores)")
    cmd.add_argument("--force", action="store_true", help="replace an existing DST")
    cmd.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_password_options(cmd)
    add_recovery_key_options(cmd)
    cluster.add_options(cmd)


def _register_encrypt(cmd: argparse.ArgumentParser) -> None:
    _register_common(cmd)
    cmd.add_argument(
        "--no-password", action="store_true", help="recovery key only, no password slot"
    )
    cmd.add_argument(
        "--new-recovery-key", action="store_true", help="add a new recovery key, shown once"
    )
    cmd.add_argument("--qr", metavar="PATH", help="QR code of the new recovery key")
    add_kdf_option(cmd)
    add_encrypt_options(cmd)
    recipient_options.add_encrypt_options(cmd)


def _register_decrypt(cmd: argparse.ArgumentParser) -> None:
    _register_common(cmd)
    recipient_options.add_decrypt_options(cmd)
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


def _is_regular_file(f: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _encrypt(args: argparse.Namespace) -> int:
    return _transform(args, encrypting=True)


def _decrypt(args: argparse.Namespace) -> int:
    return _transform(args, encrypting=False)


def _transform(args: argparse.Namespace, *, encrypting: bool) -> int:
    if args.dask:
        return cluster.run(args, encrypting=encrypting)
    src: str | BinaryIO = sys.stdin.buffer if args.src == "-" else args.src
    dst: str | BinaryIO = sys.stdout.buffer if args.dst == "-" else args.dst
    if not encrypting and args.dst == "-" and not _is_regular_file(sys.stdout.buffer):
        # A pipe, terminal or socket cannot take back bytes of a file that then fails to
        # authenticate (a regular file is truncated back instead): see _decrypt_to_stream.
        return _decrypt_to_stream(args, src)
    if isinstance(dst, str):
        refuse_existing(dst, args.force)
        # The storage folder of the quick start may not exist yet.
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    return _transform_to(args, src, dst, encrypting=encrypting)


def _transform_to(
    args: argparse.Namespace, src: str | BinaryIO, dst: str | BinaryIO, *, encrypting: bool
) -> int:
    run, new_recovery_key = _credentials(args, src, dst, encrypting=encrypting)
    # Drawn once every prompt is answered. Its total: the input's size when it is a regular
    # file; a pipe gets the indeterminate form (bytes done, time elapsed).
    what = "encrypt" if encrypting else "decrypt"
    with byte_progress(args, what, regular_size(src)) as progress:
        run(threads=args.threads, progress=progress)
    if new_recovery_key is not None:
        show_recovery_key(new_recovery_key, args.qr)
    return Exit.OK


def _credentials(
    args: argparse.Namespace, src: str | BinaryIO, dst: str | BinaryIO, *, encrypting: bool
) -> tuple[Callable[..., object], RecoveryKey | None]:
    """Reads the key or credentials (prompting if need be); returns what encrypts or decrypts
    ``src`` into ``dst`` with them (given ``threads`` and ``progress``), and the new recovery
    key to show once it is done."""
    if args.key_file:
        with open(args.key_file, "rb") as f:
            key = read_key_file(f.read())
        run = encrypt_file if encrypting else decrypt_file
        options = {"context": args.context.encode(), "algorithm": args.algorithm}
        return functools.partial(run, src, dst, key, **options), None
    if not encrypting:
        opening = recipient_options.read_opening_credential(args)
        return functools.partial(sealed.unseal_file, src, dst, **opening), None
    recovery_key = read_recovery_key(args)
    if args.new_recovery_key:
        recovery_key = RecoveryKey.generate()
    recipients = recipient_options.read_recipients(args)
    if args.no_password and recovery_key is None and not recipients:
        raise InvalidArgument("--no-password needs --new-recovery-key or a recovery key")
    password = recipient_options.sealing_password(args, recipients)
    seal = functools.partial(
        sealed.seal_file,
        src,
        dst,
        password=password,
        recovery_key=recovery_key,
        kdf=kdf_from_args(args),
        vault=vault_from_args(args, has_recovery_key=recovery_key is not None),
        algorithm=args.algorithm,
        recipients=recipients,
    )
    return seal, recovery_key if args.new_recovery_key else None


def _decrypt_to_stream(args: argparse.Namespace, src: str | BinaryIO) -> int:
    """``decrypt SRC -`` into a pipe, terminal or socket. By default the plaintext is held in
    memory (up to --pipe-buffer MiB) and written only once the final chunk authenticated, so a
    truncated or altered file releases nothing. --stream writes as chunks authenticate, as age
    does; a failure then says the bytes already written are not authentic."""
    out = sys.stdout.buffer
    if args.stream:
        try:
            return _transform_to(args, src, out, encrypting=False)
        except E2EBackupError:
            print(
                "e2ebackup: --stream: any output already written is not authentic (the "
                "file failed to authenticate after it): discard it",
                file=sys.stderr,
            )
            raise
    if args.pipe_buffer <= 0:
        raise InvalidArgument("--pipe-buffer must be at least 1 (MiB)")
    held = HeldOutput(args.pipe_buffer << 20)
    try:
        if isinstance(src, str) and os.path.getsize(src) > held.limit:
            raise OutputTooLarge(held.limit)  # known before reading: fail at once
        _transform_to(args, src, held, encrypting=False)
        held.release(out)
    finally:
        held.wipe()
    return Exit.OK


class SealedFileKeys:
    """The key slots of one sealed file, for ``key`` and ``rotate``. Each change unlocks the
    header with the command's credential and rewrites the file atomically. Messages go to
    standard error, as the file commands' do (their standard output may carry data)."""

    noun = "file"
    messages_to_stderr = True

    def __init__(self, path: str, args: argparse.Namespace):
        self.path = path
        self._args = args
        self._unlock: dict[str, Any] | None = None

    def open(self) -> None:
        """Reads the credential; each change below unlocks the header with it."""
        self._credential()

    def _credential(self) -> dict[str, Any]:
        """The credential, read once: the recovery key if one is given, else the password."""
        if self._unlock is None:
            recovery_key = read_recovery_key(self._args)
            self._unlock = (
                {"recovery_key": recovery_key}
                if recovery_key is not None
                else {"password": read_password(self._args)}
            )
        return self._unlock

    def slots(self) -> list[dict[str, object]]:
        return sealed.list_slots(self.path)

    def check(self) -> None:
        sealed.check(self.path, **self._credential())

    def add_password(self, new: Password, label: str) -> None:
        sealed.add_password(self.path, new, label=label, **self._credential())

    def add_recovery_key(self, key: RecoveryKey, label: str) -> None:
        sealed.add_recovery_key(self.path, new_recovery_key=key, label=label, **self._credential())

    def remove(self, index: int) -> None:
        sealed.remove_slot(self.path, index, **self._credential())

    def current_password(self) -> Password:
        password = self._credential().get("password")
        if not isinstance(password, Password):
            raise InvalidArgument("key passwd needs the current password")
        return password

    def change_password(self, old: Password, new: Password) -> None:
        sealed.change_password(self.path, old, new)

    def has_recovery_key_slot(self) -> bool:
        return any(s["kind"] == "recovery-key" for s in self.slots())

    def rotate(
        self,
        password: Password | None,
        recovery_key: RecoveryKey | None,
        new_recovery_key: RecoveryKey | None,
    ) -> tuple[dict[str, Any], str]:
        sealed.rotate(
            self.path,
            password=password,
            recovery_key=recovery_key,
            new_recovery_key=new_recovery_key,
        )
        kinds = [str(s["kind"]) for s in self.slots()]
        value = {"file": self.path, "slots": kinds}
        return value, f"rotated: new data key; slots: {', '.join(kinds)}"


KEYGEN = Command(
    "keygen",
    "make a new random 256-bit key (64 hex digits, usable as a recovery key)",
    _register_keygen,
    _keygen,
)
ENCRYPT = Command(
    "encrypt",
    "encrypt one file: sealed with a password and/or recovery key, or with -k KEYFILE",
    _register_encrypt,
    _encrypt,
)
DECRYPT = Command(
    "decrypt",
    "decrypt one file: sealed with a password and/or recovery key, or with -k KEYFILE",
    _register_decrypt,
    _decrypt,
)
