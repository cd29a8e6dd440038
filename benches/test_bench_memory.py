"""In-memory throughput: e2ebackup against its peers on the same data in the same run.

Groups are ``"<algorithm> encrypt"`` / ``"<algorithm> decrypt"``. Each benchmark's
``extra_info["case"]`` names it for ``report.py``. Every benchmark checks its result once (after
timing) so that a fast wrong answer cannot pass for a benchmark.

Peers (all on the whole buffer unless said otherwise):

* cryptography ``Cobblestone256Encryptor`` / ``Decryptor`` (same C2SP bytes as e2ebackup):
  ``update_into`` + ``finalize`` into a preallocated buffer, and ``update()`` + ``finalize()``
  returning bytes.
* PyCryptodome AES-GCM / ChaCha20-Poly1305 one shot (``encrypt_and_digest``): one nonce, one tag
  over everything, single thread.
* A Python loop over cryptography ``AESGCM`` / ``ChaCha20Poly1305`` in 64 KiB chunks (counter
  nonces, chunks kept in a list, not joined). Not a safe streaming format (no truncation
  protection): a speed reference only.
* pyrage (age) to a passphrase-less x25519 recipient.
* Fernet, on at most ``SLOW_PEER_BYTES`` (32 MiB) of the data because it is slow and base64
  inflates it; normalised to bytes per second through ``extra_info["bytes"]``.
"""

from __future__ import annotations

import e2ebackup
import pyrage
import pytest
from conftest import ALGORITHMS, SLOW_PEER_BYTES, run, thread_label
from Crypto.Cipher import AES, ChaCha20_Poly1305
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pytest_benchmark.fixture import BenchmarkFixture

THREADS = [pytest.param(1, id="1t"), pytest.param(None, id="all")]
ALGORITHM_PARAMS = [pytest.param(alg, id=alg) for alg in ALGORITHMS]
AES_GCM = "aes-256-gcm"
CHACHA = "chacha20-poly1305"
LOOP_CHUNK = 64 * 1024
NONCE = bytes(12)


# --- e2ebackup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
@pytest.mark.parametrize("threads", THREADS)
def test_e2ebackup_encrypt_into(
    benchmark: BenchmarkFixture,
    key: bytes,
    plaintext: bytes,
    algorithm: str,
    threads: int | None,
) -> None:
    out = bytearray(e2ebackup.ciphertext_length(len(plaintext)))

    def fn() -> int:
        return e2ebackup.encrypt_into(key, plaintext, out, algorithm=algorithm, threads=threads)

    run(
        benchmark,
        fn,
        group=f"{algorithm} encrypt",
        case=f"e2ebackup encrypt_into {thread_label(threads)}",
        nbytes=len(plaintext),
    )
    assert e2ebackup.decrypt(key, out, algorithm=algorithm) == plaintext


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
@pytest.mark.parametrize("threads", THREADS)
def test_e2ebackup_decrypt_into(
    benchmark: BenchmarkFixture,
    key: bytes,
    plaintext: bytes,
    ciphertexts: dict[str, bytes],
    algorithm: str,
    threads: int | None,
) -> None:
    ciphertext = ciphertexts[algorithm]
    out = bytearray(len(plaintext))

    def fn() -> int:
        return e2ebackup.decrypt_into(key, ciphertext, out, algorithm=algorithm, threads=threads)

    run(
        benchmark,
        fn,
        group=f"{algorithm} decrypt",
        case=f"e2ebackup decrypt_into {thread_label(threads)}",
        nbytes=len(plaintext),
    )
    assert out == plaintext


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_e2ebackup_encrypt_bytes(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes, algorithm: str
) -> None:
    def fn() -> bytes:
        return e2ebackup.encrypt(key, plaintext, algorithm=algorithm)

    run(
        benchmark,
        fn,
        group=f"{algorithm} encrypt",
        case="e2ebackup encrypt all",
        nbytes=len(plaintext),
    )
    assert e2ebackup.decrypt(key, fn(), algorithm=algorithm) == plaintext


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_e2ebackup_decrypt_bytes(
    benchmark: BenchmarkFixture,
    key: bytes,
    plaintext: bytes,
    ciphertexts: dict[str, bytes],
    algorithm: str,
) -> None:
    ciphertext = ciphertexts[algorithm]

    def fn() -> bytes:
        return e2ebackup.decrypt(key, ciphertext, algorithm=algorithm)

    run(
        benchmark,
        fn,
        group=f"{algorithm} decrypt",
        case="e2ebackup decrypt all",
        nbytes=len(plaintext),
    )
    assert fn() == plaintext


