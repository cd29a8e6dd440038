"""Password-sealed files: a self-describing container for one file, the drop-in for
pyAesCrypt-style code with modern, parallel cryptography.

Layout (normative in docs/FORMAT.md)::

    magic "E2EBSEAL" | version 1 | algorithm | container id (16) | slot area length (u32)
    | key slots | payload: one C2SP chunked-encryption message

The payload key is derived from the data key; the payload's context binds the fixed part of the
header, not the slots, so adding a slot or changing a password rewrites the header only.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from e2ebackup import _core
from e2ebackup._files import Progress, _destination, _pump, _source
from e2ebackup._paths import StrPath, atomic_output
from e2ebackup.errors import E2EBackupError, InvalidArgument
from e2ebackup.keys import KdfParams, RecoveryKey
from e2ebackup.keyslots import CONTAINER_ID_SIZE, KeySlots
from e2ebackup.vault.slot import VaultSlot

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

__all__ = [
    "MAGIC",
    "NotSealedFile",
    "SealedHeader",
    "add_password",
    "add_recovery_key",
    "change_password",
    "check",
    "is_sealed",
    "list_slots",
    "read_header",
    "remove_slot",
    "rotate",
    "seal_file",
    "unseal_file",
]

MAGIC = b"E2EBSEAL"
VERSION = 1
_ALGORITHMS = {1: "aes-256-gcm", 2: "chacha20-poly1305"}
_ALGORITHM_IDS = {name: i for i, name in _ALGORITHMS.items()}
_FIXED = struct.Struct(">8sBB16sI")  # magic, version, algorithm, container id, slot area length
MAX_SLOT_AREA = 64 * 1024
PAYLOAD_INFO = b"e2ebackup/v1/sealed-file/payload"
PAYLOAD_CONTEXT = b"e2ebackup/v1/sealed-file\x00"


class NotSealedFile(E2EBackupError):
    """The file is not an e2ebackup sealed file (or its header is damaged beyond reading)."""


@dataclass
class SealedHeader:
    version: int
    algorithm: str
    container_id: bytes
    slots: KeySlots
    payload_offset: int

    def fixed(self) -> bytes:
        return MAGIC + bytes([self.version, _ALGORITHM_IDS[self.algorithm]]) + self.container_id

    def encode(self) -> bytes:
        area = self.slots.encode()
        if len(area) > MAX_SLOT_AREA:
            raise InvalidArgument("too many or too large key slots")
        return self.fixed() + struct.pack(">I", len(area)) + area

    def payload_key(self, data_key: bytes) -> bytes:
        return _core.hkdf_sha256(data_key, info=PAYLOAD_INFO)

    def payload_context(self) -> bytes:
        return PAYLOAD_CONTEXT + self.fixed()


def read_header(f: BinaryIO) -> SealedHeader:
    fixed = f.read(_FIXED.size)
    if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
        raise NotSealedFile("not an e2ebackup sealed file")
    _, version, algorithm, container_id, area_len = _FIXED.unpack(fixed)
    if version != VERSION:
        raise NotSealedFile(
            f"sealed-file version {version} is not supported (this reads {VERSION})"
        )
    if algorithm not in _ALGORITHMS:
        raise NotSealedFile(f"unknown payload algorithm {algorithm}")
    if area_len > MAX_SLOT_AREA:
        raise NotSealedFile("key slot area is larger than the format allows")
    area = f.read(area_len)
    if len(area) != area_len:
        raise NotSealedFile("the file is truncated inside its header")
    slots = KeySlots.decode(container_id, area)
    return SealedHeader(
        version, _ALGORITHMS[algorithm], container_id, slots, _FIXED.size + area_len
    )


def is_sealed(file: StrPath) -> bool:
    with builtins.open(file, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _credentials(
    password: str | bytes | None, recovery_key: RecoveryKey | str | None
) -> tuple[str | bytes | None, RecoveryKey | None]:
    if isinstance(recovery_key, str):
        recovery_key = RecoveryKey.parse(recovery_key)
    elif recovery_key is not None and not isinstance(recovery_key, RecoveryKey):
        raise InvalidArgument("recovery_key must be a RecoveryKey or its 64 hex digits")
    if password is None and recovery_key is None:
        raise InvalidArgument("a password or a recovery key is needed")
    return password, recovery_key


def _unlock(
    header: SealedHeader, password: str | bytes | None, recovery_key: RecoveryKey | None
) -> bytes:
    """The data key. A recovery key, when given, is tried first: it costs one AEAD, a password
    a full KDF."""
    if recovery_key is not None:
        return header.slots.unlock(recovery_key=recovery_key)
    if password is not None and header.slots.vault_slots():
        # The password is held by a key vault: one online attempt, no offline check.
        secret = password
        return header.slots.unlock_vault(lambda vault: _vault_unlock(vault, secret))
    return header.slots.unlock(password=password)


def _vault_client(vault: VaultSlot) -> VaultClient:
    from e2ebackup.vault.client import client_for

    return client_for(vault)


def _vault_unlock(vault: VaultSlot, password: str | bytes) -> bytes:
    from e2ebackup.vault.client import unlock_slot

    return unlock_slot(vault, password)


def seal_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    kdf: KdfParams | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
    vault: VaultClient | None = None,
) -> int:
    """Encrypts ``src`` into a sealed file that ``password`` and/or ``recovery_key`` opens.
    With ``vault``, the password is registered with that key vault instead of getting a
    password slot, so it cannot be guessed offline (docs/VAULT.md)."""
    password, rk = _credentials(password, recovery_key)
    if algorithm not in _ALGORITHM_IDS:
        raise InvalidArgument("algorithm must be 'aes-256-gcm' or 'chacha20-poly1305'")
    data_key = _core.generate_key()
    header = SealedHeader(
        VERSION, algorithm, _core.generate_key()[:CONTAINER_ID_SIZE], KeySlots(bytes(16)), 0
    )
    header.slots = KeySlots(header.container_id)
    if vault is not None:
        if password is None:
            raise InvalidArgument("a key vault needs a password")
        header.slots.add_vault(data_key, vault.register(password, data_key))
    elif password is not None:
        header.slots.add_password(data_key, password, kdf=kdf)
    if rk is not None:
        header.slots.add_recovery_key(data_key, rk)
    encryptor = _core.Encryptor(
        header.payload_key(data_key), header.payload_context(), algorithm=algorithm, threads=threads
    )
    with _source(src) as fin, _destination(dst, overwrite) as fout:
        fout.write(header.encode())
        return _pump(fin, fout, encryptor, progress)


def unseal_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Decrypts a sealed file. A wrong password is found from the header alone (one KDF and
    one AEAD per slot), before the payload is read; nothing is left at ``dst`` on failure."""
    password, rk = _credentials(password, recovery_key)
    with _source(src) as fin:
        header = read_header(fin)
        data_key = _unlock(header, password, rk)
        decryptor = _core.Decryptor(
            header.payload_key(data_key),
            header.payload_context(),
            algorithm=header.algorithm,
            threads=threads,
        )
        with _destination(dst, overwrite) as fout:
            return header.payload_offset + _pump(fin, fout, decryptor, progress)


