"""Reference implementation of e2ebackup key slots and sealed files (format version 1).

Written from docs/FORMAT.md (sections "Key hierarchy", "Key slots" and "Sealed files") alone,
deliberately small and slow. It shares no code with e2ebackup: chunked encryption comes from
tests/reference/c2sp.py, HKDF from pyca ``cryptography``, Argon2id from ``argon2-cffi`` and
scrypt from ``hashlib``. The writer takes every random input explicitly, so the output is fully
determined by its arguments.

    sealed file = "E2EBSEAL" || 0x01 || aead (1) || container_id (16) || S (u32)
                  || count (1) || slot_1 || ... || slot_count || payload
    slot        = kind (1) || body_len (u16) || body || check (16)
    body        = created (u64) || label_len (u8) || label
                  || [password: kdf_id (1) || kdf parameters || salt_len (u8) || salt]
                  || wrapped (104)
    check       = SHA-256(kind || body_len || body)[0:16]
    wrapped     = chunked-encrypt(KEK, AES-256-GCM,
                                  "e2ebackup/v1/key-slot" || 0x00 || container_id || kind || public,
                                  DK)
    payload     = chunked-encrypt(derive(DK, "e2ebackup/v1/sealed-file/payload"), aead,
                                  "e2ebackup/v1/sealed-file" || 0x00 || fixed, plaintext)

All integers are big-endian.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import unicodedata
from dataclasses import dataclass

from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reference import c2sp

MAGIC = b"E2EBSEAL"
VERSION = 1
AEAD_IDS = {c2sp.AES_256_GCM: 0x01, c2sp.CHACHA20_POLY1305: 0x02}
AEAD_BY_ID = {v: k for k, v in AEAD_IDS.items()}
CONTAINER_ID_SIZE = 16
FIXED_SIZE = len(MAGIC) + 1 + 1 + CONTAINER_ID_SIZE  # 26
SLOT_AREA_OFFSET = FIXED_SIZE + 4  # 30
MAX_SLOT_AREA = 65536
MIN_SLOTS, MAX_SLOTS = 1, 32

KIND_RECOVERY_KEY = 0x01
KIND_PASSWORD = 0x02
KDF_ARGON2ID = 0x01
KDF_SCRYPT = 0x02

DATA_KEY_SIZE = 32
RECOVERY_KEY_SIZE = 32
CHECK_SIZE = 16
WRAPPED_SIZE = c2sp.ciphertext_length(DATA_KEY_SIZE)  # 104
MAX_LABEL_SIZE = 255
MIN_SALT_SIZE, MAX_SALT_SIZE = 16, 64

PAYLOAD_LABEL = b"e2ebackup/v1/sealed-file/payload"
SLOT_CONTEXT_PREFIX = b"e2ebackup/v1/key-slot\x00"
PAYLOAD_CONTEXT_PREFIX = b"e2ebackup/v1/sealed-file\x00"

GIB4 = 4 * 1024**3


# ---- errors: the same names as e2ebackup's, so vectors can name the expected one -------------


class ReferenceError(Exception):
    """Base class of the reference's errors."""


class NotSealedFile(ReferenceError):
    """Bad magic, version or AEAD byte, or a slot area that is too long or does not parse."""


class KeySlotError(ReferenceError):
    pass


class WrongPassword(KeySlotError):
    pass


class WrongRecoveryKey(KeySlotError):
    pass


class NoMatchingKeySlot(KeySlotError):
    pass


class CorruptKeySlot(KeySlotError):
    pass


class InvalidTag(ReferenceError):
    """The payload does not authenticate."""


# ---- key hierarchy -----------------------------------------------------------------------------


def derive(data_key: bytes, label: bytes) -> bytes:
    """derive(DK, label) = HKDF-SHA-256(IKM = DK, salt = "", info = label, L = 32)."""
    return HKDF(algorithm=SHA256(), length=32, salt=b"", info=label).derive(data_key)


# ---- credentials ----------------------------------------------------------------------------


def password_bytes(password: str | bytes) -> bytes:
    """NFC-UTF8. Bytes that are valid UTF-8 are read as text (and normalized); other bytes are
    used as given. (The spec only says the latter; the former is this reference's reading.)"""
    if isinstance(password, bytes):
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return password
    else:
        text = password
    if not text:
        raise ValueError("empty password")
    return unicodedata.normalize("NFC", text).encode("utf-8")


_SEPARATORS = re.compile(r"[ \t\n\r\-_:]")


def parse_recovery_key(text: str) -> bytes:
    """Any case; spaces, tabs, newlines, '-', '_' and ':' ignored; exactly 64 hex digits."""
    digits = _SEPARATORS.sub("", text)
    if len(digits) != 2 * RECOVERY_KEY_SIZE or not re.fullmatch(r"[0-9a-fA-F]*", digits):
        raise ValueError("not a recovery key")
    return bytes.fromhex(digits)