def test_e2ebackup_encryptor_update_into(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes
) -> None:
    """The streaming drop-in for cobblestone, same calls as the cobblestone peer below."""
    out = bytearray(e2ebackup.ciphertext_length(len(plaintext)))

    def fn() -> int:
        enc = e2ebackup.Encryptor(key, b"", algorithm=AES_GCM)
        n = enc.update_into(plaintext, out)
        tail = enc.finalize()
        out[n : n + len(tail)] = tail
        return n + len(tail)

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} encrypt",
        case="e2ebackup Encryptor.update_into all",
        nbytes=len(plaintext),
    )
    assert e2ebackup.decrypt(key, out[: fn()]) == plaintext


def test_e2ebackup_decryptor_update_into(
    benchmark: BenchmarkFixture,
    key: bytes,
    plaintext: bytes,
    ciphertexts: dict[str, bytes],
) -> None:
    ciphertext = ciphertexts[AES_GCM]
    out = bytearray(len(plaintext))

    def fn() -> int:
        dec = e2ebackup.Decryptor(key, b"", algorithm=AES_GCM)
        n = dec.update_into(ciphertext, out)
        tail = dec.finalize()
        out[n : n + len(tail)] = tail
        return n + len(tail)

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} decrypt",
        case="e2ebackup Decryptor.update_into all",
        nbytes=len(plaintext),
    )
    assert out == plaintext


# --- cryptography.cobblestone (same format) ------------------------------------------------------


def test_cobblestone_encrypt_update_into(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes
) -> None:
    out = bytearray(e2ebackup.ciphertext_length(len(plaintext)))

    def fn() -> int:
        enc = Cobblestone256Encryptor(key, b"")
        n = enc.update_into(plaintext, out)
        tail = enc.finalize()
        out[n : n + len(tail)] = tail
        return n + len(tail)

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} encrypt",
        case="cobblestone update_into",
        nbytes=len(plaintext),
    )
    assert fn() == len(out)
    assert e2ebackup.decrypt(key, out) == plaintext


def test_cobblestone_decrypt_update_into(
    benchmark: BenchmarkFixture,
    key: bytes,
    plaintext: bytes,
    ciphertexts: dict[str, bytes],
) -> None:
    ciphertext = ciphertexts[AES_GCM]
    out = bytearray(len(plaintext))

    def fn() -> int:
        dec = Cobblestone256Decryptor(key, b"")
        n = dec.update_into(ciphertext, out)
        tail = dec.finalize()
        out[n : n + len(tail)] = tail
        return n + len(tail)

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} decrypt",
        case="cobblestone update_into",
        nbytes=len(plaintext),
    )
    assert out == plaintext


def test_cobblestone_encrypt_update(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes
) -> None:
    def fn() -> bytes:
        enc = Cobblestone256Encryptor(key, b"")
        return enc.update(plaintext) + enc.finalize()

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} encrypt",
        case="cobblestone update",
        nbytes=len(plaintext),
    )
    assert e2ebackup.decrypt(key, fn()) == plaintext


def test_cobblestone_decrypt_update(
    benchmark: BenchmarkFixture,
    key: bytes,
    plaintext: bytes,
    ciphertexts: dict[str, bytes],
) -> None:
    ciphertext = ciphertexts[AES_GCM]

    def fn() -> bytes:
        dec = Cobblestone256Decryptor(key, b"")
        return dec.update(ciphertext) + dec.finalize()

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} decrypt",
        case="cobblestone update",
        nbytes=len(plaintext),
    )
    assert fn() == plaintext


# --- PyCryptodome one shot -----------------------------------------------------------------------


def _pycryptodome_cipher(algorithm: str, key: bytes) -> object:
    if algorithm == AES_GCM:
        return AES.new(key, AES.MODE_GCM, nonce=NONCE)
    return ChaCha20_Poly1305.new(key=key, nonce=NONCE)


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_pycryptodome_one_shot(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes, algorithm: str
) -> None:
    def fn() -> tuple[bytes, bytes]:
        cipher = _pycryptodome_cipher(algorithm, key)
        ciphertext, tag = cipher.encrypt_and_digest(plaintext)  # type: ignore[attr-defined]
        return ciphertext, tag

    run(
        benchmark,
        fn,
        group=f"{algorithm} encrypt",
        case="pycryptodome encrypt_and_digest",
        nbytes=len(plaintext),
    )
    ciphertext, tag = fn()
    check = _pycryptodome_cipher(algorithm, key)
    assert check.decrypt_and_verify(ciphertext, tag) == plaintext  # type: ignore[attr-defined]


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_pycryptodome_one_shot_decrypt(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes, algorithm: str
) -> None:
    cipher = _pycryptodome_cipher(algorithm, key)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)  # type: ignore[attr-defined]

    def fn() -> bytes:
        decipher = _pycryptodome_cipher(algorithm, key)
        result: bytes = decipher.decrypt_and_verify(ciphertext, tag)  # type: ignore[attr-defined]
        return result

    run(
        benchmark,
        fn,
        group=f"{algorithm} decrypt",
        case="pycryptodome decrypt_and_verify",
        nbytes=len(plaintext),
    )
    assert fn() == plaintext


