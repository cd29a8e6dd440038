"""Recipient keys on the command line: ``keygen --identity`` makes an identity file and prints
its recipient; ``encrypt -r/--recipient R`` and ``-R/--recipients-file FILE`` seal to public
keys (no password asked unless one is given); ``decrypt -i/--identity FILE`` opens with one.

Identity files are secrets: written 0600, never over an existing file, and optionally sealed
with a password (``keygen --identity --seal``, then the password options or a prompt).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from e2ebackup.cli.credentials import PASSWORD_ENV, read_password, read_recovery_key
from e2ebackup.errors import InvalidArgument
from e2ebackup.identity_file import is_sealed_identity, load_identity, save_identity
from e2ebackup.keys import Password
from e2ebackup.recipients import Identity, Recipient, parse_recipients

# A recipients file is one line per recipient (about 2 KB each): more than this is not one.
MAX_RECIPIENTS_FILE = 1 << 20


def add_keygen_options(keygen: argparse.ArgumentParser) -> None:
    keygen.add_argument(
        "--identity",
        action="store_true",
        help="make a recipient key pair instead: an identity (secret, to -o FILE) and its "
        "recipient (public, printed)",
    )
    keygen.add_argument(
        "--seal",
        action="store_true",
        help="with --identity: seal the identity file with a password (password options)",
    )


def add_encrypt_options(
    cmd: argparse.ArgumentParser, *, short: str | None = "-r", recipient_help: str | None = None
) -> None:
    """``--recipient`` (short flag ``short``: None where ``-r`` names the repository) and
    ``-R/--recipients-file``, read by :func:`read_recipients`."""
    flags = [short, "--recipient"] if short else ["--recipient"]
    cmd.add_argument(
        *flags,
        action="append",
        default=[],
        metavar="RECIPIENT",
        help=recipient_help
        or "also seal to this public key (e2ebackup1...); repeatable; no password is asked "
        "unless a password option is given",
    )
    cmd.add_argument(
        "-R",
        "--recipients-file",
        action="append",
        default=[],
        metavar="FILE",
        help="seal to every recipient in FILE (one per line, # comments); repeatable",
    )


def add_decrypt_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "-i",
        "--identity",
        metavar="FILE",
        help="open with this identity file (a sealed one asks for its password)",
    )


def read_recipients(args: argparse.Namespace) -> list[Recipient]:
    recipients = [Recipient.parse(text) for text in getattr(args, "recipient", None) or []]
    for path in getattr(args, "recipients_file", None) or []:
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPIENTS_FILE + 1)
        if len(data) > MAX_RECIPIENTS_FILE:
            raise InvalidArgument(f"{path}: a recipients file is at most 1 MiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"{path}: a recipients file is text") from None
        recipients += parse_recipients(text)
    return recipients


def password_given(args: argparse.Namespace) -> bool:
    """Whether a password was given without a prompt (a writer sealing to recipients is asked
    for none)."""
    return bool(
        getattr(args, "password_file", None)
        or getattr(args, "password_fd", None) is not None
        or os.environ.get(PASSWORD_ENV)
    )


def read_identity(args: argparse.Namespace) -> Identity | None:
    path = getattr(args, "identity", None)
    if not path:
        return None
    if is_sealed_identity(path):
        return load_identity(path, password=read_password(args, prompt="Identity password: "))
    return load_identity(path)


def read_opening_credential(args: argparse.Namespace) -> dict[str, Any]:
    """What opens a sealed file, read once in the unlock order: a recovery key, else an
    identity, else a password (prompted for if need be); as the keyword arguments of
    ``unseal_file`` and ``decrypt_files``."""
    recovery_key = read_recovery_key(args)
    identity = None if recovery_key else read_identity(args)
    password = None if recovery_key or identity else read_password(args)
    return {"password": password, "recovery_key": recovery_key, "identity": identity}


def sealing_password(args: argparse.Namespace, recipients: list[Recipient]) -> Password | None:
    """The password slot of a new sealed file: none with ``--no-password``, nor when it is
    sealed to recipients and no password was given (a writer is asked for none); else the
    password, read and confirmed."""
    if args.no_password or (recipients and not password_given(args)):
        return None
    return read_password(args, confirm=True)


def keygen_identity(args: argparse.Namespace) -> int:
    """``keygen --identity``: the identity to ``-o FILE`` (standard output if none and not
    sealed), its recipient on standard output, or standard error if the identity went there."""
    identity = Identity.generate()
    recipient = str(identity.recipient)
    if args.seal and not args.output:
        raise InvalidArgument("--seal needs -o FILE")
    if args.qr:
        # The 64 digits of the identity: the paper copy, like a recovery key's.
        sys.stderr.write(
            f"Identity (secret; opens what is sealed to it):\n\n    {identity.reveal()}\n\n"
        )
        if args.qr == "-":
            raise InvalidArgument("--identity --qr needs a file name (PATH.png or PATH.svg)")
        identity.save_qr(args.qr)
    if not args.output:
        sys.stdout.write(identity.secret() + "\n")
        sys.stderr.write(f"Public key: {recipient}\n")
        return 0
    if os.path.lexists(args.output):
        raise FileExistsError(f"{args.output} exists; an identity file is never replaced")
    password = read_password(args, confirm=True) if args.seal else None
    save_identity(identity, args.output, password=password)
    sys.stdout.write(recipient + "\n")
    return 0
