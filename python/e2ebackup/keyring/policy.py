"""The one credential policy of every container: sealed files and repositories alike.

A container gives its slots through a :class:`SlotStore` (a sealed file's header, a
repository's ``keys/`` objects); this module decides everything else:

* **Unlock order:** a recovery key (one AEAD per slot), else an identity (one decapsulation
  and one AEAD per recipient slot), else a password through a key vault
  when the container has vault slots, else the password slots (one KDF each, cheapest first,
  at most ``MAX_PASSWORD_SLOTS``). A vault slot beside a password slot is refused, on read as
  on write: no writer makes one, and the password slot would allow offline guessing.
* **Vault slots are used only once proven:** a vault slot's check opens only with the data
  key, so a slot that the storage planted (its own URL, pinned key, weak KSF) fails it. Such a
  slot is never contacted for a registration, a password change or a rotation, and is dropped
  whenever the slots are rewritten. The one vault contacted before the data key is known is the
  one a password unlock logs into; the key it releases must open that slot's check before it is
  trusted, and an OPAQUE login tells a vault nothing it could guess the password from.
* **Enrolment, password change, rotation:** first slots (a vault or a password slot, a
  recovery key, and a slot per recipient key: a writer with public keys only); a new password
  registered at the same proven vaults or rewritten into its password slot; a rotated
  container keeps the credential kinds of the old one.

This is the only module that talks to the vault client about slots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from e2ebackup.errors import (
    CorruptKeySlot,
    InvalidArgument,
    NoMatchingKeySlot,
    VaultKeyMismatch,
    VaultProtocolError,
    VaultRecordGone,
    VaultUnavailable,
)
from e2ebackup.keyring.slots import (
    KIND_PASSWORD,
    KIND_RECIPIENT,
    KIND_RECOVERY_KEY,
    KIND_VAULT,
    MAX_PASSWORD_SLOTS,
    MAX_SLOTS,
    KeySlot,
    KeySlots,
)
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import KdfParams, Password, RecoveryKey
from e2ebackup.recipients import Identity, Recipient

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

__all__ = [
    "Credentials",
    "Opened",
    "SlotStore",
    "add_password",
    "add_recipient",
    "add_recovery_key",
    "change_password",
    "enrol",
    "remove_slot",
    "reopen",
    "rotate",
    "unlock",
]


class SlotStore(Protocol):
    """Where a container keeps its slots. ``load`` returns every slot, already refused (before
    any KDF) if there are more than a container may hold; the edits may be staged until
    ``commit`` (a sealed file rewrites its header once) or stored at once (a repository writes
    one ``keys/`` object per slot, the new before the old is deleted)."""

    @property
    def container_id(self) -> bytes: ...

    def load(self) -> KeySlots: ...

    def add(self, slot: KeySlot) -> None: ...

    def replace(self, old: KeySlot, new: KeySlot) -> None: ...

    def remove(self, slot: KeySlot) -> None: ...

    def commit(self) -> None: ...


@dataclass(frozen=True)
class Credentials:
    """What the user gave: a password, a recovery key, an identity (to open), and for a new
    container the recipients to seal to, the vault to hold the password (``vault``) or the
    proven vaults of the container it replaces (``keep_vaults``); ``vault_token`` is sent with
    registrations to a vault that asks."""

    password: Password | None = None
    recovery_key: RecoveryKey | None = None
    vault: VaultClient | None = None
    keep_vaults: tuple[VaultSlot, ...] = ()
    vault_token: str | None = field(default=None, repr=False)
    identity: Identity | None = None
    recipients: tuple[Recipient, ...] = ()

    @property
    def any(self) -> bool:
        """Whether anything was given that opens (or, for a writer, seals) a container."""
        given = (self.password, self.recovery_key, self.identity)
        return any(x is not None for x in given) or bool(self.recipients)

    @classmethod
    def of(
        cls,
        password: str | bytes | Password | None = None,
        recovery_key: RecoveryKey | str | None = None,
        *,
        vault: VaultClient | None = None,
        vault_token: str | None = None,
        identity: Identity | None = None,
        recipients: Iterable[Recipient | str] = (),
    ) -> Credentials:
        """Normalises what a caller passed: the password once, a recovery key's digits,
        recipients' text."""
        if isinstance(recovery_key, str):
            recovery_key = RecoveryKey.parse(recovery_key)
        elif recovery_key is not None and not isinstance(recovery_key, RecoveryKey):
            raise InvalidArgument("recovery_key must be a RecoveryKey or its 64 hex digits")
        if identity is not None and not isinstance(identity, Identity):
            raise InvalidArgument("identity must be an e2ebackup.recipients.Identity")
        if isinstance(recipients, (str, Recipient)):
            recipients = [recipients]
        parsed = tuple(r if isinstance(r, Recipient) else Recipient.parse(r) for r in recipients)
        return cls(Password.of(password), recovery_key, vault, (), vault_token, identity, parsed)


