"""The vault's part of the command line: ``e2ebackup vault serve``, ``e2ebackup vault
reset-count`` and ``encrypt --vault`` / ``init --vault``.

The server's and client's dependencies (the ``vault`` extra) load only when a vault command
runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from e2ebackup import sealed
from e2ebackup.cli.common import REPOSITORY_ENV, Command, storage_location
from e2ebackup.cli.credentials import add_password_options, read_password
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import open_storage

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

__all__ = ["VAULT", "add_encrypt_options", "vault_from_args"]


def _register(vault: argparse.ArgumentParser) -> None:
    actions = vault.add_subparsers(dest="vault_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve the vault's HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8731, help="port (8731)")
    serve.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="the server key file (vault-server.key, 0600) and, without --database-url, the "
        "SQLite database",
    )
    serve.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://... : several vault processes share one database",
    )
    serve.add_argument(
        "--max-attempts", type=int, default=10, help="wrong passwords before a key is deleted"
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    serve.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    serve.add_argument(
        "--registration-token-file",
        metavar="FILE",
        help="admit only registrations that bear the token in FILE (mode 0600); logins need none",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the server's log detail (default info)",
    )
    reset = actions.add_parser(
        "reset-count",
        help="after failed attempts you know were yours: log in with the password and give the "
        "vault's attempts back",
    )
    reset.add_argument("file", metavar="FILE", nargs="?", help="a sealed file, or use -r REPO")
    reset.add_argument("-r", "--repo", help="a repository (or $E2EBACKUP_REPOSITORY)")
    reset.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
    add_password_options(reset)


def add_encrypt_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--vault",
        metavar="URL",
        help="hold the password in this key vault: a guess limit instead of offline guessing",
    )
    cmd.add_argument(
        "--vault-public-key",
        metavar="HEX",
        help="the vault's public key to pin (else the key the vault shows is trusted once)",
    )
    cmd.add_argument(
        "--vault-token-file",
        metavar="FILE",
        help="the vault's registration token, if it asks for one (or E2EBACKUP_VAULT_TOKEN)",
    )


def _run(args: argparse.Namespace) -> int:
    if args.vault_command == "reset-count":
        return _reset_count(args)
    from e2ebackup.vault.server import serve

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("e2ebackup: --tls-cert and --tls-key go together")
    serve(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        database_url=args.database_url,
        max_attempts=args.max_attempts,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        registration_token_file=args.registration_token_file,
        log_level=args.log_level,
    )
    return 0


def _reset_count(args: argparse.Namespace) -> int:
    """One verified login at each vault slot's vault, which gives back every attempt no other
    login holds; the released key is checked against the container as at every unlock."""
    from e2ebackup.vault.client import watch_unlocks

    if args.file is not None:
        if not any(slot["kind"] == "vault" for slot in sealed.list_slots(args.file)):
            raise InvalidArgument(f"{args.file} has no vault slot: there is no count to reset")
        with watch_unlocks(reset_count=True) as reports:
            sealed.check(args.file, password=read_password(args))
    else:
        if not (args.repo or os.environ.get(REPOSITORY_ENV)):
            raise InvalidArgument(f"give a FILE, or a repository with -r or ${REPOSITORY_ENV}")
        storage = open_storage(storage_location(args), s3_endpoint=args.s3_endpoint)
        with watch_unlocks(reset_count=True) as reports:
            Repository.open(storage, password=read_password(args))
    if not reports:
        raise InvalidArgument("the password opened no vault slot: there is no count to reset")
    for report in reports:
        sys.stderr.write(f"e2ebackup: {report.describe()}\n")
    return 0


def vault_from_args(args: argparse.Namespace, *, has_recovery_key: bool) -> VaultClient | None:
    """The client for ``encrypt --vault URL``, or None without it."""
    url = getattr(args, "vault", None)
    if not url:
        return None
    from e2ebackup.vault.client import VaultClient

    token = None
    if args.vault_token_file:
        try:
            with open(args.vault_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"e2ebackup: cannot read {args.vault_token_file}: {e}") from None
    client = VaultClient(url, args.vault_public_key, registration_token=token)
    if not has_recovery_key:  # once the client could be made (the vault extra is installed)
        sys.stderr.write(
            "e2ebackup: warning: no recovery key; if the vault is lost or deletes the key after "
            "too many wrong passwords, the data is lost too (add --new-recovery-key)\n"
        )
    return client


VAULT = Command(
    "vault", "run a key vault: passwords with a guess limit (docs/VAULT.md)", _register, _run
)