def format_recovery_key(key: bytes) -> str:
    """64 lowercase hex digits in 16 groups of 4 separated by spaces."""
    digits = key.hex()
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


# ---- KDFs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Argon2id:
    memory_kib: int
    iterations: int
    parallelism: int

    kdf_id = KDF_ARGON2ID

    def encode(self) -> bytes:
        return struct.pack(">III", self.memory_kib, self.iterations, self.parallelism)

    def within_limits(self) -> bool:
        p, m, t = self.parallelism, self.memory_kib, self.iterations
        return 1 <= p <= 64 and 8 * p <= m <= 4194304 and 1 <= t <= 64

    def derive(self, secret: bytes, salt: bytes) -> bytes:
        return hash_secret_raw(
            secret=secret,
            salt=salt,
            time_cost=self.iterations,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            type=Type.ID,
            version=ARGON2_VERSION,  # 0x13, v1.3
        )


@dataclass(frozen=True)
class Scrypt:
    log2_n: int
    r: int
    p: int

    kdf_id = KDF_SCRYPT

    def encode(self) -> bytes:
        return struct.pack(">BII", self.log2_n, self.r, self.p)

    def within_limits(self) -> bool:
        ok = 1 <= self.log2_n <= 22 and 1 <= self.r <= 32 and 1 <= self.p <= 16
        return ok and 128 * self.r * (2**self.log2_n + self.p) <= GIB4

    def derive(self, secret: bytes, salt: bytes) -> bytes:
        n = 2**self.log2_n
        maxmem = min(2**31 - 1, 128 * self.r * (n + self.p) + 2**20)
        return hashlib.scrypt(secret, salt=salt, n=n, r=self.r, p=self.p, maxmem=maxmem, dklen=32)


Kdf = Argon2id | Scrypt
KDF_PARAMS_SIZE = {KDF_ARGON2ID: 12, KDF_SCRYPT: 9}


def decode_kdf(kdf_id: int, params: bytes) -> Kdf:
    if kdf_id == KDF_ARGON2ID:
        return Argon2id(*struct.unpack(">III", params))
    if kdf_id == KDF_SCRYPT:
        return Scrypt(*struct.unpack(">BII", params))
    raise ValueError("unknown KDF")


# ---- slots ------------------------------------------------------------------------------------


def slot_context(container_id: bytes, kind: int, public: bytes) -> bytes:
    return SLOT_CONTEXT_PREFIX + container_id + bytes([kind]) + public


def public_fields(
    created: int, label: bytes, kdf: Kdf | None = None, salt: bytes | None = None
) -> bytes:
    """The body without ``wrapped``; ``kdf`` and ``salt`` for password slots only."""
    out = struct.pack(">QB", created, len(label)) + label
    if kdf is not None:
        assert salt is not None
        out += bytes([kdf.kdf_id]) + kdf.encode() + bytes([len(salt)]) + salt
    return out


def encode_slot(kind: int, body: bytes) -> bytes:
    """kind || body_len || body || check."""
    head = struct.pack(">BH", kind, len(body)) + body
    return head + hashlib.sha256(head).digest()[:CHECK_SIZE]


def wrap(
    kek: bytes, container_id: bytes, kind: int, public: bytes, data_key: bytes, wrap_salt: bytes
) -> bytes:
    context = slot_context(container_id, kind, public)
    return c2sp.encrypt_with_salt(kek, wrap_salt, context, c2sp.AES_256_GCM, data_key)


@dataclass(frozen=True)
class PasswordSlot:
    password: str | bytes
    kdf: Kdf
    salt: bytes
    wrap_salt: bytes
    created: int
    label: str | bytes = ""

    kind = KIND_PASSWORD

    def kek(self) -> bytes:
        return self.kdf.derive(password_bytes(self.password), self.salt)

    def public(self) -> bytes:
        return public_fields(self.created, _label_bytes(self.label), self.kdf, self.salt)


@dataclass(frozen=True)
class RecoveryKeySlot:
    recovery_key: bytes
    wrap_salt: bytes
    created: int
    label: str | bytes = ""

    kind = KIND_RECOVERY_KEY

    def kek(self) -> bytes:
        return self.recovery_key

    def public(self) -> bytes:
        return public_fields(self.created, _label_bytes(self.label))


@dataclass(frozen=True)
class RawSlot:
    """A slot given as bytes (kind || body_len || body || check), e.g. of an unknown kind."""

    encoded: bytes


SlotSpec = PasswordSlot | RecoveryKeySlot | RawSlot


