"""Generate tests/vectors/sealed_v1.json, test vectors for key slots and sealed files.

    python tools/make_sealed_vectors.py            # rewrite the file
    python tools/make_sealed_vectors.py --check    # exit 1 if the committed file is out of date

Every data key, container id, salt, recovery key and plaintext is derived from a fixed seed, and
every creation time is fixed, so re-running produces a byte-identical file. Sealed files come
from the pure-Python reference in tests/reference/sealed.py (written from docs/FORMAT.md alone),
never from e2ebackup itself.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from reference import (  # noqa: E402
    c2sp,
    sealed as ref,
)
from reference.sha256_ctr import sha256_ctr  # noqa: E402

OUTPUT = ROOT / "tests" / "vectors" / "sealed_v1.json"
SEED_PREFIX = "e2ebackup/sealed_v1/"
# Sealed files longer than this are stored as length and SHA-256 (rebuild them from the inputs);
# invalid files are always stored in full. Plaintexts longer than 1 KiB are stored by seed.
INLINE_FILE_LIMIT = 8192
INLINE_PLAINTEXT_LIMIT = 1024

AES, CHACHA = c2sp.AES_256_GCM, c2sp.CHACHA20_POLY1305
ALGORITHMS = {AES: "aes-256-gcm", CHACHA: "chacha20-poly1305"}
CREATED = 1764115200  # 2025-11-26T00:00:00Z; slot i of a file is created at CREATED + i
CHUNK = c2sp.CHUNK_SIZE
WRAPPED = ref.WRAPPED_SIZE
CHECK = ref.CHECK_SIZE

# Cheap parameters (inside the limits) for every vector but one; the default for that one.
ARGON2_CHEAP = ref.Argon2id(memory_kib=256, iterations=1, parallelism=1)
ARGON2_DEFAULT = ref.Argon2id(memory_kib=65536, iterations=3, parallelism=4)
SCRYPT_CHEAP = ref.Scrypt(log2_n=10, r=8, p=1)

FORMAT = {
    "summary": (
        "Key slots and sealed files of e2ebackup format version 1 (docs/FORMAT.md, sections "
        "Key hierarchy, Key slots and Sealed files)."
    ),
    "inputs": (
        "valid vectors: everything that went into the file. data_key (DK), container_id and "
        "payload_salt (the 24-byte salt of the payload message) are hex; aead is the payload "
        "AEAD's C2SP name and algorithm its e2ebackup API name; slots in file order."
    ),
    "slots": (
        "kind 'password': created (Unix seconds), label, kdf {name: argon2id, memory_kib, "
        "iterations, parallelism} or {name: scrypt, log2_n, r, p}, salt (hex), wrap_salt (hex, "
        "the 24-byte salt of the wrapped message), the password (as 'password' text or "
        "'password_hex' bytes), and the intermediate kek (hex) and encoded slot (hex). Kind "
        "'recovery-key': created, label, recovery_key (hex, 32 bytes), wrap_salt, kek, slot. "
        "Kind 'raw': a slot given only as its bytes (unknown kinds, damaged slots)."
    ),
    "payload_key": "hex, PK = derive(DK, 'e2ebackup/v1/sealed-file/payload').",
    "plaintext": (
        "hex, or an object {generator, seed, length, sha256}: generator 'sha256-ctr' means "
        "SHA-256(seed || uint32_be(0)) || SHA-256(seed || uint32_be(1)) || ... truncated to "
        "length bytes, seed taken as UTF-8."
    ),
    "sealed_file": (
        "hex, or for long valid files an object {length, sha256}: build the file from the "
        "inputs and check the digest. Invalid files are always hex."
    ),
    "credentials": (
        "valid vectors: each of these MUST open the file to the plaintext. {password: text} "
        "(a Unicode string), {password_hex: hex} (a password given as bytes) or {recovery_key: "
        "the 64 digits in the display form}."
    ),
    "credential": "invalid vectors: the one credential to try.",
    "error": (
        "invalid vectors: the e2ebackup error class the spec calls for (NotSealedFile, "
        "WrongPassword, WrongRecoveryKey, NoMatchingKeySlot, CorruptKeySlot, InvalidTag); "
        "also_accepted, when present, lists other classes the spec leaves room for."
    ),
    "reason": "invalid vectors: what was done to the genuine file.",
}


stream = sha256_ctr  # every byte of the vectors comes from here


def rnd(name: str, what: str, length: int) -> bytes:
    return stream(f"{SEED_PREFIX}{what}/{name}", length)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


# ---- slots with seeded random inputs --------------------------------------------------------


def password_slot(
    name: str,
    index: int,
    password: str | bytes,
    kdf: ref.Kdf = ARGON2_CHEAP,
    *,
    label: str = "",
    salt_size: int = 16,
) -> ref.PasswordSlot:
    return ref.PasswordSlot(
        password=password,
        kdf=kdf,
        salt=rnd(f"{name}/{index}", "password-salt", salt_size),
        wrap_salt=rnd(f"{name}/{index}", "wrap-salt", c2sp.SALT_SIZE),
        created=CREATED + index,
        label=label,
    )


def recovery_key_slot(name: str, index: int, *, label: str = "") -> ref.RecoveryKeySlot:
    return ref.RecoveryKeySlot(
        recovery_key=rnd(f"{name}/{index}", "recovery-key", ref.RECOVERY_KEY_SIZE),
        wrap_salt=rnd(f"{name}/{index}", "wrap-salt", c2sp.SALT_SIZE),
        created=CREATED + index,
        label=label,
    )


def with_body(slot: bytes, body: bytes, kind: int | None = None) -> bytes:
    """``slot`` with another body (and kind), its check recomputed ("fixed up")."""
    return ref.encode_slot(slot[0] if kind is None else kind, body)


def body_of(slot: bytes) -> bytes:
    return slot[3:-CHECK]


class Genuine:
    """A sealed file made by the reference, kept in parts so that vectors can edit them."""

    def __init__(
        self,
        name: str,
        slots: Sequence[ref.SlotSpec],
        length: int = 10,
        aead: str = AES,
    ) -> None:
        self.name = name
        self.specs = list(slots)
        self.aead = aead
        self.data_key = rnd(name, "data-key", ref.DATA_KEY_SIZE)
        self.container_id = rnd(name, "container-id", ref.CONTAINER_ID_SIZE)
        self.payload_salt = rnd(name, "payload-salt", c2sp.SALT_SIZE)
        self.plaintext_seed = f"{SEED_PREFIX}plaintext/{name}"
        self.plaintext = stream(self.plaintext_seed, length)
        self.fixed = ref.fixed_header(aead, self.container_id)
        self.slots = [ref.make_slot(s, self.container_id, self.data_key) for s in self.specs]
        self.payload = ref.encrypt_payload(
            self.data_key, self.fixed, aead, self.payload_salt, self.plaintext
        )
        self.blob = ref.assemble(self.fixed, self.slots, self.payload)
        assert self.blob == ref.seal(
            data_key=self.data_key,
            container_id=self.container_id,
            slots=self.specs,
            plaintext=self.plaintext,
            payload_salt=self.payload_salt,
            aead=aead,
        )

    def with_slots(self, *slots: bytes) -> bytes:
        return ref.assemble(self.fixed, list(slots), self.payload)

    def with_area(self, area: bytes, size: int | None = None) -> bytes:
        """The file with ``area`` as its slot area and S = ``size`` (default: its length)."""
        s = len(area) if size is None else size
        return self.fixed + struct.pack(">I", s) + area + self.payload


# ---- JSON fields ------------------------------------------------------------------------------


def kdf_field(kdf: ref.Kdf) -> dict[str, Any]:
    if isinstance(kdf, ref.Argon2id):
        return {
            "name": "argon2id",
            "memory_kib": kdf.memory_kib,
            "iterations": kdf.iterations,
            "parallelism": kdf.parallelism,
        }
    return {"name": "scrypt", "log2_n": kdf.log2_n, "r": kdf.r, "p": kdf.p}


def password_field(password: str | bytes) -> dict[str, str]:
    if isinstance(password, bytes):
        return {"password_hex": password.hex()}
    return {"password": password}


def recovery_key_field(key: bytes) -> dict[str, str]:
    return {"recovery_key": ref.format_recovery_key(key)}


def slot_field(spec: ref.SlotSpec, encoded: bytes, note: str | None = None) -> dict[str, Any]:
    if isinstance(spec, ref.RawSlot):
        out: dict[str, Any] = {"kind": "raw", "slot": encoded.hex()}
        if note:
            out["note"] = note
        return out
    label = spec.label if isinstance(spec.label, str) else spec.label.decode()
    if isinstance(spec, ref.PasswordSlot):
        out = {"kind": "password", "created": spec.created, "label": label}
        out["kdf"] = kdf_field(spec.kdf)
        out["salt"] = spec.salt.hex()
        out.update(password_field(spec.password))
    else:
        out = {"kind": "recovery-key", "created": spec.created, "label": label}
        out["recovery_key"] = spec.recovery_key.hex()
    out["wrap_salt"] = spec.wrap_salt.hex()
    out["kek"] = spec.kek().hex()
    out["slot"] = encoded.hex()
    return out


def plaintext_field(seed: str, plaintext: bytes) -> str | dict[str, Any]:
    if len(plaintext) <= INLINE_PLAINTEXT_LIMIT:
        return plaintext.hex()
    return {
        "generator": "sha256-ctr",
        "seed": seed,
        "length": len(plaintext),
        "sha256": hashlib.sha256(plaintext).hexdigest(),
    }


def file_field(blob: bytes) -> str | dict[str, Any]:
    if len(blob) <= INLINE_FILE_LIMIT:
        return blob.hex()
    return {"length": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


Credential = dict[str, str]


def valid(
    vector_id: str,
    description: str,
    g: Genuine,
    credentials: list[Credential],
    notes: dict[int, str] | None = None,
) -> dict[str, Any]:
    for c in credentials:  # the reference itself must open it with every credential
        assert ref.unseal(g.blob, **credential_kwargs(c)) == g.plaintext, (vector_id, c)
    notes = notes or {}
    return {
        "id": vector_id,
        "valid": True,
        "description": description,
        "inputs": {
            "aead": g.aead,
            "algorithm": ALGORITHMS[g.aead],
            "data_key": g.data_key.hex(),
            "container_id": g.container_id.hex(),
            "payload_salt": g.payload_salt.hex(),
            "slots": [
                slot_field(spec, enc, notes.get(i))
                for i, (spec, enc) in enumerate(zip(g.specs, g.slots, strict=True))
            ],
        },
        "payload_key": ref.payload_key(g.data_key).hex(),
        "plaintext": plaintext_field(g.plaintext_seed, g.plaintext),
        "sealed_file": file_field(g.blob),
        "credentials": credentials,
    }


def credential_kwargs(c: Credential) -> dict[str, Any]:
    if "password" in c:
        return {"password": c["password"]}
    if "password_hex" in c:
        return {"password": bytes.fromhex(c["password_hex"])}
    return {"recovery_key": c["recovery_key"]}


def invalid(
    vector_id: str,
    reason: str,
    blob: bytes,
    credential: Credential,
    error: str,
    also_accepted: Sequence[str] = (),
) -> dict[str, Any]:
    try:
        ref.unseal(blob, **credential_kwargs(credential))
    except ref.ReferenceError as e:
        got = type(e).__name__
    else:
        got = "success"
    assert got == error, (vector_id, got, error)
    v: dict[str, Any] = {
        "id": vector_id,
        "valid": False,
        "reason": reason,
        "sealed_file": blob.hex(),
        "credential": credential,
        "error": error,
    }
    if also_accepted:
        v["also_accepted"] = list(also_accepted)
    return v


# ---- valid vectors ------------------------------------------------------------------------------

NON_ASCII_LABEL = "Schlüssel/ключ/鍵/🔑 — ноутбук"
NFD_PASSWORD = unicodedata.normalize("NFD", "Ångström café, naïve Œuvre")
NON_UTF8_PASSWORD = b"\xff\xfe pass\x80word \xc3"


def valid_vectors() -> list[dict[str, Any]]:
    vs = []

    def rk(name: str, index: int) -> Credential:
        return recovery_key_field(rnd(f"{name}/{index}", "recovery-key", ref.RECOVERY_KEY_SIZE))

    n = "password-argon2id"
    g = Genuine(n, [password_slot(n, 0, "correct horse", label="laptop")], 1)
    vs.append(valid(n, "one password slot, Argon2id", g, [{"password": "correct horse"}]))

    n = "password-scrypt"
    g = Genuine(n, [password_slot(n, 0, "battery staple", SCRYPT_CHEAP)], CHUNK)
    vs.append(valid(n, "one password slot, scrypt", g, [{"password": "battery staple"}]))

    n = "recovery-key"
    g = Genuine(n, [recovery_key_slot(n, 0, label="paper copy")], 0)
    vs.append(valid(n, "one recovery-key slot", g, [rk(n, 0)]))

    n = "password-and-recovery-key"
    g = Genuine(n, [password_slot(n, 0, "tr0ub4dor&3"), recovery_key_slot(n, 1)], 40000, CHACHA)
    creds = [{"password": "tr0ub4dor&3"}, rk(n, 1)]
    vs.append(valid(n, "a password slot and a recovery-key slot, ChaCha20-Poly1305", g, creds))

    n = "two-passwords"
    slots: list[ref.SlotSpec] = [
        password_slot(n, 0, "first password", ref.Argon2id(64, 2, 4), label="alice"),
        password_slot(n, 1, "second password", ref.Scrypt(4, 8, 2), label="bob"),
    ]
    g = Genuine(n, slots, 100)
    creds = [{"password": "first password"}, {"password": "second password"}]
    vs.append(valid(n, "two password slots (Argon2id p=4, scrypt p=2); either opens", g, creds))

    n = "non-ascii-label"
    g = Genuine(n, [recovery_key_slot(n, 0, label=NON_ASCII_LABEL)], 1, CHACHA)
    vs.append(valid(n, "a label with non-ASCII UTF-8 text", g, [rk(n, 0)]))

    n = "nfd-password"
    g = Genuine(n, [password_slot(n, 0, NFD_PASSWORD, ref.Scrypt(5, 8, 1))], 100)
    nfc = unicodedata.normalize("NFC", NFD_PASSWORD)
    creds = [
        {"password": NFD_PASSWORD},
        {"password": nfc},
        {"password_hex": nfc.encode().hex()},
        {"password_hex": NFD_PASSWORD.encode().hex()},
    ]
    desc = "set with a password in NFD; opens with it in NFC or NFD, as text or as UTF-8 bytes"
    vs.append(valid(n, desc, g, creds))

    n = "non-utf8-password"
    g = Genuine(n, [password_slot(n, 0, NON_UTF8_PASSWORD)], 1)
    desc = "a password given as bytes that are not UTF-8, used as given"
    vs.append(valid(n, desc, g, [{"password_hex": NON_UTF8_PASSWORD.hex()}]))

    n = "default-argon2id"
    g = Genuine(n, [password_slot(n, 0, "correct horse battery staple", ARGON2_DEFAULT)], 1)
    desc = "the default Argon2id parameters (m=65536 KiB, t=3, p=4)"
    vs.append(valid(n, desc, g, [{"password": "correct horse battery staple"}]))

    n = "kdf-limits"
    slots = [
        password_slot(n, 0, "smallest argon2id", ref.Argon2id(8, 1, 1), label="x" * 255),
        password_slot(n, 1, "smallest scrypt", ref.Scrypt(1, 1, 1), salt_size=64),
        password_slot(n, 2, "argon2id m = 8p", ref.Argon2id(16, 1, 2)),
    ]
    g = Genuine(n, slots, 1)
    creds = [{"password": "smallest argon2id"}, {"password": "smallest scrypt"}]
    creds.append({"password": "argon2id m = 8p"})
    desc = (
        "boundary values inside the limits: Argon2id m=8 t=1 p=1 and m=16 p=2, scrypt "
        "log2N=1 r=1 p=1, a 64-byte salt, a 255-byte label"
    )
    vs.append(valid(n, desc, g, creds))

    n = "unknown-kinds"
    unknown = [
        ref.RawSlot(ref.encode_slot(0x00, b"")),
        ref.RawSlot(ref.encode_slot(0x7F, b"future slot kind " * 4)),
        ref.RawSlot(ref.encode_slot(0xFF, bytes(200))),
    ]
    slots = [unknown[0], password_slot(n, 1, "hunter2"), unknown[1], recovery_key_slot(n, 3)]
    g = Genuine(n, [*slots, unknown[2]], 1)
    desc = "slots of unknown kinds (0x00, 0x7f, 0xff) around the known ones are skipped"
    notes = {i: "unknown kind" for i in (0, 2, 4)}
    vs.append(valid(n, desc, g, [{"password": "hunter2"}, rk(n, 3)], notes))

    n = "damaged-slot-then-intact"
    first = password_slot(n, 0, "same password")
    genuine = Genuine(n, [first, password_slot(n, 1, "same password")], 1)
    damaged = ref.RawSlot(flip(genuine.slots[0], len(genuine.slots[0]) - 1))
    g = Genuine(n, [damaged, genuine.specs[1]], 1)
    desc = "a damaged password slot (check flipped) before an intact one for the same password"
    vs.append(valid(n, desc, g, [{"password": "same password"}], {0: "check flipped"}))

    n = "32-slots"
    slots = [recovery_key_slot(n, i) for i in range(31)]
    g = Genuine(n, [*slots, password_slot(n, 31, "last slot", ref.Argon2id(8, 1, 1))], 1)
    creds = [rk(n, 0), rk(n, 30), {"password": "last slot"}]
    vs.append(valid(n, "the maximum of 32 slots", g, creds))

    # Fill the AEAD x plaintext length matrix with cheap recovery-key files.
    for aead, algorithm in ALGORITHMS.items():
        for length in (0, 1, CHUNK, 40000):
            n = f"{algorithm}/len-{length}"
            g = Genuine(n, [recovery_key_slot(n, 0)], length, aead)
            vs.append(valid(n, f"{algorithm} payload of {length} bytes", g, [rk(n, 0)]))
    return vs


# ---- invalid vectors ----------------------------------------------------------------------------

FRAMING = ("CorruptKeySlot",)  # the spec says "reject" for slot areas that do not parse


def invalid_vectors() -> list[dict[str, Any]]:
    vs: list[dict[str, Any]] = []
    pw = {"password": "open sesame"}

    def add(
        label: str,
        reason: str,
        blob: bytes,
        credential: Credential,
        error: str,
        also: Sequence[str] = (),
    ) -> None:
        vs.append(invalid(f"invalid/{label}", reason, blob, credential, error, also))

    p = Genuine("invalid/password", [password_slot("invalid/password", 0, "open sesame")])
    r_name = "invalid/recovery-key"
    rspec = recovery_key_slot(r_name, 0)
    r = Genuine(r_name, [rspec])
    rk = recovery_key_field(rspec.recovery_key)
    s_name = "invalid/scrypt"
    s = Genuine(s_name, [password_slot(s_name, 0, "open sesame", ref.Scrypt(4, 8, 1))])
    pslot, rslot = p.slots[0], r.slots[0]
    pbody, rbody = body_of(pslot), body_of(rslot)
    spec = p.specs[0]
    assert isinstance(spec, ref.PasswordSlot)

    # Credentials.
    add(
        "wrong-password",
        "opened with another password",
        p.blob,
        {"password": "open sesam"},
        "WrongPassword",
    )
    add(
        "wrong-password-scrypt",
        "opened with another password (scrypt slot)",
        s.blob,
        {"password": "Open sesame"},
        "WrongPassword",
    )
    add(
        "nfkc-is-not-nfc",
        "set with U+FB01 LATIN SMALL LIGATURE FI; opened with 'fi' (NFKC, not NFC, would "
        "equate them)",
        Genuine("invalid/nfkc", [password_slot("invalid/nfkc", 0, "\ufb01le")]).blob,
        {"password": "file"},
        "WrongPassword",
    )
    wrong_rk = recovery_key_field(rnd("invalid/wrong", "recovery-key", 32))
    add(
        "wrong-recovery-key",
        "opened with another recovery key",
        r.blob,
        wrong_rk,
        "WrongRecoveryKey",
    )
    add(
        "password-for-recovery-only",
        "a password given for a file with only a recovery-key slot",
        r.blob,
        pw,
        "NoMatchingKeySlot",
    )
    add(
        "recovery-key-for-password-only",
        "a recovery key given for a file with only a password slot",
        p.blob,
        rk,
        "NoMatchingKeySlot",
    )
    u_only = p.with_slots(ref.encode_slot(0x7F, b"future"))
    add(
        "only-unknown-kinds", "the only slot is of an unknown kind", u_only, pw, "NoMatchingKeySlot"
    )

    # Damaged slots.
    ct = len(pbody) - WRAPPED + c2sp.HEADER_SIZE  # first byte of the wrapped AES-GCM ciphertext
    add(
        "wrapped-key-damaged",
        "bit 0 of the first byte of the wrapped DK's ciphertext flipped, check fixed up "
        "(the commitment matches, the chunk does not open)",
        p.with_slots(with_body(pslot, flip(pbody, ct))),
        pw,
        "CorruptKeySlot",
    )
    add(
        "wrapped-tag-damaged",
        "bit 7 of the last byte of the wrapped DK's tag flipped, check fixed up",
        r.with_slots(with_body(rslot, flip(rbody, len(rbody) - 1, 7))),
        rk,
        "CorruptKeySlot",
    )
    add(
        "check-mismatch",
        "bit 0 of the check's last byte flipped; the slot is otherwise intact and would open",
        p.with_slots(flip(pslot, len(pslot) - 1)),
        pw,
        "CorruptKeySlot",
    )
    add(
        "check-mismatch-recovery-key",
        "bit 4 of the check's first byte flipped in a recovery-key slot",
        r.with_slots(flip(rslot, len(rslot) - CHECK, 4)),
        rk,
        "CorruptKeySlot",
    )
    add(
        "body-damaged-check-not-fixed",
        "a byte of the salt changed, check left as it was",
        p.with_slots(flip(pslot, 3 + 9 + 1 + 12 + 1)),
        pw,
        "CorruptKeySlot",
    )
    add(
        "damaged-slot-precedes-wrong-password",
        "slot 1 (password 'open sesame') has its check flipped; slot 2 is intact but for "
        "another password; opened with 'open sesame'",
        p.with_slots(
            flip(pslot, len(pslot) - 1),
            ref.make_slot(
                password_slot("invalid/password", 1, "other"), p.container_id, p.data_key
            ),
        ),
        pw,
        "CorruptKeySlot",
    )

    # KDF parameters outside the limits (check fixed up). None may be run.
    def with_kdf(kdf: ref.Kdf | None, salt: bytes = spec.salt, raw: bytes = b"") -> bytes:
        if kdf is not None:
            public = ref.public_fields(spec.created, b"", kdf, salt)
        else:  # raw kdf_id || parameters
            public = struct.pack(">QB", spec.created, 0) + raw + bytes([len(salt)]) + salt
        return p.with_slots(ref.encode_slot(ref.KIND_PASSWORD, public + pbody[-WRAPPED:]))

    out_of_limits: list[tuple[str, ref.Kdf]] = [
        ("argon2id-m-4194305", ref.Argon2id(4194305, 1, 1)),
        ("argon2id-m-max-u32", ref.Argon2id(2**32 - 1, 3, 4)),
        ("argon2id-m-below-8p", ref.Argon2id(15, 1, 2)),
        ("argon2id-t-0", ref.Argon2id(64, 0, 1)),
        ("argon2id-t-65", ref.Argon2id(64, 65, 1)),
        ("argon2id-p-0", ref.Argon2id(64, 1, 0)),
        ("argon2id-p-65", ref.Argon2id(1024, 1, 65)),
        ("scrypt-log2n-0", ref.Scrypt(0, 8, 1)),
        ("scrypt-log2n-23", ref.Scrypt(23, 1, 1)),
        ("scrypt-r-0", ref.Scrypt(4, 0, 1)),
        ("scrypt-r-33", ref.Scrypt(4, 33, 1)),
        ("scrypt-p-0", ref.Scrypt(4, 8, 0)),
        ("scrypt-p-17", ref.Scrypt(4, 1, 17)),
        ("scrypt-memory-over-4gib", ref.Scrypt(22, 8, 1)),  # 128*8*(2^22+1) = 4 GiB + 1 KiB
    ]
    for label, kdf in out_of_limits:
        add(
            f"kdf-{label}",
            f"KDF parameters set to {kdf} (outside the limits), check fixed up; no KDF may be run",
            with_kdf(kdf),
            pw,
            "CorruptKeySlot",
        )
    add(
        "kdf-unknown-id",
        "kdf_id 0x03 with 12 parameter bytes, check fixed up",
        with_kdf(None, raw=b"\x03" + ARGON2_CHEAP.encode()),
        pw,
        "CorruptKeySlot",
    )
    for size in (15, 65):
        add(
            f"salt-{size}-bytes",
            f"a {size}-byte password salt (limits: 16 to 64), check fixed up",
            with_kdf(ARGON2_CHEAP, salt=bytes(size)),
            pw,
            "CorruptKeySlot",
        )

    # Bodies that do not parse (check fixed up).
    bad_label = ref.public_fields(spec.created, b"\xff\xfe", spec.kdf, spec.salt)
    add(
        "label-not-utf8",
        "label bytes ff fe (not UTF-8), check fixed up",
        p.with_slots(ref.encode_slot(ref.KIND_PASSWORD, bad_label + pbody[-WRAPPED:])),
        pw,
        "CorruptKeySlot",
    )
    add(
        "label-length-overrun",
        "label_len set to 200, past the end of the body, check fixed up",
        p.with_slots(with_body(pslot, pbody[:8] + b"\xc8" + pbody[9:])),
        pw,
        "CorruptKeySlot",
    )
    add(
        "recovery-key-body-trailing-byte",
        "a byte inserted between the label and wrapped, check fixed up",
        r.with_slots(with_body(rslot, rbody[:9] + b"\x00" + rbody[9:])),
        rk,
        "CorruptKeySlot",
    )
    add(
        "body-too-short",
        "a password slot whose body is 50 zero bytes, check fixed up",
        p.with_slots(ref.encode_slot(ref.KIND_PASSWORD, bytes(50))),
        pw,
        "CorruptKeySlot",
    )
    add(
        "password-body-in-recovery-key-slot",
        "the kind byte of a password slot set to 0x01, check fixed up; opened with a recovery key",
        p.with_slots(with_body(pslot, pbody, 1)),
        rk,
        "CorruptKeySlot",
    )

    # Intact slots whose public fields were edited: they no longer open (wrong credential).
    def edited(public: bytes) -> bytes:
        return p.with_slots(ref.encode_slot(ref.KIND_PASSWORD, public + pbody[-WRAPPED:]))

    add(
        "label-edited",
        "label set to 'x', check fixed up: the slot context changed",
        edited(ref.public_fields(spec.created, b"x", spec.kdf, spec.salt)),
        pw,
        "WrongPassword",
    )
    add(
        "created-edited",
        "created incremented, check fixed up",
        edited(ref.public_fields(spec.created + 1, b"", spec.kdf, spec.salt)),
        pw,
        "WrongPassword",
    )
    add(
        "kdf-edited",
        "iterations 1 -> 2 (inside the limits), check fixed up",
        edited(ref.public_fields(spec.created, b"", ref.Argon2id(256, 2, 1), spec.salt)),
        pw,
        "WrongPassword",
    )
    add(
        "wrap-salt-edited",
        "bit 0 of the wrapped message's salt flipped, check fixed up",
        p.with_slots(with_body(pslot, flip(pbody, len(pbody) - WRAPPED))),
        pw,
        "WrongPassword",
    )
    add(
        "wrap-commitment-edited",
        "bit 0 of the wrapped message's commitment flipped, check fixed up",
        r.with_slots(with_body(rslot, flip(rbody, len(rbody) - WRAPPED + 24))),
        rk,
        "WrongRecoveryKey",
    )

    # Slots moved between files: bound to the container id.
    q = Genuine("invalid/other-file", [password_slot("invalid/other-file", 0, "open sesame")])
    add(
        "slot-area-from-another-file",
        "the slot area of another file with the same password (another DK and container id)",
        ref.assemble(p.fixed, q.slots, p.payload),
        pw,
        "WrongPassword",
    )
    add(
        "container-id-edited",
        "bit 0 of container_id byte 0 flipped",
        flip(p.blob, 10),
        pw,
        "WrongPassword",
    )

    # Payload.
    add(
        "payload-flipped",
        "bit 0 of the payload's last byte flipped",
        flip(p.blob, len(p.blob) - 1),
        pw,
        "InvalidTag",
    )
    add("payload-truncated", "last byte of the payload removed", p.blob[:-1], pw, "InvalidTag")
    add(
        "payload-missing",
        "the file ends after the slot area",
        p.blob[: -len(p.payload)],
        pw,
        "InvalidTag",
    )
    add("payload-extended", "a zero byte appended", p.blob + b"\x00", pw, "InvalidTag")
    swapped = p.fixed[:9] + b"\x02" + p.fixed[10:]
    add(
        "aead-byte-swapped",
        "payload AEAD byte 0x01 -> 0x02: the slots still open (the AEAD is "
        "not in the slot context) but the payload context differs",
        swapped + p.blob[26:],
        pw,
        "InvalidTag",
    )

    # Not a sealed file.
    add("bad-magic", "magic 'E2EBSEAM'", p.blob[:7] + b"M" + p.blob[8:], pw, "NotSealedFile")
    add("version-0", "version byte 0x00", p.blob[:8] + b"\x00" + p.blob[9:], pw, "NotSealedFile")
    add("version-2", "version byte 0x02", p.blob[:8] + b"\x02" + p.blob[9:], pw, "NotSealedFile")
    add("aead-0", "payload AEAD byte 0x00", p.blob[:9] + b"\x00" + p.blob[10:], pw, "NotSealedFile")
    add("aead-3", "payload AEAD byte 0x03", p.blob[:9] + b"\x03" + p.blob[10:], pw, "NotSealedFile")
    area = bytes([1]) + pslot
    beyond = len(area) + len(p.payload) + 1
    add(
        "slot-area-beyond-file",
        f"S = {beyond}, one byte more than the rest of the file",
        p.with_area(area, beyond),
        pw,
        "NotSealedFile",
    )
    add(
        "slot-area-over-65536",
        "S = 65537 (the file is shorter)",
        p.with_area(area, 65537),
        pw,
        "NotSealedFile",
    )
    add("header-truncated", "only the first 29 bytes", p.blob[:29], pw, "NotSealedFile")
    add("empty-file", "zero bytes", b"", pw, "NotSealedFile")
    add(
        "plain-c2sp-message",
        "a plain chunked-encryption message, not a sealed file",
        p.payload,
        pw,
        "NotSealedFile",
    )

    # Slot areas that do not parse exactly.
    add(
        "slot-count-0",
        "count 0 followed by the slot",
        p.with_area(b"\x00" + pslot),
        pw,
        "NotSealedFile",
        FRAMING,
    )
    add(
        "slot-area-empty", "S = 0: not even a count", p.with_area(b""), pw, "NotSealedFile", FRAMING
    )
    add(
        "slot-count-33",
        "count 33 followed by 33 copies of a recovery-key slot",
        r.with_area(bytes([33]) + rslot * 33),
        rk,
        "NotSealedFile",
        FRAMING,
    )
    add(
        "slot-count-too-high",
        "count 2 but one slot",
        p.with_area(b"\x02" + pslot),
        pw,
        "NotSealedFile",
        FRAMING,
    )
    add(
        "slot-area-trailing-byte",
        "one zero byte after the last slot",
        p.with_area(b"\x01" + pslot + b"\x00"),
        pw,
        "NotSealedFile",
        FRAMING,
    )
    add(
        "slot-body-overruns-area",
        "body_len 1 larger, so the slot overruns the area",
        p.with_area(b"\x01" + pslot[:1] + struct.pack(">H", len(pbody) + 1) + pslot[3:]),
        pw,
        "NotSealedFile",
        FRAMING,
    )

    # Damaged slots of another kind: the Opening procedure looks only at slots of the
    # credential's kind.
    rdamaged = flip(rslot, len(rslot) - 1)
    add(
        "damaged-other-kind-then-wrong-password",
        "a recovery-key slot with its check flipped, "
        "then the intact password slot; opened with a wrong password",
        p.with_slots(rdamaged, pslot),
        {"password": "open sesam"},
        "WrongPassword",
    )
    add(
        "only-damaged-other-kind",
        "the only slot is a recovery-key slot with its check flipped; opened with a password",
        p.with_slots(rdamaged),
        pw,
        "NoMatchingKeySlot",
    )
    add(
        "damaged-unknown-kind-then-wrong-password",
        "a slot of unknown kind 0x7f with its check "
        "flipped, then the intact password slot; opened with a wrong password",
        p.with_slots(flip(ref.encode_slot(0x7F, b"future"), 3 + 6), pslot),
        {"password": "open sesam"},
        "WrongPassword",
    )
    return vs


def build() -> dict[str, Any]:
    return {
        "source": {
            "generator": "tools/make_sealed_vectors.py",
            "reference": "tests/reference/sealed.py (pure Python from docs/FORMAT.md, on "
            "tests/reference/c2sp.py, cryptography's HKDF, argon2-cffi and hashlib.scrypt; "
            "independent of e2ebackup)",
            "deterministic": "data keys, container ids, salts, recovery keys and plaintexts are "
            f"sha256-ctr streams of seeds starting with {SEED_PREFIX!r}; creation times are "
            "fixed; re-running reproduces this file byte for byte",
            "regenerate": "python tools/make_sealed_vectors.py",
        },
        "format": FORMAT,
        "vectors": valid_vectors() + invalid_vectors(),
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    document = build()
    text = json.dumps(document, indent=1, ensure_ascii=True) + "\n"
    if argv[1:] == ["--check"]:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(
                f"{OUTPUT} is out of date; run {document['source']['regenerate']}", file=sys.stderr
            )
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(text)} bytes, {len(document['vectors'])} vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
