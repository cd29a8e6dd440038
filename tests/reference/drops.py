"""Reference implementation of e2ebackup drops (format version 4, "Writers that cannot read").

Written from docs/FORMAT.md (section "Writers that cannot read (version 4)" and the sections it
cites) alone, deliberately small. It shares no code with e2ebackup: HKDF and HMAC come from pyca
``cryptography`` and ``hmac``, chunked encryption from tests/reference/c2sp.py, the hybrid KEM,
recipient slots and Bech32 from tests/reference/recipient.py, slot framing from
tests/reference/sealed.py, and blobs and packs from tests/reference/repo.py (called with the
drop's keys). Every random input is a parameter, so a drop is a function of its arguments.

    seed_W = derive(DK, "e2ebackup/v4/repo/writer-identity")        W = its recipient
    WA     = HKDF-SHA-256(DK, salt = "", info = "e2ebackup/v4/repo/writer-auth" || writer_id)
    AK, IK_w, GK_w = derive(WA, "e2ebackup/v4/writer/{drop-mac,blob-id,chunker}")
    DMK, DBK, DHK  = derive(SK, "e2ebackup/v4/drop/{metadata,blob,pack-header}")
    token  = repo_id (16) || writer_id (16) || WA (32) || W (1216), Bech32 "E2EBACKUP-WRITER-1..."
    drop   = "E2EBDROP" || 0x01 || repo_id || slots_len (u32, at most 65536) || slots
             || body_len (u32) || body || mac (32)
    slots  = count || recipient slots wrapping SK, with
             container_id = SHA-256("e2ebackup/v4/repo/drop-slots" || 0x00 || repo_id || N)[0:16]
    body   = chunked-encrypt(DMK, AES-256-GCM, "e2ebackup/v4/repo/drop" || 0x00 || repo_id || N,
                             JSON)
    mac    = HMAC-SHA-256(AK, "e2ebackup/v4/repo/drop-mac" || 0x00 || N || every byte before mac)

Choices where the spec leaves room (this reference's reading, listed so that a disagreement
can be traced to it):

- ``N`` (body context and mac) is the full object name ``"drops/<64 hex>"`` as ASCII, as for
  metadata objects; ``writer_id`` enters ``WA``'s info as its 16 raw bytes.
- ``writer`` in the JSON is 32 lowercase hex digits; ``prev`` is ``["drops/<64 hex>", "<64
  hex>"]`` with lowercase hex.
- The slot area is framed as a ``keys/`` object's (count 1..32, exactly that many slots, no
  trailing bytes); one that does not frame is rule 1 (damaged), like a length past the end, and
  so is a ``slots_len`` over 65536 (checked before the area is read). A slot of the recipient
  kind whose ``check`` fails or whose body does not parse is a damaged slot (section Opening)
  and only counts at rule 2 (no slot opens); it does not make the area fail to frame, so an
  area of any length up to the cap can frame (a real recipient slot is 1252 bytes plus its
  label, so 32 of them take at most 48225).
- Rule 4 on ``packs``: each entry is ``{"id": 64 hex, "size": integer >= 0, "blobs": [[kind 0 or
  1, id 64 hex, offset >= 0, length >= 0], ...]}`` with ``offset + length <= size``; an entry
  with ``condemned`` (or any other key) is refused; a pack named twice in one drop is refused.
  The rules checked against the repository (a snapshot id that is another live snapshot's, a
  pack named by an index or an earlier drop) need the whole repository and are not checked here.
- Rule 4 on the snapshot: the field rules of section Trees and snapshots (``id``, ``time``,
  ``hostname``, ``paths`` and ``tree`` present; ``id``, ``tree`` and a non-null ``parent`` 64
  lowercase hex; ``time`` and ``started`` numbers 0..2^34; ``paths`` and ``tags`` lists of
  strings; ``hostname`` and ``username`` strings; ``stats`` an object of numbers 0..2^63, all
  bounds inclusive).
- Rule 4 on ``chunker``: an object with exactly the keys ``min``, ``avg`` and ``max``, each a
  JSON integer (not a float, not a boolean), 64 <= min < avg < max <= 64 MiB, avg a power of two.
- ``time`` (the drop's and the snapshot's) is a JSON number, not a boolean, 0..2^34 inclusive;
  ``seq`` a JSON integer (not a float, not a boolean). JSON's non-standard constants (NaN,
  Infinity) make the body "not JSON" (rule 3). Hex is lowercase everywhere and matched whole
  (no trailing newline).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reference import c2sp, recipient as rr, repo as rrepo, sealed as sr

MAGIC = b"E2EBDROP"
VERSION = 1
REPO_ID_SIZE = 16
WRITER_ID_SIZE = 16
FIXED_SIZE = len(MAGIC) + 1 + REPO_ID_SIZE  # 25
MAC_SIZE = 32
TOKEN_SIZE = REPO_ID_SIZE + WRITER_ID_SIZE + 32 + rr.PUBLIC_SIZE  # 1280
WRITER_HRP = "e2ebackup-writer-"
MAX_SEQ = 2**53
MAX_TIME = 2**34
MAX_STAT = 2**63
MAX_SLOTS_LEN = 65536
MIN_CHUNK, MAX_CHUNK = 64, 64 * 1024 * 1024
AES = c2sp.AES_256_GCM

LABEL_WRITER_IDENTITY = b"e2ebackup/v4/repo/writer-identity"
LABEL_WRITER_AUTH = b"e2ebackup/v4/repo/writer-auth"
LABEL_DROP_MAC_KEY = b"e2ebackup/v4/writer/drop-mac"
LABEL_BLOB_ID = b"e2ebackup/v4/writer/blob-id"
LABEL_CHUNKER = b"e2ebackup/v4/writer/chunker"
LABEL_DROP_METADATA = b"e2ebackup/v4/drop/metadata"
LABEL_DROP_BLOB = b"e2ebackup/v4/drop/blob"
LABEL_DROP_PACK_HEADER = b"e2ebackup/v4/drop/pack-header"
BODY_CONTEXT = b"e2ebackup/v4/repo/drop\x00"
MAC_PREFIX = b"e2ebackup/v4/repo/drop-mac\x00"
SLOTS_PREFIX = b"e2ebackup/v4/repo/drop-slots\x00"

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
DROP_NAME = re.compile(r"drops/[0-9a-f]{64}")


class DropDamaged(Exception):
    """A drop a reader MUST treat as damaged; ``rule`` is the reader step (1 to 4) it fails."""

    def __init__(self, rule: int, reason: str) -> None:
        super().__init__(f"rule {rule}: {reason}")
        self.rule = rule
        self.reason = reason


class BadToken(ValueError):
    """Text that is not a writer token."""


# ---- keys -------------------------------------------------------------------------------------


def hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=b"", info=info).derive(ikm)


def writer_seed(data_key: bytes) -> bytes:
    """seed_W: the identity whose recipient W every token carries."""
    return sr.derive(data_key, LABEL_WRITER_IDENTITY)


def writer_recipient(data_key: bytes) -> bytes:
    """W, the recipient (ek_M || pk_X, 1216 bytes) of seed_W."""
    return rr.identity_keys(writer_seed(data_key)).public


def writer_auth(data_key: bytes, writer_id: bytes) -> bytes:
    """WA = HKDF-SHA-256(IKM = DK, salt = "", info = label || writer_id, L = 32)."""
    assert len(writer_id) == WRITER_ID_SIZE
    return hkdf(data_key, LABEL_WRITER_AUTH + writer_id)


@dataclass(frozen=True)
class WriterKeys:
    drop_mac: bytes  # AK
    blob_id: bytes  # IK_w
    chunker: bytes  # GK_w

    @classmethod
    def derive(cls, wa: bytes) -> WriterKeys:
        return cls(
            sr.derive(wa, LABEL_DROP_MAC_KEY),
            sr.derive(wa, LABEL_BLOB_ID),
            sr.derive(wa, LABEL_CHUNKER),
        )


@dataclass(frozen=True)
class DropKeys:
    metadata: bytes  # DMK
    blob: bytes  # DBK
    pack_header: bytes  # DHK

    @classmethod
    def derive(cls, sk: bytes) -> DropKeys:
        return cls(
            sr.derive(sk, LABEL_DROP_METADATA),
            sr.derive(sk, LABEL_DROP_BLOB),
            sr.derive(sk, LABEL_DROP_PACK_HEADER),
        )


def blob_keys(sk: bytes, wa: bytes) -> rrepo.Keys:
    """tests/reference/repo.py's Keys for a drop's blobs and packs: BK = DBK, IK = IK_w,
    GK = GK_w, HK = DHK (MK = DMK; the config key has no use in a drop)."""
    d, w = DropKeys.derive(sk), WriterKeys.derive(wa)
    return rrepo.Keys(sk, b"", d.metadata, d.blob, w.blob_id, w.chunker, d.pack_header)


# ---- writer tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    repo_id: bytes
    writer_id: bytes
    wa: bytes
    recipient: bytes

    @classmethod
    def issue(cls, data_key: bytes, repo_id: bytes, writer_id: bytes) -> Token:
        assert len(repo_id) == REPO_ID_SIZE
        return cls(repo_id, writer_id, writer_auth(data_key, writer_id), writer_recipient(data_key))

    def encode(self) -> bytes:
        return self.repo_id + self.writer_id + self.wa + self.recipient

    def text(self) -> str:
        return rr.to_bech32(WRITER_HRP, self.encode()).upper()

    @property
    def keys(self) -> WriterKeys:
        return WriterKeys.derive(self.wa)

    @classmethod
    def decode(cls, data: bytes) -> Token:
        if len(data) != TOKEN_SIZE:
            raise BadToken("a writer token is 1280 bytes")
        return cls(data[:16], data[16:32], data[32:64], data[64:])

    @classmethod
    def parse(cls, text: str) -> Token:
        """Bech32 (BIP 173 checksum, no length limit); mixed case, another HRP, a wrong checksum,
        non-zero padding or a wrong length are refused."""
        text = text.strip()
        if text != text.upper() and text != text.lower():
            raise BadToken("mixed case")
        try:
            hrp, data = rr.from_bech32(text)
        except ValueError as e:
            raise BadToken(str(e)) from None
        if hrp != WRITER_HRP:
            raise BadToken(f"HRP {hrp!r} is not {WRITER_HRP!r}")
        return cls.decode(data)


# ---- slot areas ---------------------------------------------------------------------------------


def slot_area(slots: list[bytes]) -> bytes:
    """count (1) || slot_1 || ... (no checks: tests build bad areas with it)."""
    return bytes([len(slots)]) + b"".join(slots)


def parse_slot_area(area: bytes) -> list[sr.Slot] | None:
    """The framed slots of a slot area, or None if it does not frame exactly."""
    if not area or not sr.MIN_SLOTS <= area[0] <= sr.MAX_SLOTS:
        return None
    slots, pos = [], 1
    for _ in range(area[0]):
        if pos + 3 > len(area):
            return None
        kind, body_len = struct.unpack(">BH", area[pos : pos + 3])
        end = pos + 3 + body_len + sr.CHECK_SIZE
        if end > len(area):
            return None
        slots.append(
            sr.Slot(kind, area[pos + 3 : end - sr.CHECK_SIZE], area[end - sr.CHECK_SIZE : end])
        )
        pos = end
    return slots if pos == len(area) else None


@dataclass(frozen=True)
class SlotRandomness:
    """The random inputs of one recipient slot wrapping SK."""

    m: bytes
    ephemeral: bytes
    wrap_salt: bytes
    created: int
    label: str = ""


def slots_container_id(repo_id: bytes, name: str) -> bytes:
    """container_id of the drop ``name``'s slots (never ``repo_id``, the key slots')."""
    return hashlib.sha256(SLOTS_PREFIX + repo_id + name.encode("ascii")).digest()[:16]


def recipient_slot(
    recipient: bytes, rnd: SlotRandomness, sk: bytes, *, repo_id: bytes, name: str
) -> bytes:
    """A recipient slot wrapping ``sk`` for ``recipient``, bound to the drop ``name``."""
    spec = rr.RecipientSlot(recipient, rnd.m, rnd.ephemeral, rnd.wrap_salt, rnd.created, rnd.label)
    return rr.make_slot(spec, slots_container_id(repo_id, name), sk)


def open_sk(slots: list[sr.Slot], container_id: bytes, seed: bytes) -> bytes | None:
    """Section Opening for recipient slots: SK from the first slot that opens with ``seed``."""
    keys = rr.identity_keys(seed)
    for slot in slots:
        parsed = rr.parse_body(slot.body) if slot.check_ok() else None
        if parsed is None:
            continue  # damaged
        public, enc, wrapped = parsed
        try:
            kek = rr.decapsulate(keys, enc)
        except ValueError:
            continue  # damaged (an all-zero X25519 secret)
        context = sr.slot_context(container_id, rr.KIND_RECIPIENT, public)
        try:
            return c2sp.decrypt(kek, context, AES, wrapped)
        except c2sp.DecryptionError:
            continue  # another identity's slot, or a damaged one
    return None


# ---- writing drops ------------------------------------------------------------------------------


def body_context(repo_id: bytes, name: str) -> bytes:
    return BODY_CONTEXT + repo_id + name.encode("ascii")


def mac(ak: bytes, name: str, before: bytes) -> bytes:
    return hmac.new(ak, MAC_PREFIX + name.encode("ascii") + before, hashlib.sha256).digest()


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def seal_body(sk: bytes, repo_id: bytes, name: str, doc: Any, salt: bytes) -> bytes:
    dmk = DropKeys.derive(sk).metadata
    return c2sp.encrypt_with_salt(dmk, salt, body_context(repo_id, name), AES, dumps(doc))


def assemble(
    name: str,
    *,
    repo_id: bytes,
    area: bytes,
    body: bytes,
    ak: bytes,
    magic: bytes = MAGIC,
    version: int = VERSION,
) -> bytes:
    """The stored drop, its mac computed under ``ak`` over whatever it is given."""
    before = (
        magic
        + bytes([version])
        + repo_id
        + struct.pack(">I", len(area))
        + area
        + struct.pack(">I", len(body))
        + body
    )
    return before + mac(ak, name, before)


def make_drop(
    name: str,
    *,
    token: Token,
    sk: bytes,
    slots: list[SlotRandomness | bytes],
    body_salt: bytes,
    doc: dict[str, Any],
) -> bytes:
    """A drop as ``token``'s holder makes it: recipient slots for the token's W bound to
    ``name`` (or raw encoded slots given as bytes), the body of ``doc`` under DMK, the mac under
    the token's AK."""
    assert DROP_NAME.fullmatch(name)
    encoded = [
        s
        if isinstance(s, bytes)
        else recipient_slot(token.recipient, s, sk, repo_id=token.repo_id, name=name)
        for s in slots
    ]
    body = seal_body(sk, token.repo_id, name, doc, body_salt)
    return assemble(
        name, repo_id=token.repo_id, area=slot_area(encoded), body=body, ak=token.keys.drop_mac
    )