@dataclass
class Opened:
    """An unlocked container: its data key and its slots, the vault slots split into those
    whose check opened with the data key (``vaults``) and those that did not (``planted``)."""

    data_key: bytes = field(repr=False)
    slots: KeySlots
    vaults: list[KeySlot]
    planted: list[KeySlot]
    #: The vault slot the password just logged into, if the unlock went through a vault.
    proven: KeySlot | None = None

    @property
    def has_recovery_key(self) -> bool:
        return any(s.kind == KIND_RECOVERY_KEY for s in self.slots.slots)

    @property
    def has_recipient_slot(self) -> bool:
        return any(s.kind == KIND_RECIPIENT for s in self.slots.slots)


# -- opening -------------------------------------------------------------------------------------


def unlock(store: SlotStore, credentials: Credentials) -> Opened:
    """Opens the container's slots with the cheapest credential given."""
    slots = store.load()
    slots.check_count()
    if credentials.recovery_key is not None:
        return _split(slots, slots.unlock(recovery_key=credentials.recovery_key))
    if credentials.identity is not None:
        return _split(slots, slots.unlock_identity(credentials.identity))
    password = credentials.password
    if password is None:
        raise InvalidArgument("a password, a recovery key or an identity is needed")
    if any(s.kind == KIND_VAULT for s in slots.slots):
        # Which of the two was planted cannot be told before the data key is known: neither
        # the vault nor the KDF is tried.
        slots.refuse_vault_beside_password()
        data_key, proven = _unlock_at_vault(slots, password)
        return _split(slots, data_key, proven)
    damaged_vaults = slots.damaged_kinds.count(KIND_VAULT)
    if damaged_vaults and not any(s.kind == KIND_PASSWORD for s in slots.slots):
        raise CorruptKeySlot(f"{damaged_vaults} vault key slot(s) are damaged")
    return _split(slots, slots.unlock(password=password))


def reopen(store: SlotStore, data_key: bytes) -> Opened:
    """The slots of a container already open (its data key known), proven as by :func:`unlock`."""
    slots = store.load()
    slots.check_count()
    return _split(slots, data_key)


def _split(slots: KeySlots, data_key: bytes, proven: KeySlot | None = None) -> Opened:
    vaults: list[KeySlot] = []
    planted: list[KeySlot] = []
    for slot in slots.slots:
        if slot.kind == KIND_VAULT:
            (vaults if slots.verify_vault(slot, data_key) else planted).append(slot)
    if vaults:
        slots.refuse_vault_beside_password()
    return Opened(data_key, slots, vaults, planted, proven)


def _unlock_at_vault(slots: KeySlots, password: Password) -> tuple[bytes, KeySlot]:
    """One login at each vault slot in turn until one releases a key that opens that slot's
    check. A vault that is gone, down, not the pinned one or releases a wrong key gives way to
    the next; a wrong password stops (each try is a guess the vault counts)."""
    from e2ebackup.vault.client import client_for

    candidates = [s for s in slots.slots if s.kind == KIND_VAULT and s.vault is not None]
    if not candidates:
        raise NoMatchingKeySlot("this container has no vault slot")
    failure: Exception | None = None
    for slot in candidates:
        assert slot.vault is not None
        try:
            with client_for(slot.vault) as client:
                data_key = client.unlock(slot.vault, password)
        except (
            InvalidArgument,  # a URL the client refuses (plain http to another host)
            VaultRecordGone,
            VaultUnavailable,
            VaultKeyMismatch,
            VaultProtocolError,
        ) as e:
            failure = e
            continue
        if slots.verify_vault(slot, data_key):
            return data_key, slot
        failure = CorruptKeySlot(
            "the vault released a key that is not this container's, or the vault slot was altered"
        )
    assert failure is not None
    raise failure


# -- writing -------------------------------------------------------------------------------------


def enrol(
    store: SlotStore,
    data_key: bytes,
    credentials: Credentials,
    *,
    kdf: KdfParams | None = None,
) -> None:
    """The first slots of a new container: the password held by a vault (``vault`` or each of
    ``keep_vaults``) or in a password slot, a recovery-key slot, and a slot per recipient."""
    password, recovery_key = credentials.password, credentials.recovery_key
    recipients = credentials.recipients
    if password is None and recovery_key is None and not recipients:
        raise InvalidArgument("a password, a recovery key or a recipient is needed")
    if len(set(recipients)) != len(recipients):
        raise InvalidArgument("a recipient is given twice")
    vaults = credentials.keep_vaults
    if (credentials.vault is not None or vaults) and password is None:
        raise InvalidArgument("a key vault needs a password")
    cid = store.container_id
    if password is not None:
        if credentials.vault is not None:
            held = credentials.vault.register(password, data_key)
            store.add(KeySlots(cid).add_vault(data_key, held))
        for vault in vaults:
            with _client(vault, credentials.vault_token) as client:
                held = client.register(password, data_key)
            store.add(KeySlots(cid).add_vault(data_key, held))
        if credentials.vault is None and not vaults:
            store.add(KeySlots(cid).add_password(data_key, password, kdf=kdf))
    if recovery_key is not None:
        store.add(KeySlots(cid).add_recovery_key(data_key, recovery_key))
    for recipient in recipients:
        store.add(KeySlots(cid).add_recipient(data_key, recipient))
    store.commit()