def check(
    file: StrPath,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
) -> None:
    """Raises unless the credential opens the file's key slots (the payload is not read)."""
    password, rk = _credentials(password, recovery_key)
    with builtins.open(file, "rb") as f:
        _unlock(read_header(f), password, rk)


def list_slots(file: StrPath) -> list[dict[str, object]]:
    with builtins.open(file, "rb") as f:
        return read_header(f).slots.describe()


@contextlib.contextmanager
def _edit_header(
    file: StrPath, password: str | bytes | None, recovery_key: RecoveryKey | str | None
) -> Iterator[tuple[SealedHeader, bytes]]:
    """Yields the header and data key; on a clean exit the file is rewritten with the edited
    header and the same payload (copied, not re-encrypted), atomically."""
    password, rk = _credentials(password, recovery_key)
    with builtins.open(file, "rb") as f:
        header = read_header(f)
        data_key = _unlock(header, password, rk)
        yield header, data_key
        encoded = header.encode()
        with atomic_output(file) as out:
            out.write(encoded)
            f.seek(header.payload_offset)
            shutil.copyfileobj(f, out, 1 << 20)
            os.fchmod(out.fileno(), os.fstat(f.fileno()).st_mode & 0o7777)


def add_password(
    file: StrPath,
    new_password: str | bytes,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    kdf: KdfParams | None = None,
    label: str = "",
) -> None:
    with _edit_header(file, password, recovery_key) as (header, data_key):
        header.slots.add_password(data_key, new_password, kdf=kdf, label=label)


