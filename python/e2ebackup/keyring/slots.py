"""Key slots: one random 256-bit data key, wrapped once per credential.

Each slot seals the data key under its own key-encryption key with the committing C2SP
construction, bound to the owning container's id and to every public field of the slot, so a
slot copied into another container, or edited, does not open. Changing a password rewrites that
slot only; the data, encrypted under keys derived from the data key, is untouched. The byte
layout is specified in docs/FORMAT.md.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from e2ebackup import _core
from e2ebackup.errors import (
    ConflictingKeySlots,
    CorruptKeySlot,
    InvalidArgument,
    KdfLimitExceeded,
    KeyMismatch,
    NoMatchingKeySlot,
    TooManyKeySlots,
    VaultRecordGone,
    VaultUnavailable,
    WrongPassword,
    WrongRecoveryKey,
)
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import Argon2idParams, KdfParams, Password, RecoveryKey, ScryptParams
from e2ebackup.recipients import Identity, Recipient

__all__ = [
    "KIND_PASSWORD",
    "KIND_RECIPIENT",
    "KIND_RECOVERY_KEY",
    "KIND_VAULT",
    "MAX_PASSWORD_SLOTS",
    "MAX_SLOTS",
    "KeySlot",
    "KeySlots",
    "password_attempt_order",
]

KIND_RECOVERY_KEY = 1
KIND_PASSWORD = 2
# A key vault (e2ebackup.vault, docs/VAULT.md): the data key is held by an OPAQUE vault with a
# guess limit. Never next to a password slot, which would allow offline guessing again.
KIND_VAULT = 3
# A recipient key (e2ebackup.recipients): the data key wrapped under a key encapsulated to an
# X25519 + ML-KEM-768 public key; a writer can make one with the public key alone.
KIND_RECIPIENT = 4
KIND_NAMES = {
    KIND_RECOVERY_KEY: "recovery-key",
    KIND_PASSWORD: "password",
    KIND_VAULT: "vault",
    KIND_RECIPIENT: "recipient",
}
_ENCAPSULATION = _core.RECIPIENT_ENCAPSULATION_SIZE
_VAULT_CHECK_INFO = b"e2ebackup/v1/key-slot/vault-check"
_KDF_ARGON2ID, _KDF_SCRYPT = 1, 2
_WRAPPED = _core.WRAPPED_KEY_SIZE
_CHECK = 16
_CONTEXT = b"e2ebackup/v1/key-slot\x00"
MAX_SLOTS = 32
# Each password slot costs one KDF run per open. A reader refuses more than this many before
# running any (docs/FORMAT.md, Opening), so slots added by the storage cannot make an open slow
# without bound; writers never make more.
MAX_PASSWORD_SLOTS = 8
MAX_LABEL = 255
CONTAINER_ID_SIZE = 16
MIN_SALT, MAX_SALT = 16, 64


def _check_value(kind: int, body: bytes) -> bytes:
    """Redundancy check over a slot: tells a damaged slot from a wrong password."""
    return hashlib.sha256(bytes([kind]) + struct.pack(">H", len(body)) + body).digest()[:_CHECK]


@dataclass(frozen=True)
class KeySlot:
    """One slot. ``public`` is every field but the wrapped key, as bytes, and is authenticated."""

    kind: int
    label: str
    created: int
    kdf: KdfParams | None
    salt: bytes
    wrapped: bytes = field(repr=False)
    vault: VaultSlot | None = None
    #: A recipient slot's encapsulation (``ct_M || ct_X``), public.
    enc: bytes = field(default=b"", repr=False)

    def public(self) -> bytes:
        label = self.label.encode("utf-8")
        out = struct.pack(">QB", self.created, len(label)) + label
        if self.kind == KIND_PASSWORD:
            if isinstance(self.kdf, Argon2idParams):
                out += struct.pack(
                    ">BIII",
                    _KDF_ARGON2ID,
                    self.kdf.memory_kib,
                    self.kdf.iterations,
                    self.kdf.parallelism,
                )
            elif isinstance(self.kdf, ScryptParams):
                out += struct.pack(">BBII", _KDF_SCRYPT, self.kdf.log2_n, self.kdf.r, self.kdf.p)
            out += bytes([len(self.salt)]) + self.salt
        if self.kind == KIND_VAULT and self.vault is not None:
            out += self.vault.encode()
        if self.kind == KIND_RECIPIENT:
            out += self.enc
        return out

    def encode(self) -> bytes:
        body = self.public() + self.wrapped
        return struct.pack(">BH", self.kind, len(body)) + body + _check_value(self.kind, body)

    def context(self, container_id: bytes) -> bytes:
        return _CONTEXT + container_id + bytes([self.kind]) + self.public()

    def describe(self) -> dict[str, object]:
        """What ``key list`` shows: nothing secret."""
        info: dict[str, object] = {
            "kind": KIND_NAMES.get(self.kind, f"unknown-{self.kind}"),
            "label": self.label,
            "created": _timestamp(self.created),
            "kdf": self.kdf.describe() if self.kdf else None,
        }
        if self.vault is not None:
            info["vault"] = self.vault.describe()
        return info


def _take(data: memoryview, n: int) -> tuple[bytes, memoryview]:
    if len(data) < n:
        raise CorruptKeySlot("key slot is truncated")
    return bytes(data[:n]), data[n:]


def _decode_body(kind: int, body: bytes) -> KeySlot:
    rest = memoryview(body)
    raw, rest = _take(rest, 9)
    created, label_len = struct.unpack(">QB", raw)
    label_raw, rest = _take(rest, label_len)
    try:
        label = label_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptKeySlot("key slot label is not UTF-8") from None
    kdf: KdfParams | None = None
    salt = b""
    if kind == KIND_PASSWORD:
        kdf_id, rest = _take(rest, 1)
        if kdf_id[0] == _KDF_ARGON2ID:
            raw, rest = _take(rest, 12)
            m, t, p = struct.unpack(">III", raw)
            kdf = Argon2idParams(memory_kib=m, iterations=t, parallelism=p)
        elif kdf_id[0] == _KDF_SCRYPT:
            raw, rest = _take(rest, 9)
            log2_n, r, p = struct.unpack(">BII", raw)
            kdf = ScryptParams(log2_n=log2_n, r=r, p=p)
        else:
            raise CorruptKeySlot(f"unknown password hash {kdf_id[0]} in key slot")
        salt_len, rest = _take(rest, 1)
        if not MIN_SALT <= salt_len[0] <= MAX_SALT:
            raise CorruptKeySlot(f"password salt must be {MIN_SALT} to {MAX_SALT} bytes")
        salt, rest = _take(rest, salt_len[0])
    vault: VaultSlot | None = None
    if kind == KIND_VAULT:
        vault, rest = VaultSlot.decode(rest)
    enc = b""
    if kind == KIND_RECIPIENT:
        enc, rest = _take(rest, _ENCAPSULATION)
    wrapped, rest = _take(rest, _WRAPPED)
    if len(rest):
        raise CorruptKeySlot("key slot has trailing bytes")
    return KeySlot(kind, label, created, kdf, salt, wrapped, vault, enc)


class KeySlots:
    """The key slots of one container, identified by ``container_id``."""

    def __init__(
        self, container_id: bytes, slots: Iterable[KeySlot] = (), unknown: Iterable[bytes] = ()
    ):
        if len(container_id) != CONTAINER_ID_SIZE:
            raise InvalidArgument(f"container id must be {CONTAINER_ID_SIZE} bytes")
        self.container_id = container_id
        self.slots = list(slots)
        # Slots of kinds this version does not know (say a key-vault slot from a newer one)
        # are kept as they are, so rewriting the header does not lose them.
        self.unknown = list(unknown)
        # Kind bytes of the slots that failed their check or did not parse.
        self.damaged_kinds: list[int] = []

    @property
    def damaged(self) -> int:
        return len(self.damaged_kinds)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self) -> bytes:
        self._vault_alone()
        parts = [s.encode() for s in self.slots] + self.unknown
        if not 1 <= len(parts) <= MAX_SLOTS:
            raise InvalidArgument(f"a container holds 1 to {MAX_SLOTS} key slots")
        return bytes([len(parts)]) + b"".join(parts)

    @classmethod
    def decode(cls, container_id: bytes, data: bytes) -> KeySlots:
        """Parses slots. A slot whose redundancy check fails is counted as damaged and skipped;
        structure errors elsewhere raise :class:`CorruptKeySlot`."""
        view = memoryview(data)
        count_raw, view = _take(view, 1)
        if not 1 <= count_raw[0] <= MAX_SLOTS:
            raise CorruptKeySlot(
                f"a container holds 1 to {MAX_SLOTS} key slots, not {count_raw[0]}"
            )
        slots, unknown, damaged = [], [], []
        for _ in range(count_raw[0]):
            head, view = _take(view, 3)
            kind, length = struct.unpack(">BH", head)
            body, view = _take(view, length)
            check, view = _take(view, _CHECK)
            if check != _check_value(kind, body):
                damaged.append(kind)
                continue
            if kind in KIND_NAMES:
                try:
                    slots.append(_decode_body(kind, body))
                except CorruptKeySlot:
                    damaged.append(kind)
            else:
                unknown.append(head + body + check)
        if len(view):
            raise CorruptKeySlot("trailing bytes after the key slots")
        result = cls(container_id, slots, unknown)
        result.damaged_kinds = damaged
        return result

    # -- opening ----------------------------------------------------------------------------

    def _try(self, kind: int, kek_of: Callable[[KeySlot], bytes]) -> bytes:
        return self._open_slot(kind, kek_of)[1]

    def _open_slot(self, kind: int, kek_of: Callable[[KeySlot], bytes]) -> tuple[KeySlot, bytes]:
        """The first slot of ``kind`` that opens, and the data key it holds."""
        # Only slots of the credential's kind matter (docs/FORMAT.md, Opening).
        damaged = self.damaged_kinds.count(kind)
        candidates = [s for s in self.slots if s.kind == kind]
        if kind == KIND_PASSWORD:
            candidates = password_attempt_order(candidates)
        for slot in candidates:
            try:
                kek = kek_of(slot)
                return slot, _core.unwrap_key(kek, slot.wrapped, slot.context(self.container_id))
            except KeyMismatch:
                continue
            except (CorruptKeySlot, KdfLimitExceeded):
                damaged += 1
        if damaged:
            raise CorruptKeySlot(
                f"{damaged} key slot(s) are damaged and no intact {KIND_NAMES[kind]} slot opened"
            )
        if not candidates:
            raise NoMatchingKeySlot(f"this container has no {KIND_NAMES[kind]} slot")
        if kind == KIND_PASSWORD:
            raise WrongPassword("wrong password")
        if kind == KIND_RECIPIENT:
            raise NoMatchingKeySlot(
                f"none of the {len(candidates)} recipient slot(s) is for this identity"
            )
        raise WrongRecoveryKey("wrong recovery key")

    def unlock(
        self,
        *,
        password: str | bytes | Password | None = None,
        recovery_key: RecoveryKey | None = None,
    ) -> bytes:
        """The data key, from a password or a recovery key. One AEAD per recovery-key slot;
        one KDF and one AEAD per password slot, cheapest first, at most
        ``MAX_PASSWORD_SLOTS``; nothing else of the container is read."""
        if (password is None) == (recovery_key is None):
            raise InvalidArgument("give exactly one of password= or recovery_key=")
        if recovery_key is not None:
            kek = recovery_key.key
            return self._try(KIND_RECOVERY_KEY, lambda slot: kek)
        assert password is not None
        secret = Password(password).secret
        return self._try(KIND_PASSWORD, lambda slot: _password_kek(slot, secret))

    def unlock_identity(self, identity: Identity) -> bytes:
        """The data key from the recipient slot made for ``identity``: one decapsulation and
        one AEAD per recipient slot (slots do not say whom they are for). None for it is
        :class:`NoMatchingKeySlot`; a damaged one, :class:`CorruptKeySlot`."""
        return self._try(KIND_RECIPIENT, lambda slot: identity.decapsulate(slot.enc))

    def vault_slots(self) -> list[VaultSlot]:
        return [s.vault for s in self.slots if s.kind == KIND_VAULT and s.vault is not None]

    def unlock_vault(self, fetch: Callable[[VaultSlot], bytes]) -> bytes:
        """The data key through a key vault: ``fetch(vault_slot)`` logs in and returns the key
        the vault released (``VaultClient.unlock``), one attempt per call. The slot's check
        then proves that key is this container's, and that the slot's URL, record and pinned
        key are as a holder of the data key wrote them."""
        damaged = self.damaged_kinds.count(KIND_VAULT)
        candidates = [s for s in self.slots if s.kind == KIND_VAULT and s.vault is not None]
        if not candidates:
            if damaged:
                raise CorruptKeySlot(f"{damaged} vault key slot(s) are damaged")
            raise NoMatchingKeySlot("this container has no vault slot")
        for slot in candidates[:-1]:
            try:
                return self._open_vault(slot, fetch)
            except (VaultRecordGone, VaultUnavailable):
                continue  # another vault may still hold the key
        return self._open_vault(candidates[-1], fetch)

    def _open_vault(self, slot: KeySlot, fetch: Callable[[VaultSlot], bytes]) -> bytes:
        assert slot.vault is not None
        data_key = fetch(slot.vault)
        if not self.verify_vault(slot, data_key):
            raise CorruptKeySlot(
                "the vault released a key that is not this container's, or the vault slot was "
                "altered"
            )
        return data_key

    def verify_vault(self, slot: KeySlot, data_key: bytes) -> bool:
        """Whether ``slot`` is a vault slot that a holder of ``data_key`` wrote for this
        container: its check opens. Only then may its URL, record, pinned key and KSF be used;
        a slot the storage planted fails here, since it cannot know the data key."""
        if slot.kind != KIND_VAULT or slot.vault is None:
            return False
        check = _core.hkdf_sha256(data_key, info=_VAULT_CHECK_INFO)
        try:
            _core.unwrap_key(check, slot.wrapped, slot.context(self.container_id))
        except (KeyMismatch, CorruptKeySlot):
            return False
        return True

    def refuse_vault_beside_password(self) -> None:
        """Raises :class:`ConflictingKeySlots` if a vault slot sits next to a password slot."""
        kinds = {s.kind for s in self.slots}
        if KIND_VAULT in kinds and KIND_PASSWORD in kinds:
            raise ConflictingKeySlots(
                "this container holds a vault slot and a password slot, which no writer makes "
                "(offline guessing of the vault's password): refused; one of them was planted"
            )

    # -- editing ----------------------------------------------------------------------------

    def add_password(
        self,
        data_key: bytes,
        password: str | bytes | Password,
        *,
        kdf: KdfParams | None = None,
        label: str = "",
    ) -> KeySlot:
        if self.vault_slots():
            raise InvalidArgument(
                "this container's password is held by a key vault: a password slot next to it "
                "would allow offline guessing again"
            )
        if sum(s.kind == KIND_PASSWORD for s in self.slots) >= MAX_PASSWORD_SLOTS:
            raise InvalidArgument(f"a container holds at most {MAX_PASSWORD_SLOTS} password slots")
        kdf = kdf or Argon2idParams()
        salt = _core.generate_key()[:16]
        slot = KeySlot(KIND_PASSWORD, _label(label), int(time.time()), kdf, salt, b"")
        kek = kdf.derive(Password(password).secret, salt)
        return self._add(slot, kek, data_key)

    def add_recovery_key(
        self, data_key: bytes, recovery_key: RecoveryKey, *, label: str = ""
    ) -> KeySlot:
        slot = KeySlot(KIND_RECOVERY_KEY, _label(label), int(time.time()), None, b"", b"")
        return self._add(slot, recovery_key.key, data_key)

    def add_recipient(self, data_key: bytes, recipient: Recipient, *, label: str = "") -> KeySlot:
        """A slot that ``recipient``'s identity opens; needs only the public key."""
        enc, kek = _core.recipient_encapsulate(recipient.public)
        slot = KeySlot(KIND_RECIPIENT, _label(label), int(time.time()), None, b"", b"", None, enc)
        return self._add(slot, kek, data_key)

    def add_vault(self, data_key: bytes, vault: VaultSlot, *, label: str = "") -> KeySlot:
        """Records a key vault that holds ``data_key`` (from ``VaultClient.register``). Its
        ``wrapped`` field seals 32 zero bytes under a key derived from the data key: a check,
        since the data key itself is in the vault."""
        if any(s.kind == KIND_PASSWORD for s in self.slots):
            raise InvalidArgument(
                "a vault slot cannot join a password slot (offline guessing would remain): "
                "remove the password slot first"
            )
        slot = KeySlot(KIND_VAULT, _label(label), int(time.time()), None, b"", b"", vault)
        check = _core.hkdf_sha256(data_key, info=_VAULT_CHECK_INFO)
        return self._add(slot, check, bytes(32))

    def replace_vault(self, data_key: bytes, old: VaultSlot, new: VaultSlot) -> KeySlot:
        """Swaps the slot of vault record ``old`` for ``new`` (a re-registration), in place."""
        index = next(i for i, s in enumerate(self.slots) if s.vault == old)
        label = self.slots.pop(index).label
        added = self.add_vault(data_key, new, label=label)
        self.slots.insert(index, self.slots.pop())
        return added

    def _vault_alone(self) -> None:
        kinds = {s.kind for s in self.slots}
        if KIND_VAULT in kinds and KIND_PASSWORD in kinds:
            raise InvalidArgument(
                "a container with a vault slot must not hold a password slot: remove it"
            )

    def check_count(self) -> None:
        """Raises :class:`TooManyKeySlots` when the slots, all told, are more than a container
        may hold, or hold more password slots than a reader tries; no KDF has run yet."""
        total = len(self.slots) + len(self.unknown) + len(self.damaged_kinds)
        if total > MAX_SLOTS:
            raise TooManyKeySlots(
                f"{total} key slots; a container holds at most {MAX_SLOTS} (the others were "
                "added by whoever can write to the storage)"
            )
        passwords = sum(s.kind == KIND_PASSWORD for s in self.slots)
        passwords += self.damaged_kinds.count(KIND_PASSWORD)
        if passwords > MAX_PASSWORD_SLOTS:
            raise TooManyKeySlots(
                f"{passwords} password slots; a container holds at most {MAX_PASSWORD_SLOTS}, "
                "each costing a password hash per open"
            )

    def _add(self, slot: KeySlot, kek: bytes, data_key: bytes) -> KeySlot:
        if len(self.slots) + len(self.unknown) >= MAX_SLOTS:
            raise InvalidArgument(f"a container holds at most {MAX_SLOTS} key slots")
        wrapped = _core.wrap_key(kek, data_key, slot.context(self.container_id))
        sealed = replace(slot, wrapped=wrapped)
        self.slots.append(sealed)
        return sealed

    def remove(self, index: int) -> KeySlot:
        """Removes slot ``index`` (as listed); never the last one."""
        if not 0 <= index < len(self.slots):
            raise InvalidArgument(f"no key slot {index}; there are {len(self.slots)}")
        if len(self.slots) == 1:
            raise InvalidArgument("refusing to remove the last key slot: the data would be lost")
        return self.slots.pop(index)

    def change_password(
        self,
        old: str | bytes | Password,
        new: str | bytes | Password,
        *,
        kdf: KdfParams | None = None,
    ) -> None:
        """Rewrites the password slot that ``old`` opens; every other slot stays as it is."""
        slot, data_key = self.open_password_slot(old)
        i = self.slots.index(slot)
        del self.slots[i]
        self.add_password(data_key, new, kdf=kdf or slot.kdf, label=slot.label)
        self.slots.insert(i, self.slots.pop())  # keep the listing order

    def open_password_slot(self, password: str | bytes | Password) -> tuple[KeySlot, bytes]:
        """The password slot that ``password`` opens and the data key; the precise error
        (wrong password, damaged, none) otherwise."""
        secret = Password(password).secret
        return self._open_slot(KIND_PASSWORD, lambda slot: _password_kek(slot, secret))

    def describe(self) -> list[dict[str, object]]:
        return [s.describe() for s in self.slots]


