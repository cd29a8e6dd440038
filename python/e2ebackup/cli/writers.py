"""Writers that cannot read, on the command line (docs/FORMAT.md, Writers that cannot read):
``e2ebackup writer -r REPO -o FILE`` issues a writer token (to a file, mode 0600), and
``e2ebackup backup --writer-token FILE PATH...`` backs up with it, holding no key that reads.
The ``writer`` command's table row is cli.repo's (it takes the repository options).
"""

from __future__ import annotations

import argparse
import os
import sys

from e2ebackup.cli.common import Exit, open_repo, out
from e2ebackup.errors import InvalidArgument
from e2ebackup.paths import atomic_output
from e2ebackup.repo import WriterToken

# A token is about 2,100 characters: a longer file is not one.
MAX_TOKEN_FILE = 8192
TOKEN_FILE_ENV = "E2EBACKUP_WRITER_TOKEN_FILE"  # noqa: S105 (a variable name)


def add_writer_token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--writer-token",
        metavar="FILE",
        help="back up as a writer that cannot read (a token from `e2ebackup writer`): no "
        f"password or key is asked, and nothing stored can be read back (or ${TOKEN_FILE_ENV})",
    )
    parser.add_argument(
        "--no-file-list",
        action="store_true",
        help="with --writer-token: keep no list of the files backed up on this device (the "
        "next backup reads every file again)",
    )


def read_writer_token(args: argparse.Namespace) -> WriterToken | None:
    path = getattr(args, "writer_token", None) or os.environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    with open(path, "rb") as f:
        data = f.read(MAX_TOKEN_FILE + 1)
    if len(data) > MAX_TOKEN_FILE:
        raise InvalidArgument(f"{path} is not a writer token (too long)")
    lines = [
        line.strip()
        for line in data.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if len(lines) != 1:
        raise InvalidArgument(f"{path} is not a writer token (one E2EBACKUP-WRITER-1... line)")
    return WriterToken.parse(lines[0])


def add_writer_options(w: argparse.ArgumentParser) -> None:
    """``writer``'s own options (the repository options are added by cli.repo)."""
    w.add_argument(
        "-o",
        "--output",
        help="write the token to this new file (mode 0600); without it, standard output",
    )


def issue_writer(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    token = repo.issue_writer_token()
    text = token.secret()
    if args.output:
        if os.path.lexists(args.output):
            raise FileExistsError(f"{args.output} exists; a writer token is never replaced")
        with atomic_output(args.output, overwrite=False) as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(
                f"# e2ebackup writer token for repository {repo.id} (writer "
                f"{token.writer_id.hex()}): it backs up, it reads nothing; keep it secret\n"
                f"{text}\n".encode()
            )
    elif not args.json:
        sys.stdout.write(text + "\n")
    value = {
        "repository": repo.id,
        "writer": token.writer_id.hex(),
        "recipient": str(token.recipient),
        "token_file": args.output,
    }
    if args.json and not args.output:
        value["token"] = text
    out(
        args,
        value,
        f"writer {token.writer_id.hex()[:8]} of repository {repo.id[:8]}: token in "
        f"{args.output or 'standard output'}; `e2ebackup backup --writer-token FILE PATH...` "
        "backs up with it",
        to_stderr=True,
    )
    return Exit.OK