def _label_bytes(label: str | bytes) -> bytes:
    return label.encode("utf-8") if isinstance(label, str) else label


def make_slot(spec: SlotSpec, container_id: bytes, data_key: bytes) -> bytes:
    if isinstance(spec, RawSlot):
        return spec.encoded
    public = spec.public()
    wrapped = wrap(spec.kek(), container_id, spec.kind, public, data_key, spec.wrap_salt)
    return encode_slot(spec.kind, public + wrapped)


# ---- sealed files: writing ------------------------------------------------------------------


def fixed_header(aead: str, container_id: bytes) -> bytes:
    assert len(container_id) == CONTAINER_ID_SIZE
    return MAGIC + bytes([VERSION, AEAD_IDS[aead]]) + container_id


def payload_key(data_key: bytes) -> bytes:
    return derive(data_key, PAYLOAD_LABEL)


def encrypt_payload(
    data_key: bytes, fixed: bytes, aead: str, payload_salt: bytes, plaintext: bytes
) -> bytes:
    context = PAYLOAD_CONTEXT_PREFIX + fixed
    return c2sp.encrypt_with_salt(payload_key(data_key), payload_salt, context, aead, plaintext)


def assemble(fixed: bytes, slots: list[bytes], payload: bytes) -> bytes:
    """fixed || S || count || slots || payload, with no checks (tests build bad files with it)."""
    area = bytes([len(slots)]) + b"".join(slots)
    return fixed + struct.pack(">I", len(area)) + area + payload


def seal(
    *,
    data_key: bytes,
    container_id: bytes,
    slots: list[SlotSpec],
    plaintext: bytes,
    payload_salt: bytes,
    aead: str = c2sp.AES_256_GCM,
) -> bytes:
    """A sealed file, every random input given. The slots are written in the order given."""
    assert len(data_key) == DATA_KEY_SIZE
    assert MIN_SLOTS <= len(slots) <= MAX_SLOTS
    fixed = fixed_header(aead, container_id)
    encoded = [make_slot(s, container_id, data_key) for s in slots]
    payload = encrypt_payload(data_key, fixed, aead, payload_salt, plaintext)
    blob = assemble(fixed, encoded, payload)
    assert len(blob) - len(payload) - SLOT_AREA_OFFSET <= MAX_SLOT_AREA
    return blob


# ---- sealed files: reading ------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One slot as framed in the slot area; its body is parsed only when it is opened."""

    kind: int
    body: bytes
    check: bytes

    def check_ok(self) -> bool:
        head = struct.pack(">BH", self.kind, len(self.body)) + self.body
        return hmac.compare_digest(hashlib.sha256(head).digest()[:CHECK_SIZE], self.check)


@dataclass(frozen=True)
class SlotBody:
    created: int
    label: bytes
    kdf: Kdf | None
    salt: bytes | None
    public: bytes
    wrapped: bytes


@dataclass(frozen=True)
class SealedFile:
    fixed: bytes
    aead: str
    container_id: bytes
    slots: list[Slot]
    payload: bytes


def parse(blob: bytes) -> SealedFile:
    """Check the header and frame the slot area; raise NotSealedFile."""
    if len(blob) < SLOT_AREA_OFFSET or blob[:8] != MAGIC or blob[8] != VERSION:
        raise NotSealedFile("bad magic or version")
    if blob[9] not in AEAD_BY_ID:
        raise NotSealedFile("unknown payload AEAD")
    (size,) = struct.unpack(">I", blob[FIXED_SIZE:SLOT_AREA_OFFSET])
    if size > MAX_SLOT_AREA or SLOT_AREA_OFFSET + size > len(blob):
        raise NotSealedFile("slot area too long")
    area = blob[SLOT_AREA_OFFSET : SLOT_AREA_OFFSET + size]
    if not area or not MIN_SLOTS <= area[0] <= MAX_SLOTS:
        raise NotSealedFile("bad slot count")
    slots, pos = [], 1
    for _ in range(area[0]):
        if pos + 3 > len(area):
            raise NotSealedFile("slot area ends inside a slot")
        kind, body_len = struct.unpack(">BH", area[pos : pos + 3])
        end = pos + 3 + body_len + CHECK_SIZE
        if end > len(area):
            raise NotSealedFile("slot area ends inside a slot")
        body = area[pos + 3 : pos + 3 + body_len]
        slots.append(Slot(kind, body, area[end - CHECK_SIZE : end]))
        pos = end
    if pos != len(area):
        raise NotSealedFile("trailing bytes in the slot area")
    return SealedFile(
        blob[:FIXED_SIZE],
        AEAD_BY_ID[blob[9]],
        blob[10:FIXED_SIZE],
        slots,
        blob[SLOT_AREA_OFFSET + size :],
    )


