"""The key vault: passwords that cannot be guessed offline.

A container's data key is wrapped under a key derived from OPAQUE's export key, which only a
client that knows the password can compute, with the vault's help, one online attempt at a
time. The vault stores that wrapped key next to the OPAQUE password file and releases it only
after a successful login; after ``max_attempts`` wrong passwords (10 by default) it deletes both
for good, and only the recovery key opens the data. See docs/VAULT.md.

* :class:`VaultClient` (``e2ebackup.vault.client``): register a data key, unlock it, change the
  password, delete the record.
* :class:`VaultSlot`: what a container records (URL, record id, pinned public key, KSF).
* ``e2ebackup.vault.server`` (a package: ``app`` and ``store``): the service (``e2ebackup
  vault serve``), on SQLite or PostgreSQL. It needs the ``vault`` extra; nothing on the client
  side imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from e2ebackup.keyring.vault_slot import VaultSlot

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

__all__ = ["VaultClient", "VaultSlot"]


def __getattr__(name: str) -> Any:
    # The client needs httpx (the `vault` extra); importing the package must not.
    if name == "VaultClient":
        from e2ebackup.vault.client import VaultClient

        return VaultClient
    raise AttributeError(name)
