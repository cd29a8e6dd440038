"""One-shot API: buffers, arguments, threads, tampering, secret hygiene."""

from __future__ import annotations

import array
import mmap

import e2ebackup
import numpy as np
import pytest
from e2ebackup import _core
from e2ebackup.errors import E2EBackupError, InvalidArgument, InvalidTag
from helpers import BOUNDARY_LENGTHS, CHUNK, random_bytes, runs_without_the_gil
from hypothesis import given, settings, strategies as st

ALGORITHMS = ["aes-256-gcm", "chacha20-poly1305"]
HEADER = e2ebackup.HEADER_SIZE
CT_CHUNK = CHUNK + e2ebackup.TAG_SIZE


def test_generate_key_is_32_fresh_bytes() -> None:
    keys = {e2ebackup.generate_key() for _ in range(64)}
    assert len(keys) == 64
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_round_trip_at_chunk_boundaries(key: bytes, algorithm: str, length: int) -> None:
    data = random_bytes(length)
    ct = e2ebackup.encrypt(key, data, context=b"ctx", algorithm=algorithm)
    assert len(ct) == e2ebackup.ciphertext_length(length)
    assert e2ebackup.plaintext_length(len(ct)) == length
    assert e2ebackup.decrypt(key, ct, context=b"ctx", algorithm=algorithm) == data


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3 * CHUNK + 10),
    context=st.binary(max_size=64),
    algorithm=st.sampled_from(ALGORITHMS),
    threads=st.integers(min_value=1, max_value=4),
)
def test_round_trip_property(data: bytes, context: bytes, algorithm: str, threads: int) -> None:
    key = e2ebackup.generate_key()
    ct = e2ebackup.encrypt(key, data, context=context, algorithm=algorithm, threads=threads)
    assert e2ebackup.decrypt(key, ct, context=context, algorithm=algorithm) == data
    out = bytearray(len(data) + 5)
    n = e2ebackup.decrypt_into(key, ct, out, context=context, algorithm=algorithm)
    assert out[:n] == data


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_output_is_identical_for_any_thread_count(key: bytes, algorithm: str) -> None:
    data = random_bytes(200 * CHUNK + 123)
    salt = bytes(range(24))
    outputs = {
        _core._encrypt_with_salt(key, data, salt, algorithm=algorithm, threads=t)
        for t in (1, 2, 3, 8)
    }
    assert len(outputs) == 1
    ct = outputs.pop()
    for t in (1, 2, 5):
        assert e2ebackup.decrypt(key, ct, algorithm=algorithm, threads=t) == data


def make_buffers(data: bytes) -> list[object]:
    m = mmap.mmap(-1, max(len(data), 1))
    m[: len(data)] = data
    return [
        data,
        bytearray(data),
        memoryview(data),
        np.frombuffer(data, dtype=np.uint8).copy(),
        array.array("B", data),
        memoryview(m)[: len(data)],
    ]


def test_any_contiguous_buffer_is_accepted(key: bytes) -> None:
    data = random_bytes(3 * CHUNK + 7)
    ct = e2ebackup.encrypt(key, data)
    for buf in make_buffers(data):
        assert e2ebackup.decrypt(key, e2ebackup.encrypt(key, buf)) == data  # type: ignore[arg-type]
    for buf in make_buffers(ct):
        assert e2ebackup.decrypt(key, buf) == data  # type: ignore[arg-type]
    # Multi-byte items are read as their raw bytes, like hashlib does.
    floats = np.arange(1000, dtype=np.float64)
    assert e2ebackup.decrypt(key, e2ebackup.encrypt(key, floats)) == floats.tobytes()  # type: ignore[arg-type]


def test_into_variants_write_into_caller_buffers(key: bytes) -> None:
    data = random_bytes(5 * CHUNK + 1)
    out = np.zeros(e2ebackup.ciphertext_length(len(data)) + 10, dtype=np.uint8)
    n = e2ebackup.encrypt_into(key, data, out)  # type: ignore[arg-type]
    assert n == e2ebackup.ciphertext_length(len(data))
    back = bytearray(len(data))
    assert e2ebackup.decrypt_into(key, out[:n], back) == len(data)  # type: ignore[arg-type]
    assert back == data