def drop_digest(stored: bytes) -> str:
    return hashlib.sha256(stored).hexdigest()


# ---- blobs and packs of a drop ------------------------------------------------------------------


def seal_blob(
    keys: rrepo.Keys, repo_id: bytes, kind: int, plaintext: bytes, salt: bytes, compress: bool
) -> tuple[bytes, bytes]:
    """(id, sealed): section Blobs with IK = IK_w and BK = DBK."""
    id_ = rrepo.blob_id(keys.blob_id, plaintext)
    context = rrepo.blob_context(repo_id, kind, id_)
    body = rrepo.encode_body(plaintext, compress)
    return id_, c2sp.encrypt_with_salt(keys.blob, salt, context, AES, body)


def make_pack(
    keys: rrepo.Keys,
    repo_id: bytes,
    name: str,
    blobs: list[tuple[int, bytes, bytes]],
    header_salt: bytes,
) -> tuple[bytes, dict[str, Any]]:
    """(pack, its entry in the drop's ``packs``) for sealed blobs (kind, id, sealed)."""
    header = b"".join(struct.pack(">B32sI", k, i, len(s)) for k, i, s in blobs)
    context = rrepo.PACK_HEADER_CONTEXT + repo_id + name.encode("ascii")
    sealed_header = c2sp.encrypt_with_salt(keys.pack_header, header_salt, context, AES, header)
    pack = b"".join(s for _, _, s in blobs) + sealed_header + struct.pack(">I", len(sealed_header))
    entries, offset = [], 0
    for k, i, s in blobs:
        entries.append([k, i.hex(), offset, len(s)])
        offset += len(s)
    return pack, {"id": name, "size": len(pack), "blobs": entries}


