"""Known-answer tests: tests/vectors/c2sp_chunked_v1.json against e2ebackup, the independent
reference implementation (tests/reference/c2sp.py) and cryptography.cobblestone."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography.exceptions
import e2ebackup
import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from e2ebackup import _core
from e2ebackup.errors import InvalidTag, StreamFailed
from reference import c2sp as ref
from reference.sha256_ctr import sha256_ctr

ROOT = Path(__file__).resolve().parents[2]
VECTORS_FILE = ROOT / "tests" / "vectors" / "c2sp_chunked_v1.json"
GENERATOR = ROOT / "tools" / "make_vectors.py"
CHUNK = ref.CHUNK_SIZE
# Odd piece sizes for the streaming contexts, cycled: straddle every chunk boundary.
PIECES = (1, 4097, CHUNK - 1, 7, CHUNK + 1, 3, 2 * CHUNK + 5)


@dataclass(frozen=True)
class Vector:
    id: str
    aead: str
    algorithm: str
    key: bytes
    salt: bytes
    context: bytes
    plaintext: bytes
    ciphertext: bytes
    valid: bool
    reason: str | None


def check_digest(data: bytes, field: dict[str, Any]) -> bytes:
    assert len(data) == field["length"]
    assert hashlib.sha256(data).hexdigest() == field["sha256"]
    return data


def load(raw: dict[str, Any]) -> Vector:
    key, salt = bytes.fromhex(raw["key"]), bytes.fromhex(raw["salt"])
    context = bytes.fromhex(raw["context"])
    p = raw["plaintext"]
    if isinstance(p, str):
        plaintext = bytes.fromhex(p)
    else:
        assert p["generator"] == "sha256-ctr"
        plaintext = check_digest(sha256_ctr(p["seed"], p["length"]), p)
    c = raw["ciphertext"]
    if isinstance(c, str):
        ciphertext = bytes.fromhex(c)
    else:  # Only valid vectors: the digest pins down the bytes the reference makes.
        assert raw["valid"]
        made = ref.encrypt_with_salt(key, salt, context, raw["aead"], plaintext)
        ciphertext = check_digest(made, c)
    return Vector(
        raw["id"],
        raw["aead"],
        raw["algorithm"],
        key,
        salt,
        context,
        plaintext,
        ciphertext,
        raw["valid"],
        raw.get("reason"),
    )


DOCUMENT = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VECTORS = [load(raw) for raw in DOCUMENT["vectors"]]
VALID = [v for v in VECTORS if v.valid]
INVALID = [v for v in VECTORS if not v.valid]
AES_VALID = [v for v in VALID if v.aead == ref.AES_256_GCM]
CHACHA_VALID = [v for v in VALID if v.aead == ref.CHACHA20_POLY1305]
AES_INVALID = [v for v in INVALID if v.aead == ref.AES_256_GCM]
NO_CONTEXT = [v for v in VALID if not v.context]


def ids(vectors: list[Vector]) -> list[str]:
    return [v.id for v in vectors]


def pieces(data: bytes) -> Iterator[bytes]:
    offset = 0
    for size in itertools.cycle(PIECES):
        if offset >= len(data):
            return
        yield data[offset : offset + size]
        offset += size


def streamed(update: Callable[[bytes], bytes], finalize: Callable[[], bytes], data: bytes) -> bytes:
    return b"".join(update(p) for p in pieces(data)) + finalize()


# ---- the file itself ------------------------------------------------------------------------


def test_file_matches_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    render: Callable[[], str] = module.render
    assert render() == VECTORS_FILE.read_text(encoding="utf-8"), "run python tools/make_vectors.py"


def test_file_covers_the_required_cases() -> None:
    assert len({v.id for v in VECTORS}) == len(VECTORS)
    for aead in ref.AEADS:
        for length in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7):
            contexts = {v.context for v in VALID if v.aead == aead and len(v.plaintext) == length}
            assert b"" in contexts
            assert any(any(b > 0x7F for b in c) for c in contexts)  # a non-ASCII one
        assert sum(v.aead == aead for v in INVALID) >= 15
    assert len(VECTORS_FILE.read_bytes()) < 1_000_000


@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_lengths(v: Vector) -> None:
    assert len(v.ciphertext) == ref.ciphertext_length(len(v.plaintext))
    assert e2ebackup.ciphertext_length(len(v.plaintext)) == len(v.ciphertext)
    assert e2ebackup.plaintext_length(len(v.ciphertext)) == len(v.plaintext)


# ---- valid vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_decrypt(v: Vector, threads: int) -> None:
    got = e2ebackup.decrypt(
        v.key, v.ciphertext, context=v.context, algorithm=v.algorithm, threads=threads
    )
    assert got == v.plaintext
    out = bytearray(len(v.plaintext))
    n = e2ebackup.decrypt_into(
        v.key, v.ciphertext, out, context=v.context, algorithm=v.algorithm, threads=threads
    )
    assert n == len(v.plaintext)
    assert out == v.plaintext


@pytest.mark.parametrize("v", NO_CONTEXT, ids=ids(NO_CONTEXT))
def test_no_context_is_the_empty_context(v: Vector) -> None:
    assert e2ebackup.decrypt(v.key, v.ciphertext, algorithm=v.algorithm) == v.plaintext
    made = _core._encrypt_with_salt(v.key, v.plaintext, v.salt, algorithm=v.algorithm)
    assert made == v.ciphertext


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_encrypt_with_salt(v: Vector, threads: int) -> None:
    made = _core._encrypt_with_salt(
        v.key, v.plaintext, v.salt, context=v.context, algorithm=v.algorithm, threads=threads
    )
    assert made == v.ciphertext


@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_streaming_encrypt_in_odd_pieces(v: Vector) -> None:
    enc = e2ebackup.Encryptor._with_salt(v.key, v.salt, v.context, algorithm=v.algorithm)
    assert streamed(enc.update, enc.finalize, v.plaintext) == v.ciphertext


@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_streaming_decrypt_in_odd_pieces(v: Vector) -> None:
    dec = e2ebackup.Decryptor(v.key, v.context, algorithm=v.algorithm)
    assert streamed(dec.update, dec.finalize, v.ciphertext) == v.plaintext


@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_reference(v: Vector) -> None:
    assert ref.decrypt(v.key, v.context, v.aead, v.ciphertext) == v.plaintext
    assert ref.encrypt_with_salt(v.key, v.salt, v.context, v.aead, v.plaintext) == v.ciphertext


@pytest.mark.parametrize("v", AES_VALID, ids=ids(AES_VALID))
def test_cobblestone_decrypts_aes_vectors(v: Vector) -> None:
    dec = Cobblestone256Decryptor(v.key, v.context)
    assert dec.update(v.ciphertext) + dec.finalize() == v.plaintext


@pytest.mark.parametrize("v", AES_VALID, ids=ids(AES_VALID))
def test_fresh_messages_interoperate_with_cobblestone(v: Vector) -> None:
    cob = Cobblestone256Encryptor(v.key, v.context)
    theirs = cob.update(v.plaintext) + cob.finalize()
    assert e2ebackup.decrypt(v.key, theirs, context=v.context) == v.plaintext
    ours = e2ebackup.encrypt(v.key, v.plaintext, context=v.context)
    assert ours[: ref.SALT_SIZE] != v.salt  # a fresh random salt
    dec = Cobblestone256Decryptor(v.key, v.context)
    assert dec.update(ours) + dec.finalize() == v.plaintext


@pytest.mark.parametrize("v", CHACHA_VALID, ids=ids(CHACHA_VALID))
def test_fresh_chacha_messages_interoperate_with_the_reference(v: Vector) -> None:
    ours = e2ebackup.encrypt(v.key, v.plaintext, context=v.context, algorithm=v.algorithm)
    assert ref.decrypt(v.key, v.context, v.aead, ours) == v.plaintext
    theirs = ref.encrypt_with_salt(v.key, os.urandom(ref.SALT_SIZE), v.context, v.aead, v.plaintext)
    assert e2ebackup.decrypt(v.key, theirs, context=v.context, algorithm=v.algorithm) == v.plaintext


# ---- invalid vectors ------------------------------------------------------------------------


def assert_no_unauthenticated_plaintext(v: Vector, released: bytes | bytearray) -> None:
    """``released`` (laid out like the plaintext) holds no plaintext of a chunk that differs from
    the genuine message's, even with a bit flipped. Authentic chunks may have been released."""
    genuine = ref.encrypt_with_salt(v.key, v.salt, v.context, v.aead, v.plaintext)
    header_ok = v.ciphertext[: ref.HEADER_SIZE] == genuine[: ref.HEADER_SIZE]
    sealed = CHUNK + ref.TAG_SIZE
    for i in range(len(v.plaintext) // CHUNK + 1):
        lo = ref.HEADER_SIZE + i * sealed
        if header_ok and v.ciphertext[lo : lo + sealed] == genuine[lo : lo + sealed]:
            continue
        want = v.plaintext[i * CHUNK : (i + 1) * CHUNK]
        got = released[i * CHUNK : i * CHUNK + len(want)]
        same = sum(a == b for a, b in zip(want, got, strict=False))
        assert same <= max(8, len(want) // 8), f"chunk {i}: unauthenticated plaintext released"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("v", INVALID, ids=ids(INVALID))
def test_decrypt_rejects(v: Vector, threads: int) -> None:
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt(
            v.key, v.ciphertext, context=v.context, algorithm=v.algorithm, threads=threads
        )
    out = bytearray(b"\xa5" * max(len(v.ciphertext), len(v.plaintext)))
    with pytest.raises(InvalidTag):
        e2ebackup.decrypt_into(
            v.key, v.ciphertext, out, context=v.context, algorithm=v.algorithm, threads=threads
        )
    assert_no_unauthenticated_plaintext(v, out)


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "odd-pieces"])
@pytest.mark.parametrize("v", INVALID, ids=ids(INVALID))
def test_streaming_decrypt_rejects_and_fails_closed(v: Vector, whole: bool) -> None:
    dec = e2ebackup.Decryptor(v.key, v.context, algorithm=v.algorithm)
    released = bytearray()
    with pytest.raises(InvalidTag):  # noqa: PT012
        for piece in [v.ciphertext] if whole else pieces(v.ciphertext):
            released += dec.update(piece)
        released += dec.finalize()
    assert_no_unauthenticated_plaintext(v, released)
    with pytest.raises(StreamFailed):
        dec.update(b"")
    with pytest.raises(StreamFailed):
        dec.finalize()


@pytest.mark.parametrize("v", INVALID, ids=ids(INVALID))
def test_reference_rejects(v: Vector) -> None:
    with pytest.raises(ref.DecryptionError):
        ref.decrypt(v.key, v.context, v.aead, v.ciphertext)


@pytest.mark.parametrize("v", AES_INVALID, ids=ids(AES_INVALID))
def test_cobblestone_rejects(v: Vector) -> None:
    dec = Cobblestone256Decryptor(v.key, v.context)
    with pytest.raises(cryptography.exceptions.InvalidTag):  # noqa: PT012
        dec.update(v.ciphertext)
        dec.finalize()
