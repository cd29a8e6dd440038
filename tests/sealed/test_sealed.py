"""Password-sealed files and their key slots: round trips, three distinct failures, tampering,
slot edits, rotation."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import e2ebackup
import pytest
from e2ebackup import sealed
from e2ebackup.errors import (
    CorruptKeySlot,
    E2EBackupError,
    InvalidArgument,
    InvalidTag,
    KeySlotError,
    NoMatchingKeySlot,
    WrongPassword,
    WrongRecoveryKey,
)
from e2ebackup.keyring.slots import KeySlots, _check_value
from e2ebackup.keys import Argon2idParams, RecoveryKey, ScryptParams
from helpers import CHUNK, random_bytes

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
DATA = random_bytes(3 * CHUNK + 11)


def make(tmp_path: Path, name: str = "f.sealed", **kwargs: object) -> Path:
    src = tmp_path / "plain"
    src.write_bytes(DATA)
    dst = tmp_path / name
    kwargs.setdefault("kdf", FAST)
    e2ebackup.encrypt_file(src, dst, **kwargs)  # type: ignore[arg-type]
    return dst


def opens(path: Path, **kwargs: object) -> bytes:
    out = io.BytesIO()
    e2ebackup.decrypt_file(path, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize(
    "kdf",
    [Argon2idParams(), FAST, ScryptParams(log2_n=10, r=8, p=1)],
    ids=["argon2id", "fast", "scrypt"],
)
def test_round_trip_for_every_slot_kind(tmp_path: Path, kdf: Argon2idParams | ScryptParams) -> None:
    rk = RecoveryKey.generate()
    path = make(tmp_path, password="correct horse", recovery_key=rk, kdf=kdf)
    assert path.read_bytes().startswith(sealed.MAGIC)
    assert opens(path, password="correct horse") == DATA
    assert opens(path, recovery_key=rk) == DATA
    assert opens(path, recovery_key=rk.reveal()) == DATA
    kinds = [s["kind"] for s in sealed.list_slots(path)]
    assert kinds == ["password", "recovery-key"]


def test_three_distinct_errors(tmp_path: Path) -> None:
    path = make(tmp_path, password="pw", recovery_key=RecoveryKey.generate())
    with pytest.raises(WrongPassword):
        opens(path, password="not it")
    with pytest.raises(WrongRecoveryKey):
        opens(path, recovery_key=RecoveryKey.generate())
    # Damage the wrapped key of the password slot and fix up its redundancy check: the
    # password still matches the commitment, but the key does not authenticate.
    blob = bytearray(path.read_bytes())
    header = sealed.read_header(io.BytesIO(bytes(blob)))
    first = header.slots.slots[0].encode()
    start = bytes(blob).index(first)
    body_len = struct.unpack(">H", first[1:3])[0]
    blob[start + 3 + body_len - 5] ^= 1
    blob[start + 3 + body_len : start + 3 + body_len + 16] = _check_value(
        first[0], bytes(blob[start + 3 : start + 3 + body_len])
    )
    path.write_bytes(blob)
    with pytest.raises(CorruptKeySlot):
        opens(path, password="pw")
    only_rk = make(tmp_path, "rk.sealed", recovery_key=RecoveryKey.generate())
    with pytest.raises(NoMatchingKeySlot):
        opens(only_rk, password="pw")


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.furthest = 0

    def read(self, n: int | None = -1) -> bytes:
        out = super().read(n)
        self.furthest = max(self.furthest, self.tell())
        return out

    def readinto(self, b: object) -> int:
        n = super().readinto(b)  # type: ignore[arg-type]
        self.furthest = max(self.furthest, self.tell())
        return n


def test_wrong_password_is_found_without_reading_the_payload(tmp_path: Path) -> None:
    path = make(tmp_path, password="pw")
    src = CountingReader(path.read_bytes())
    with pytest.raises(WrongPassword):
        e2ebackup.decrypt_file(src, io.BytesIO(), password="nope")
    header = sealed.read_header(io.BytesIO(path.read_bytes()))
    assert src.furthest <= header.payload_offset


def test_every_header_byte_and_the_payload_are_protected(tmp_path: Path) -> None:
    path = make(tmp_path, password="pw")
    blob = path.read_bytes()
    header = sealed.read_header(io.BytesIO(blob))
    positions = [*range(header.payload_offset), header.payload_offset + 5, len(blob) - 1]
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(E2EBackupError):
            e2ebackup.decrypt_file(io.BytesIO(bytes(bad)), io.BytesIO(), password="pw")
    for cut in (0, 5, 20, header.payload_offset - 1, header.payload_offset, len(blob) - 1):
        with pytest.raises(E2EBackupError):
            e2ebackup.decrypt_file(io.BytesIO(blob[:cut]), io.BytesIO(), password="pw")
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt_file(io.BytesIO(blob + b"x"), io.BytesIO(), password="pw")


def test_slots_do_not_move_between_files(tmp_path: Path) -> None:
    a = make(tmp_path, "a", password="pw")
    b = make(tmp_path, "b", password="pw")
    ha = sealed.read_header(io.BytesIO(a.read_bytes()))
    hb = sealed.read_header(io.BytesIO(b.read_bytes()))
    swapped = (
        ha.fixed()
        + b.read_bytes()[len(hb.fixed()) : hb.payload_offset]
        + a.read_bytes()[ha.payload_offset :]
    )
    with pytest.raises(KeySlotError):
        e2ebackup.decrypt_file(io.BytesIO(swapped), io.BytesIO(), password="pw")


def test_oversized_kdf_parameters_are_refused_not_attempted(tmp_path: Path) -> None:
    path = make(tmp_path, password="pw")
    header = sealed.read_header(io.BytesIO(path.read_bytes()))
    slot = header.slots.slots[0]
    greedy = type(slot)(
        slot.kind,
        slot.label,
        slot.created,
        Argon2idParams(memory_kib=64 << 20),
        slot.salt,
        slot.wrapped,
    )
    header.slots.slots[0] = greedy
    blob = header.encode() + path.read_bytes()[header.payload_offset :]
    with pytest.raises(CorruptKeySlot):
        e2ebackup.decrypt_file(io.BytesIO(blob), io.BytesIO(), password="pw")


def test_slot_operations(tmp_path: Path) -> None:
    path = make(tmp_path, password="old")
    sealed.add_password(path, "second", password="old", kdf=FAST, label="laptop")
    rk = sealed.add_recovery_key(path, password="second")
    assert [s["kind"] for s in sealed.list_slots(path)] == ["password", "password", "recovery-key"]
    assert sealed.list_slots(path)[1]["label"] == "laptop"
    before = sealed.read_header(io.BytesIO(path.read_bytes())).slots.slots
    sealed.change_password(path, "old", "new", kdf=FAST)
    after = sealed.read_header(io.BytesIO(path.read_bytes())).slots.slots
    assert after[1:] == before[1:]  # only the one slot was rewritten
    assert after[0] != before[0]
    with pytest.raises(WrongPassword):
        sealed.check(path, password="old")
    sealed.check(path, password="new")
    sealed.check(path, recovery_key=rk)
    assert opens(path, password="second") == DATA
    sealed.remove_slot(path, 0, password="second")
    sealed.remove_slot(path, 0, recovery_key=rk)
    with pytest.raises(InvalidArgument, match="last key slot"):
        sealed.remove_slot(path, 0, recovery_key=rk)
    assert opens(path, recovery_key=rk) == DATA
    with pytest.raises(NoMatchingKeySlot):
        sealed.add_password(path, "x", password="new")
    for entry in sealed.list_slots(path):
        assert rk.reveal().split()[0] not in str(entry)


def test_rotate_changes_the_data_key(tmp_path: Path) -> None:
    rk = RecoveryKey.generate()
    path = make(tmp_path, password="pw", recovery_key=rk)
    old_blob = path.read_bytes()
    old_key = KeySlots.decode(
        sealed.read_header(io.BytesIO(old_blob)).container_id,
        old_blob[30 : sealed.read_header(io.BytesIO(old_blob)).payload_offset],
    ).unlock(password="pw")
    sealed.rotate(path, password="pw", recovery_key=rk, kdf=FAST)
    new_blob = path.read_bytes()
    assert opens(path, password="pw") == DATA
    assert opens(path, recovery_key=rk) == DATA
    new_header = sealed.read_header(io.BytesIO(new_blob))
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt(
            new_header.payload_key(old_key),
            new_blob[new_header.payload_offset :],
            context=new_header.payload_context(),
        )


def test_failures_leave_no_output_and_secrets_out_of_messages(tmp_path: Path) -> None:
    path = make(tmp_path, password="hunter2-secret")
    out = tmp_path / "out"
    with pytest.raises(WrongPassword) as info:
        e2ebackup.decrypt_file(path, out, password="hunter3-secret")
    assert not out.exists()
    assert "hunter" not in str(info.value) + repr(info.value)
    assert sorted(os.listdir(tmp_path)) == ["f.sealed", "plain"]
    with pytest.raises(sealed.NotSealedFile):
        e2ebackup.decrypt_file(io.BytesIO(b"garbage" * 10), io.BytesIO(), password="pw")
    with pytest.raises(InvalidArgument):
        e2ebackup.encrypt_file(io.BytesIO(b""), io.BytesIO())
    with pytest.raises(InvalidArgument):
        e2ebackup.encrypt_file(io.BytesIO(b""), io.BytesIO(), bytes(32), password="pw")
