"""One file in, one encrypted file out: the public ``encrypt_file``/``decrypt_file``. It only
chooses, once, by credential: ``key=`` makes a raw C2SP message (``_files``), a password, a
recovery key or recipients (an identity to open) make a sealed container (``sealed``); the
bytes are theirs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

from e2ebackup import _files, sealed
from e2ebackup.errors import InvalidArgument

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from e2ebackup.keys import KdfParams, Password, RecoveryKey
    from e2ebackup.paths import StrPath
    from e2ebackup.recipients import Identity, Recipient
    from e2ebackup.streams import Progress

__all__ = ["decrypt_file", "encrypt_file"]


def _one_kind_of_credential(
    key: object, password: object, recovery_key: object, others: object = None
) -> None:
    """A raw key alone, or a password, a recovery key and/or recipients (an identity); never
    nothing, never a mix."""
    given = sum(x is not None for x in (key, password, recovery_key, others))
    if given == 0:
        raise InvalidArgument("give key=, password=, recovery_key=, recipients= or identity=")
    if key is not None and given > 1:
        raise InvalidArgument(
            "key= makes a plain C2SP message; it does not combine with a password"
        )


def encrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer | None = None,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    kdf: KdfParams | None = None,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
    recipients: Iterable[Recipient | str] = (),
) -> int:
    """Encrypts ``src`` into ``dst``; paths or binary file objects.

    With ``key`` (32 bytes) the result is one plain C2SP chunked-encryption message, readable
    by ``cryptography.cobblestone`` too. With ``password`` and/or ``recovery_key`` it is a
    sealed file (docs/FORMAT.md) that either opens; ``recipients`` (public keys,
    :class:`~e2ebackup.recipients.Recipient` or their ``e2ebackup1...`` text) add a slot that
    each one's identity opens. A ``dst`` path is written to a temporary
    file and renamed only once complete. ``progress`` is called with the plaintext bytes done
    so far. Returns the plaintext size.
    """
    recipients = [recipients] if isinstance(recipients, str) else list(recipients)
    _one_kind_of_credential(key, password, recovery_key, recipients or None)
    if key is not None:
        return _files.encrypt_file(
            src,
            dst,
            key,
            context=context,
            algorithm=algorithm,
            threads=threads,
            progress=progress,
            overwrite=overwrite,
        )
    return sealed.seal_file(
        src,
        dst,
        password=password,
        recovery_key=recovery_key,
        kdf=kdf,
        algorithm=algorithm,
        threads=threads,
        progress=progress,
        overwrite=overwrite,
        recipients=recipients,
    )


def decrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer | None = None,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
    identity: Identity | None = None,
) -> int:
    """Decrypts ``src`` into ``dst``: a plain message with ``key``, a sealed file with
    ``password``, ``recovery_key`` or ``identity``. Nothing is left at a ``dst`` path unless all
    of it authenticated: on any error the temporary file is removed and a typed
    :mod:`e2ebackup.errors` error raised. A seekable file object is truncated back; one that
    cannot seek (a pipe, a socket) gets plaintext as it authenticates, so a damaged file hands
    it a prefix before the error (``e2ebackup decrypt SRC -`` holds the plaintext back in
    memory instead, until the end authenticated). ``progress`` is called with the ciphertext
    bytes done so far. Returns the ciphertext bytes read."""
    _one_kind_of_credential(key, password, recovery_key, identity)
    if key is not None:
        return _files.decrypt_file(
            src,
            dst,
            key,
            context=context,
            algorithm=algorithm,
            threads=threads,
            progress=progress,
            overwrite=overwrite,
        )
    return sealed.unseal_file(
        src,
        dst,
        password=password,
        recovery_key=recovery_key,
        threads=threads,
        progress=progress,
        overwrite=overwrite,
        identity=identity,
    )