def open_pack(keys: rrepo.Keys, repo_id: bytes, name: str, pack: bytes) -> dict[bytes, bytes]:
    """id -> plaintext of every blob of a drop's pack: the header authenticated with DHK and
    checked against the pack size, each blob opened with DBK and its id recomputed with IK_w."""
    out = {}
    for e in rrepo.parse_pack(keys, repo_id, name, pack):
        sealed = pack[e.offset : e.offset + e.length]
        out[e.id] = rrepo.open_blob(keys, repo_id, e.kind, e.id, sealed)
    return out


# ---- reading drops ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    name: str
    digest: str  # SHA-256 hex of the stored bytes
    writer: str  # 32 hex
    seq: int
    prev: tuple[str, str] | None
    time: int | float
    snapshot: dict[str, Any]
    packs: list[dict[str, Any]]
    chunker: tuple[int, int, int]  # min, avg, max
    doc: dict[str, Any]
    keys: rrepo.Keys  # DMK, DBK, IK_w, GK_w, DHK


def _u32(data: bytes, at: int) -> int | None:
    if at + 4 > len(data):
        return None
    return int(struct.unpack(">I", data[at : at + 4])[0])


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_number(x: Any) -> bool:
    return type(x) in (int, float)


def _is_time(x: Any) -> bool:
    return _is_number(x) and 0 <= x <= MAX_TIME


