"""Where the command line gets secrets from: never argv (other users can read it).

Passwords: ``--password-file FILE``, ``--password-fd N``, ``E2EBACKUP_PASSWORD``, or a prompt
on the terminal. Recovery keys: ``--recovery-key-file FILE`` or ``E2EBACKUP_RECOVERY_KEY``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import Argon2idParams, KdfParams, Password, RecoveryKey, ScryptParams

PASSWORD_ENV = "E2EBACKUP_PASSWORD"  # noqa: S105 - the variable's name, not a password
RECOVERY_KEY_ENV = "E2EBACKUP_RECOVERY_KEY"


def add_password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("password (else $E2EBACKUP_PASSWORD, else a prompt)")
    group.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    group.add_argument("--password-fd", metavar="N", type=int, help="read the password from fd N")


def add_recovery_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recovery-key-file",
        metavar="FILE",
        help="read a 64-digit recovery key from FILE (or set $E2EBACKUP_RECOVERY_KEY)",
    )


def add_kdf_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kdf",
        choices=["argon2id", "scrypt"],
        default="argon2id",
        help="how the password slot is derived (default argon2id)",
    )


def kdf_from_args(args: argparse.Namespace) -> KdfParams:
    """The default parameters of the chosen KDF (``--kdf``)."""
    return ScryptParams() if args.kdf == "scrypt" else Argon2idParams()


def _read_file(path: str, what: str) -> str:
    """A secret's file; an error names which file it was (`--password-file /nope`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise type(e)(e.errno, f"cannot read {what}: {e.strerror}", path) from None


def _strip_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def _prompt(prompt: str, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise InvalidArgument(
            f"no password given: use --password-file, --password-fd or ${PASSWORD_ENV}"
        )
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != first:
        raise InvalidArgument("the passwords do not match")
    return first


def read_password(
    args: argparse.Namespace, *, confirm: bool = False, prompt: str = "Password: "
) -> Password:
    """The password, normalised here, where it enters (keys.Password); never from argv."""
    if getattr(args, "password_file", None):
        password = _strip_newline(_read_file(args.password_file, "the password file"))
    elif getattr(args, "password_fd", None) is not None:
        with os.fdopen(args.password_fd, encoding="utf-8", closefd=False) as f:
            password = _strip_newline(f.readline())
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password = _prompt(prompt, confirm)
    if not password:
        raise InvalidArgument("the password must not be empty")
    return Password(password)


def new_password(args: argparse.Namespace) -> Password:
    """The new password of ``key add``/``key passwd``: ``--new-password-file``, else a prompt
    (twice)."""
    if args.new_password_file:
        return Password(_strip_newline(_read_file(args.new_password_file, "the new password file")))
    return read_password(argparse.Namespace(), confirm=True, prompt="New password: ")


def read_recovery_key(args: argparse.Namespace) -> RecoveryKey | None:
    if getattr(args, "recovery_key_file", None):
        return RecoveryKey.parse(_read_file(args.recovery_key_file, "the recovery key file"))
    if os.environ.get(RECOVERY_KEY_ENV):
        return RecoveryKey.parse(os.environ[RECOVERY_KEY_ENV])
    return None


def show_recovery_key(key: RecoveryKey, qr: str | None) -> None:
    """Shows a new recovery key once, on standard error (standard output may carry data)."""
    sys.stderr.write(
        "Your recovery key (write it down; it is shown only once and opens the data without "
        f"the password):\n\n    {key.reveal()}\n\n"
    )
    if qr == "-":
        sys.stderr.write(key.qr_terminal())
    elif qr:
        key.save_qr(qr)  # created 0600: it opens the data as the key does
        sys.stderr.write(f"QR code written to {qr}\n")
