"""What every command of the command line shares: the exit codes (defined here only), the
shape of a subcommand, output (``--json``, ``--quiet``; progress bars are ``progress``'s) and
opening a repository."""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2ebackup.cli.recipients import read_opening_credential
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import Storage, open_storage

REPOSITORY_ENV = "E2EBACKUP_REPOSITORY"
EXPECT_HEAD_ENV = "E2EBACKUP_EXPECT_HEAD"


class Exit(enum.IntEnum):
    """The process's exit status (README, "Command line" and "Backups")."""

    OK = 0
    FAILED = 1  # the data did not authenticate, a wrong credential, any other e2ebackup error
    USAGE = 2  # bad usage or a malformed key
    INCOMPLETE = 3  # a file could not be read or written; a backup or restore left some out
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


@dataclass(frozen=True)
class Command:
    """One row of the subcommand table (``e2ebackup.cli.main.TABLE``): its name and help, what
    adds its options to its parser, and what runs it."""

    name: str
    help: str
    register: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = ()
    description: str | None = None
    #: What Ctrl-C leaves, said in one line before exit 130.
    interrupted: str = "interrupted; nothing was changed"


def count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``: the noun agrees with the number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def refuse_existing(path: str, force: bool) -> None:
    if os.path.lexists(path) and not force:
        raise FileExistsError(f"{path} exists; use --force to replace it")


def out(args: argparse.Namespace, value: Any, text: str, *, to_stderr: bool = False) -> None:
    """``value`` as JSON on standard output with ``--json``; else ``text`` unless ``--quiet``
    (on standard error for the commands whose standard output may carry data)."""
    if getattr(args, "json", False):
        print(json.dumps(value, indent=2, default=str))
    elif not getattr(args, "quiet", False):
        print(text, file=sys.stderr if to_stderr else sys.stdout)


def storage_location(args: argparse.Namespace) -> str:
    location = getattr(args, "repo", None) or os.environ.get(REPOSITORY_ENV)
    if not location:
        raise InvalidArgument(f"no repository given: use -r/--repo or ${REPOSITORY_ENV}")
    return str(location)


def storage_of(
    args: argparse.Namespace, location: str | None = None, *, create: bool = False
) -> Storage:
    """The storage at ``location`` (else ``-r``/``$E2EBACKUP_REPOSITORY``) with the
    command's endpoint and bandwidth options."""
    return open_storage(
        location or storage_location(args),
        create=create,
        s3_endpoint=getattr(args, "s3_endpoint", None),
        limit_upload=getattr(args, "limit_upload", None),
        limit_download=getattr(args, "limit_download", None),
    )


def open_repo(args: argparse.Namespace) -> Repository:
    """The repository of ``-r``, opened with the recovery key if one is given, else the
    identity (``-i FILE``), else the password."""
    storage = storage_of(args)
    repo = Repository.open(storage, **read_opening_credential(args))
    repo.no_lock = bool(getattr(args, "no_lock", False))
    repo.expect_head = getattr(args, "expect_head", None) or os.environ.get(EXPECT_HEAD_ENV)
    repo.on_missing_snapshot = lambda text: print(f"e2ebackup: warning: {text}", file=sys.stderr)
    return repo