# --- A Python loop over cryptography's one-shot AEADs, 64 KiB at a time ---------------------------


def _aead(algorithm: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if algorithm == AES_GCM else ChaCha20Poly1305(key)


def _loop_encrypt(aead: AESGCM | ChaCha20Poly1305, data: bytes) -> list[bytes]:
    view = memoryview(data)
    return [
        aead.encrypt(i.to_bytes(12, "big"), view[off : off + LOOP_CHUNK], None)
        for i, off in enumerate(range(0, len(data), LOOP_CHUNK))
    ]


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_cryptography_aead_loop_encrypt(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes, algorithm: str
) -> None:
    aead = _aead(algorithm, key)

    def fn() -> list[bytes]:
        return _loop_encrypt(aead, plaintext)

    run(
        benchmark,
        fn,
        group=f"{algorithm} encrypt",
        case="cryptography AEAD 64KiB loop",
        nbytes=len(plaintext),
    )
    chunks = fn()
    assert aead.decrypt(bytes(12), chunks[0], None) == plaintext[:LOOP_CHUNK]


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_cryptography_aead_loop_decrypt(
    benchmark: BenchmarkFixture, key: bytes, plaintext: bytes, algorithm: str
) -> None:
    aead = _aead(algorithm, key)
    chunks = _loop_encrypt(aead, plaintext)

    def fn() -> list[bytes]:
        return [aead.decrypt(i.to_bytes(12, "big"), c, None) for i, c in enumerate(chunks)]

    run(
        benchmark,
        fn,
        group=f"{algorithm} decrypt",
        case="cryptography AEAD 64KiB loop",
        nbytes=len(plaintext),
    )
    assert b"".join(fn()) == plaintext


# --- pyrage (age, x25519 recipient) --------------------------------------------------------------


def test_pyrage_encrypt(benchmark: BenchmarkFixture, plaintext: bytes) -> None:
    identity = pyrage.x25519.Identity.generate()
    recipient = identity.to_public()

    def fn() -> bytes:
        result: bytes = pyrage.encrypt(plaintext, [recipient])
        return result

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} encrypt",
        case="pyrage x25519",
        nbytes=len(plaintext),
        note="age: ChaCha20-Poly1305 64 KiB chunks, single thread",
    )
    assert pyrage.decrypt(fn(), [identity]) == plaintext


def test_pyrage_decrypt(benchmark: BenchmarkFixture, plaintext: bytes) -> None:
    identity = pyrage.x25519.Identity.generate()
    ciphertext = pyrage.encrypt(plaintext, [identity.to_public()])

    def fn() -> bytes:
        result: bytes = pyrage.decrypt(ciphertext, [identity])
        return result

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} decrypt",
        case="pyrage x25519",
        nbytes=len(plaintext),
        note="age: ChaCha20-Poly1305 64 KiB chunks, single thread",
    )
    assert fn() == plaintext


# --- Fernet (slow: a slice, normalised) ----------------------------------------------------------


def test_fernet_encrypt(benchmark: BenchmarkFixture, plaintext: bytes) -> None:
    fernet = Fernet(Fernet.generate_key())
    data = plaintext[:SLOW_PEER_BYTES]

    def fn() -> bytes:
        return fernet.encrypt(data)

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} encrypt",
        case="fernet",
        nbytes=len(data),
        note=f"on {len(data) >> 20} MiB, normalised",
    )
    assert fernet.decrypt(fn()) == data


def test_fernet_decrypt(benchmark: BenchmarkFixture, plaintext: bytes) -> None:
    fernet = Fernet(Fernet.generate_key())
    data = plaintext[:SLOW_PEER_BYTES]
    token = fernet.encrypt(data)

    def fn() -> bytes:
        return fernet.decrypt(token)

    run(
        benchmark,
        fn,
        group=f"{AES_GCM} decrypt",
        case="fernet",
        nbytes=len(data),
        note=f"on {len(data) >> 20} MiB, normalised",
    )
    assert fn() == data
