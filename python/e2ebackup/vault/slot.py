"""Moved to :mod:`e2ebackup.keyring.vault_slot`; this name stays for code that imports it."""

from e2ebackup.keyring.vault_slot import PUBLIC_KEY_SIZE, RECORD_ID_SIZE, VaultSlot

__all__ = ["PUBLIC_KEY_SIZE", "RECORD_ID_SIZE", "VaultSlot"]
