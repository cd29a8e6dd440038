"""Moved to :mod:`e2ebackup.keyring.slots`; this name stays for code that imports it."""

from e2ebackup.keyring.slots import (
    CONTAINER_ID_SIZE,
    KIND_PASSWORD,
    KIND_RECOVERY_KEY,
    KIND_VAULT,
    MAX_SLOTS,
    KeySlot,
    KeySlots,
)

__all__ = [
    "CONTAINER_ID_SIZE",
    "KIND_PASSWORD",
    "KIND_RECOVERY_KEY",
    "KIND_VAULT",
    "MAX_SLOTS",
    "KeySlot",
    "KeySlots",
]