def test_wrong_types_raise_type_error(key: bytes) -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        e2ebackup.encrypt(key, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        e2ebackup.encrypt("k" * 32, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="C-contiguous"):
        e2ebackup.encrypt(key, memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError, match="writable"):
        e2ebackup.encrypt_into(key, b"abc", bytes(100))


def test_bad_arguments_raise_value_errors_from_the_hierarchy(key: bytes) -> None:
    for bad_key in (b"", b"k" * 16, b"k" * 33):
        with pytest.raises(InvalidArgument, match=f"key must be 32 bytes, got {len(bad_key)}"):
            e2ebackup.encrypt(bad_key, b"x")
    with pytest.raises(ValueError, match="algorithm must be"):
        e2ebackup.encrypt(key, b"x", algorithm="aes-128-gcm")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        e2ebackup.encrypt(key, b"x", threads=0)
    with pytest.raises(InvalidArgument, match="need 172 bytes, got 100"):
        e2ebackup.encrypt_into(key, bytes(100), bytearray(100))
    with pytest.raises(InvalidArgument, match="need 100 bytes"):
        e2ebackup.decrypt_into(key, e2ebackup.encrypt(key, bytes(100)), bytearray(99))
    shared = bytearray(1000)
    with pytest.raises(ValueError, match="overlap"):
        e2ebackup.encrypt_into(key, memoryview(shared)[:100], memoryview(shared)[50:])
    assert issubclass(InvalidArgument, E2EBackupError)


def tampered_messages(ct: bytes) -> dict[str, bytes]:
    """The tamper matrix of a 3-chunk-plus message."""
    chunk = [HEADER + i * CT_CHUNK for i in range(5)]

    def flip(pos: int) -> bytes:
        b = bytearray(ct)
        b[pos] ^= 0x80
        return bytes(b)

    def swap(i: int, j: int) -> bytes:
        parts = [ct[chunk[k] : chunk[k + 1]] for k in range(3)]
        parts[i], parts[j] = parts[j], parts[i]
        return ct[:HEADER] + b"".join(parts) + ct[chunk[3] :]

    cases = {f"truncated to {n}": ct[:n] for n in (0, 1, 23, 55, 56, 71, 72, 1000)}
    cases.update({f"truncated at chunk boundary {i}": ct[: chunk[i]] for i in (1, 2, 3)})
    cases.update(
        {
            "truncated by one byte": ct[:-1],
            "extended by one byte": ct + b"\0",
            "extended by a chunk": ct + ct[chunk[1] : chunk[2]],
            "salt flipped": flip(0),
            "commitment flipped": flip(40),
            "first chunk flipped": flip(HEADER + 3),
            "tag of chunk 1 flipped": flip(chunk[2] - 1),
            "last byte flipped": flip(len(ct) - 1),
            "chunks 0 and 1 swapped": swap(0, 1),
            "chunk 2 duplicated": ct[: chunk[2]] + ct[chunk[1] : chunk[2]] + ct[chunk[3] :],
            "garbage": random_bytes(len(ct)),
        }
    )
    return cases


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tamper_matrix_raises_invalid_tag_everywhere(key: bytes, algorithm: str) -> None:
    data = random_bytes(3 * CHUNK + 500)
    ct = e2ebackup.encrypt(key, data, context=b"c", algorithm=algorithm)
    other = e2ebackup.encrypt(key, data, context=b"c", algorithm=algorithm)
    cases = tampered_messages(ct)
    cases["chunk from another message"] = (
        ct[: HEADER + CT_CHUNK] + other[HEADER + CT_CHUNK : HEADER + 2 * CT_CHUNK]
    ) + ct[HEADER + 2 * CT_CHUNK :]
    for name, bad in cases.items():
        for threads in (1, 2):
            with pytest.raises(InvalidTag):
                e2ebackup.decrypt(key, bad, context=b"c", algorithm=algorithm, threads=threads)
        out = bytearray(len(bad) + CHUNK)
        with pytest.raises(InvalidTag):
            e2ebackup.decrypt_into(key, bad, out, context=b"c", algorithm=algorithm)
        assert out == bytearray(len(out)), f"plaintext left in the buffer: {name}"
        dec = e2ebackup.Decryptor(key, b"c", algorithm=algorithm)
        with pytest.raises(InvalidTag):  # noqa: PT012 - the error may come from either call
            dec.update(bad)
            dec.finalize()
    wrong = {
        "wrong key": dict(key=e2ebackup.generate_key(), context=b"c", algorithm=algorithm),
        "wrong context": dict(key=key, context=b"d", algorithm=algorithm),
        "no context": dict(key=key, context=None, algorithm=algorithm),
    }
    for kwargs in wrong.values():
        with pytest.raises(InvalidTag):
            e2ebackup.decrypt(data=ct, **kwargs)  # type: ignore[arg-type]
    other_alg = ALGORITHMS[1 - ALGORITHMS.index(algorithm)]
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt(key, ct, context=b"c", algorithm=other_alg)


def test_the_gil_is_released_during_large_operations(key: bytes) -> None:
    data = bytes(128 << 20)
    results: list[bytes] = []
    assert runs_without_the_gil(lambda: results.append(e2ebackup.encrypt(key, data, threads=1)))
    assert len(results[0]) == e2ebackup.ciphertext_length(len(data))


def test_secrets_stay_out_of_reprs_and_errors() -> None:
    key = bytes.fromhex("ab" * 32)
    enc = e2ebackup.Encryptor(key, b"ctx")
    dec = e2ebackup.Decryptor(key, b"ctx")
    for obj in (enc, dec):
        text = repr(obj) + str(obj)
        assert "abab" not in text
        assert "\\xab" not in text
    with pytest.raises(InvalidTag) as info:
        e2ebackup.decrypt(key, b"\0" * 100)
    assert "abab" not in str(info.value)
    with pytest.raises(InvalidArgument) as info2:
        e2ebackup.encrypt(key[:31], b"")
    assert "abab" not in str(info2.value)