def _is_hex64(x: Any) -> bool:
    return isinstance(x, str) and HEX64.fullmatch(x) is not None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_snapshot(doc: Any) -> str | None:
    """Section Trees and snapshots, for a snapshot object: the rule broken, or None."""
    if not isinstance(doc, dict):
        return "the snapshot is not an object"
    for field in ("id", "time", "hostname", "paths", "tree"):
        if field not in doc:
            return f"the snapshot has no {field!r}"
    if not _is_hex64(doc["id"]):
        return "the snapshot id is not 64 hex"
    if not _is_time(doc["time"]) or ("started" in doc and not _is_time(doc["started"])):
        return "a snapshot time is not a number from 0 to 2^34"
    if not _is_hex64(doc["tree"]):
        return "the snapshot tree is not 64 hex"
    if doc.get("parent") is not None and not _is_hex64(doc["parent"]):
        return "the snapshot parent is neither null nor 64 hex"
    for field in ("paths", "tags"):
        value = doc.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"the snapshot {field!r} is not a list of strings"
    for field in ("hostname", "username"):
        if field in doc and not isinstance(doc[field], str):
            return f"the snapshot {field!r} is not a string"
    stats = doc.get("stats", {})
    if not isinstance(stats, dict) or not all(
        _is_number(v) and 0 <= v <= MAX_STAT for v in stats.values()
    ):
        return "the snapshot stats are not an object of numbers from 0 to 2^63"
    return None


