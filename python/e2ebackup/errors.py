"""The one exception hierarchy of e2ebackup.

Every error the package raises on purpose derives from :class:`E2EBackupError`. Errors about the
caller's arguments also derive from :class:`ValueError`, so code written for the standard
library's conventions keeps working. Messages never contain keys, passwords or plaintext.
"""

from __future__ import annotations

__all__ = [
    "AlreadyFinalized",
    "E2EBackupError",
    "InvalidArgument",
    "InvalidTag",
    "MessageTooLong",
    "StreamFailed",
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