def _label(label: str) -> str:
    if len(label.encode("utf-8")) > MAX_LABEL:
        raise InvalidArgument(f"a key slot label is at most {MAX_LABEL} bytes of UTF-8")
    return label


def _kdf_cost(slot: KeySlot) -> int:
    """Roughly memory x passes, in KiB: to try the cheapest password slots first."""
    kdf = slot.kdf
    if isinstance(kdf, Argon2idParams):
        return kdf.memory_kib * kdf.iterations
    if isinstance(kdf, ScryptParams):
        return (128 * kdf.r * (1 << kdf.log2_n) * kdf.p) // 1024 * 2
    return 0


def password_attempt_order(slots: list[KeySlot]) -> list[KeySlot]:
    """The password slots an open tries, in order: refused beyond ``MAX_PASSWORD_SLOTS``
    (before any KDF runs), else the cheapest first, so a costly slot that the storage added
    delays nothing a cheaper real one opens."""
    if len(slots) > MAX_PASSWORD_SLOTS:
        raise TooManyKeySlots(
            f"{len(slots)} password slots; a container holds at most {MAX_PASSWORD_SLOTS}, "
            "each costing a password hash per open"
        )
    return sorted(slots, key=_kdf_cost)


def _password_kek(slot: KeySlot, password: bytes) -> bytes:
    if slot.kdf is None:
        raise CorruptKeySlot("password slot without password-hash parameters")
    return slot.kdf.derive(password, slot.salt)


def _timestamp(seconds: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"@{seconds}"  # out of the platform's range: shown raw