def check_chunker(chunker: Any) -> str | None:
    """``chunker`` within section Chunking's limits: the rule broken, or None."""
    if not isinstance(chunker, dict) or set(chunker) != {"min", "avg", "max"}:
        return "chunker is not an object of exactly min, avg and max"
    lo, avg, hi = chunker["min"], chunker["avg"], chunker["max"]
    if not all(_is_int(v) for v in (lo, avg, hi)):
        return "a chunker size is not an integer"
    if not MIN_CHUNK <= lo < avg < hi <= MAX_CHUNK:
        return "the chunker sizes break 64 <= min < avg < max <= 64 MiB"
    if avg & (avg - 1):
        return "the chunker avg is not a power of two"
    return None


def check_packs(packs: Any) -> str | None:
    """``packs`` as an index object lists them (an entry with ``condemned`` is damage): the rule
    broken, or None."""
    if not isinstance(packs, list):
        return "packs is not a list"
    seen = set()
    for pack in packs:
        if not isinstance(pack, dict) or set(pack) != {"id", "size", "blobs"}:
            return "a pack entry is not {id, size, blobs}"
        if not _is_hex64(pack["id"]):
            return "a pack id is not 64 hex"
        if pack["id"] in seen:
            return "a pack is named twice"
        seen.add(pack["id"])
        size, blobs = pack["size"], pack["blobs"]
        if not _is_int(size) or size < 0 or not isinstance(blobs, list):
            return "a pack size or blob list is malformed"
        for b in blobs:
            if not isinstance(b, list) or len(b) != 4:
                return "a blob entry is not [kind, id, offset, length]"
            kind, id_, offset, length = b
            if kind not in (rrepo.KIND_DATA, rrepo.KIND_TREE) or not _is_int(kind):
                return "a blob kind is not 0 or 1"
            if not _is_hex64(id_):
                return "a blob id is not 64 hex"
            if not (_is_int(offset) and _is_int(length) and offset >= 0 and length >= 0):
                return "a blob offset or length is not a non-negative integer"
            if offset + length > size:
                return "a blob entry runs past the pack's size"
    return None


