"""Reference implementation of e2ebackup recipient keys and recipient slots (kind 0x04).

Written from docs/FORMAT.md (section "Recipient slots") alone, deliberately small. It shares no
code with e2ebackup: ML-KEM-768 is pyca ``cryptography``'s (OpenSSL) for key generation and
decapsulation and ``kyber-py``'s (pure Python) for deterministic encapsulation, X25519, HKDF
and AES-GCM are ``cryptography``'s, Bech32 is the ``bech32`` package's (BIP 173 reference),
and the sealed-file framing is tests/reference/sealed.py's.

    identity   = seed (32)
    d || z     = HKDF-SHA-256(seed, salt = "", info = "e2ebackup/v1/identity/ml-kem-768", L = 64)
    sk_X       = HKDF-SHA-256(seed, salt = "", info = "e2ebackup/v1/identity/x25519", L = 32)
    recipient  = ek_M (1184) || pk_X (32)
    enc        = ct_M (1088) || ct_X (32)
    KEK        = HKDF-SHA-256(ss_M || ss_X || ct_M || ct_X || ek_M || pk_X, salt = "",
                              info = "e2ebackup/v1/key-slot/recipient/x25519-mlkem768", L = 32)
    body       = created (u64) || label_len (u8) || label || enc (1120) || wrapped (104)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import bech32
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from kyber_py.ml_kem import ML_KEM_768  # type: ignore[import-untyped]  # no stubs

from reference import c2sp, sealed as sr

KIND_RECIPIENT = 0x04
SEED_SIZE = 32
MLKEM_PUBLIC_SIZE, MLKEM_CIPHERTEXT_SIZE, X25519_SIZE = 1184, 1088, 32
PUBLIC_SIZE = MLKEM_PUBLIC_SIZE + X25519_SIZE  # 1216
ENC_SIZE = MLKEM_CIPHERTEXT_SIZE + X25519_SIZE  # 1120
MLKEM_SEED_LABEL = b"e2ebackup/v1/identity/ml-kem-768"
X25519_SEED_LABEL = b"e2ebackup/v1/identity/x25519"
COMBINER_LABEL = b"e2ebackup/v1/key-slot/recipient/x25519-mlkem768"
RECIPIENT_HRP = "e2ebackup"
IDENTITY_HRP = "e2ebackup-secret-key-"


def hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=None, info=info).derive(ikm)


# ---- text forms ---------------------------------------------------------------------------------


def to_bech32(hrp: str, data: bytes) -> str:
    words = bech32.convertbits(data, 8, 5, True)
    assert words is not None
    checksum = bech32.bech32_create_checksum(hrp, words)
    return hrp + "1" + "".join(bech32.CHARSET[w] for w in words + checksum)


def from_bech32(text: str) -> tuple[str, bytes]:
    text = text.lower()
    hrp, rest = text[: text.rfind("1")], text[text.rfind("1") + 1 :]
    words = [bech32.CHARSET.index(c) for c in rest]
    if not bech32.bech32_verify_checksum(hrp, words):
        raise ValueError("bad checksum")
    data = bech32.convertbits(words[:-6], 5, 8, False)
    if data is None:
        raise ValueError("bad padding")
    return hrp, bytes(data)


def recipient_text(public: bytes) -> str:
    return to_bech32(RECIPIENT_HRP, public)


def identity_text(seed: bytes) -> str:
    return to_bech32(IDENTITY_HRP, seed).upper()


# ---- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    mlkem: mlkem.MLKEM768PrivateKey
    x25519: X25519PrivateKey
    public: bytes


def identity_keys(seed: bytes) -> Keys:
    assert len(seed) == SEED_SIZE
    mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(hkdf(seed, MLKEM_SEED_LABEL, 64))
    x_key = X25519PrivateKey.from_private_bytes(hkdf(seed, X25519_SEED_LABEL))
    public = mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()
    return Keys(mlkem_key, x_key, public)


def combine(ss_m: bytes, ss_x: bytes, enc: bytes, public: bytes) -> bytes:
    return hkdf(ss_m + ss_x + enc + public, COMBINER_LABEL)


def encapsulate(public: bytes, m: bytes, ephemeral: bytes) -> tuple[bytes, bytes]:
    """``(enc, KEK)`` with the ML-KEM message ``m`` and the X25519 ephemeral key given."""
    assert len(public) == PUBLIC_SIZE
    ek_m, pk_x = public[:MLKEM_PUBLIC_SIZE], public[MLKEM_PUBLIC_SIZE:]
    ss_m, ct_m = ML_KEM_768._encaps_internal(ek_m, m)
    eph = X25519PrivateKey.from_private_bytes(ephemeral)
    ss_x = eph.exchange(X25519PublicKey.from_public_bytes(pk_x))  # ValueError if all zero
    enc = ct_m + eph.public_key().public_bytes_raw()
    return enc, combine(ss_m, ss_x, enc, public)


def decapsulate(keys: Keys, enc: bytes) -> bytes:
    """The KEK of ``enc``; ValueError for a wrong length or an all-zero X25519 secret."""
    if len(enc) != ENC_SIZE:
        raise ValueError("encapsulation length")
    ct_m, ct_x = enc[:MLKEM_CIPHERTEXT_SIZE], enc[MLKEM_CIPHERTEXT_SIZE:]
    ss_m = keys.mlkem.decapsulate(ct_m)
    ss_x = keys.x25519.exchange(X25519PublicKey.from_public_bytes(ct_x))
    return combine(ss_m, ss_x, enc, keys.public)


# ---- slots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientSlot:
    """A slot spec for sealed_reference.seal: every random input given."""

    public_key: bytes
    m: bytes
    ephemeral: bytes
    wrap_salt: bytes
    created: int
    label: str | bytes = ""

    kind = KIND_RECIPIENT

    def encapsulation(self) -> tuple[bytes, bytes]:
        return encapsulate(self.public_key, self.m, self.ephemeral)

    def kek(self) -> bytes:
        return self.encapsulation()[1]

    def public(self) -> bytes:
        label = self.label.encode("utf-8") if isinstance(self.label, str) else self.label
        return sr.public_fields(self.created, label) + self.encapsulation()[0]


def make_slot(spec: RecipientSlot, container_id: bytes, data_key: bytes) -> bytes:
    public = spec.public()
    wrapped = sr.wrap(spec.kek(), container_id, KIND_RECIPIENT, public, data_key, spec.wrap_salt)
    return sr.encode_slot(KIND_RECIPIENT, public + wrapped)


def parse_body(body: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(public, enc, wrapped)`` of a recipient slot body, or None if it does not parse."""
    if len(body) < 9:
        return None
    label_len = body[8]
    if len(body) != 9 + label_len + ENC_SIZE + sr.WRAPPED_SIZE:
        return None
    try:
        body[9 : 9 + label_len].decode("utf-8")
    except UnicodeDecodeError:
        return None
    public, wrapped = body[: -sr.WRAPPED_SIZE], body[-sr.WRAPPED_SIZE :]
    return public, public[9 + label_len :], wrapped


