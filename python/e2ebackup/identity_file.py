"""Identity files: the secret line of an :class:`~e2ebackup.recipients.Identity`, with its
recipient as a comment, optionally sealed (a sealed file, docs/FORMAT.md) with a password.

Written like ``age-keygen`` writes keys: created with mode 0600 (never readable by others, not
even for an instant), complete or not at all, and never over an existing file.
"""

from __future__ import annotations

import builtins
import io
import os
import time

from e2ebackup import sealed
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import Password
from e2ebackup.paths import StrPath, atomic_output
from e2ebackup.recipients import Identity

__all__ = [
    "MAX_IDENTITY_FILE",
    "identity_text",
    "is_sealed_identity",
    "load_identity",
    "parse_identity_file",
    "save_identity",
]

# An identity file is a comment, a recipient and the secret line, or the same sealed: a larger
# file is refused before it is read.
MAX_IDENTITY_FILE = 64 * 1024


def identity_text(identity: Identity) -> bytes:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (
        f"# created: {created}\n# recipient: {identity.recipient}\n{identity.secret()}\n"
    ).encode("ascii")


def save_identity(
    identity: Identity, path: StrPath, *, password: str | bytes | Password | None = None
) -> None:
    """Writes ``identity`` to a new file ``path`` (``FileExistsError`` if it exists). With
    ``password`` the file is sealed: the password (or nothing) opens it."""
    data = identity_text(identity)
    if password is not None:
        out = io.BytesIO()
        sealed.seal_file(io.BytesIO(data), out, password=password)
        data = out.getvalue()
    with atomic_output(path, overwrite=False) as f:
        os.fchmod(f.fileno(), 0o600)  # already 0600 from its creation; stated, not assumed
        f.write(data)


def is_sealed_identity(path: StrPath) -> bool:
    with builtins.open(path, "rb") as f:
        return f.read(len(sealed.MAGIC)) == sealed.MAGIC


def load_identity(path: StrPath, *, password: str | bytes | Password | None = None) -> Identity:
    """Reads an identity file; a sealed one needs ``password``."""
    with builtins.open(path, "rb") as f:
        data = f.read(MAX_IDENTITY_FILE + 1)
    return parse_identity_file(data, password=password)


def parse_identity_file(data: bytes, *, password: str | bytes | Password | None = None) -> Identity:
    if len(data) > MAX_IDENTITY_FILE:
        raise InvalidArgument("an identity file is at most 64 KiB")
    if data.startswith(sealed.MAGIC):
        if password is None:
            raise InvalidArgument("this identity file is sealed: a password is needed")
        out = io.BytesIO()
        sealed.unseal_file(io.BytesIO(data), out, password=password)
        data = out.getvalue()
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise InvalidArgument("an identity file is ASCII text") from None
    secrets = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if len(secrets) != 1:
        raise InvalidArgument(f"an identity file holds one secret key line, not {len(secrets)}")
    return Identity.parse(secrets[0])
