"""e2ebackup.open: the streaming writer and the seekable, authenticating reader."""

from __future__ import annotations

import io
import os
from pathlib import Path

import e2ebackup
import numpy as np
import pytest
from e2ebackup.errors import InvalidTag
from helpers import BOUNDARY_LENGTHS, CHUNK, random_bytes
from hypothesis import given, settings, strategies as st

DATA = random_bytes(20 * CHUNK + 1234)
KEY = e2ebackup.generate_key()
CIPHERTEXT = e2ebackup.encrypt(KEY, DATA, context=b"io")


def reader(blob: bytes = CIPHERTEXT) -> e2ebackup.EncryptedReader:
    r = e2ebackup.open(io.BytesIO(blob), "rb", key=KEY, context=b"io")
    assert isinstance(r, e2ebackup.EncryptedReader)
    return r


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_writer_and_reader_round_trip(tmp_path: Path, key: bytes, length: int) -> None:
    data = random_bytes(length)
    path = tmp_path / "f.e2e"
    with e2ebackup.open(path, "wb", key=key) as w:
        for i in range(0, length, 5000):
            w.write(data[i : i + 5000])
    assert e2ebackup.decrypt(key, path.read_bytes()) == data
    with e2ebackup.open(path, "rb", key=key) as r:
        assert r.read() == data
        assert r.read() == b""


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, len(DATA) + 100), st.integers(-1, 3 * CHUNK))))
def test_seek_and_read_match_slices(ops: list[tuple[int, int]]) -> None:
    with reader() as r:
        for pos, size in ops:
            assert r.seek(pos) == pos
            got = r.read(size)
            end = len(DATA) if size < 0 else pos + size
            assert got == DATA[pos:end]
            assert r.tell() == pos + len(got)


def test_seek_whence_and_readinto() -> None:
    with reader() as r:
        assert r.seek(-10, io.SEEK_END) == len(DATA) - 10
        assert r.read() == DATA[-10:]
        r.seek(CHUNK - 3)
        r.seek(5, io.SEEK_CUR)
        buf = np.zeros(100, dtype=np.uint8)
        assert r.readinto(buf) == 100  # type: ignore[arg-type]
        assert buf.tobytes() == DATA[CHUNK + 2 : CHUNK + 102]
        assert r.size == len(DATA)
        with pytest.raises(ValueError, match="negative"):
            r.seek(-1)


def tamper(pos: int) -> bytes:
    b = bytearray(CIPHERTEXT)
    b[pos] ^= 1
    return bytes(b)


def test_reader_authenticates_only_what_it_reads_but_always_the_end() -> None:
    bad_last = tamper(len(CIPHERTEXT) - 1)
    with reader(bad_last) as r:
        assert r.read(100) == DATA[:100]  # untouched chunks still read
        with pytest.raises(InvalidTag):
            r.seek(0, io.SEEK_END)
        with pytest.raises(InvalidTag):
            r.read()
    with reader(bad_last) as r, pytest.raises(InvalidTag):
        _ = r.size
    bad_middle = tamper(e2ebackup.HEADER_SIZE + 5 * (CHUNK + 16) + 9)
    with reader(bad_middle) as r:
        r.seek(10 * CHUNK)
        assert r.read(CHUNK) == DATA[10 * CHUNK : 11 * CHUNK]
        r.seek(5 * CHUNK)
        with pytest.raises(InvalidTag):
            r.read(1)


def test_reader_reports_the_end_only_after_authenticating_it() -> None:
    # An exact multiple of the chunk size ends in an empty final chunk; forging it must be
    # caught even though reading the data itself never needs that chunk.
    data = random_bytes(4 * CHUNK)
    ct = bytearray(e2ebackup.encrypt(KEY, data))
    ct[-1] ^= 1
    r = e2ebackup.open(io.BytesIO(bytes(ct)), "rb", key=KEY)
    assert r.read(4 * CHUNK - 1) == data[:-1]
    with pytest.raises(InvalidTag):
        r.read(1)  # reaches the end
    r.seek(0)
    with pytest.raises(InvalidTag):
        r.read(4 * CHUNK)


@pytest.mark.parametrize(
    "blob",
    [b"", CIPHERTEXT[:30], CIPHERTEXT[:56], CIPHERTEXT[: 56 + CHUNK + 16], CIPHERTEXT[:-1250]],
)
def test_impossible_lengths_and_wrong_keys_fail_at_open(blob: bytes) -> None:
    with pytest.raises(InvalidTag):
        reader(blob)
    with pytest.raises(InvalidTag):
        e2ebackup.open(io.BytesIO(CIPHERTEXT), "rb", key=e2ebackup.generate_key(), context=b"io")


def test_extension_is_caught_at_the_end() -> None:
    with reader(CIPHERTEXT + b"x") as r:
        assert r.read(10) == DATA[:10]
        with pytest.raises(InvalidTag):
            r.read()


def test_writer_publishes_only_on_clean_close(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "out.e2e"
    path.write_bytes(b"old content")
    with pytest.raises(RuntimeError), e2ebackup.open(path, "wb", key=key) as w:  # noqa: PT012
        w.write(b"partial")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.e2e"]
    w = e2ebackup.open(path, "wb", key=key)
    assert isinstance(w, e2ebackup.EncryptedWriter)
    w.write(b"x")
    w.abort()
    assert path.read_bytes() == b"old content"
    with pytest.raises(FileExistsError):
        e2ebackup.open(path, "xb", key=key)
    with pytest.raises(ValueError, match="mode"):
        e2ebackup.open(path, "ab", key=key)  # type: ignore[call-overload]


def test_writer_on_a_file_object_leaves_it_open(key: bytes) -> None:
    sink = io.BytesIO()
    with e2ebackup.open(sink, "wb", key=key) as w:
        w.write(b"hello")
    assert not sink.closed
    assert e2ebackup.decrypt(key, sink.getvalue()) == b"hello"


def test_reader_needs_a_seekable_file(key: bytes) -> None:
    rfd, wfd = os.pipe()
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe, pytest.raises(io.UnsupportedOperation):
        e2ebackup.open(pipe, "rb", key=key)