def open_with_identity(blob: bytes, seed: bytes) -> bytes:
    """Section Opening for recipient slots: DK, or the error the spec prescribes."""
    f = sr.parse(blob)
    keys = identity_keys(seed)
    damaged = matching = 0
    for slot in f.slots:
        if slot.kind != KIND_RECIPIENT:
            continue
        matching += 1
        parsed = parse_body(slot.body) if slot.check_ok() else None
        if parsed is None:
            damaged += 1
            continue
        public, enc, wrapped = parsed
        try:
            kek = decapsulate(keys, enc)
        except ValueError:
            damaged += 1
            continue
        context = sr.slot_context(f.container_id, KIND_RECIPIENT, public)
        wrap_salt = wrapped[: c2sp.SALT_SIZE]
        expected = c2sp._derive(kek, wrap_salt, context, c2sp.AES_256_GCM)[2]
        if not hmac.compare_digest(expected, wrapped[c2sp.SALT_SIZE : c2sp.HEADER_SIZE]):
            continue  # a slot for another identity
        try:
            return c2sp.decrypt(kek, context, c2sp.AES_256_GCM, wrapped)
        except c2sp.DecryptionError:
            damaged += 1
    if damaged:
        raise sr.CorruptKeySlot("a recipient slot is damaged")
    if not matching:
        raise sr.NoMatchingKeySlot("no recipient slot")
    raise sr.NoMatchingKeySlot("no recipient slot for this identity")


def unseal(blob: bytes, seed: bytes) -> bytes:
    f = sr.parse(blob)
    data_key = open_with_identity(blob, seed)
    context = sr.PAYLOAD_CONTEXT_PREFIX + f.fixed
    try:
        return c2sp.decrypt(sr.payload_key(data_key), context, f.aead, f.payload)
    except c2sp.DecryptionError:
        raise sr.InvalidTag("payload does not authenticate") from None


def slot_fields(blob: bytes) -> list[tuple[int, bytes]]:
    """``(kind, body)`` of every slot, for tests that edit one field."""
    return [(s.kind, s.body) for s in sr.parse(blob).slots]


__all__ = [
    "ENC_SIZE",
    "KIND_RECIPIENT",
    "PUBLIC_SIZE",
    "RecipientSlot",
    "decapsulate",
    "encapsulate",
    "from_bech32",
    "identity_keys",
    "identity_text",
    "make_slot",
    "open_with_identity",
    "recipient_text",
    "unseal",
]
