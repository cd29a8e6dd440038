"""The one exception hierarchy of e2ebackup.

Every error the package raises on purpose derives from :class:`E2EBackupError`. Errors about the
caller's arguments also derive from :class:`ValueError`, so code written for the standard
library's conventions keeps working. Messages never contain keys, passwords or plaintext.
"""

from __future__ import annotations

__all__ = [
    "AlreadyFinalized",
    "ConflictingKeySlots",
    "CorruptKeySlot",
    "E2EBackupError",
    "InvalidArgument",
    "InvalidTag",
    "KdfLimitExceeded",
    "KeyMismatch",
    "KeySlotError",
    "MessageTooLong",
    "NoMatchingKeySlot",
    "ObjectExists",
    "ObjectNotFound",
    "ObjectTooLarge",
    "StorageAuthError",
    "StorageError",
    "StorageFull",
    "StoragePermissionDenied",
    "StorageUnavailable",
    "StreamFailed",
    "TooManyKeySlots",
    "UnsafeStoragePath",
    "VaultError",
    "VaultKeyMismatch",
    "VaultLocked",
    "VaultLoginFailed",
    "VaultProtocolError",
    "VaultRecordGone",
    "VaultUnauthorized",
    "VaultUnavailable",
    "WhatsAppCorruptedError",
    "WhatsAppError",
    "WhatsAppFormatError",
    "WhatsAppTruncatedError",
    "WrongPassword",
    "WrongRecoveryKey",
]


class E2EBackupError(Exception):
    """Base class of every e2ebackup error."""


class InvalidTag(E2EBackupError):
    """Authentication failed.

    The key or context is wrong, or the ciphertext was truncated, extended, reordered or
    modified. One class for all of them on purpose: telling them apart would help an attacker.
    """


class AlreadyFinalized(E2EBackupError):
    """A streaming context was used after ``finalize()``."""


class StreamFailed(E2EBackupError):
    """A streaming context was used after an earlier error; it stays failed."""


class InvalidArgument(E2EBackupError, ValueError):
    """An argument is malformed or out of range (a key of the wrong size, a bad algorithm name,
    an output buffer too small)."""


class MessageTooLong(E2EBackupError, ValueError):
    """The message would exceed the format's limit of 2**38 chunks (4 PiB)."""


class KdfLimitExceeded(InvalidArgument):
    """Password-hashing parameters outside the hard limits (for example a key slot asking for
    64 GiB of memory): refused before any work starts."""


class KeySlotError(E2EBackupError):
    """Base class of the errors that come from opening key slots."""


class KeyMismatch(KeySlotError):
    """The key does not open this key slot."""


class WrongPassword(KeySlotError):
    """No password slot opens with this password."""


class WrongRecoveryKey(KeySlotError):
    """No recovery-key slot opens with this recovery key."""


class NoMatchingKeySlot(KeySlotError):
    """The container has no key slot of the kind the credential needs (for example a password
    given for a file protected only by a recovery key)."""


class CorruptKeySlot(KeySlotError):
    """A key slot is damaged or malformed: its credential matched, or its bytes do not parse,
    but it does not authenticate."""


class ConflictingKeySlots(KeySlotError):
    """The container holds a vault slot beside a password slot, which no writer makes (it would
    allow offline guessing of the vault's password): refused before any slot is tried."""


class TooManyKeySlots(KeySlotError):
    """More key slots than a container may hold (slots the storage added to make every open
    slow): refused before any password hash runs."""


class StorageError(E2EBackupError):
    """A storage backend failed. Messages name the object and the backend, never credentials."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


class ObjectExists(StorageError):
    """The object exists and overwriting was not asked for (objects are written once)."""


class ObjectTooLarge(StorageError):
    """The storage answered a read with more bytes than the reader accepts: more than the range
    asked for, or a whole object larger than any honest object of its kind (a config, key,
    head, index, snapshot or lock). Refused before it is read into memory."""


class UnsafeStoragePath(StorageError):
    """A local storage folder holds a symbolic link (or something other than plain files and
    folders) where an object or its folder should be: refused, so that a planted link cannot
    make e2ebackup read, write or delete anything outside the repository."""


class StorageUnavailable(StorageError):
    """A transient failure (connection dropped, 5xx, throttling): the retry wrapper retries."""


class StorageAuthError(StorageError):
    """The backend refused the credentials, or the bucket or remote does not exist."""


class StoragePermissionDenied(StorageError):
    """The backend refused the operation on this object."""


class StorageFull(StorageError):
    """No space left on the storage."""


class WhatsAppError(E2EBackupError):
    """Base class of the errors about WhatsApp backups (:mod:`e2ebackup.whatsapp`). A wrong key
    raises :class:`InvalidTag` itself."""


class WhatsAppFormatError(WhatsAppError, ValueError):
    """Not a WhatsApp crypt15 (or crypt14) backup or key file, or one this version cannot read."""


class WhatsAppCorruptedError(WhatsAppError, InvalidTag):
    """The backup is damaged: its MD5 checksum does not match and it does not authenticate."""


class WhatsAppTruncatedError(WhatsAppCorruptedError):
    """The backup ends early (an interrupted copy or download)."""


class VaultError(E2EBackupError):
    """The key vault refused or failed. Messages never contain the password or any key."""


class VaultLoginFailed(VaultError, WrongPassword):
    """The vault login did not verify: a wrong password (or a vault that does not hold this
    record). ``attempts_left`` is how many more tries the vault allows before it deletes the
    key for good, when the vault said so."""

    def __init__(self, message: str, attempts_left: int | None = None) -> None:
        super().__init__(message)
        self.attempts_left = attempts_left


class VaultRecordGone(VaultError):
    """The vault no longer holds this key: too many wrong passwords, or it was deleted. Only
    the recovery key opens the data now."""


class VaultLocked(VaultError):
    """The last allowed attempt is in progress elsewhere; try again in a minute."""


class VaultProtocolError(VaultError):
    """A vault message or key-vault slot that does not parse or does not fit the protocol."""


class VaultUnauthorized(VaultError):
    """The vault admits registrations only with its registration token, and none or another
    was given (``--vault-token-file`` or ``E2EBACKUP_VAULT_TOKEN``)."""


class VaultUnavailable(VaultError):
    """The vault cannot be reached or had an internal error; nothing was charged that a retry
    cannot tell."""


class VaultKeyMismatch(VaultError):
    """The server is not the vault this key was registered with: its public key is not the
    pinned one (a substituted or reinstalled vault)."""