def add_password(
    store: SlotStore,
    opened: Opened,
    password: Password,
    *,
    kdf: KdfParams | None = None,
    label: str = "",
) -> None:
    if opened.vaults:
        raise InvalidArgument(
            "this container's password is held by a key vault: a password slot next to it "
            "would allow offline guessing again"
        )
    if sum(s.kind == KIND_PASSWORD for s in opened.slots.slots) >= MAX_PASSWORD_SLOTS:
        raise InvalidArgument(f"a container holds at most {MAX_PASSWORD_SLOTS} password slots")
    _refuse_full(opened)
    dk = opened.data_key
    _drop(store, opened.planted)
    store.add(KeySlots(store.container_id).add_password(dk, password, kdf=kdf, label=label))
    store.commit()


def add_recovery_key(
    store: SlotStore, opened: Opened, recovery_key: RecoveryKey, *, label: str = ""
) -> None:
    _refuse_full(opened)
    dk = opened.data_key
    _drop(store, opened.planted)
    store.add(KeySlots(store.container_id).add_recovery_key(dk, recovery_key, label=label))
    store.commit()


def add_recipient(
    store: SlotStore, opened: Opened, recipient: Recipient, *, label: str = ""
) -> None:
    """A slot for ``recipient``, beside the container's others (only its public key is
    needed; the container must be open, since the slot wraps its data key)."""
    _refuse_full(opened)
    dk = opened.data_key
    _drop(store, opened.planted)
    store.add(KeySlots(store.container_id).add_recipient(dk, recipient, label=label))
    store.commit()


def remove_slot(store: SlotStore, opened: Opened, index: int) -> None:
    """Removes slot ``index`` (as listed); never the last slot that could open the container."""
    listed = opened.slots.slots
    if not 0 <= index < len(listed):
        raise InvalidArgument(f"no key slot {index}; there are {len(listed)}")
    target = listed[index]
    others = [s for s in listed if s is not target and not _is_in(s, opened.planted)]
    if not others:
        raise InvalidArgument("refusing to remove the last key slot: the data would be lost")
    store.remove(target)
    _drop(store, [s for s in opened.planted if s is not target])
    store.commit()


def change_password(
    store: SlotStore,
    opened: Opened,
    old: Password,
    new: Password,
    *,
    kdf: KdfParams | None = None,
    vault_token: str | None = None,
) -> None:
    """Rewrites the slot ``old`` opens. A password held by vaults is registered anew at each
    proven vault (a new record; ``old`` must log in there first unless the unlock just did),
    and each old record is deleted once the container holds the new slot."""
    dk, cid = opened.data_key, store.container_id
    _drop(store, opened.planted)
    if not opened.vaults:
        slot, _ = opened.slots.open_password_slot(old)
        fresh = KeySlots(cid).add_password(dk, new, kdf=kdf or slot.kdf, label=slot.label)
        store.replace(slot, fresh)
        store.commit()
        return
    retired: list[VaultSlot] = []
    for slot in opened.vaults:
        vault = slot.vault
        assert vault is not None
        with _client(vault, vault_token) as client:
            if slot is not opened.proven:
                client.unlock(vault, old)  # the current password must be right
            held = client.register(new, dk)
        store.replace(slot, KeySlots(cid).add_vault(dk, held, label=slot.label))
        retired.append(vault)
    store.commit()
    for vault in retired:
        with _client(vault, vault_token) as client:
            client.delete(vault, old)


def rotate(
    opened: Opened,
    *,
    password: Password | None,
    recovery_key: RecoveryKey | None,
    vault_token: str | None = None,
    recipients: tuple[Recipient, ...] = (),
) -> Credentials:
    """What the container that replaces ``opened`` (under a new data key) is enrolled with:
    a password held by the same proven vaults if the old one's was (else a password slot), and
    ``recovery_key``. A recovery-key slot cannot be carried over under a new data key: callers
    pass the old recovery key or a new one (see :attr:`Opened.has_recovery_key`). Recipient
    slots do not name their recipient, so only ``recipients`` get one."""
    keep = tuple(s.vault for s in opened.vaults if s.vault is not None) if password else ()
    return Credentials(password, recovery_key, None, keep, vault_token, None, recipients)


# -- helpers -------------------------------------------------------------------------------------


def _drop(store: SlotStore, planted: Iterable[KeySlot]) -> None:
    for slot in planted:
        store.remove(slot)


def _refuse_full(opened: Opened) -> None:
    slots = opened.slots
    if len(slots.slots) + len(slots.unknown) - len(opened.planted) >= MAX_SLOTS:
        raise InvalidArgument(f"a container holds at most {MAX_SLOTS} key slots")


def _is_in(slot: KeySlot, slots: Iterable[KeySlot]) -> bool:
    return any(slot is s for s in slots)


def _client(vault: VaultSlot, token: str | None) -> VaultClient:
    """A client for a proven vault slot, pinned to its key, with its KSF."""
    from e2ebackup.vault.client import VaultClient

    return VaultClient(vault.url, vault.server_public_key, ksf=vault.ksf, registration_token=token)
