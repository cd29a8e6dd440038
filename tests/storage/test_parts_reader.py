"""``PartsReader`` (issue #13): a pack hashed once, as it is assembled; local storage writes its
parts as they are and checks the digest it is given against the reader's, so a wrong digest or
size is still refused and nothing is stored."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from e2ebackup.errors import StorageError
from e2ebackup.storage import LocalStorage
from e2ebackup.storage.base import PartsReader

PARTS: list[bytes | bytearray | memoryview] = [
    b"header",
    bytearray(b"-mutable-"),
    memoryview(b"view"),
    b"x" * 100_000,
]
WHOLE = b"".join(bytes(p) for p in PARTS)


def test_reader_streams_and_hashes_its_parts() -> None:
    reader = PartsReader(PARTS)
    assert reader.size == len(WHOLE)
    assert reader.sha256 == hashlib.sha256(WHOLE).digest()
    assert reader.read(3) == WHOLE[:3]
    reader.seek(0)
    assert reader.read() == WHOLE
    reader.seek(-4, io.SEEK_END)
    assert reader.read() == WHOLE[-4:]


def test_local_storage_stores_a_reader_with_its_digest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    reader = PartsReader(PARTS)
    storage.put("data/ab/pack", reader, size=reader.size, sha256=reader.sha256)  # type: ignore[arg-type]
    assert storage.read("data/ab/pack") == WHOLE


@pytest.mark.parametrize("wrong", ["digest", "size"])
def test_local_storage_refuses_a_reader_with_a_wrong_digest_or_size(
    tmp_path: Path, wrong: str
) -> None:
    storage = LocalStorage(tmp_path)
    reader = PartsReader(PARTS)
    size = reader.size + (1 if wrong == "size" else 0)
    digest = b"\0" * 32 if wrong == "digest" else reader.sha256
    with pytest.raises(StorageError, match="do not match"):
        storage.put("data/ab/pack", reader, size=size, sha256=digest)  # type: ignore[arg-type]
    assert list(storage.list()) == []


def test_a_reader_already_read_from_is_hashed_as_any_stream(tmp_path: Path) -> None:
    """A retry rewinds the stream; one left part-way is not trusted to match its digest."""
    storage = LocalStorage(tmp_path)
    reader = PartsReader(PARTS)
    reader.seek(6)
    with pytest.raises(StorageError, match="do not match"):
        storage.put("data/ab/pack", reader, size=reader.size, sha256=reader.sha256)  # type: ignore[arg-type]
    reader.seek(6)
    rest = WHOLE[6:]
    storage.put("data/ab/rest", reader, size=len(rest), sha256=hashlib.sha256(rest).digest())  # type: ignore[arg-type]
    assert storage.read("data/ab/rest") == rest