def parse_body(kind: int, body: bytes) -> SlotBody | None:
    """The body of a recovery-key or password slot, or None if it does not parse exactly."""
    if len(body) < 9 + WRAPPED_SIZE:
        return None
    public, wrapped = body[:-WRAPPED_SIZE], body[-WRAPPED_SIZE:]
    created, label_len = struct.unpack(">QB", public[:9])
    pos = 9 + label_len
    if pos > len(public):
        return None
    label = public[9:pos]
    try:
        label.decode("utf-8")  # the layout says UTF-8; this reference treats anything else
    except UnicodeDecodeError:  # as a body that does not parse (the spec does not say)
        return None
    if kind == KIND_RECOVERY_KEY:
        if pos != len(public):
            return None
        return SlotBody(created, label, None, None, public, wrapped)
    if pos >= len(public) or public[pos] not in KDF_PARAMS_SIZE:
        return None
    kdf_id, pos = public[pos], pos + 1
    size = KDF_PARAMS_SIZE[kdf_id]
    if pos + size + 1 > len(public):
        return None
    kdf = decode_kdf(kdf_id, public[pos : pos + size])
    salt_len, pos = public[pos + size], pos + size + 1
    if pos + salt_len != len(public):
        return None
    return SlotBody(created, label, kdf, public[pos:], public, wrapped)


def _slot_usable(slot: Slot) -> SlotBody | None:
    """Step 1 of Opening: the parsed body, or None if the slot is damaged (no KDF is run)."""
    if not slot.check_ok():
        return None
    body = parse_body(slot.kind, slot.body)
    if body is None:
        return None
    if body.kdf is not None:
        assert body.salt is not None
        if not body.kdf.within_limits() or not MIN_SALT_SIZE <= len(body.salt) <= MAX_SALT_SIZE:
            return None
    return body


def open_slots(
    container_id: bytes,
    slots: list[Slot],
    *,
    password: str | bytes | None = None,
    recovery_key: bytes | None = None,
) -> bytes:
    """Section Opening: return DK, or raise the error the spec prescribes."""
    if (password is None) == (recovery_key is None):
        raise ValueError("give exactly one of password and recovery_key")
    kind = KIND_PASSWORD if password is not None else KIND_RECOVERY_KEY
    secret = password_bytes(password) if password is not None else None
    damaged = matching = 0
    for slot in slots:
        if slot.kind != kind:
            continue  # other and unknown kinds are skipped
        matching += 1
        body = _slot_usable(slot)
        if body is None:
            damaged += 1
            continue
        if body.kdf is not None:
            assert secret is not None
            assert body.salt is not None
            kek = body.kdf.derive(secret, body.salt)
        else:
            assert recovery_key is not None
            kek = recovery_key
        context = slot_context(container_id, slot.kind, body.public)
        # Step 2: the commitment tells a wrong credential from a damaged wrapped key.
        wrap_salt = body.wrapped[: c2sp.SALT_SIZE]
        expected = c2sp._derive(kek, wrap_salt, context, c2sp.AES_256_GCM)[2]
        if not hmac.compare_digest(expected, body.wrapped[c2sp.SALT_SIZE : c2sp.HEADER_SIZE]):
            continue  # wrong credential for this slot
        # Step 3: the commitment matched, so a chunk that does not open means damage.
        try:
            return c2sp.decrypt(kek, context, c2sp.AES_256_GCM, body.wrapped)
        except c2sp.DecryptionError:
            damaged += 1
    if damaged:
        raise CorruptKeySlot("a key slot is damaged")
    if not matching:
        raise NoMatchingKeySlot("no key slot of that kind")
    if kind == KIND_PASSWORD:
        raise WrongPassword("wrong password")
    raise WrongRecoveryKey("wrong recovery key")


def open_data_key(
    blob: bytes, *, password: str | bytes | None = None, recovery_key: bytes | str | None = None
) -> bytes:
    f = parse(blob)
    if isinstance(recovery_key, str):
        recovery_key = parse_recovery_key(recovery_key)
    return open_slots(f.container_id, f.slots, password=password, recovery_key=recovery_key)


def unseal(
    blob: bytes, *, password: str | bytes | None = None, recovery_key: bytes | str | None = None
) -> bytes:
    """The plaintext of a sealed file; raises NotSealedFile, a KeySlotError or InvalidTag."""
    f = parse(blob)
    data_key = open_data_key(blob, password=password, recovery_key=recovery_key)
    context = PAYLOAD_CONTEXT_PREFIX + f.fixed
    try:
        return c2sp.decrypt(payload_key(data_key), context, f.aead, f.payload)
    except c2sp.DecryptionError:
        raise InvalidTag("payload does not authenticate") from None
