"""encrypt_file / decrypt_file: streaming, atomic, nothing left behind on failure."""

from __future__ import annotations

import io
import os
from pathlib import Path

import e2ebackup
import pytest
from cryptography.cobblestone import Cobblestone256Decryptor
from e2ebackup.errors import InvalidTag
from e2ebackup.streams import BLOCK_SIZE
from helpers import CHUNK, random_bytes


@pytest.mark.parametrize("length", [0, 1, CHUNK, BLOCK_SIZE - 1, BLOCK_SIZE, 2 * BLOCK_SIZE + 17])
def test_file_round_trip(tmp_path: Path, key: bytes, length: int) -> None:
    data = random_bytes(length)
    src, enc, dec = tmp_path / "a", tmp_path / "a.e2e", tmp_path / "b"
    src.write_bytes(data)
    seen: list[int] = []
    assert e2ebackup.encrypt_file(src, enc, key, context=b"f", progress=seen.append) == length
    assert seen == sorted(seen)
    assert (seen[-1] if seen else 0) == length
    assert enc.stat().st_size == e2ebackup.ciphertext_length(length)
    assert e2ebackup.decrypt_file(enc, dec, key, context=b"f") == enc.stat().st_size
    assert dec.read_bytes() == data
    cob = Cobblestone256Decryptor(key, b"f")
    assert cob.update(enc.read_bytes()) + cob.finalize() == data


def test_file_objects_work_too(key: bytes) -> None:
    data = random_bytes(3 * CHUNK)
    enc = io.BytesIO()
    e2ebackup.encrypt_file(io.BytesIO(data), enc, key)
    out = io.BytesIO()
    e2ebackup.decrypt_file(io.BytesIO(enc.getvalue()), out, key)
    assert out.getvalue() == data


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong key"])
def test_failed_decryption_leaves_nothing_behind(tmp_path: Path, key: bytes, damage: str) -> None:
    data = random_bytes(2 * BLOCK_SIZE + 5)
    enc = tmp_path / "a.e2e"
    e2ebackup.encrypt_file(io.BytesIO(data), enc, key)
    blob = bytearray(enc.read_bytes())
    use_key = key
    if damage == "flip":
        blob[-3] ^= 1  # the failure comes after most plaintext was produced
    elif damage == "truncate":
        del blob[-100:]
    else:
        use_key = e2ebackup.generate_key()
    enc.write_bytes(blob)
    out = tmp_path / "out"
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt_file(enc, out, use_key)
    assert sorted(os.listdir(tmp_path)) == ["a.e2e"]
    out.write_bytes(b"precious")
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt_file(enc, out, use_key)
    assert out.read_bytes() == b"precious"
    sink = io.BytesIO(b"keep:")
    sink.seek(5)
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt_file(enc, sink, use_key)
    assert sink.getvalue() == b"keep:"


def test_overwrite_false_protects_existing_files(tmp_path: Path, key: bytes) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"data")
    dst.write_bytes(b"existing")
    with pytest.raises(FileExistsError):
        e2ebackup.encrypt_file(src, dst, key, overwrite=False)
    assert dst.read_bytes() == b"existing"
