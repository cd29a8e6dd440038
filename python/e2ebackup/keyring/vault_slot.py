"""What a container records about its key in a vault: the public part of a key slot of kind
``0x03``. Nothing here is secret; all of it is authenticated by the slot's context.

Layout (appended to the common slot fields, before ``wrapped``)::

    url_len (u16) || url (UTF-8) || record_id (16) || server_public_key (32)
    || ksf: memory_kib (u32) || iterations (u32) || parallelism (u32)

``ksf`` are the Argon2id parameters of OPAQUE's key-stretching function, which the client runs
at registration and must run with the same parameters at every login.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from e2ebackup.errors import CorruptKeySlot, InvalidArgument
from e2ebackup.keys import Argon2idParams

__all__ = ["PUBLIC_KEY_SIZE", "RECORD_ID_SIZE", "VaultSlot"]

RECORD_ID_SIZE = 16
PUBLIC_KEY_SIZE = 32
MAX_URL = 2048
_KSF = struct.Struct(">III")


@dataclass(frozen=True)
class VaultSlot:
    """Where the key is held (``url``, ``record_id``) and which vault may hold it (the pinned
    ``server_public_key``); ``ksf`` as chosen at registration."""

    url: str
    record_id: bytes
    server_public_key: bytes = field(repr=False)
    ksf: Argon2idParams

    def __post_init__(self) -> None:
        if not self.url or len(self.url.encode("utf-8")) > MAX_URL:
            raise InvalidArgument(f"a vault URL is 1 to {MAX_URL} bytes of UTF-8")
        if len(self.record_id) != RECORD_ID_SIZE:
            raise InvalidArgument(f"a vault record id is {RECORD_ID_SIZE} bytes")
        if len(self.server_public_key) != PUBLIC_KEY_SIZE:
            raise InvalidArgument(f"a vault public key is {PUBLIC_KEY_SIZE} bytes")

    @property
    def fingerprint(self) -> str:
        """The pinned key as hex, for showing and for ``--vault-public-key``."""
        return self.server_public_key.hex()

    def encode(self) -> bytes:
        url = self.url.encode("utf-8")
        k = self.ksf
        return (
            struct.pack(">H", len(url))
            + url
            + self.record_id
            + self.server_public_key
            + _KSF.pack(k.memory_kib, k.iterations, k.parallelism)
        )

    @classmethod
    def decode(cls, data: memoryview) -> tuple[VaultSlot, memoryview]:
        """Parses the vault fields at the start of ``data``; returns them and the rest."""

        def take(view: memoryview, n: int) -> tuple[bytes, memoryview]:
            if len(view) < n:
                raise CorruptKeySlot("vault key slot is truncated")
            return bytes(view[:n]), view[n:]

        raw, rest = take(data, 2)
        url_raw, rest = take(rest, struct.unpack(">H", raw)[0])
        record_id, rest = take(rest, RECORD_ID_SIZE)
        public_key, rest = take(rest, PUBLIC_KEY_SIZE)
        ksf_raw, rest = take(rest, _KSF.size)
        m, t, p = _KSF.unpack(ksf_raw)
        try:
            url = url_raw.decode("utf-8")
            slot = cls(url, record_id, public_key, Argon2idParams(m, t, p))
        except (UnicodeDecodeError, InvalidArgument):
            raise CorruptKeySlot("vault key slot is malformed") from None
        return slot, rest

    def describe(self) -> dict[str, object]:
        return {
            "url": self.url,
            "record": self.record_id.hex(),
            "public_key": self.fingerprint,
            "ksf": self.ksf.describe(),
        }
