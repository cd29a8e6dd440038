"""Raw-key files: one whole file as one plain C2SP chunked-encryption message under a 32-byte
key, readable by ``cryptography.cobblestone`` too. No header, no password, no key slots: that is
the sealed container's job (``sealed``); choosing between the two is ``files``'s."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from e2ebackup._core import Decryptor, Encryptor
from e2ebackup.paths import StrPath
from e2ebackup.streams import Progress, open_destination, open_source, pump

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["decrypt_file", "encrypt_file"]


def encrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Encrypts ``src`` into ``dst`` under ``key``; returns the plaintext size."""
    encryptor = Encryptor(key, context, algorithm=algorithm, threads=threads)
    with open_source(src) as fin, open_destination(dst, overwrite) as fout:
        return pump(fin, fout, encryptor, progress)


def decrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Decrypts the message in ``src`` into ``dst``; returns the ciphertext bytes read."""
    decryptor = Decryptor(key, context, algorithm=algorithm, threads=threads)
    with open_source(src) as fin, open_destination(dst, overwrite) as fout:
        return pump(fin, fout, decryptor, progress)
