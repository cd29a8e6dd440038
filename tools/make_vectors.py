"""Generate tests/vectors/c2sp_chunked_v1.json, the C2SP chunked-encryption v1 test vectors.

    python tools/make_vectors.py            # rewrite the file
    python tools/make_vectors.py --check    # exit 1 if the committed file is out of date

Every key, salt, context and plaintext is derived from a fixed seed, so re-running produces a
byte-identical file. Ciphertexts come from the pure-Python reference implementation in
tests/reference/c2sp.py, never from e2ebackup itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from reference import c2sp as ref  # noqa: E402
from reference.sha256_ctr import sha256_ctr  # noqa: E402

OUTPUT = ROOT / "tests" / "vectors" / "c2sp_chunked_v1.json"
SEED_PREFIX = "e2ebackup/c2sp_chunked_v1/"
# To keep the file small (well under 1 MB), long byte strings are stored as a SHA-256 digest and a
# length (plaintexts also with their generator). Invalid ciphertexts are always stored in full;
# valid ones are when they are short, or at most one full chunk plus one byte with an empty
# context.
INLINE_LIMIT = 1024
INLINE_LIMIT_EMPTY_CONTEXT = ref.ciphertext_length(ref.CHUNK_SIZE + 1)

CHUNK = ref.CHUNK_SIZE
SEALED = ref.CHUNK_SIZE + ref.TAG_SIZE
H = ref.HEADER_SIZE
LENGTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7]
CONTEXTS = {
    "empty": b"",
    "ascii": b"e2ebackup test vectors",
    "utf8": "e2ebackup/Schlüssel/ключ/鍵/🔑".encode(),
}
AEADS = {ref.AES_256_GCM: "aes-256-gcm", ref.CHACHA20_POLY1305: "chacha20-poly1305"}

FORMAT = {
    "summary": (
        "C2SP chunked encryption v1 (https://c2sp.org/chunked-encryption) with 16384-byte chunks, "
        "as specified in docs/FORMAT.md."
    ),
    "aead": "C2SP AEAD name: AEAD_AES_256_GCM or AEAD_CHACHA20_POLY1305.",
    "algorithm": "the same AEAD under its e2ebackup API name.",
    "key": "hex, the 32-byte input key K.",
    "salt": "hex, the 24-byte salt the (original) message was encrypted with.",
    "context": "hex, the context bytes (may be empty; not stored in the message).",
    "plaintext": (
        "hex, or an object {generator, seed, length, sha256}: generator 'sha256-ctr' means "
        "SHA-256(seed || uint32_be(0)) || SHA-256(seed || uint32_be(1)) || ... truncated to "
        "length bytes, seed taken as UTF-8."
    ),
    "ciphertext": (
        "hex, or for some long valid messages an object {length, sha256}: encrypt the plaintext "
        "with key, salt and context to obtain it, and check the digest. Invalid ciphertexts are "
        "always hex."
    ),
    "valid": (
        "true: decryption with key and context MUST return the plaintext and encryption with "
        "key, salt and context MUST return exactly the ciphertext. false: decryption with key "
        "and context MUST fail and release no plaintext of any unauthenticated chunk; plaintext "
        "and salt are then those of the genuine message the ciphertext was derived from."
    ),
    "reason": "for invalid vectors, what was done to the genuine message.",
}


stream = sha256_ctr  # every byte of the vectors comes from here


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def plaintext_field(seed: str, plaintext: bytes) -> str | dict[str, Any]:
    if len(plaintext) <= INLINE_LIMIT:
        return plaintext.hex()
    return {
        "generator": "sha256-ctr",
        "seed": seed,
        "length": len(plaintext),
        "sha256": hashlib.sha256(plaintext).hexdigest(),
    }


def ciphertext_field(ciphertext: bytes, inline: bool) -> str | dict[str, Any]:
    if inline:
        return ciphertext.hex()
    return {"length": len(ciphertext), "sha256": hashlib.sha256(ciphertext).hexdigest()}


class Message:
    """A genuine message made by the reference implementation, with everything that made it."""

    def __init__(
        self, name: str, aead: str, length: int, context: bytes, salt_name: str | None = None
    ) -> None:
        self.aead = aead
        self.key = stream(SEED_PREFIX + "key/" + name, ref.KEY_SIZE)
        self.salt = stream(SEED_PREFIX + "salt/" + (salt_name or name), ref.SALT_SIZE)
        self.context = context
        self.plaintext_seed = SEED_PREFIX + "plaintext/" + name
        self.plaintext = stream(self.plaintext_seed, length)
        self.ciphertext = ref.encrypt_with_salt(self.key, self.salt, context, aead, self.plaintext)

    def chunk(self, i: int) -> bytes:
        return self.ciphertext[H + i * SEALED : H + (i + 1) * SEALED]

    def seal(self, index: int, plaintext: bytes) -> bytes:
        """Seal one more chunk with this message's own key and nonce schedule."""
        aead, base_nonce, _ = ref._derive(self.key, self.salt, self.context, self.aead)
        return aead.encrypt(ref._nonce(base_nonce, index), plaintext, b"")

    def vector(
        self,
        vector_id: str,
        *,
        ciphertext: bytes | None = None,
        reason: str | None = None,
        key: bytes | None = None,
        context: bytes | None = None,
        aead: str | None = None,
    ) -> dict[str, Any]:
        aead = aead or self.aead
        limit = INLINE_LIMIT_EMPTY_CONTEXT if not self.context else INLINE_LIMIT
        if ciphertext is None:
            ciphertext = self.ciphertext
        v: dict[str, Any] = {
            "id": vector_id,
            "aead": aead,
            "algorithm": AEADS[aead],
            "key": (key or self.key).hex(),
            "salt": self.salt.hex(),
            "context": (self.context if context is None else context).hex(),
            "plaintext": plaintext_field(self.plaintext_seed, self.plaintext),
            "ciphertext": ciphertext_field(
                ciphertext, reason is not None or len(ciphertext) <= limit
            ),
            "valid": reason is None,
        }
        if reason is not None:
            v["reason"] = reason
        return v


