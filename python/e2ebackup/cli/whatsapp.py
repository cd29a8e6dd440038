"""``e2ebackup whatsapp``: open, write and inspect WhatsApp crypt15 backups.

KEY is always a file (``encrypted_backup.key``, a file holding the 64 digits, or a crypt14 ``key``
file), or ``-``: the 64 digits from ``$E2EBACKUP_WHATSAPP_KEY``, else from standard input (a
prompt without echo on a terminal). Never on the command line, where other users can read it.
Errors propagate to :func:`e2ebackup.cli.main`, which turns them into its exit codes.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable

from e2ebackup import whatsapp
from e2ebackup.cli.common import Command, count, refuse_existing
from e2ebackup.cli.progress import byte_progress, regular_size
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import read_key_file

_KEY_HELP = (
    "key file: encrypted_backup.key, a file holding the 64 digits, or a crypt14 'key' file; "
    f"or - for ${whatsapp.KEY_ENV}, else standard input"
)


def _register(wa: argparse.ArgumentParser) -> None:
    """Adds the actions of ``whatsapp``."""
    actions = wa.add_subparsers(dest="whatsapp_action", required=True, metavar="ACTION")

    dec = actions.add_parser(
        "decrypt",
        help="decrypt a .crypt15 (or .crypt14) backup into its SQLite database",
        description="Decrypts a backup. OUT appears only once the backup authenticated; "
        "it is plaintext (mode 0600): see 'import' to keep it encrypted instead.",
    )
    _common(dec)
    dec.add_argument(
        "--raw", action="store_true", help="write the payload as stored (zlib), not inflated"
    )

    imp = actions.add_parser(
        "import",
        help="decrypt a backup straight into an e2ebackup-encrypted file (no plaintext on disk)",
        description="Decrypts a backup and re-encrypts the database on the fly with an "
        "e2ebackup key file: OUT opens with 'e2ebackup decrypt -k E2E_KEY_FILE OUT DB'.",
    )
    _common(imp)
    imp.add_argument(
        "-k", "--key-file", required=True, metavar="E2E_KEY_FILE", help="e2ebackup key file"
    )
    imp.add_argument("--context", default="", help="context string bound to the message")

    enc = actions.add_parser(
        "encrypt",
        help="write a SQLite database as a .crypt15 backup WhatsApp can restore",
        description="Writes a crypt15 backup. Give --reference (an original backup of the "
        "same phone) to copy its app version, phone suffix and feature flags.",
    )
    _common(enc)
    enc.add_argument("--reference", metavar="FILE", help="copy the prefix info of this backup")
    enc.add_argument("--app-version", help=f"default {whatsapp.DEFAULT_APP_VERSION}")
    enc.add_argument("--jid-suffix", help="last two digits of the phone number (default 00)")
    enc.add_argument("--level", type=int, default=2, help="zlib level 0-9 (default 2)")
    enc.add_argument(
        "--multi-file", action="store_true", help="IN is a ZIP (stickers, wallpapers): no MD5"
    )

    info = actions.add_parser(
        "info", help="show a backup's cleartext prefix (no key needed, nothing secret)"
    )
    info.add_argument("src", metavar="IN", help="the backup")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument(
        "--check", action="store_true", help="also verify the MD5 checksum (reads the file)"
    )


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("key", metavar="KEY", help=_KEY_HELP)
    cmd.add_argument("src", metavar="IN", help="input file")
    cmd.add_argument("dst", metavar="OUT", help="output file")
    cmd.add_argument("--force", action="store_true", help="replace an existing OUT")
    cmd.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")


def read_key(spec: str) -> whatsapp.WhatsAppKey:
    """KEY: a key file, or ``-`` for the environment variable, else standard input."""
    if spec != "-":
        with open(spec, "rb") as f:
            return whatsapp.parse_key(f.read(4096))
    text = os.environ.get(whatsapp.KEY_ENV, "")
    if text.strip():
        return whatsapp.parse_key(text)
    if sys.stdin.isatty():
        return whatsapp.parse_key(getpass.getpass("WhatsApp 64-digit key: "))
    data = sys.stdin.buffer.read(4096)
    if not data.strip():
        raise InvalidArgument(f"no key: standard input is empty and ${whatsapp.KEY_ENV} unset")
    return whatsapp.parse_key(data)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return count(n, "byte")


def _check_output(args: argparse.Namespace) -> None:
    refuse_existing(args.dst, args.force)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def _describe(result: whatsapp.DecryptResult) -> str:
    what = {"zlib": "database", "zip": "ZIP archive (multi-file backup)", "raw": "payload"}
    version = f", WhatsApp {result.info.app_version}" if result.info.app_version else ""
    return (
        f"{_size(result.output_length)} {what.get(result.payload, 'payload')} from a "
        f"{result.info.version} backup{version}"
    )


def _decrypt(args: argparse.Namespace) -> int:
    key = read_key(args.key)
    _check_output(args)
    with byte_progress(args, "whatsapp decrypt", regular_size(args.src)) as progress:
        result = whatsapp.decrypt_crypt15(
            args.src, args.dst, key, decompress=not args.raw, progress=progress
        )
    _say(args, f"{args.dst}: {_describe(result)} (plaintext, mode 0600)")
    return 0


def _import(args: argparse.Namespace) -> int:
    key = read_key(args.key)
    with open(args.key_file, "rb") as f:
        e2e_key = read_key_file(f.read())
    _check_output(args)
    with byte_progress(args, "whatsapp import", regular_size(args.src)) as progress:
        result = whatsapp.import_crypt15(
            args.src, args.dst, key, e2e_key, context=args.context.encode(), progress=progress
        )
    _say(args, f"{args.dst}: {_describe(result)}, encrypted with {args.key_file}")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    key = read_key(args.key)
    _check_output(args)
    with byte_progress(args, "whatsapp encrypt", regular_size(args.src)) as progress:
        info = whatsapp.encrypt_crypt15(
            args.src,
            args.dst,
            key,
            reference=args.reference,
            app_version=args.app_version,
            jid_suffix=args.jid_suffix,
            level=args.level,
            multi_file=args.multi_file,
            progress=progress,
        )
    _say(args, f"{args.dst}: {_size(info.file_size)} crypt15 backup")
    return 0


def _ranges(numbers: tuple[int, ...]) -> str:
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out) or "none"


def _info(args: argparse.Namespace) -> int:
    info = whatsapp.read_crypt15_info(args.src, check=args.check)
    if args.json:
        print(json.dumps({"file": args.src, **info.as_dict()}, indent=2))
        return 0
    key_types = {0: "0 (server-provided key)", 1: "1 (64-digit key / HSM)"}
    checksum = {True: "ok", False: "no valid MD5 (damaged, or a multi-file backup)"}
    rows = [
        ("file", f"{args.src} ({_size(info.file_size)})"),
        ("format", info.version),
        ("key type", key_types.get(info.key_type or 0, str(info.key_type))),
        ("app version", info.app_version or "-"),
        ("phone ends in", info.jid_suffix or "-"),
        ("backup version", "-" if info.backup_version is None else str(info.backup_version)),
        ("features", _ranges(info.features)),
        ("IV", info.iv.hex()),
        ("header", f"{info.header_length} bytes"),
        ("checksum", checksum[info.checksum] if info.checksum is not None else "not checked"),
    ]
    if info.key_type_v2 is not None:
        rows.append(("key type (field 6)", str(info.key_type_v2)))
    if info.unknown_fields:
        rows.append(("unknown fields", ", ".join(map(str, info.unknown_fields))))
    if info.crypt14:
        for field_name, raw in info.crypt14.items():
            rows.append((field_name.replace("_", " "), raw.hex()))
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name + ':':<{width + 2}}{text}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Runs ``e2ebackup whatsapp ACTION``; errors propagate to the caller's handler."""
    action: Callable[[argparse.Namespace], int] = {
        "decrypt": _decrypt,
        "import": _import,
        "encrypt": _encrypt,
        "info": _info,
    }[args.whatsapp_action]
    return action(args)


WHATSAPP = Command(
    "whatsapp",
    "decrypt, encrypt or inspect WhatsApp crypt15 backups (the 64-digit key)",
    _register,
    _run,
    description="WhatsApp's end-to-end encrypted local backups (msgstore.db.crypt15).",
)
