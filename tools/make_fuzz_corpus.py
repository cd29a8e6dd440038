"""Generate the seed corpus of the fuzz targets: fuzz/corpus/<target>/seed-*.

    python tools/make_fuzz_corpus.py            # rewrite the seeds (other files are kept)
    python tools/make_fuzz_corpus.py --check    # exit 1 if a seed is missing or differs

Each seed is laid out as its target reads its input (fuzz/src/*.rs: a few choice bytes, then
the message): vectors from tests/vectors (C2SP messages, key slots, repository blobs, chunker
cases) with their own keys, so the targets start from inputs that open; and structured inputs
for the round-trip modes. Built only from the vectors and the independent references in
tests/ (never e2ebackup itself), so regenerating gives the same bytes. Inputs that once crashed
a target are kept beside the seeds as ``crash-*`` files (docs/FUZZING.md) and never touched here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import blake3  # noqa: E402
import zstandard  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402
from reference import c2sp  # noqa: E402
from reference.sha256_ctr import sha256_ctr  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
CORPUS = ROOT / "fuzz" / "corpus"
# Keep the corpus small: seeds above this size are left out.
MAX_SEED = 20_000

# The fixed keys of the targets (fuzz/src/blob.rs, whatsapp.rs, opaque.rs).
BLOB_ID_KEY, BLOB_ENC_KEY, BLOB_REPO_ID = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 16
WHATSAPP_ROOT = bytes([0x42]) * 32
RISTRETTO_BASEPOINT = bytes.fromhex(
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"
)
AES = "AEAD_AES_256_GCM"

Seeds = Iterator[tuple[str, bytes]]


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def load(name: str) -> dict[str, object]:
    value: dict[str, object] = json.loads((VECTORS / name).read_text())
    return value


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


# ---- C2SP chunked encryption --------------------------------------------------------------------


def c2sp_vectors() -> Iterator[tuple[str, bytes, bytes, int, bytes]]:
    """(id, key, context, algorithm bit, ciphertext) of the vectors given in full."""
    doc = load("c2sp_chunked_v1.json")
    vectors = doc["vectors"]
    assert isinstance(vectors, list)
    long_ones = 0
    for v in vectors:
        ct = v["ciphertext"]
        if (
            not isinstance(ct, str)
            or len(ct) // 2 > MAX_SEED
            or not v["id"].startswith(("aes-256-gcm/", "chacha20-poly1305/len-1/"))
        ):
            continue
        # A few of each kind is plenty (and only two multi-chunk ones); the fuzzer does the rest.
        if len(ct) // 2 > 2000:
            if long_ones == 2:
                continue
            long_ones += 1
        alg = 0 if v["aead"] == AES else 1
        yield v["id"], bytes.fromhex(v["key"]), bytes.fromhex(v["context"]), alg, bytes.fromhex(ct)


def chunked_decrypt() -> Seeds:
    for vid, key, context, alg, ct in c2sp_vectors():
        yield (
            f"vector-{slug(vid)}",
            bytes([alg | 2]) + key + bytes([len(context)]) + context + (b"\x00" + ct),
        )
    # Round trips: salt, length / 2, tamper (0 none, 1 flip, 2 cut, 3 append), position, text.
    for length, tamper in [(0, 0), (1, 1), (8192, 0), (8192, 2), (8193, 3), (20000, 1)]:
        yield (
            f"roundtrip-{length}-{tamper}",
            b"\x01\x03ctx\x80"
            + bytes(24)
            + u16(length)
            + (bytes([tamper]) + u32(0x01234567) + b"the quick brown fox"),
        )


def chunked_stream() -> Seeds:
    for vid, key, context, alg, ct in c2sp_vectors():
        if "invalid" in vid and "len-16385" not in vid:
            continue
        splits = bytes([3, 1, 0, 200]) + bytes([2])  # 3 sizes, scale 1 + 2 * 64
        yield (
            f"vector-{slug(vid)}",
            bytes([alg | 2])
            + key
            + bytes([len(context)])
            + context
            + (splits + b"\x01\x02" + b"\x00" + ct),
        )
    for length, tamper in [(8192, 0), (16384, 0), (16384, 1)]:
        yield (
            f"roundtrip-{length}-{tamper}",
            b"\x00\x00\x02\x07\xff\x01\x00\x03\x80"
            + bytes(24)
            + u16(length)
            + bytes([tamper])
            + u32(0x00ABCDEF)
            + b"lorem ipsum",
        )


# ---- key slots ----------------------------------------------------------------------------------

_SLOT_CONTEXT = b"e2ebackup/v1/key-slot\x00"
_WRAPPED = 56 + 32 + 16


def keyslot_unwrap() -> Seeds:
    doc = load("sealed_v1.json")
    vectors = doc["vectors"]
    assert isinstance(vectors, list)
    for v in vectors:
        if not v["valid"]:
            continue
        container_id = bytes.fromhex(v["inputs"]["container_id"])
        for i, slot in enumerate(v["inputs"]["slots"][:2]):
            if "kek" not in slot or "slot" not in slot:
                continue
            raw = bytes.fromhex(slot["slot"])
            kind, length = struct.unpack(">BH", raw[:3])
            body = raw[3 : 3 + length]
            public, wrapped = body[:-_WRAPPED], body[-_WRAPPED:]
            context = _SLOT_CONTEXT + container_id + bytes([kind]) + public
            if len(context) > 255:
                continue
            yield (
                f"vector-{slug(v['id'])}-{i}",
                b"\x00" + bytes.fromhex(slot["kek"]) + bytes([len(context)]) + context + wrapped,
            )
    for mode, flip in [(1, 0), (1, 500), (1, 1000), (3, 7)]:
        yield (
            f"roundtrip-{mode}-{flip}",
            bytes([mode])
            + bytes(range(32))
            + b"\x04slot"
            + (b"\x20" if mode & 2 else b"")
            + u16(flip)
            + bytes(range(100, 132)),
        )


# ---- blobs --------------------------------------------------------------------------------------

_BLOB_CONTEXT = b"e2ebackup/v1/repo/blob\x00"


def _seal_blob(body: bytes, kind: int, blob_id: bytes, salt: bytes) -> bytes:
    context = _BLOB_CONTEXT + BLOB_REPO_ID + bytes([kind]) + blob_id
    return c2sp.encrypt_with_salt(BLOB_ENC_KEY, salt, context, AES, body)


def _repo_blobs() -> Iterator[tuple[str, int, bytes, bytes, bytes, bytes, bytes]]:
    """(name, kind, id key, blob key, repo id, id, sealed) of blobs in the repo_v1 packs."""
    manifest = load("repo_v1/manifest.json")
    keys, inputs, objects = manifest["keys"], manifest["inputs"], manifest["objects"]
    assert isinstance(keys, dict)
    assert isinstance(inputs, dict)
    assert isinstance(objects, dict)
    repo_id = bytes.fromhex(inputs["repo_id"])
    pack_key = bytes.fromhex(keys["pack-header"])
    for name in sorted(objects):
        if not name.startswith("data/"):
            continue
        pack_id = name.rsplit("/", 1)[-1]
        pack = (VECTORS / "repo_v1" / "repo" / name).read_bytes()
        (header_len,) = struct.unpack(">I", pack[-4:])
        context = b"e2ebackup/v1/repo/pack-header\x00" + repo_id + pack_id.encode()
        header = c2sp.decrypt(pack_key, context, AES, pack[-4 - header_len : -4])
        offset = 0
        for i in range(0, len(header), 37):
            kind, blob_id, length = struct.unpack(">B32sI", header[i : i + 37])
            sealed = pack[offset : offset + length]
            offset += length
            yield (
                f"{pack_id[:8]}-{i // 37}",
                kind,
                bytes.fromhex(keys["blob-id"]),
                bytes.fromhex(keys["blob"]),
                repo_id,
                blob_id,
                sealed,
            )


def blob_open() -> Seeds:
    taken = 0
    for name, kind, id_key, blob_key, repo_id, blob_id, sealed in _repo_blobs():
        if len(sealed) > 4096 or taken >= 8:
            continue
        taken += 1
        yield (
            f"repo-v1-{name}",
            bytes([0x10, kind]) + id_key + blob_key + repo_id + (blob_id + sealed),
        )
    text = b"hello hello hello, a blob that compresses well. " * 20
    random = sha256_ctr("e2ebackup/fuzz/blob/random", 700)
    for label, data, compress in [("text-zstd", text, True), ("random-stored", random, False)]:
        blob_id = blake3.blake3(data, key=BLOB_ID_KEY).digest()
        frame = zstandard.ZstdCompressor(level=3).compress(data) if compress else data
        body = bytes([1 if compress else 0]) + u32(len(data)) + frame
        salt = sha256_ctr(f"e2ebackup/fuzz/blob/salt/{label}", 24)
        yield f"fixed-{label}", b"\x00\x00" + blob_id + _seal_blob(body, 0, blob_id, salt)
        # The same plaintext for the AEAD-wrapped mode (1), which seals it itself.
        yield f"plain-{label}", b"\x01\x00" + blob_id + salt + body
    # Declared lengths: honest, a lie, a bomb (64 MiB declared for a tiny frame).
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1 << 20))
    yield "plain-bomb", b"\x01\x01" + bytes(32) + bytes(24) + b"\x01" + u32(64 << 20) + bomb
    yield "zstd-honest", b"\x02\x00" + u32(0) + bytes(24) + u16(3000) + b"abcabcabd"
    yield "zstd-lying", b"\x02\x00" + u32(2999) + bytes(24) + u16(3000) + b"abcabcabd"
    yield "seal-roundtrip", b"\x03\x01" + u16(5000) + u32(12345) + b"some file content"


# ---- chunker ------------------------------------------------------------------------------------


def _chunker_data(spec: dict[str, object]) -> bytes:
    length = spec["length"]
    assert isinstance(length, int)
    if spec["generator"] == "sha256-ctr":
        seed = spec["seed"]
        assert isinstance(seed, str)
        return sha256_ctr(seed, length)
    if spec["generator"] == "zeros":
        return bytes(length)
    pattern = spec["pattern"]
    assert isinstance(pattern, str)
    unit = bytes.fromhex(pattern)
    return (unit * (length // max(1, len(unit)) + 1))[:length]


def cdc_chunker() -> Seeds:
    doc = load("chunker_v1.json")
    cases = doc["cases"]
    assert isinstance(cases, list)
    for case in cases:
        data = _chunker_data(case["data"])[:4000]
        if case["max"] > 1 << 16:
            continue
        raw = u32(case["min"]) + u32(case["avg"]) + u32(case["max"])
        head = b"\x03" + raw + b"\x00" + u16(0) + u16(0) + bytes.fromhex(case["gear_key"])
        yield f"vector-{slug(case['id'])}", head + b"\x02\x07\xfa\x05" + data
    # Small derived sizes on XOF-expanded data, and invalid raw sizes.
    yield "expanded", b"\x04" + bytes(12) + b"\x01\x00\x10\x00\x40\x00" + b"seed of the data"
    yield "bad-sizes", b"\x01" + u32(100) + u32(100) + u32(50) + b"\x02" + bytes(4) + b"\x00"


# ---- WhatsApp -----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _prefix(iv: bytes, info: bool, crypt14: bool = False) -> bytes:
    message = b"\x08\x01"  # key_type HSM_CONTROLLED
    if crypt14:
        message = b"\x08\x00" + _field(2, _field(1, b"\x00\x01") + _field(5, iv))
    else:
        message += _field(3, _field(1, iv))
    if info:
        features = b"".join(_varint(n << 3) + b"\x01" for n in range(5, 40) if n != 38)
        message += _field(4, _field(1, b"2.23.18.12") + _field(3, b"00") + b"\x20\x00" + features)
    return message


def _stored_zlib(data: bytes) -> bytes:
    """A zlib stream of stored blocks, written by hand so every zlib gives the same bytes."""
    out = bytearray(b"\x78\x01")
    blocks = [data[i : i + 65535] for i in range(0, len(data), 65535)] or [b""]
    for i, block in enumerate(blocks):
        out.append(1 if i == len(blocks) - 1 else 0)
        out += struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    return bytes(out + struct.pack(">I", zlib.adler32(data)))


def _crypt15(header: bytes, iv: bytes, payload: bytes, multi_file: bool) -> bytes:
    key = HKDF(hashes.SHA256(), 32, None, b"backup encryption").derive(WHATSAPP_ROOT)
    body = header + AESGCM(key).encrypt(iv, payload, None)
    return body if multi_file else body + hashlib.md5(body).digest()  # noqa: S324 (the format's)


def _whatsapp_files() -> Iterator[tuple[str, bytes]]:
    iv = sha256_ctr("e2ebackup/fuzz/whatsapp/iv", 16)
    database = b"SQLite format 3\x00" + sha256_ctr("e2ebackup/fuzz/whatsapp/db", 600) * 2
    msg = _prefix(iv, info=True)
    varint_header = _varint(len(msg)) + msg
    flag_header = bytes([len(msg) & 0xFF, 1]) + msg  # wa-crypt-tools' framing
    short = _prefix(iv, info=False)
    short_header = _varint(len(short)) + short
    zip_bytes = b"PK\x03\x04" + sha256_ctr("e2ebackup/fuzz/whatsapp/zip", 300)
    yield "single-stored", _crypt15(varint_header, iv, _stored_zlib(database), False)
    yield "single-flag-byte", _crypt15(flag_header, iv, _stored_zlib(database[:100]), False)
    yield "single-no-info", _crypt15(short_header, iv, _stored_zlib(b""), False)
    yield "multi-zip", _crypt15(short_header, iv, zip_bytes, True)
    crypt14 = _prefix(iv, info=False, crypt14=True)
    yield "crypt14-prefix", _varint(len(crypt14)) + crypt14 + bytes(64)


def crypt15_prefix() -> Seeds:
    for name, file in _whatsapp_files():
        yield name, b"\x05" + file[:400]
    iv = bytes(range(16))
    unknown = (
        _prefix(iv, info=False) + b"\x48\x05" + _field(17, b"future") + b"\x3d\x01\x02\x03\x04"
    )
    yield "unknown-fields", b"\x40" + _varint(len(unknown)) + unknown
    yield "sqlite", b"\x10SQLite format 3\x00"


def crypt15_decrypt() -> Seeds:
    for name, file in _whatsapp_files():
        yield f"file-{name}", b"\x00" + file
    # Round trips through encrypt: mode bits 1 (round trip), 2 (multi-file), 4 (info),
    # 8 (zlib header on the payload), 0x10 (no inflating); iv; level; flip; length; data.
    for mode in [0x01, 0x05, 0x03, 0x0B, 0x11]:
        yield (
            f"roundtrip-{mode:02x}",
            bytes([mode])
            + bytes(range(16))
            + b"\x06"
            + u32(0x00FEDCBA)
            + u16(3000)
            + b"a message, a message, another message",
        )


# ---- OPAQUE -------------------------------------------------------------------------------------


def opaque_messages() -> Seeds:
    """Messages of the right sizes made of valid Ristretto255 points (the base point), so that
    deserializing gets past point decoding; and honest runs."""
    setup = bytes([7]) * 64 + b"\x01" + bytes(31) + RISTRETTO_BASEPOINT
    points = RISTRETTO_BASEPOINT * 12
    yield "server-setup", b"\x00\x00" + setup
    yield "registration-request", b"\x01\x04user" + points[:32]
    yield "credential-request", b"\x02\x04user\x00\x03ctx" + points[:96]
    yield "credential-request-file", b"\x0a\x04user\xc0" + points[:192] + b"\x03ctx" + points[:96]
    yield "login-finish", b"\x03\x04user\x00\x03ctx" + bytes(64)
    yield "registration-upload", b"\x04\x04user" + points[:192]
    yield "registration-response", b"\x05\x04user\x02pw" + points[:64]
    yield "credential-response", b"\x06\x04user\x02pw" + points[:320]
    for which in range(4):
        yield f"honest-{which}", b"\x07\x04user\x08password\x05guess" + bytes([which]) + u16(77)


# ---- recipient slots ---------------------------------------------------------------------------


def recipient_decapsulate() -> Seeds:
    doc = load("recipient_v1.json")
    keys = doc["keys"]
    assert isinstance(keys, list)
    seed_of = {k["recipient"]: bytes.fromhex(k["seed"]) for k in keys}
    encapsulations = doc["encapsulations"]
    assert isinstance(encapsulations, list)
    for i, e in enumerate(encapsulations):
        enc = bytes.fromhex(e["enc"])
        # The identity the vector encapsulated to, when the vector names it; else the first.
        seed = seed_of.get(e["recipient"], bytes.fromhex(keys[0]["seed"]))
        yield f"vector-enc-{i}", b"\x00" + seed + enc
        yield f"vector-enc-{i}-cut", b"\x00" + seed + enc[:-1]
        m, eph = bytes.fromhex(e["m"]), bytes.fromhex(e["ephemeral"])
        yield f"vector-recipient-{i}", b"\x02" + seed + m + eph + bytes.fromhex(e["recipient"])
    for flip in (0, 4000, 8703, 8959):
        yield f"roundtrip-{flip}", b"\x01" + bytes(range(32)) + bytes(range(32, 96)) + u16(flip)
    yield "recipient-too-short", b"\x02" + bytes(96) + bytes(100)


TARGETS = {
    "chunked_decrypt": chunked_decrypt,
    "chunked_stream": chunked_stream,
    "keyslot_unwrap": keyslot_unwrap,
    "blob_open": blob_open,
    "cdc_chunker": cdc_chunker,
    "crypt15_prefix": crypt15_prefix,
    "crypt15_decrypt": crypt15_decrypt,
    "opaque_messages": opaque_messages,
    "recipient_decapsulate": recipient_decapsulate,
}


def seeds() -> dict[Path, bytes]:
    out: dict[Path, bytes] = {}
    for target, make in TARGETS.items():
        for name, data in make():
            path = CORPUS / target / f"seed-{name}"
            assert path not in out, f"duplicate seed {path}"
            assert len(data) <= MAX_SEED + 200, f"{path} is {len(data)} bytes"
            out[path] = data
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a seed is out of date")
    args = parser.parse_args()
    wanted = seeds()
    stale = [p for p in sorted(CORPUS.glob("*/seed-*")) if p not in wanted]
    if args.check:
        bad = [p for p, d in wanted.items() if not p.exists() or p.read_bytes() != d] + stale
        for p in bad:
            print(f"out of date: {p.relative_to(ROOT)}", file=sys.stderr)
        return 1 if bad else 0
    for p in stale:
        p.unlink()
    for path, data in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    total = sum(len(d) for d in wanted.values())
    print(f"{len(wanted)} seeds, {total} bytes, in {CORPUS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
