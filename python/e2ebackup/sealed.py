"""Password-sealed files: a self-describing container for one file (a header of key slots a
password, a recovery key or a vault opens, then one C2SP message), the drop-in for
pyAesCrypt-style code. ``_files`` is the same payload without the header, under a raw key;
``streams`` moves the bytes for both; the credential rules are ``keyring.policy``'s.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from e2ebackup import _core
from e2ebackup.errors import InvalidArgument, NotSealedFile as NotSealedFile
from e2ebackup.keyring import policy
from e2ebackup.keyring.policy import Credentials, Opened
from e2ebackup.keyring.slots import CONTAINER_ID_SIZE, MAX_SLOTS, KeySlot, KeySlots
from e2ebackup.keys import KdfParams, Password, RecoveryKey
from e2ebackup.paths import StrPath, atomic_output
from e2ebackup.recipients import Identity, Recipient
from e2ebackup.streams import Progress, open_destination, open_source, pump

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

__all__ = [
    "MAGIC",
    "HeaderSlots",
    "NotSealedFile",
    "SealedHeader",
    "add_password",
    "add_recipient",
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


class HeaderSlots:
    """The slot area of a sealed file's header, as the key policy's ``SlotStore``: edits are
    staged in the header and written by ``commit`` (``write``), all at once."""

    def __init__(self, header: SealedHeader, write: Callable[[SealedHeader], None] | None = None):
        self.header = header
        self._write = write

    @property
    def container_id(self) -> bytes:
        return self.header.container_id

    def load(self) -> KeySlots:
        return self.header.slots

    def _index(self, slot: KeySlot) -> int:
        return next(i for i, s in enumerate(self.header.slots.slots) if s is slot)

    def add(self, slot: KeySlot) -> None:
        slots = self.header.slots
        if len(slots.slots) + len(slots.unknown) >= MAX_SLOTS:
            raise InvalidArgument(f"a container holds at most {MAX_SLOTS} key slots")
        slots.slots.append(slot)

    def replace(self, old: KeySlot, new: KeySlot) -> None:
        self.header.slots.slots[self._index(old)] = new  # the listing order stays

    def remove(self, slot: KeySlot) -> None:
        del self.header.slots.slots[self._index(slot)]

    def commit(self) -> None:
        if self._write is not None:
            self._write(self.header)


def is_sealed(file: StrPath) -> bool:
    with builtins.open(file, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _credentials(
    password: str | bytes | Password | None,
    recovery_key: RecoveryKey | str | None,
    *,
    identity: Identity | None = None,
    recipients: Iterable[Recipient | str] = (),
) -> Credentials:
    credentials = Credentials.of(password, recovery_key, identity=identity, recipients=recipients)
    if not credentials.any:
        raise InvalidArgument("a password, a recovery key, an identity or a recipient is needed")
    return credentials


def _new_header(algorithm: str) -> SealedHeader:
    container_id = _core.generate_key()[:CONTAINER_ID_SIZE]
    return SealedHeader(VERSION, algorithm, container_id, KeySlots(container_id), 0)


def seal_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    kdf: KdfParams | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
    vault: VaultClient | None = None,
    recipients: Iterable[Recipient | str] = (),
) -> int:
    """Encrypts ``src`` into a sealed file that ``password``, ``recovery_key`` or the identity
    of any of ``recipients`` opens. With ``vault``, the password is registered with that key
    vault instead of getting a password slot, so it cannot be guessed offline
    (docs/VAULT.md). Sealing to recipients needs only their public keys."""
    credentials = _credentials(password, recovery_key, recipients=recipients)
    if algorithm not in _ALGORITHM_IDS:
        raise InvalidArgument("algorithm must be 'aes-256-gcm' or 'chacha20-poly1305'")
    if vault is not None and credentials.password is None:
        raise InvalidArgument("a key vault needs a password")
    data_key = _core.generate_key()
    header = _new_header(algorithm)
    policy.enrol(
        HeaderSlots(header),
        data_key,
        Credentials(
            credentials.password,
            credentials.recovery_key,
            vault,
            recipients=credentials.recipients,
        ),
        kdf=kdf,
    )
    encryptor = _core.Encryptor(
        header.payload_key(data_key), header.payload_context(), algorithm=algorithm, threads=threads
    )
    with open_source(src) as fin, open_destination(dst, overwrite) as fout:
        fout.write(header.encode())
        return pump(fin, fout, encryptor, progress)


def unseal_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
    identity: Identity | None = None,
) -> int:
    """Decrypts a sealed file. A wrong password is found from the header alone (one KDF and
    one AEAD per slot), before the payload is read; nothing is left at ``dst`` on failure."""
    credentials = _credentials(password, recovery_key, identity=identity)
    with open_source(src) as fin:
        header = read_header(fin)
        data_key = policy.unlock(HeaderSlots(header), credentials).data_key
        decryptor = _core.Decryptor(
            header.payload_key(data_key),
            header.payload_context(),
            algorithm=header.algorithm,
            threads=threads,
        )
        # Progress counts the file's bytes, header included, as the return value does: a
        # display's total is the file's size.
        offset = header.payload_offset
        counted = None if progress is None else (lambda done: progress(offset + done))
        with open_destination(dst, overwrite) as fout:
            return offset + pump(fin, fout, decryptor, counted)


def check(
    file: StrPath,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    identity: Identity | None = None,
) -> None:
    """Raises unless the credential opens the file's key slots (the payload is not read)."""
    credentials = _credentials(password, recovery_key, identity=identity)
    with builtins.open(file, "rb") as f:
        policy.unlock(HeaderSlots(read_header(f)), credentials)


