"""Generate tests/vectors/recipient_v1.json: recipient keys and recipient slots (kind 0x04).

    python tools/make_recipient_vectors.py            # rewrite the file
    python tools/make_recipient_vectors.py --check    # exit 1 if the committed file is out of date

Every seed, data key, container id, salt and KEM randomness is derived from a fixed seed and
every creation time is fixed, so re-running gives a byte-identical file. The bytes come from
the references in tests/reference/recipient.py and tests/reference/sealed.py (written from
docs/FORMAT.md alone), never from e2ebackup itself.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from reference import (  # noqa: E402
    c2sp,
    recipient as rr,
    sealed as sr,
)

OUTPUT = ROOT / "tests" / "vectors" / "recipient_v1.json"
CREATED = 1764633600  # 2025-12-02T00:00:00Z; slot i of a file is created at CREATED + i
CHEAP_ARGON2 = sr.Argon2id(memory_kib=256, iterations=1, parallelism=1)

FORMAT = {
    "summary": (
        "Recipient keys (X25519 + ML-KEM-768) and recipient slots, kind 0x04, of e2ebackup "
        "sealed files (docs/FORMAT.md, section Recipient slots)."
    ),
    "keys": "seed (hex, the identity) -> identity text, recipient (hex) and recipient text.",
    "encapsulations": (
        "recipient (hex), m (the ML-KEM-768 message) and ephemeral (the X25519 private key) -> "
        "enc = ct_M || ct_X and kek."
    ),
    "files": (
        "valid sealed files: data_key, container_id, payload_salt, aead, plaintext (hex), the "
        "slots in file order (kind recipient: recipient, m, ephemeral, wrap_salt; kind "
        "password: password and argon2id parameters; kind recovery-key: recovery_key) and "
        "opens: for each identity seed, the result (the plaintext, or an error name)."
    ),
    "invalid": (
        "a sealed file (hex) and an identity seed; error is the e2ebackup exception a reader "
        "MUST raise (NoMatchingKeySlot or CorruptKeySlot)."
    ),
}


def rand(label: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"e2ebackup/recipient_v1/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def seed(name: str) -> bytes:
    return rand(f"identity/{name}", 32)


def recipient_slot(file: str, i: int, public: bytes, label: str = "") -> rr.RecipientSlot:
    return rr.RecipientSlot(
        public,
        rand(f"{file}/{i}/m", 32),
        rand(f"{file}/{i}/ephemeral", 32),
        rand(f"{file}/{i}/wrap", 24),
        CREATED + i,
        label,
    )


SlotSpec = rr.RecipientSlot | sr.PasswordSlot | sr.RecoveryKeySlot


def describe(spec: SlotSpec) -> dict[str, Any]:
    if isinstance(spec, rr.RecipientSlot):
        return {
            "kind": "recipient",
            "created": spec.created,
            "label": spec.label,
            "recipient": rr.recipient_text(spec.public_key),
            "m": spec.m.hex(),
            "ephemeral": spec.ephemeral.hex(),
            "wrap_salt": spec.wrap_salt.hex(),
        }
    if isinstance(spec, sr.PasswordSlot):
        assert isinstance(spec.kdf, sr.Argon2id)
        assert isinstance(spec.password, str)
        return {
            "kind": "password",
            "created": spec.created,
            "password": spec.password,
            "argon2id": [spec.kdf.memory_kib, spec.kdf.iterations, spec.kdf.parallelism],
            "salt": spec.salt.hex(),
            "wrap_salt": spec.wrap_salt.hex(),
        }
    return {
        "kind": "recovery-key",
        "created": spec.created,
        "recovery_key": spec.recovery_key.hex(),
        "wrap_salt": spec.wrap_salt.hex(),
    }


def encode(spec: SlotSpec, container_id: bytes, data_key: bytes) -> bytes:
    if isinstance(spec, rr.RecipientSlot):
        return rr.make_slot(spec, container_id, data_key)
    return sr.make_slot(spec, container_id, data_key)


def seal(
    name: str, slots: list[SlotSpec], plaintext: bytes, aead: str
) -> tuple[dict[str, Any], bytes]:
    data_key, cid = rand(f"{name}/dk", 32), rand(f"{name}/cid", 16)
    payload_salt = rand(f"{name}/payload", 24)
    fixed = sr.fixed_header(aead, cid)
    encoded = [encode(s, cid, data_key) for s in slots]
    payload = sr.encrypt_payload(data_key, fixed, aead, payload_salt, plaintext)
    blob = sr.assemble(fixed, encoded, payload)
    vector = {
        "name": name,
        "data_key": data_key.hex(),
        "container_id": cid.hex(),
        "payload_salt": payload_salt.hex(),
        "aead": aead,
        "plaintext": plaintext.hex(),
        "slots": [describe(s) for s in slots],
        "file": blob.hex(),
    }
    return vector, blob


def opens(blob: bytes, seeds: list[bytes]) -> list[dict[str, str]]:
    out = []
    for s in seeds:
        try:
            result = {"plaintext": rr.unseal(blob, s).hex()}
        except sr.KeySlotError as e:
            result = {"error": type(e).__name__}
        out.append({"identity": s.hex(), **result})
    return out


def edit_slot(blob: bytes, index: int, edit: Callable[[bytearray], None], recheck: bool) -> bytes:
    """The file with slot ``index``'s body edited (its check recomputed if ``recheck``, else
    kept), the slot area's lengths fixed up, the payload unchanged."""
    f = sr.parse(blob)
    encoded = []
    for i, slot in enumerate(f.slots):
        if i != index:
            encoded.append(struct.pack(">BH", slot.kind, len(slot.body)) + slot.body + slot.check)
            continue
        body = bytearray(slot.body)
        edit(body)
        if recheck:
            encoded.append(sr.encode_slot(slot.kind, bytes(body)))
        else:
            encoded.append(struct.pack(">BH", slot.kind, len(body)) + bytes(body) + slot.check)
    return sr.assemble(f.fixed, encoded, f.payload)


