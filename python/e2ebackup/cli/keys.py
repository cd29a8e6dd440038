"""``key`` and ``rotate``: one implementation for both kinds of target. The target is chosen
once (a sealed FILE, else the repository of ``-r``) and offers the same operations; the
commands below never ask which kind it is."""

from __future__ import annotations

import argparse
import json
from typing import Any, Protocol

from e2ebackup.cli.common import Command, Exit, out
from e2ebackup.cli.credentials import (
    add_password_options,
    add_recovery_key_options,
    new_password,
    read_password,
    read_recovery_key,
    show_recovery_key,
)
from e2ebackup.cli.repo import RepositoryKeys
from e2ebackup.cli.sealed import SealedFileKeys
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import Password, RecoveryKey


class KeyTarget(Protocol):
    """What ``key`` and ``rotate`` do to a sealed file or a repository."""

    noun: str  # "file" or "repository", for messages
    messages_to_stderr: bool

    def open(self) -> None: ...
    def slots(self) -> list[dict[str, object]]: ...
    def check(self) -> None: ...
    def add_password(self, new: Password, label: str) -> None: ...
    def add_recovery_key(self, key: RecoveryKey, label: str) -> None: ...
    def remove(self, index: int) -> None: ...
    def current_password(self) -> Password: ...
    def change_password(self, old: Password, new: Password) -> None: ...
    def has_recovery_key_slot(self) -> bool: ...
    def rotate(
        self,
        password: Password | None,
        recovery_key: RecoveryKey | None,
        new_recovery_key: RecoveryKey | None,
    ) -> tuple[dict[str, Any], str]: ...


def _target(args: argparse.Namespace) -> KeyTarget:
    if args.file is not None:
        return SealedFileKeys(args.file, args)
    return RepositoryKeys(args)


def _add_target_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("file", metavar="FILE", nargs="?", help="a sealed file, or use -r REPO")
    cmd.add_argument("-r", "--repo", help="a repository (or $E2EBACKUP_REPOSITORY)")
    cmd.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.add_argument("-q", "--quiet", action="store_true", help="no messages")
    add_password_options(cmd)
    add_recovery_key_options(cmd)


_ACTIONS = (
    ("list", "show the key slots (nothing secret)"),
    ("check", "check that the password or recovery key opens the file"),
    ("add", "add a password or a new recovery key"),
    ("remove", "remove a key slot (never the last)"),
    ("passwd", "change a password (rewrites only its slot)"),
)


def _register_key(key: argparse.ArgumentParser) -> None:
    actions = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    for action, text in _ACTIONS:
        cmd = actions.add_parser(action, help=text)
        _add_target_options(cmd)
        if action in ("add", "passwd"):
            cmd.add_argument("--new-password-file", metavar="FILE", help="the new password")
        if action == "add":
            cmd.add_argument(
                "--new-recovery-key", action="store_true", help="add a new recovery key, shown once"
            )
            cmd.add_argument("--qr", metavar="PATH", help="QR code of the new recovery key")
            cmd.add_argument("--label", default="", help="a name for the new slot (`key list`)")
        if action == "remove":
            cmd.add_argument("--slot", type=int, required=True, help="index from `key list`")


def _describe(index: int, slot: dict[str, object]) -> str:
    detail = f"  {slot['kdf']}" if slot["kdf"] else ""
    if isinstance(vault := slot.get("vault"), dict):
        detail = f"  {vault['url']}  key {str(vault['public_key'])[:16]}"
    label = f"  {slot['label']!r}" if slot["label"] else ""
    return f"{index}  {slot['kind']:<13} {slot['created']}{detail}{label}"


def _key(args: argparse.Namespace) -> int:
    target = _target(args)
    action = args.key_command
    if action == "list":
        slots = target.slots()
        if args.json:
            print(json.dumps(slots, indent=2, default=str))
        else:
            for i, slot in enumerate(slots):
                print(_describe(i, slot))
        return Exit.OK
    target.open()
    if action == "check":
        target.check()
        text = f"ok: the credential opens this {target.noun}"
        out(args, {"ok": True}, text, to_stderr=target.messages_to_stderr)
    elif action == "remove":
        target.remove(args.slot)
    elif action == "passwd":
        old = target.current_password()
        target.change_password(old, new_password(args))
    elif args.new_recovery_key:
        new_key = RecoveryKey.generate()
        target.add_recovery_key(new_key, args.label)
        show_recovery_key(new_key, args.qr)
    else:
        target.add_password(new_password(args), args.label)
    return Exit.OK


def _register_rotate(rotate: argparse.ArgumentParser) -> None:
    _add_target_options(rotate)
    rotate.add_argument("--to", metavar="REPO", help="the new repository (a new location)")
    rotate.add_argument(
        "--new-recovery-key", action="store_true", help="a new recovery key, shown once"
    )
    rotate.add_argument("--qr", metavar="PATH", help="QR code of the new recovery key")
    rotate.add_argument(
        "--no-password", action="store_true", help="keep only the recovery-key slot"
    )


def _rotate(args: argparse.Namespace) -> int:
    target = _target(args)
    if args.file is None and not args.to:
        raise InvalidArgument("rotating a repository needs --to NEW_LOCATION")
    # The new data key gets the old one's kinds of credential (keyring.policy.rotate): a vault
    # stays a vault; a recovery-key slot cannot move to a new data key, so without the old
    # recovery key a new one is made and shown.
    had_recovery_key = target.has_recovery_key_slot()  # a repository is opened here
    recovery_key = read_recovery_key(args)
    made = None
    if args.new_recovery_key or (recovery_key is None and had_recovery_key):
        made = RecoveryKey.generate()
    password = None if args.no_password else read_password(args)
    value, text = target.rotate(password, recovery_key, made)
    if made is not None:
        value["recovery_key"] = made.reveal()
        if not args.json:
            show_recovery_key(made, args.qr)
    out(args, value, text, to_stderr=target.messages_to_stderr)
    return Exit.OK


KEY = Command(
    "key", "list, add, remove or change the key slots of a file or repository", _register_key, _key
)
ROTATE = Command(
    "rotate",
    "re-encrypt a sealed file under a new data key (streaming), or a repository into --to",
    _register_rotate,
    _rotate,
    interrupted="interrupted; the original is unchanged (a half-made --to repository may be "
    "left: delete it)",
)