def valid_vectors() -> list[dict[str, Any]]:
    vectors = []
    for aead, algorithm in AEADS.items():
        for ctx_name in ("empty", "utf8"):
            for length in LENGTHS:
                name = f"{algorithm}/len-{length}/ctx-{ctx_name}"
                vectors.append(Message(name, aead, length, CONTEXTS[ctx_name]).vector(name))
        for length in (0, CHUNK + 1):
            name = f"{algorithm}/len-{length}/ctx-ascii"
            vectors.append(Message(name, aead, length, CONTEXTS["ascii"]).vector(name))
    return vectors


def invalid_vectors_for(aead: str) -> list[dict[str, Any]]:
    algorithm = AEADS[aead]
    ctx = CONTEXTS["ascii"]
    vectors = []

    def msg(label: str, length: int, salt_label: str | None = None) -> Message:
        salt_name = salt_label and f"{algorithm}/invalid/{salt_label}"
        return Message(f"{algorithm}/invalid/{label}", aead, length, ctx, salt_name)

    def add(label: str, m: Message, reason: str, **kw: Any) -> None:
        vectors.append(m.vector(f"{algorithm}/invalid/{label}", reason=reason, **kw))

    empty = msg("empty", 0)  # just an empty final chunk
    small = msg("small", 100)  # one short final chunk
    two = msg("two-chunks", CHUNK + 100)  # a full chunk, then a 100-byte final chunk
    full = msg("full-chunk", CHUNK)  # a full chunk, then an empty final chunk
    three = msg("three-chunks", 2 * CHUNK + 100)
    # Same key, context and plaintext as `two`, another salt.
    other = msg("two-chunks", CHUNK + 100, salt_label="two-chunks-resalted")
    c, t = small.ciphertext, three.ciphertext

    add("empty-input", small, "zero bytes", ciphertext=b"")
    add("truncated-in-salt", small, "truncated to 20 bytes, inside the salt", ciphertext=c[:20])
    add(
        "truncated-in-commitment",
        small,
        "truncated to 40 bytes, inside the commitment",
        ciphertext=c[:40],
    )
    add("header-only", small, "truncated to the 56-byte header", ciphertext=c[:H])
    add(
        "shorter-than-tag",
        small,
        "header and 15 bytes: too short for a final chunk",
        ciphertext=c[: H + 15],
    )
    add("truncated-in-final-chunk", small, "last byte removed", ciphertext=c[:-1])
    add(
        "truncated-at-chunk-boundary",
        two,
        "final chunk dropped, so the full-size chunk 0 is last",
        ciphertext=two.ciphertext[: H + SEALED],
    )
    add(
        "dropped-empty-final-chunk",
        full,
        "the empty final chunk (16 bytes) dropped",
        ciphertext=full.ciphertext[:-16],
    )
    add(
        "appended-chunk",
        small,
        "a chunk sealed with the right key and the next nonce appended after the final chunk",
        ciphertext=c + small.seal(1, stream(SEED_PREFIX + "appended", 50)),
    )
    add(
        "appended-empty-chunk",
        empty,
        "an empty chunk sealed with the right key and nonce 1 appended after the empty final chunk",
        ciphertext=empty.ciphertext + empty.seal(1, b""),
    )
    add("flipped-salt", small, "bit 0 of salt byte 0 flipped", ciphertext=flip(c, 0))
    add(
        "flipped-commitment",
        small,
        "bit 7 of the last commitment byte flipped",
        ciphertext=flip(c, H - 1, 7),
    )
    add(
        "flipped-first-chunk",
        two,
        "bit 3 of the first byte of chunk 0 (of 2) flipped",
        ciphertext=flip(two.ciphertext, H, 3),
    )
    add(
        "flipped-last-tag",
        two,
        "bit 0 of the last byte (in the final chunk's tag) flipped",
        ciphertext=flip(two.ciphertext, len(two.ciphertext) - 1),
    )
    add(
        "swapped-chunks",
        three,
        "full chunks 0 and 1 swapped",
        ciphertext=t[:H] + three.chunk(1) + three.chunk(0) + t[H + 2 * SEALED :],
    )
    add(
        "chunk-from-other-message",
        two,
        "chunk 0 replaced by chunk 0 of a message with the same key, context and plaintext "
        "but another salt",
        ciphertext=two.ciphertext[:H] + other.chunk(0) + two.ciphertext[H + SEALED :],
    )
    add("wrong-context", small, "decrypted with another context", context=ctx + b"!")
    add("empty-context", small, "decrypted with the empty context", context=b"")
    add("wrong-key", small, "decrypted with another key", key=flip(small.key, 0))
    other_aead = ref.CHACHA20_POLY1305 if aead == ref.AES_256_GCM else ref.AES_256_GCM
    add("wrong-aead", small, f"made with {aead}, decrypted with {other_aead}", aead=other_aead)
    return vectors


def build() -> dict[str, Any]:
    return {
        "source": {
            "generator": "tools/make_vectors.py",
            "reference": "tests/reference/c2sp.py (pure Python on cryptography's AESGCM, "
            "ChaCha20Poly1305 and HKDFExpand(SHA512); independent of e2ebackup)",
            "deterministic": "keys, salts and plaintexts are sha256-ctr streams of seeds "
            f"starting with {SEED_PREFIX!r}; re-running reproduces this file byte for byte",
            "regenerate": "python tools/make_vectors.py",
        },
        "format": FORMAT,
        "chunk_size": CHUNK,
        "vectors": valid_vectors() + [v for a in AEADS for v in invalid_vectors_for(a)],
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date; run python tools/make_vectors.py", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(text)} bytes, {len(build()['vectors'])} vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