def flip(at: int) -> Callable[[bytearray], None]:
    def edit(body: bytearray) -> None:
        body[at] ^= 0x01

    return edit


def build() -> dict[str, Any]:
    alice, bob, carol = seed("alice"), seed("bob"), seed("carol")
    keys = [bytes(32), b"\xff" * 32, alice, bob, carol]
    key_vectors = []
    for s in keys:
        public = rr.identity_keys(s).public
        key_vectors.append(
            {
                "seed": s.hex(),
                "identity": rr.identity_text(s),
                "recipient": public.hex(),
                "recipient_text": rr.recipient_text(public),
            }
        )
    alice_pk, bob_pk = rr.identity_keys(alice).public, rr.identity_keys(bob).public
    encapsulations = []
    for i, pk in enumerate([alice_pk, bob_pk]):
        m, eph = rand(f"encaps/{i}/m", 32), rand(f"encaps/{i}/ephemeral", 32)
        enc, kek = rr.encapsulate(pk, m, eph)
        encapsulations.append(
            {
                "recipient": pk.hex(),
                "m": m.hex(),
                "ephemeral": eph.hex(),
                "enc": enc.hex(),
                "kek": kek.hex(),
            }
        )

    files, blobs = [], {}
    specs: list[tuple[str, list[SlotSpec], bytes, str]] = [
        (
            "one-recipient",
            [recipient_slot("one-recipient", 0, alice_pk)],
            b"hello, alice\n",
            c2sp.AES_256_GCM,
        ),
        (
            "two-recipients-and-password",
            [
                recipient_slot("two-recipients-and-password", 0, alice_pk, "laptop"),
                sr.PasswordSlot(
                    "correct horse",
                    CHEAP_ARGON2,
                    rand("mix/salt", 16),
                    rand("mix/wrap", 24),
                    CREATED + 1,
                ),
                recipient_slot("two-recipients-and-password", 2, bob_pk, "ünïcode"),
            ],
            rand("mix/plaintext", 1000),
            c2sp.AES_256_GCM,
        ),
        (
            "recipient-and-recovery-key-chacha",
            [
                sr.RecoveryKeySlot(rand("rk/key", 32), rand("rk/wrap", 24), CREATED),
                recipient_slot("recipient-and-recovery-key-chacha", 1, bob_pk),
            ],
            b"",
            c2sp.CHACHA20_POLY1305,
        ),
    ]
    for name, slots, plaintext, aead in specs:
        vector, blob = seal(name, slots, plaintext, aead)
        vector["opens"] = opens(blob, [alice, bob, carol])
        files.append(vector)
        blobs[name] = blob

    one = blobs["one-recipient"]
    label_len = 0
    enc_at = 9 + label_len
    wrapped_at = enc_at + rr.ENC_SIZE
    invalid_specs: list[tuple[str, bytes, bytes]] = [
        ("wrong identity", one, bob),
        (
            "ML-KEM ciphertext edited, check recomputed",
            edit_slot(one, 0, flip(enc_at), True),
            alice,
        ),
        (
            "X25519 share edited, check recomputed",
            edit_slot(one, 0, flip(enc_at + rr.ENC_SIZE - 1), True),
            alice,
        ),
        ("created edited, check recomputed", edit_slot(one, 0, flip(7), True), alice),
        (
            "commitment edited, check recomputed",
            edit_slot(one, 0, flip(wrapped_at + c2sp.SALT_SIZE), True),
            alice,
        ),
        (
            "wrapped key's tag edited, check recomputed",
            edit_slot(one, 0, flip(wrapped_at + sr.WRAPPED_SIZE - 1), True),
            alice,
        ),
        ("enc edited, check kept", edit_slot(one, 0, flip(enc_at + 5), False), alice),
        (
            "body one byte short, check recomputed",
            edit_slot(one, 0, lambda b: b.__delitem__(-1), True),
            alice,
        ),
        (
            "body one byte long, check recomputed",
            edit_slot(one, 0, lambda b: b.append(0), True),
            alice,
        ),
        (
            "X25519 share is zero (low order), check recomputed",
            edit_slot(one, 0, zero_share(enc_at), True),
            alice,
        ),
        ("label not UTF-8, check recomputed", edit_slot(one, 0, bad_label, True), alice),
        (
            "no recipient slot",
            seal(
                "password-only",
                [
                    sr.PasswordSlot(
                        "pw", CHEAP_ARGON2, rand("po/salt", 16), rand("po/wrap", 24), CREATED
                    )
                ],
                b"x",
                c2sp.AES_256_GCM,
            )[1],
            alice,
        ),
    ]
    invalid = []
    for name, blob, who in invalid_specs:
        try:
            rr.unseal(blob, who)
        except sr.KeySlotError as e:
            error = type(e).__name__
        else:
            raise AssertionError(f"invalid vector {name!r} opened")
        invalid.append({"name": name, "identity": who.hex(), "file": blob.hex(), "error": error})
    return {
        "format": FORMAT,
        "keys": key_vectors,
        "encapsulations": encapsulations,
        "files": files,
        "invalid": invalid,
    }


def zero_share(enc_at: int) -> Callable[[bytearray], None]:
    def edit(body: bytearray) -> None:
        start = enc_at + rr.ENC_SIZE - 32
        body[start : start + 32] = bytes(32)

    return edit


def bad_label(body: bytearray) -> None:
    # A one-byte label 0xff: the label length goes from 0 to 1 and the byte is inserted.
    body[8] = 1
    body[9:9] = b"\xff"


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run tools/make_recipient_vectors.py")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
