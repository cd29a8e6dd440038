"""e2ebackup: end-to-end encrypted backups.

The core primitive is C2SP chunked encryption (https://c2sp.org/chunked-encryption), computed in
Rust across all cores with the GIL released, byte-compatible with ``cryptography.cobblestone``
(Cobblestone-256 for AES-256-GCM).

Constants of the format: ``KEY_SIZE`` (32, bytes of a key), ``CHUNK_SIZE`` (plaintext bytes
per chunk), ``TAG_SIZE`` (authentication tag bytes per chunk) and ``HEADER_SIZE`` (bytes of the
salt and commitment header before the first chunk). ``__version__`` is the installed version.
"""

from __future__ import annotations

import importlib.metadata

from e2ebackup import errors
from e2ebackup._core import (
    CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    TAG_SIZE,
    Decryptor,
    Encryptor,
    ciphertext_length,
    decrypt,
    decrypt_into,
    encrypt,
    encrypt_into,
    generate_key,
    plaintext_length,
)
from e2ebackup._io import EncryptedReader, EncryptedWriter, open
from e2ebackup.files import decrypt_file, encrypt_file

try:
    __version__ = importlib.metadata.version("e2ebackup")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree, never installed
    __version__ = "0+unknown"

__all__ = [
    "CHUNK_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "TAG_SIZE",
    "Decryptor",
    "EncryptedReader",
    "EncryptedWriter",
    "Encryptor",
    "ciphertext_length",
    "decrypt",
    "decrypt_file",
    "decrypt_into",
    "encrypt",
    "encrypt_file",
    "encrypt_into",
    "errors",
    "generate_key",
    "open",
    "plaintext_length",
]
