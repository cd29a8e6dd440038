"""Streaming contexts: a drop-in for cryptography.cobblestone, fail-closed."""

from __future__ import annotations

import itertools

import e2ebackup
import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from e2ebackup.errors import AlreadyFinalized, InvalidArgument, InvalidTag, StreamFailed
from helpers import CHUNK, random_bytes
from hypothesis import given, settings, strategies as st

SALT = bytes(range(24))
STEPS = [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + 16, 100_000]


def pieces(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)] or [b""]


@pytest.mark.parametrize("algorithm", ["aes-256-gcm", "chacha20-poly1305"])
@pytest.mark.parametrize("step", STEPS)
def test_streaming_equals_one_shot_byte_for_byte(key: bytes, algorithm: str, step: int) -> None:
    data = random_bytes(3 * CHUNK + 77 if step > 7 else 2 * CHUNK + 3)
    expected = e2ebackup._core._encrypt_with_salt(
        key, data, SALT, context=b"c", algorithm=algorithm
    )
    enc = e2ebackup.Encryptor._with_salt(key, SALT, b"c", algorithm=algorithm)
    ct = b"".join(enc.update(p) for p in pieces(data, step)) + enc.finalize()
    assert ct == expected
    dec = e2ebackup.Decryptor(key, b"c", algorithm=algorithm)
    assert b"".join(dec.update(p) for p in pieces(ct, step)) + dec.finalize() == data


def cut_points(length: int, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = sorted({0, length, *(c for c in cuts if c <= length)})
    return list(itertools.pairwise(bounds))


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3 * CHUNK), cuts=st.lists(st.integers(0, 4 * CHUNK), max_size=6))
def test_update_into_with_exact_buffers(data: bytes, cuts: list[int]) -> None:
    key = e2ebackup.generate_key()
    enc = e2ebackup.Encryptor(key)
    ct = bytearray()
    for a, b in cut_points(len(data), cuts):
        buf = bytearray(enc.update_length(b - a))
        assert enc.update_into(data[a:b], buf) == len(buf)
        ct += buf
    ct += enc.finalize()
    dec = e2ebackup.Decryptor(key)
    out = bytearray()
    for a, b in cut_points(len(ct), cuts):
        buf = bytearray(dec.update_length(b - a))
        assert dec.update_into(ct[a:b], buf) == len(buf)
        out += buf
    out += dec.finalize()
    assert out == data


def test_drop_in_for_cobblestone_both_ways(key: bytes) -> None:
    data = random_bytes(5 * CHUNK + 9)
    ours = e2ebackup.Encryptor(key, b"app")
    ct = ours.update(data[:1000]) + ours.update(data[1000:]) + ours.finalize()
    theirs = Cobblestone256Decryptor(key, b"app")
    assert theirs.update(ct) + theirs.finalize() == data
    cob = Cobblestone256Encryptor(key, b"app")
    ct2 = cob.update(data) + cob.finalize()
    dec = e2ebackup.Decryptor(key, b"app")
    assert dec.update(ct2[:5]) + dec.update(ct2[5:]) + dec.finalize() == data
    assert len(e2ebackup.Encryptor.generate_key()) == 32


def test_update_into_buffer_too_small_is_reported_and_not_fatal(key: bytes) -> None:
    enc = e2ebackup.Encryptor(key)
    with pytest.raises(InvalidArgument, match="need"):
        enc.update_into(bytes(CHUNK), bytearray(10))
    buf = bytearray(enc.update_length(CHUNK))
    assert enc.update_into(bytes(CHUNK), buf) == len(buf)


def test_contexts_fail_closed_and_stay_failed(key: bytes) -> None:
    ct = bytearray(e2ebackup.encrypt(key, random_bytes(3 * CHUNK)))
    ct[e2ebackup.HEADER_SIZE + 10] ^= 1
    dec = e2ebackup.Decryptor(key)
    with pytest.raises(InvalidTag):
        dec.update(bytes(ct))
    with pytest.raises(StreamFailed):
        dec.update(b"")
    with pytest.raises(StreamFailed):
        dec.finalize()
    # A wrong commitment fails as soon as the header is complete, before any chunk.
    dec = e2ebackup.Decryptor(e2ebackup.generate_key())
    assert dec.update(bytes(ct[:55])) == b""
    with pytest.raises(InvalidTag):
        dec.update(bytes(ct[55:56]))
    enc = e2ebackup.Encryptor(key)
    enc.finalize()
    with pytest.raises(AlreadyFinalized):
        enc.update(b"x")
    with pytest.raises(AlreadyFinalized):
        enc.finalize()


def test_finalize_requires_a_complete_message(key: bytes) -> None:
    ct = e2ebackup.encrypt(key, random_bytes(2 * CHUNK))
    for cut in (0, 30, 56, 57, e2ebackup.HEADER_SIZE + CHUNK + 16, len(ct) - 1):
        dec = e2ebackup.Decryptor(key)
        dec.update(ct[:cut])
        with pytest.raises(InvalidTag):
            dec.finalize()