def list_slots(file: StrPath) -> list[dict[str, object]]:
    with builtins.open(file, "rb") as f:
        return read_header(f).slots.describe()


@contextlib.contextmanager
def _edit_header(
    file: StrPath,
    password: str | bytes | Password | None,
    recovery_key: RecoveryKey | str | None,
    identity: Identity | None = None,
) -> Iterator[tuple[HeaderSlots, Opened]]:
    """Yields the header's slots and the unlocked container; the policy's ``commit`` rewrites
    the file with the edited header and the same payload (copied, not re-encrypted),
    atomically."""
    credentials = _credentials(password, recovery_key, identity=identity)
    with builtins.open(file, "rb") as f:

        def write(header: SealedHeader) -> None:
            encoded = header.encode()
            with atomic_output(file) as out:
                out.write(encoded)
                f.seek(header.payload_offset)
                shutil.copyfileobj(f, out, 1 << 20)
                os.fchmod(out.fileno(), os.fstat(f.fileno()).st_mode & 0o7777)

        store = HeaderSlots(read_header(f), write)
        yield store, policy.unlock(store, credentials)


def add_password(
    file: StrPath,
    new_password: str | bytes | Password,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    kdf: KdfParams | None = None,
    label: str = "",
) -> None:
    new = Password(new_password)
    with _edit_header(file, password, recovery_key) as (store, opened):
        policy.add_password(store, opened, new, kdf=kdf, label=label)


def add_recovery_key(
    file: StrPath,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    new_recovery_key: RecoveryKey | None = None,
    label: str = "",
) -> RecoveryKey:
    """Adds a recovery-key slot (a new random key unless one is given) and returns the key."""
    key = new_recovery_key or RecoveryKey.generate()
    with _edit_header(file, password, recovery_key) as (store, opened):
        policy.add_recovery_key(store, opened, key, label=label)
    return key


def add_recipient(
    file: StrPath,
    recipient: Recipient | str,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    identity: Identity | None = None,
    label: str = "",
) -> None:
    """Adds a slot that ``recipient``'s identity opens; a credential must open the file."""
    if isinstance(recipient, str):
        recipient = Recipient.parse(recipient)
    with _edit_header(file, password, recovery_key, identity) as (store, opened):
        policy.add_recipient(store, opened, recipient, label=label)


def remove_slot(
    file: StrPath,
    index: int,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
) -> None:
    """Removes slot ``index`` (as listed); never the last. A credential must open the file."""
    with _edit_header(file, password, recovery_key) as (store, opened):
        policy.remove_slot(store, opened, index)


def change_password(
    file: StrPath,
    old: str | bytes | Password,
    new: str | bytes | Password,
    *,
    kdf: KdfParams | None = None,
) -> None:
    """Rewrites only the slot that ``old`` opens. A password held by a key vault is registered
    anew (a new record) at the same vault; the old record is deleted once the file holds the
    new slot. A vault slot that does not prove itself with the data key is dropped, never
    contacted."""
    new_password = Password(new)
    with _edit_header(file, old, None) as (store, opened):
        policy.change_password(store, opened, Password(old), new_password, kdf=kdf)


def rotate(
    file: StrPath,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    new_password: str | bytes | Password | None = None,
    new_recovery_key: RecoveryKey | None = None,
    kdf: KdfParams | None = None,
    threads: int | None = None,
    identity: Identity | None = None,
    recipients: Iterable[Recipient | str] = (),
) -> None:
    """Re-encrypts the file under a fresh data key, streaming. The new file keeps the kinds of
    credential the old one had: a password held by a vault is registered at the same (proven)
    vault, else it gets a password slot (``new_password``, else ``password``); and a
    recovery-key slot (``new_recovery_key``, else ``recovery_key``) if either is given; a slot
    for each of ``recipients``, else for ``identity``'s recipient if ``identity`` opened it
    (recipient slots do not name their recipient, so others must be given again). An old
    data key that leaked can still read old copies of the file, never the new one."""
    credentials = _credentials(password, recovery_key, identity=identity, recipients=recipients)
    keep_password = Password.of(new_password) or credentials.password
    keep_rk = new_recovery_key if new_recovery_key is not None else credentials.recovery_key
    with builtins.open(file, "rb") as f:
        header = read_header(f)
        opened = policy.unlock(HeaderSlots(header), credentials)
        decryptor = _core.Decryptor(
            header.payload_key(opened.data_key),
            header.payload_context(),
            algorithm=header.algorithm,
            threads=threads,
        )
        new_key = _core.generate_key()
        new = _new_header(header.algorithm)
        keep_recipients = credentials.recipients
        if not keep_recipients and identity is not None and opened.has_recipient_slot:
            keep_recipients = (identity.recipient,)
        kinds = policy.rotate(
            opened, password=keep_password, recovery_key=keep_rk, recipients=keep_recipients
        )
        policy.enrol(HeaderSlots(new), new_key, kinds, kdf=kdf)
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
