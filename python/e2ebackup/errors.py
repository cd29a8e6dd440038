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
    "HistoryForked",
    "HistoryNotTrusted",
    "HistoryUnverifiable",
    "InvalidArgument",
    "InvalidTag",
    "KdfLimitExceeded",
    "KeyMismatch",
    "KeySlotError",
    "LoginUnknown",
    "MessageTooLong",
    "NoMatchingKeySlot",
    "NotARepository",
    "NotSealedFile",
    "ObjectExists",
    "ObjectNotFound",
    "ObjectTooLarge",
    "OutputTooLarge",
    "RecordExists",
    "RepositoryCorrupted",
    "RepositoryLocked",
    "RestoreConflict",
    "RestoreLimitExceeded",
    "RolledBack",
    "StorageAuthError",
    "StorageDataMismatch",
    "StorageError",
    "StorageFull",
    "StoragePermissionDenied",
    "StorageUnavailable",
    "StreamFailed",
    "TooManyKeySlots",
    "TreeTooDeep",
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


def _cryptography_base(name: str) -> tuple[type[Exception], ...]:
    """``cryptography.exceptions.<name>`` when cryptography is installed, else nothing.

    A real base class, not a registration: ``except`` matches by subclassing only, so code
    written for Cobblestone that catches cryptography's ``InvalidTag`` or ``AlreadyFinalized``
    keeps working unchanged.
    """
    try:
        from cryptography import exceptions
    except ImportError:
        return ()
    base = getattr(exceptions, name, None)
    return (base,) if isinstance(base, type) and issubclass(base, Exception) else ()


class InvalidTag(E2EBackupError, *_cryptography_base("InvalidTag")):  # type: ignore[misc]
    """Authentication failed.

    The key or context is wrong, or the ciphertext was truncated, extended, reordered or
    modified. One class for all of them on purpose: telling them apart would help an attacker.
    When the ``cryptography`` package is installed this is also a
    ``cryptography.exceptions.InvalidTag``, so ``except`` clauses written for Cobblestone catch it.
    """


class AlreadyFinalized(E2EBackupError, *_cryptography_base("AlreadyFinalized")):  # type: ignore[misc]
    """A streaming context was used after ``finalize()``.

    Also a ``cryptography.exceptions.AlreadyFinalized`` when ``cryptography`` is installed, as
    :class:`InvalidTag` is its ``InvalidTag``."""


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


class StorageDataMismatch(StorageError):
    """The bytes given to a storage write do not match their declared size or SHA-256; nothing
    was stored."""


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


class RecordExists(VaultError):
    """The vault service: a registration for a record id that is taken."""


class LoginUnknown(VaultError):
    """The vault service: no pending login with this id (never started, already finished, or
    swept)."""


# -- repositories, restore and sealed files


class NotARepository(E2EBackupError):
    """There is no e2ebackup repository at that location (or its config is unreadable)."""


class RepositoryCorrupted(E2EBackupError):
    """An object of the repository is missing, damaged, replayed or does not authenticate."""


class HistoryNotTrusted(RepositoryCorrupted):
    """The storage shows a history that does not extend the head this device trusted (or the
    head the user pinned). ``e2ebackup trust`` accepts the state shown, on purpose."""


class RolledBack(HistoryNotTrusted):
    """The newest head is older than the head this device trusted: the storage went back."""


class HistoryForked(HistoryNotTrusted):
    """The newest head does not descend from the trusted (or pinned) head, or two heads have
    the newest seq: the storage shows another branch of the history."""


class HistoryUnverifiable(HistoryNotTrusted):
    """The heads between the trusted head and the newest are no longer all stored (the device
    was away longer than the heads kept), so the chain cannot be checked."""


class RepositoryLocked(E2EBackupError):
    """Another process holds a conflicting lock."""


class TreeTooDeep(RepositoryCorrupted):
    """Folder listings nest deeper than the limit (``repo.tree.MAX_DEPTH``) below a snapshot's
    root."""

    def __init__(self, where: str, limit: int) -> None:
        super().__init__(
            f"{where + ': ' if where else ''}folders nest deeper than {limit} levels, "
            "the most a snapshot may hold"
        )


class RestoreConflict(E2EBackupError):
    """Files in the target exist and overwriting was not asked for."""


class RestoreLimitExceeded(E2EBackupError):
    """The snapshot (or the part asked for) holds more bytes or entries than the restore's
    budget (``max_size``, ``max_files``, or the target's free space): refused before anything
    is written."""


class NotSealedFile(E2EBackupError):
    """The file is not an e2ebackup sealed file (or its header is damaged beyond reading)."""


class OutputTooLarge(InvalidArgument):
    """Plaintext held back for a pipe until it authenticated is larger than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"standard output is not a file, so the plaintext is held back until all of it "
            f"authenticated, and it is larger than the {limit >> 20} MiB allowed for that "
            "(--pipe-buffer): decrypt into a file, raise --pipe-buffer, or use --stream to "
            "accept that a damaged file releases a prefix before the error"
        )