def add_recovery_key(
    file: StrPath,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    new_recovery_key: RecoveryKey | None = None,
    label: str = "",
) -> RecoveryKey:
    """Adds a recovery-key slot (a new random key unless one is given) and returns the key."""
    key = new_recovery_key or RecoveryKey.generate()
    with _edit_header(file, password, recovery_key) as (header, data_key):
        header.slots.add_recovery_key(data_key, key, label=label)
    return key


def remove_slot(
    file: StrPath,
    index: int,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
) -> None:
    """Removes slot ``index`` (as listed); never the last. A credential must open the file."""
    with _edit_header(file, password, recovery_key) as (header, _):
        header.slots.remove(index)


def change_password(
    file: StrPath, old: str | bytes, new: str | bytes, *, kdf: KdfParams | None = None
) -> None:
    """Rewrites only the slot that ``old`` opens. A password held by a key vault is registered
    anew (a new record); the old record is deleted once the file holds the new slot."""
    retired: list[VaultSlot] = []
    with _edit_header(file, old, None) as (header, data_key):
        if header.slots.vault_slots():
            for vault in header.slots.vault_slots():
                with _vault_client(vault) as client:
                    header.slots.replace_vault(data_key, vault, client.register(new, data_key))
                retired.append(vault)
        else:
            header.slots.change_password(old, new, kdf=kdf)
    for vault in retired:
        with _vault_client(vault) as client:
            client.delete(vault, old)


def rotate(
    file: StrPath,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    new_password: str | bytes | None = None,
    new_recovery_key: RecoveryKey | None = None,
    kdf: KdfParams | None = None,
    threads: int | None = None,
) -> None:
    """Re-encrypts the file under a fresh data key, streaming. The new file has a password
    slot (``new_password``, else ``password``) and a recovery-key slot (``new_recovery_key``,
    else ``recovery_key``) for whichever are given; other slots are not carried over. An old
    data key that leaked can still read old copies of the file, never the new one."""
    password, rk = _credentials(password, recovery_key)
    keep_password = new_password if new_password is not None else password
    keep_rk = new_recovery_key if new_recovery_key is not None else rk
    with builtins.open(file, "rb") as f:
        header = read_header(f)
        old_key = _unlock(header, password, rk)
        vaults = header.slots.vault_slots()
        decryptor = _core.Decryptor(
            header.payload_key(old_key),
            header.payload_context(),
            algorithm=header.algorithm,
            threads=threads,
        )
        new_key = _core.generate_key()
        new = SealedHeader(
            VERSION, header.algorithm, _core.generate_key()[:16], KeySlots(bytes(16)), 0
        )
        new.slots = KeySlots(new.container_id)
        if keep_password is not None and vaults:
            # The new data key goes to the same vaults, under new records.
            for vault in vaults:
                with _vault_client(vault) as client:
                    new.slots.add_vault(new_key, client.register(keep_password, new_key))
        elif keep_password is not None:
            new.slots.add_password(new_key, keep_password, kdf=kdf)
        if keep_rk is not None:
            new.slots.add_recovery_key(new_key, keep_rk)
        encryptor = _core.Encryptor(
            new.payload_key(new_key),
            new.payload_context(),
            algorithm=new.algorithm,
            threads=threads,
        )
        with atomic_output(file) as out:
            out.write(new.encode())
            while block := f.read(1 << 23):
                out.write(encryptor.update(decryptor.update(block)))
            out.write(encryptor.update(decryptor.finalize()))
            out.write(encryptor.finalize())