def open_drop(name: str, stored: bytes, *, repo_id: bytes, data_key: bytes) -> Drop:
    """The four reader steps of section Writers that cannot read; DropDamaged names the rule."""
    # Rule 1: framing, before any key is used (no KDF ever runs for a drop).
    if not DROP_NAME.fullmatch(name):
        raise DropDamaged(1, "the object name is not drops/<64 hex>")
    if len(stored) < FIXED_SIZE or stored[:8] != MAGIC:
        raise DropDamaged(1, "bad magic")
    if stored[8] != VERSION:
        raise DropDamaged(1, f"unknown version {stored[8]}")
    if not hmac.compare_digest(stored[9:FIXED_SIZE], repo_id):
        raise DropDamaged(1, "another repository's repo_id")
    slots_len = _u32(stored, FIXED_SIZE)
    area_at = FIXED_SIZE + 4
    if slots_len is None:
        raise DropDamaged(1, "slots_len runs past the end")
    if slots_len > MAX_SLOTS_LEN:
        raise DropDamaged(1, f"slots_len {slots_len} is over {MAX_SLOTS_LEN}")
    if area_at + slots_len > len(stored):
        raise DropDamaged(1, "slots_len runs past the end")
    body_len = _u32(stored, area_at + slots_len)
    body_at = area_at + slots_len + 4
    if body_len is None or body_at + body_len + MAC_SIZE > len(stored):
        raise DropDamaged(1, "body_len (or the mac) runs past the end")
    if body_at + body_len + MAC_SIZE != len(stored):
        raise DropDamaged(1, "bytes trail the mac")
    slots = parse_slot_area(stored[area_at : area_at + slots_len])
    if slots is None:
        raise DropDamaged(1, "the slot area does not frame")
    if any(s.kind != rr.KIND_RECIPIENT for s in slots):
        raise DropDamaged(1, "the slot area holds a slot that is not a recipient slot")
    body = stored[body_at : body_at + body_len]
    before, tag = stored[: body_at + body_len], stored[body_at + body_len :]

    # Rule 2: SK from a recipient slot, with seed_W.
    sk = open_sk(slots, slots_container_id(repo_id, name), writer_seed(data_key))
    if sk is None or len(sk) != 32:
        raise DropDamaged(2, "no slot opens with the writer identity seed_W")

    # Rule 3: the body, then the mac under the AK of the writer it names.
    dkeys = DropKeys.derive(sk)
    try:
        plain = c2sp.decrypt(dkeys.metadata, body_context(repo_id, name), AES, body)
    except c2sp.DecryptionError:
        raise DropDamaged(3, "the body does not authenticate") from None
    try:
        doc = json.loads(plain, parse_constant=_no_constants)
    except ValueError:
        raise DropDamaged(3, "the body is not JSON") from None
    writer = doc.get("writer") if isinstance(doc, dict) else None
    if not isinstance(writer, str) or not HEX32.fullmatch(writer):
        raise DropDamaged(3, "writer is not 32 hex")
    wa = writer_auth(data_key, bytes.fromhex(writer))
    if not hmac.compare_digest(mac(WriterKeys.derive(wa).drop_mac, name, before), tag):
        raise DropDamaged(3, "the mac does not match the writer's AK")

    # Rule 4: the fields.
    seq, prev, time = doc.get("seq"), doc.get("prev"), doc.get("time")
    if not _is_int(seq) or not 1 <= seq <= MAX_SEQ:
        raise DropDamaged(4, "seq is not an integer from 1 to 2^53")
    if seq == 1 and prev is not None:
        raise DropDamaged(4, "prev is not null for seq 1")
    if seq != 1 and not (
        isinstance(prev, list)
        and len(prev) == 2
        and isinstance(prev[0], str)
        and DROP_NAME.fullmatch(prev[0])
        and _is_hex64(prev[1])
    ):
        raise DropDamaged(4, "prev is not [drops/ name, 64 hex] for seq > 1")
    if not _is_time(time):
        raise DropDamaged(4, "time is not a number from 0 to 2^34")
    for field in ("snapshot", "packs", "chunker"):
        if field not in doc:
            raise DropDamaged(4, f"no {field}")
    broken = (
        check_snapshot(doc["snapshot"])
        or check_packs(doc["packs"])
        or check_chunker(doc["chunker"])
    )
    if broken is not None:
        raise DropDamaged(4, broken)
    chunker = doc["chunker"]
    return Drop(
        name,
        drop_digest(stored),
        writer,
        seq,
        None if prev is None else (prev[0], prev[1]),
        time,
        doc["snapshot"],
        doc["packs"],
        (chunker["min"], chunker["avg"], chunker["max"]),
        doc,
        blob_keys(sk, wa),
    )


__all__ = [
    "Drop",
    "DropDamaged",
    "DropKeys",
    "SlotRandomness",
    "Token",
    "WriterKeys",
    "assemble",
    "blob_keys",
    "check_chunker",
    "make_drop",
    "make_pack",
    "open_drop",
    "open_pack",
    "seal_blob",
    "slots_container_id",
    "writer_auth",
    "writer_recipient",
    "writer_seed",
]
