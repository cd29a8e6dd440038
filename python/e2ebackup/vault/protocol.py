"""What the vault's client and server agree on: the JSON encoding and the key derivations.

Binary fields travel as standard base64; ids as lowercase hex. Labels are under
``"e2ebackup/v1/vault/"``, apart from every other purpose (docs/FORMAT.md, Key hierarchy).
"""

from __future__ import annotations

import base64
import binascii

from e2ebackup import _core
from e2ebackup.errors import VaultProtocolError

PROTOCOL = 1
SERVICE = "e2ebackup-vault"
SUITE = "OPAQUE-3DH ristretto255 SHA-512, Argon2id KSF"
LOGIN_ID_SIZE = 16
MAX_BLOB = 1024
CREDENTIAL_REQUEST_SIZE = 96  # blinded element, client nonce, client key share
MAX_MESSAGE = 4096

# The data key is wrapped under BLOB_KEY(export key), bound to the record and the vault's key.
_BLOB_KEY_INFO = b"e2ebackup/v1/vault/blob-key"
_BLOB_CONTEXT = b"e2ebackup/v1/vault/blob\x00"
# The vault releases that blob encrypted under RELEASE_KEY(session key), bound to the login.
_RELEASE_KEY_INFO = b"e2ebackup/v1/vault/release-key"
_RELEASE_CONTEXT = b"e2ebackup/v1/vault/release\x00"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, what: str, limit: int = MAX_MESSAGE) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * limit:
        raise VaultProtocolError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VaultProtocolError(f"{what} is not valid base64") from None


def unhex(value: object, what: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise VaultProtocolError(f"{what} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise VaultProtocolError(f"{what} must be {2 * size} hex digits") from None


def blob_key(export_key: bytes) -> bytes:
    return _core.hkdf_sha256(export_key, info=_BLOB_KEY_INFO)


def blob_context(record_id: bytes, server_public_key: bytes) -> bytes:
    return _BLOB_CONTEXT + record_id + server_public_key


def seal_release(session_key: bytes, login_id: bytes, blob: bytes) -> bytes:
    key = _core.hkdf_sha256(session_key, info=_RELEASE_KEY_INFO)
    return _core.encrypt(key, blob, context=_RELEASE_CONTEXT + login_id)


def open_release(session_key: bytes, login_id: bytes, sealed: bytes) -> bytes:
    key = _core.hkdf_sha256(session_key, info=_RELEASE_KEY_INFO)
    return _core.decrypt(key, sealed, context=_RELEASE_CONTEXT + login_id)


def login_context(login_id: bytes, record_id: bytes) -> bytes:
    """What the server's sealed login state is bound to."""
    return login_id + record_id
