"""The ``e2ebackup`` command line: the parser, built from a table of subcommands, and
:func:`main`, which runs one and turns errors into exit codes (:class:`common.Exit`).

Keys and passwords are only ever read from files, file descriptors, the environment or a
prompt, never from the command line, where other users of the machine could see them.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
import typing
from collections.abc import Sequence

from e2ebackup.cli import browse, keys, repo, sealed, vault, whatsapp
from e2ebackup.cli.common import Command, Exit
from e2ebackup.errors import E2EBackupError, InvalidArgument, RepositoryLocked

# Every subcommand, in the order `--help` lists them.
TABLE: tuple[Command, ...] = (
    sealed.KEYGEN,
    sealed.ENCRYPT,
    sealed.DECRYPT,
    keys.KEY,
    repo.INIT,
    repo.BACKUP,
    browse.SNAPSHOTS,
    browse.LS,
    browse.FIND,
    browse.DIFF,
    browse.STATS,
    repo.RESTORE,
    repo.VERIFY,
    repo.FORGET,
    repo.WRITER,
    repo.TRUST,
    keys.ROTATE,
    vault.VAULT,
    whatsapp.WHATSAPP,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("e2ebackup")
    except PackageNotFoundError:
        return "unknown"


# The modules of each optional extra (pyproject.toml), named when one is missing.
EXTRAS = {
    "httpx": "vault",
    "starlette": "vault",
    "uvicorn": "vault",
    "psycopg": "vault",
    "boto3": "s3",
    "botocore": "s3",
    "distributed": "dask",
    "dask": "dask",
}

EPILOG = """\
exit codes:
  0    success
  1    the data did not authenticate or the credential is wrong (wrong key or password,
       tampered or truncated), a damaged repository, a held lock, `find` found nothing
  2    bad usage, a malformed key, or a missing extra (pip install 'e2ebackup[vault]')
  3    a file could not be read or written; a backup or restore left some out (a path
       given to backup that does not exist: nothing is saved)
  130  interrupted (Ctrl-C); the line printed says what was kept

environment:
  E2EBACKUP_PASSWORD       the password (else --password-file/--password-fd, or a prompt)
  E2EBACKUP_RECOVERY_KEY   the 64-digit recovery key (else --recovery-key-file)
  E2EBACKUP_REPOSITORY     the repository, as -r
  E2EBACKUP_EXPECT_HEAD    the head a new device expects, as --expect-head
  E2EBACKUP_VAULT_TOKEN    a key vault's registration token, as --vault-token-file
  E2EBACKUP_WHATSAPP_KEY   the WhatsApp 64-digit key, for KEY given as -
  E2EBACKUP_STATE_DIR      where this device keeps the heads it trusts
  AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE: s3:// storage
"""


class _Parser(argparse.ArgumentParser):
    """Suggests the closest name for a mistyped subcommand (`bakcup`: did you mean
    `backup`?), and records itself in the namespace, so that a bad option is reported with the
    usage of the subcommand it was given to (subcommands' parsers are of this class too, and
    their defaults override their parent's)."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(usage_of=self)

    def error(self, message: str) -> typing.NoReturn:
        wrong = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong[3])
            close = difflib.get_close_matches(wrong[2], choices, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"one of {', '.join(choices)}"
            what = "command" if wrong[1] in ("COMMAND", "ACTION") else wrong[1]
            message = f"unknown {what} '{wrong[2]}': {hint}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="e2ebackup",
        description="End-to-end encrypted backups and files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"e2ebackup {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in TABLE:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            aliases=list(command.aliases),
            description=command.description,
        )
        command.register(sub)
        sub.set_defaults(row=command)
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.usage_of.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


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
    args = parse(argv)
    row: Command = args.row
    if getattr(args, "vault_command", None) != "serve":  # a server logs itself
        _show_warnings()
    try:
        return int(row.run(args))
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"e2ebackup: {row.name} needs the {extra} extra ({e.name} is not installed): "
            f"pip install 'e2ebackup[{extra}]'",
            file=sys.stderr,
        )
        return Exit.USAGE
    except RepositoryLocked as e:
        hint = "; wait for it with --lock-wait SECONDS" if hasattr(args, "lock_wait") else ""
        print(f"e2ebackup: {e}{hint}", file=sys.stderr)
        return Exit.FAILED
    except InvalidArgument as e:
        print(f"e2ebackup: {e}", file=sys.stderr)
        return Exit.USAGE
    except E2EBackupError as e:
        print(f"e2ebackup: {e}", file=sys.stderr)
        return Exit.FAILED
    except OSError as e:
        print(f"e2ebackup: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return Exit.INCOMPLETE
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # after a progress line
        print(f"e2ebackup: {row.interrupted}", file=sys.stderr)
        return Exit.INTERRUPTED
