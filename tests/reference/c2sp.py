"""Reference implementation of C2SP chunked encryption v1 (https://c2sp.org/chunked-encryption).

Deliberately small and slow, written straight from the specification with nothing but the
``cryptography`` package's AEAD and HKDF-Expand primitives. It is the independent check that
e2ebackup's Rust core is tested against; it shares no code with e2ebackup.

    message = salt (24) || commitment (32) || chunk_0 || ... || chunk_n
    key (32) || base_nonce (12) || commitment (32)
        = HKDF-Expand(SHA-512, K, "c2sp.org/chunked-encryption@v1+" || A || 0x00 || salt || ctx, 76)
    chunk_i = AEAD-Seal(key, base_nonce XOR i, aad = "", plaintext_i)

Every chunk but the last carries exactly 16384 bytes of plaintext; the last carries 0..16383.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

AES_256_GCM = "AEAD_AES_256_GCM"
CHACHA20_POLY1305 = "AEAD_CHACHA20_POLY1305"
AEADS = (AES_256_GCM, CHACHA20_POLY1305)

KEY_SIZE = 32
SALT_SIZE = 24
COMMITMENT_SIZE = 32
HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE
NONCE_SIZE = 12
TAG_SIZE = 16
CHUNK_SIZE = 16384
MAX_CHUNKS = 2**38
LABEL = b"c2sp.org/chunked-encryption@v1+"


class DecryptionError(Exception):
    """The message is not a valid encryption under this key and context."""


def _derive(
    key: bytes, salt: bytes, context: bytes, aead_name: str
) -> tuple[AESGCM | ChaCha20Poly1305, bytes, bytes]:
    """Return (AEAD instance, base nonce, commitment)."""
    if len(key) != KEY_SIZE or len(salt) != SALT_SIZE or aead_name not in AEADS:
        raise ValueError("bad key, salt or AEAD name")
    info = LABEL + aead_name.encode("ascii") + b"\x00" + salt + context
    okm = HKDFExpand(SHA512(), 32 + NONCE_SIZE + COMMITMENT_SIZE, info).derive(key)
    aead_key, base_nonce, commitment = okm[:32], okm[32:44], okm[44:]
    aead = AESGCM(aead_key) if aead_name == AES_256_GCM else ChaCha20Poly1305(aead_key)
    return aead, base_nonce, commitment


def _nonce(base_nonce: bytes, index: int) -> bytes:
    return (int.from_bytes(base_nonce, "big") ^ index).to_bytes(NONCE_SIZE, "big")


def ciphertext_length(plaintext_length: int) -> int:
    return HEADER_SIZE + plaintext_length + TAG_SIZE * (plaintext_length // CHUNK_SIZE + 1)


def encrypt_with_salt(
    key: bytes, salt: bytes, context: bytes, aead_name: str, plaintext: bytes
) -> bytes:
    aead, base_nonce, commitment = _derive(key, salt, context, aead_name)
    n_chunks = len(plaintext) // CHUNK_SIZE + 1  # the last chunk is always shorter
    if n_chunks > MAX_CHUNKS:
        raise ValueError("message too long")
    out = [salt, commitment]
    for i in range(n_chunks):
        piece = plaintext[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        out.append(aead.encrypt(_nonce(base_nonce, i), piece, b""))
    return b"".join(out)


def decrypt(key: bytes, context: bytes, aead_name: str, message: bytes) -> bytes:
    """Decrypt ``message``; raise DecryptionError if it is not authentic."""
    body = len(message) - HEADER_SIZE
    full, last = divmod(body, CHUNK_SIZE + TAG_SIZE)
    # Valid lengths: any number of full sealed chunks, then a final sealed chunk of 0..16383
    # plaintext bytes (16..16399 bytes sealed).
    if body < TAG_SIZE or last < TAG_SIZE or full + 1 > MAX_CHUNKS:
        raise DecryptionError("invalid message length")
    aead, base_nonce, commitment = _derive(key, message[:SALT_SIZE], context, aead_name)
    if not hmac.compare_digest(commitment, message[SALT_SIZE:HEADER_SIZE]):
        raise DecryptionError("wrong commitment")
    plaintext = []
    for i in range(full + 1):
        start = HEADER_SIZE + i * (CHUNK_SIZE + TAG_SIZE)
        sealed = message[start : start + CHUNK_SIZE + TAG_SIZE]
        try:
            plaintext.append(aead.decrypt(_nonce(base_nonce, i), sealed, b""))
        except InvalidTag:
            raise DecryptionError(f"chunk {i} failed authentication") from None
    return b"".join(plaintext)
