"""Reference reader (and minimal writer) of the e2ebackup repository format (format versions 1,
2 and 3).

Written from docs/FORMAT.md (sections "Key hierarchy", "Key slots" and "Repository") alone,
deliberately small and slow. It shares no code with e2ebackup: chunked encryption comes from
tests/reference/c2sp.py, key slots from tests/reference/sealed.py, HKDF from pyca
``cryptography``, keyed BLAKE3 from the ``blake3`` package and zstd from ``zstandard``.

A repository is a local folder; object ``a/b/c`` is the file ``a/b/c`` under it.

    config      = "E2EBREPO" || version (0x01 or 0x02) || repo_id (16)
                  || chunked-encrypt(CK, AES-256-GCM, "e2ebackup/v1/repo/config" || 0x00
                                     || config[0:25], JSON)
    keys/<hex>  = 0x01 || slot                        (a slot area of count 1)
    metadata N  = chunked-encrypt(MK, AES-256-GCM, "e2ebackup/v1/repo/metadata" || 0x00
                                  || repo_id || N, JSON)
    blob id     = BLAKE3-keyed(IK, plaintext)
    blob body   = flags (0x00 stored, 0x01 zstd) || length (u32) || plaintext or zstd frame
    sealed blob = chunked-encrypt(BK, AES-256-GCM, "e2ebackup/v1/repo/blob" || 0x00 || repo_id
                                  || kind || id, body)
    pack        = sealed_1 || ... || sealed_n || sealed_header || header_length (u32)
    header      = n x (kind (1) || id (32) || length of sealed_i (u32))
    head        = metadata {"seq", "snapshots", "indexes", "parent"}
    parent      = hex(SHA-256(stored bytes of the head with seq - 1)), null for seq 0
    head (v3)   = metadata {"seq", "time", "parents": [[seq, hash], ...], "snapshots", "indexes",
                            "dropped": [[name, time], ...]}

Choices where the spec leaves room (each is this reference's reading, listed so that a
disagreement can be traced to it):

- Integers without a stated byte order (the blob length, the pack header's lengths and
  ``header_length``) are big-endian, like every other integer in the format.
- ``header_length`` is the length of ``sealed_header`` (what a reader needs to find it).
- A metadata object's name ``N`` in its context is the full object name (``"snapshots/<hex>"``)
  as ASCII; the pack name in a pack header's context is the 64 hex digits alone.
- A pack ``<64 hex>`` is stored as ``data/<its first 2 hex>/<64 hex>``.
- The head's ``snapshots`` list holds the 64 hex digits of the snapshot ids, its ``indexes``
  list the full object names (``"index/<64 hex>"``), as e2ebackup writes them; the index's pack
  ``id`` is the pack's 64 hex digits; a snapshot's ``tree`` and ``parent`` and a tree's
  ``content`` and ``subtree`` hold blob ids (or snapshot ids) in hex.
- Trees are sorted by name in code point order of the (surrogate-escaped) Python string.
- Multiple key objects are tried in name order, as one list of slots. A key object that is not
  exactly a slot area of count 1 is a damaged slot of the kind its slot's kind byte names.
- The newest head is the one with the highest ``seq`` in its name; if it does not open, or its
  ``seq`` differs from its name, the repository is refused (no fallback to an older head, which
  would be a rollback).
- ``"latest"`` is the listed snapshot with the greatest ``time``, the later one in the head's
  list on a tie. ``time`` and ``started`` are Unix seconds as JSON numbers (e2ebackup's form).
- A version-1 repository without any head object has no snapshots (seq 0). (e2ebackup writes
  a head with seq 0 at init and refuses a repository without one; so does this reference for
  version 2.)
- Trust (section "Heads, rollback and forks") is given to ``open`` as the trusted head's seq
  and hash, or a pinned hash prefix; a pin is searched for from the newest head down the
  stored chain. A head without ``parent`` (version 1 only) ends the chain, and below it only
  the seq is compared.
- A listed snapshot whose object is missing is skipped by ``latest`` (the spec: the newest of
  those stored); ``missing()`` names them.
- A zstd body is exactly one frame; a frame that states its content size must state the blob's
  length. Trees must be sorted and free of duplicates; names must not be empty, ``.``, ``..``
  or contain ``/``; a file's ``size`` must equal the length of its restored content.
- Symlink targets that are not UTF-8 are surrogate-escaped like names (e2ebackup's form).
- The writer's chunker parameters need only ``1 <= min <= avg <= max``, ``avg`` a power of two
  (the spec states no other limit; e2ebackup requires 64 <= min < avg < max <= 64 MiB).

Version 3 (section "Many writers (version 3)"), where this reference reads the spec so:

- Every field of the head JSON must be present (``seq``, ``time``, ``parents``, ``snapshots``,
  ``indexes``, ``dropped``); ``parent`` must be absent (whatever its value); other fields are
  ignored. Integers (``seq``, a parent's seq) are JSON integers; times (``time`` and each
  tombstone's) JSON numbers from 0 to 2^34, the range the spec gives ``time``.
- A head is read only when it is a top head, a trusted head, or reached from one by
  ``parents``; an object under ``heads/`` is otherwise only hashed (to find a parent by its
  hash), never opened. A top head that does not open or breaks a rule refuses the repository.
- *Reached* (trust and pins): the top heads are reached; a hash named in the ``parents`` of a
  reached head is reached, and the search goes on through it when a head with that seq and hash
  is stored. A trusted head whose hash is reached is accepted even if its object is gone (the
  sealed head that names it vouches for it), as the spec now says. Otherwise: stored (its
  name holds bytes with its hash): merged with the top heads; not stored: ``Unverifiable``
  if a ``parents`` entry met in the search, with a seq at or above the trusted head's, names
  a seq of which no head is stored, else ``Forked``.
- The trusted state is (seq, [(name, hash), ...]); a trusted head's own seq is the one in its
  name (after a straggler is merged in, the device trusts heads of several seqs at the top
  seq). After an accepted read the device trusts ``merged_heads()`` at the top seq.
- A pin must be a prefix of the hash of a merged head or of a head reached from one.
- Index entries: ``condemned`` (version 3 only) is a JSON number; a blob is read from a pack
  that some listing names without ``condemned`` (the first such listing in index order), and
  only when no such pack holds it from a condemned pack (again the first). ``check`` skips a
  condemned pack that is no longer stored (prune deletes it after the grace period while an
  index may still list it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import blake3
import zstandard

from reference import c2sp, sealed as sref

MAGIC = b"E2EBREPO"
VERSION = 1  # the writer's default: the repo_v1 vectors
VERSIONS = (1, 2, 3, 4)  # 4: version 3's heads, and drops (tests/reference/drops.py)
REPO_ID_SIZE = 16
CONFIG_FIXED_SIZE = len(MAGIC) + 1 + REPO_ID_SIZE  # 25

LABEL_CONFIG = b"e2ebackup/v1/repo/config"
LABEL_METADATA = b"e2ebackup/v1/repo/metadata"
LABEL_BLOB = b"e2ebackup/v1/repo/blob"
LABEL_BLOB_ID = b"e2ebackup/v1/repo/blob-id"
LABEL_CHUNKER = b"e2ebackup/v1/repo/chunker"
LABEL_PACK_HEADER = b"e2ebackup/v1/repo/pack-header"

CONFIG_CONTEXT = b"e2ebackup/v1/repo/config\x00"
METADATA_CONTEXT = b"e2ebackup/v1/repo/metadata\x00"
BLOB_CONTEXT = b"e2ebackup/v1/repo/blob\x00"
PACK_HEADER_CONTEXT = b"e2ebackup/v1/repo/pack-header\x00"
GEAR_INPUT = b"e2ebackup/v1/repo/chunker-gear"

AES = c2sp.AES_256_GCM
KIND_DATA = 0x00
KIND_TREE = 0x01
FLAG_STORED = 0x00
FLAG_ZSTD = 0x01
ID_SIZE = 32
MAX_BLOB = 64 * 1024 * 1024
HEADER_ENTRY_SIZE = 1 + ID_SIZE + 4
DEFAULT_CHUNKER = (512 * 1024, 1024 * 1024, 8 * 1024 * 1024)

HEX64 = re.compile(r"[0-9a-f]{64}")
INDEX_NAME = re.compile(r"index/[0-9a-f]{64}")
HEAD_NAME = re.compile(r"heads/([0-9a-f]{16})-([0-9a-f]{64})")
TOMBSTONE_NAME = re.compile(r"(snapshots|index)/[0-9a-f]{64}")
TOMBSTONE_NAME_V4 = re.compile(
    r"(snapshots|index|drops)/[0-9a-f]{64}|data/([0-9a-f]{2})/\2[0-9a-f]{62}"
)
MAX_PARENTS = 64  # version 3: 1 to 64 parents for seq > 0
MAX_TIME = 2**34  # Unix seconds

M64 = (1 << 64) - 1

# What restore produces: file contents, a symlink and its target, or a directory.
Node: TypeAlias = bytes | tuple[Literal["symlink"], str] | Literal["dir"]
Tree: TypeAlias = dict[str, Node]


# ---- errors ----------------------------------------------------------------------------------


class RepoError(Exception):
    """Base class of this reference's repository errors."""


class NotARepository(RepoError):
    """No config, or a config with a bad magic or version."""


class Corrupt(RepoError):
    """An object, blob or pack that does not authenticate or does not parse."""


class HistoryRefused(RepoError):
    """The heads the storage shows do not extend what the device trusts or pinned."""


class Rollback(HistoryRefused):
    """The newest head is older than the highest seq this device has seen."""


class Forked(HistoryRefused):
    """The chain from the newest head misses the trusted head, or two heads have the newest
    seq (version 2); a trusted head is neither stored nor reached from the top heads
    (version 3)."""


class Unverifiable(HistoryRefused):
    """A head between the newest and the trusted one is not stored (version 3: a parent on the
    way names a seq of which no head is stored)."""


class SnapshotNotFound(RepoError):
    """No such snapshot among those the head lists (unlisted objects are never offered)."""


class SnapshotDeleted(RepoError):
    """The head lists the snapshot but its object is missing."""


# The key-slot errors are those of tests/reference/sealed.py.
WrongPassword = sref.WrongPassword
WrongRecoveryKey = sref.WrongRecoveryKey
NoMatchingKeySlot = sref.NoMatchingKeySlot
CorruptKeySlot = sref.CorruptKeySlot


# ---- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    data_key: bytes
    config: bytes  # CK
    metadata: bytes  # MK
    blob: bytes  # BK
    blob_id: bytes  # IK
    chunker: bytes  # GK
    pack_header: bytes  # HK

    @classmethod
    def derive(cls, data_key: bytes) -> Keys:
        d = sref.derive
        return cls(
            data_key,
            d(data_key, LABEL_CONFIG),
            d(data_key, LABEL_METADATA),
            d(data_key, LABEL_BLOB),
            d(data_key, LABEL_BLOB_ID),
            d(data_key, LABEL_CHUNKER),
            d(data_key, LABEL_PACK_HEADER),
        )


def blob_id(id_key: bytes, plaintext: bytes) -> bytes:
    return blake3.blake3(plaintext, key=id_key).digest()


# ---- chunking --------------------------------------------------------------------------------


def gear_table(gear_key: bytes) -> list[int]:
    """gear[i] = LE u64 of bytes 8i..8i+8 of BLAKE3-XOF(key = GK, "...chunker-gear")."""
    stream = blake3.blake3(GEAR_INPUT, key=gear_key).digest(length=256 * 8)
    return [int.from_bytes(stream[8 * i : 8 * i + 8], "little") for i in range(256)]


def masks(avg: int) -> tuple[int, int]:
    """(mask while n < avg, mask after): the top log2(avg)+2 and log2(avg)-2 bits of 64."""
    bits = avg.bit_length() - 1
    if avg <= 0 or 1 << bits != avg or not 2 <= bits <= 62:
        raise ValueError("avg must be a power of two between 4 and 2^62")
    small = ((1 << (bits + 2)) - 1) << (64 - bits - 2)
    large = ((1 << (bits - 2)) - 1) << (64 - bits + 2)
    return small, large


def check_chunker_params(min_size: int, avg_size: int, max_size: int) -> None:
    masks(avg_size)
    if not 1 <= min_size <= avg_size <= max_size:
        raise ValueError("chunker parameters must satisfy 1 <= min <= avg <= max")


def _next_cut(
    gear: list[int], data: bytes, start: int, min_size: int, avg_size: int, max_size: int
) -> tuple[int, bool]:
    """The end of the chunk that starts at ``start``, and whether the rule (not the end of the
    data) put it there."""
    mask_s, mask_l = masks(avg_size)
    h = 0
    end = len(data)
    # Bytes at positions n <= min - 64 do not enter the hash: start at n = max(1, min - 63).
    n = max(1, min_size - 63)
    pos = start + n - 1
    while pos < end:
        h = ((h << 1) + gear[data[pos]]) & M64
        mask = mask_s if n < avg_size else mask_l
        if (n >= min_size and h & mask == 0) or n >= max_size:
            return pos + 1, True
        n += 1
        pos += 1
    return end, False


def chunk_boundaries(
    gear_key: bytes, data: bytes, min_size: int, avg_size: int, max_size: int
) -> list[int]:
    """The end offset of every chunk of ``data``: the last is len(data); [0] for empty data."""
    check_chunker_params(min_size, avg_size, max_size)
    gear = gear_table(gear_key)
    ends: list[int] = []
    start = 0
    while start < len(data):
        start, _ = _next_cut(gear, data, start, min_size, avg_size, max_size)
        ends.append(start)
    return ends or [0]


def cut_points(
    gear_key: bytes, data: bytes, min_size: int, avg_size: int, max_size: int
) -> list[int]:
    """Only the cuts the rule makes (a last chunk that ends with the data is not one)."""
    check_chunker_params(min_size, avg_size, max_size)
    gear = gear_table(gear_key)
    cuts: list[int] = []
    start = 0
    while start < len(data):
        start, by_rule = _next_cut(gear, data, start, min_size, avg_size, max_size)
        if by_rule:
            cuts.append(start)
    return cuts


def split(gear_key: bytes, data: bytes, min_size: int, avg_size: int, max_size: int) -> list[bytes]:
    ends = chunk_boundaries(gear_key, data, min_size, avg_size, max_size)
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


# ---- blobs -----------------------------------------------------------------------------------


def blob_context(repo_id: bytes, kind: int, id_: bytes) -> bytes:
    return BLOB_CONTEXT + repo_id + bytes([kind]) + id_


def decode_body(body: bytes) -> bytes:
    """flags || length (u32) || plaintext or zstd frame -> plaintext."""
    if len(body) < 5:
        raise Corrupt("blob body too short")
    flags, length = body[0], struct.unpack(">I", body[1:5])[0]
    if length > MAX_BLOB:
        raise Corrupt("blob longer than 64 MiB")
    rest = body[5:]
    if flags == FLAG_STORED:
        if len(rest) != length:
            raise Corrupt("stored blob length mismatch")
        return rest
    if flags != FLAG_ZSTD:
        raise Corrupt(f"unknown blob flags {flags:#x}")
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        # A frame that states its content size must state the blob's (no bombs).
        if zstandard.frame_content_size(rest) not in (-1, length):
            raise Corrupt("zstd frame content size differs from the stated length")
        out = d.decompress(rest)
    except zstandard.ZstdError as e:
        raise Corrupt(f"bad zstd frame: {e}") from None
    if not d.eof or d.unused_data or len(out) != length:
        raise Corrupt("zstd frame does not decompress to exactly the stated length")
    return out


def open_body(keys: Keys, repo_id: bytes, kind: int, id_: bytes, sealed: bytes) -> bytes:
    """Decrypt a sealed blob to its body (flags || length || data)."""
    try:
        return c2sp.decrypt(keys.blob, blob_context(repo_id, kind, id_), AES, sealed)
    except c2sp.DecryptionError:
        raise Corrupt(f"blob {id_.hex()} does not authenticate") from None


def open_blob(keys: Keys, repo_id: bytes, kind: int, id_: bytes, sealed: bytes) -> bytes:
    """Decrypt, decompress, recompute the id and compare it in constant time."""
    plaintext = decode_body(open_body(keys, repo_id, kind, id_, sealed))
    if not hmac.compare_digest(blob_id(keys.blob_id, plaintext), id_):
        raise Corrupt(f"blob {id_.hex()}: id MAC mismatch")
    return plaintext


def encode_body(plaintext: bytes, compress: bool) -> bytes:
    if len(plaintext) > MAX_BLOB:
        raise ValueError("blob longer than 64 MiB")
    head = struct.pack(">I", len(plaintext))
    if compress:
        frame = zstandard.ZstdCompressor(level=3).compress(plaintext)
        return bytes([FLAG_ZSTD]) + head + frame
    return bytes([FLAG_STORED]) + head + plaintext


# ---- packs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackEntry:
    kind: int
    id: bytes
    offset: int
    length: int


def pack_object_name(name: str) -> str:
    return f"data/{name[:2]}/{name}"


def parse_pack(keys: Keys, repo_id: bytes, name: str, pack: bytes) -> list[PackEntry]:
    """The authenticated header of pack ``name`` (64 hex), with offsets; checks the sizes."""
    if len(pack) < 4:
        raise Corrupt("pack too short")
    (header_length,) = struct.unpack(">I", pack[-4:])
    if header_length > len(pack) - 4:
        raise Corrupt("pack header length beyond the pack")
    sealed_header = pack[len(pack) - 4 - header_length : -4]
    context = PACK_HEADER_CONTEXT + repo_id + name.encode("ascii")
    try:
        header = c2sp.decrypt(keys.pack_header, context, AES, sealed_header)
    except c2sp.DecryptionError:
        raise Corrupt(f"pack {name}: header does not authenticate") from None
    if len(header) % HEADER_ENTRY_SIZE:
        raise Corrupt(f"pack {name}: header is not a whole number of entries")
    entries, offset = [], 0
    for i in range(0, len(header), HEADER_ENTRY_SIZE):
        kind, id_, length = struct.unpack(">B32sI", header[i : i + HEADER_ENTRY_SIZE])
        entries.append(PackEntry(kind, id_, offset, length))
        offset += length
    if offset + header_length + 4 != len(pack):
        raise Corrupt(f"pack {name}: header lengths do not add up to the pack size")
    return entries


# ---- metadata objects ---------------------------------------------------------------------------


def metadata_context(repo_id: bytes, name: str) -> bytes:
    return METADATA_CONTEXT + repo_id + name.encode("ascii")


def seal_metadata(metadata_key: bytes, repo_id: bytes, name: str, doc: Any, salt: bytes) -> bytes:
    """The metadata object ``name`` holding the JSON of ``doc``."""
    context = metadata_context(repo_id, name)
    return c2sp.encrypt_with_salt(metadata_key, salt, context, AES, _dumps(doc))


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# ---- key objects -----------------------------------------------------------------------------


def parse_key_object(blob: bytes) -> sref.Slot:
    """A slot area of count 1; anything else is a damaged slot (of the kind byte it shows)."""
    kind = blob[1] if len(blob) > 1 else 0
    bad = sref.Slot(kind, b"", b"")  # its check never matches: damaged
    if len(blob) < 1 + 3 + sref.CHECK_SIZE or blob[0] != 1:
        return bad
    body_len = struct.unpack(">H", blob[2:4])[0]
    if len(blob) != 1 + 3 + body_len + sref.CHECK_SIZE:
        return bad
    return sref.Slot(kind, blob[4 : 4 + body_len], blob[4 + body_len :])


def encode_key_object(slot: bytes) -> bytes:
    return b"\x01" + slot


# ---- reading --------------------------------------------------------------------------------


def object_names(root: Path, prefix: str) -> list[str]:
    """Names of the objects under ``prefix`` (a folder name ending in '/'), sorted."""
    base = root / prefix
    if not base.is_dir():
        return []
    out = []
    for folder, _dirs, files in os.walk(base):
        for f in files:
            out.append((Path(folder) / f).relative_to(root).as_posix())
    return sorted(out)


@dataclass(frozen=True)
class Head:
    seq: int
    name: str | None
    snapshots: list[str]
    indexes: list[str]
    parent: str | None = None  # hex SHA-256 of the previous head's stored bytes
    hash: str | None = None  # hex SHA-256 of this head's stored bytes
    # version 3
    time: float | None = None
    parents: tuple[tuple[int, str], ...] = ()  # (seq, hash) of the heads it merges
    dropped: tuple[tuple[str, float], ...] = ()  # tombstones: (object name, time)


def head_hash(stored: bytes) -> str:
    return hashlib.sha256(stored).hexdigest()


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_time(x: Any) -> bool:
    return type(x) in (int, float) and 0 <= x <= MAX_TIME


def parse_head_v3(name: str, seq: int, doc: Any, stored: bytes, *, version: int = 3) -> Head:
    """A version-3 head from its JSON, with every rule of section "Many writers" checked."""

    def bad(why: str) -> Corrupt:
        return Corrupt(f"{name}: {why}")

    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    if "parent" in doc:
        raise bad("a version-3 head has no parent field")
    for key in ("seq", "time", "parents", "snapshots", "indexes", "dropped"):
        if key not in doc:
            raise bad(f"no {key}")
    if not _is_int(doc["seq"]) or doc["seq"] != seq:
        raise bad(f"seq {doc['seq']!r} does not match the name")
    if not _is_time(doc["time"]):
        raise bad(f"bad time {doc['time']!r}")
    parents, snaps, idx, dropped = doc["parents"], doc["snapshots"], doc["indexes"], doc["dropped"]
    if not all(isinstance(x, list) for x in (parents, snaps, idx, dropped)):
        raise bad("parents, snapshots, indexes and dropped must be lists")
    if seq == 0 and parents:
        raise bad("the head with seq 0 has no parents")
    if seq > 0 and not 1 <= len(parents) <= MAX_PARENTS:
        raise bad(f"{len(parents)} parents (1 to {MAX_PARENTS})")
    pairs: list[tuple[int, str]] = []
    for p in parents:
        if not (isinstance(p, list) and len(p) == 2 and _is_int(p[0]) and isinstance(p[1], str)):
            raise bad(f"bad parent {p!r}")
        if not 0 <= p[0] < seq:
            raise bad(f"parent seq {p[0]} is not lower than {seq}")
        if not HEX64.fullmatch(p[1]):
            raise bad(f"bad parent hash {p[1]!r}")
        pairs.append((p[0], p[1]))
    if len({h for _, h in pairs}) != len(pairs):
        raise bad("a parent hash named twice")
    for s in snaps:
        if not isinstance(s, str) or not HEX64.fullmatch(s):
            raise bad(f"bad snapshot id {s!r}")
    for s in idx:
        if not isinstance(s, str) or not INDEX_NAME.fullmatch(s):
            raise bad(f"bad index name {s!r}")
    if len(set(snaps)) != len(snaps) or len(set(idx)) != len(idx):
        raise bad("a name listed twice")
    tombstones: list[tuple[str, float]] = []
    for t in dropped:
        if not (isinstance(t, list) and len(t) == 2 and isinstance(t[0], str)):
            raise bad(f"bad tombstone {t!r}")
        if not (TOMBSTONE_NAME_V4 if version >= 4 else TOMBSTONE_NAME).fullmatch(t[0]):
            raise bad(f"bad tombstone name {t[0]!r}")
        if not _is_time(t[1]):
            raise bad(f"bad tombstone time {t[1]!r}")
        tombstones.append((t[0], t[1]))
    names = {n for n, _ in tombstones}
    if len(names) != len(tombstones):
        raise bad("a tombstone named twice")
    listed = {f"snapshots/{s}" for s in snaps} | set(idx)
    if listed & names:
        raise bad(f"lists a name it drops: {sorted(listed & names)[0]}")
    return Head(
        seq,
        name,
        list(snaps),
        list(idx),
        None,
        head_hash(stored),
        doc["time"],
        tuple(pairs),
        tuple(tombstones),
    )


def merge(heads: list[Head]) -> tuple[list[str], list[str], dict[str, float]]:
    """(snapshots, indexes, tombstones) of version-3 heads merged: taken in the order of their
    hash, the union of the tombstones (the greatest time of a name), the lists in first
    occurrence order less the dropped names."""
    ordered = sorted({str(h.hash): h for h in heads}.values(), key=lambda h: str(h.hash))
    dropped: dict[str, float] = {}
    for h in ordered:
        for n, t in h.dropped:
            dropped[n] = max(dropped.get(n, t), t)
    snaps: list[str] = []
    idx: list[str] = []
    for h in ordered:
        for s in h.snapshots:
            if s not in snaps and f"snapshots/{s}" not in dropped:
                snaps.append(s)
        for i in h.indexes:
            if i not in idx and i not in dropped:
                idx.append(i)
    return snaps, idx, dropped


@dataclass
class Repository:
    root: Path
    repo_id: bytes
    keys: Keys
    config: dict[str, Any]
    head: Head
    _index: dict[bytes, tuple[str, PackEntry]] | None = field(default=None, repr=False)
    _packs: dict[str, bytes] = field(default_factory=dict, repr=False)
    _pack_sizes: dict[str, int] = field(default_factory=dict, repr=False)
    # version 3: the heads merged (top heads and trusted heads merged in), their tombstones,
    # and the packs that every listing condemns (pack name -> the greatest condemned time)
    merged: list[Head] = field(default_factory=list, repr=False)
    dropped: dict[str, float] = field(default_factory=dict, repr=False)
    condemned: dict[str, float] = field(default_factory=dict, repr=False)

    # -- opening --

    @classmethod
    def open(
        cls,
        root: Path | str,
        *,
        password: str | bytes | None = None,
        recovery_key: bytes | str | None = None,
        known_seq: int | None = None,
        trusted: tuple[int, str] | None = None,
        expect_head: str | None = None,
        trusted_heads: tuple[int, list[tuple[str, str]]] | None = None,
    ) -> Repository:
        """Open with a password or recovery key. ``known_seq``, the highest head seq this device
        has seen, turns an older newest head into a Rollback error; ``trusted`` (seq, hash hex)
        is the head the device trusts and ``expect_head`` a pinned hash prefix: a newest head
        that does not extend them is a HistoryRefused error. Version 3 takes the trusted state
        as ``trusted_heads``: (seq, [(head name, hash hex), ...])."""
        root = Path(root)
        try:
            config = (root / "config").read_bytes()
        except FileNotFoundError:
            raise NotARepository("no config") from None
        if len(config) < CONFIG_FIXED_SIZE or config[:8] != MAGIC or config[8] not in VERSIONS:
            raise NotARepository("bad config magic or version")
        repo_id = config[9:CONFIG_FIXED_SIZE]
        slots = [parse_key_object((root / n).read_bytes()) for n in object_names(root, "keys/")]
        if isinstance(recovery_key, str):
            recovery_key = sref.parse_recovery_key(recovery_key)
        data_key = sref.open_slots(repo_id, slots, password=password, recovery_key=recovery_key)
        keys = Keys.derive(data_key)
        context = CONFIG_CONTEXT + config[:CONFIG_FIXED_SIZE]
        try:
            body = c2sp.decrypt(keys.config, context, AES, config[CONFIG_FIXED_SIZE:])
        except c2sp.DecryptionError:
            raise Corrupt("config does not authenticate") from None
        settings = json.loads(body)
        if settings.get("version") != config[8]:
            raise NotARepository("config JSON version differs from the version byte")
        ch = settings["chunker"]
        check_chunker_params(ch["min"], ch["avg"], ch["max"])
        repo = cls(root, repo_id, keys, settings, Head(0, None, [], []))
        if repo.version >= 3:
            if trusted is not None:
                raise TypeError("a version-3 repository takes trusted_heads, not trusted")
            repo.head = repo._read_heads_v3(trusted_heads, expect_head)
            if known_seq is not None and repo.head.seq < known_seq:
                raise Rollback(f"top seq {repo.head.seq} < {known_seq} already seen")
            return repo
        if trusted_heads is not None:
            raise TypeError("trusted_heads is for version-3 repositories")
        repo.head = repo._read_head()
        if known_seq is not None and repo.head.seq < known_seq:
            raise Rollback(f"newest head seq {repo.head.seq} < {known_seq} already seen")
        if trusted is not None:
            repo._check_trusted(*trusted)
        if expect_head is not None:
            repo._check_pin(expect_head)
        return repo

    @property
    def version(self) -> int:
        return int(self.config["version"])

    @property
    def chunker(self) -> tuple[int, int, int]:
        ch = self.config["chunker"]
        return ch["min"], ch["avg"], ch["max"]

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def metadata(self, name: str) -> Any:
        context = metadata_context(self.repo_id, name)
        try:
            plain = c2sp.decrypt(self.keys.metadata, context, AES, self.read(name))
        except c2sp.DecryptionError:
            raise Corrupt(f"{name} does not authenticate") from None
        return json.loads(plain)

    def heads(self) -> list[tuple[int, str]]:
        """(seq, name) of every stored head, sorted."""
        out = []
        for name in object_names(self.root, "heads/"):
            m = HEAD_NAME.fullmatch(name)
            if m:  # other names under heads/ are not heads
                out.append((int(m.group(1), 16), name))
        return sorted(out)

    def _read_head(self) -> Head:
        heads = self.heads()
        if not heads:
            if self.version >= 2:
                raise Corrupt("no head")
            return Head(0, None, [], [])
        seq, name = max(heads)
        if sum(1 for s, _ in heads if s == seq) != 1:
            raise Forked(f"two heads with seq {seq}")
        return self.read_head(name)

    def read_head(self, name: str) -> Head:
        m = HEAD_NAME.fullmatch(name)
        assert m is not None
        seq = int(m.group(1), 16)
        stored = self.read(name)
        doc = self.metadata(name)
        if doc.get("seq") != seq:
            raise Corrupt(f"{name}: seq {doc.get('seq')!r} does not match the name")
        snaps, idx, parent = doc["snapshots"], doc["indexes"], doc.get("parent")
        for s in snaps:
            if not isinstance(s, str) or not HEX64.fullmatch(s):
                raise Corrupt(f"{name}: bad snapshot id {s!r}")
        for s in idx:
            if not isinstance(s, str) or not INDEX_NAME.fullmatch(s):
                raise Corrupt(f"{name}: bad index name {s!r}")
        if parent is not None and not (isinstance(parent, str) and HEX64.fullmatch(parent)):
            raise Corrupt(f"{name}: bad parent {parent!r}")
        if self.version >= 2 and (parent is None) != (seq == 0):
            raise Corrupt(f"{name}: parent must be null exactly for seq 0")
        return Head(seq, name, list(snaps), list(idx), parent, head_hash(stored))

    def parent_of(self, head: Head) -> Head | None:
        """The stored head with seq - 1 whose hash is ``head.parent``, if any."""
        for seq, name in self.heads():
            if seq == head.seq - 1:
                candidate = self.read_head(name)
                if candidate.hash == head.parent:
                    return candidate
        return None

    def _check_trusted(self, seq: int, hash_hex: str) -> None:
        head = self.head
        if head.seq < seq:
            raise Rollback(f"newest head seq {head.seq} < trusted seq {seq}")
        while head.seq > seq:
            if head.parent is None:
                return  # a version-1 head: the chain starts after it
            parent = self.parent_of(head)
            if parent is None and any(s == head.seq - 1 for s, _ in self.heads()):
                raise Forked(f"the parent of head seq {head.seq} is replaced by another head")
            if parent is None:
                raise Unverifiable(f"head seq {head.seq - 1} of the chain is not stored")
            head = parent
        if head.hash != hash_hex:
            raise Forked(f"the chain passes seq {seq} at {head.hash}, not {hash_hex}")

    # -- version 3 --

    def stored_heads(self) -> dict[int, dict[str, str]]:
        """seq -> {hash: name} of every object under heads/ (hashed, not opened)."""
        out: dict[int, dict[str, str]] = {}
        for seq, name in self.heads():
            out.setdefault(seq, {})[head_hash(self.read(name))] = name
        return out

    def read_head_v3(self, name: str) -> Head:
        m = HEAD_NAME.fullmatch(name)
        assert m is not None
        stored = self.read(name)
        try:
            doc = self.metadata(name)
        except ValueError:  # JSON
            raise Corrupt(f"{name}: not JSON") from None
        return parse_head_v3(name, int(m.group(1), 16), doc, stored, version=self.version)

    def reach(self, start: list[Head]) -> tuple[dict[str, Head | None], set[int]]:
        """What following ``parents`` from ``start`` through stored heads reaches: hash -> the
        head (None when it is named but not stored), and the seqs named of which no head is
        stored (gaps). Every head reached and stored is opened and checked."""
        stored = self.stored_heads()
        reached: dict[str, Head | None] = {str(h.hash): h for h in start}
        gaps: set[int] = set()
        todo = list(start)
        while todo:
            head = todo.pop()
            for seq, h in head.parents:
                if h in reached and reached[h] is not None:
                    continue
                name = stored.get(seq, {}).get(h)
                if name is None:
                    reached[h] = None
                    if seq not in stored:
                        gaps.add(seq)
                    continue
                parent = self.read_head_v3(name)
                reached[h] = parent
                todo.append(parent)
        return reached, gaps

    def _read_heads_v3(
        self, trusted: tuple[int, list[tuple[str, str]]] | None, pin: str | None
    ) -> Head:
        heads = self.heads()
        if not heads:
            raise Corrupt("no head")
        top = max(s for s, _ in heads)
        tops = [self.read_head_v3(n) for s, n in heads if s == top]
        merged = list(tops)
        if trusted is not None:
            trusted_seq, trusted_list = trusted
            if top < trusted_seq:
                raise Rollback(f"top seq {top} < trusted seq {trusted_seq}")
            reached, gaps = self.reach(tops)
            for name, digest in trusted_list:
                m = HEAD_NAME.fullmatch(name)
                if m is None:
                    raise ValueError(f"bad trusted head name {name!r}")
                seq = int(m.group(1), 16)
                if digest in reached:
                    continue
                path = self.root / name
                if path.is_file() and head_hash(path.read_bytes()) == digest:
                    merged.append(self.read_head_v3(name))  # stored, not reached: merged in
                    continue
                if any(g >= seq for g in gaps):
                    raise Unverifiable(f"trusted head {name}: a head on the way is not stored")
                raise Forked(f"trusted head {name} is neither stored nor reached")
        merged.sort(key=lambda h: str(h.hash))
        if pin is not None:
            reached, _ = self.reach(merged)
            if not any(h.startswith(pin) for h in reached):
                raise HistoryRefused(f"no head {pin} among the merged heads and their ancestors")
        self.merged = merged
        snaps, idx, self.dropped = merge(merged)
        one = merged[0] if len(merged) == 1 else None
        return Head(
            top,
            one.name if one else None,
            snaps,
            idx,
            None,
            one.hash if one else None,
        )

    def merged_heads(self) -> list[tuple[str, str]]:
        """(name, hash) of the heads merged (version 3): what the device trusts next."""
        return [(str(h.name), str(h.hash)) for h in self.merged]

    def _check_pin(self, prefix: str) -> None:
        head: Head | None = self.head
        while head is not None:
            if head.hash is not None and head.hash.startswith(prefix):
                return
            head = self.parent_of(head) if head.parent is not None else None
        raise HistoryRefused(f"no head {prefix} in the chain of the newest head")

    # -- snapshots --

    def snapshot_ids(self) -> list[str]:
        """The snapshots the head lists (the only ones that may be offered)."""
        return list(self.head.snapshots)

    def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        if snapshot_id not in self.head.snapshots:
            raise SnapshotNotFound(snapshot_id)
        name = f"snapshots/{snapshot_id}"
        if not (self.root / name).is_file():
            raise SnapshotDeleted(snapshot_id)
        doc: dict[str, Any] = self.metadata(name)
        if doc.get("id") != snapshot_id:
            raise Corrupt(f"{name}: id {doc.get('id')!r} does not match the name")
        return doc

    def missing(self) -> list[str]:
        """Listed snapshots whose object is not stored."""
        return [s for s in self.head.snapshots if not (self.root / f"snapshots/{s}").is_file()]

    def latest(self) -> str:
        """The newest listed snapshot that is stored (missing ones are skipped)."""
        missing = self.missing()
        present = [s for s in self.head.snapshots if s not in missing]
        if not present:
            raise SnapshotNotFound("the repository has no snapshots")
        order = {s: i for i, s in enumerate(present)}
        docs = [self.snapshot(s) for s in present]
        best = max(docs, key=lambda d: (d["time"], order[d["id"]]))
        return str(best["id"])

    def resolve(self, snapshot: str) -> str:
        if snapshot == "latest":
            return self.latest()
        matches = [s for s in self.head.snapshots if s.startswith(snapshot)]
        if len(matches) != 1:
            raise SnapshotNotFound(snapshot)
        return matches[0]

    # -- index and blobs --

    def index(self) -> dict[bytes, tuple[str, PackEntry]]:
        """blob id -> (pack name, where it is), from every index object the head lists."""
        if self._index is None:
            docs = [(n, self.metadata(n)) for n in self.head.indexes]
            # Version 3: a pack listed once without "condemned" is live, whatever other listings
            # say; the others are condemned (the greatest time counts).
            live: set[str] = set()
            condemned: dict[str, float] = {}
            for index_name, doc in docs:
                for pack in doc["packs"]:
                    name = pack["id"]
                    if not isinstance(name, str) or not HEX64.fullmatch(name):
                        raise Corrupt(f"{index_name}: bad pack id {name!r}")
                    when = pack.get("condemned") if self.version >= 3 else None
                    if when is None:
                        live.add(name)
                    elif not _is_time(when):
                        raise Corrupt(f"{index_name}: bad condemned time {when!r}")
                    else:
                        condemned[name] = max(condemned.get(name, when), when)
            self.condemned = {n: t for n, t in condemned.items() if n not in live}
            out: dict[bytes, tuple[str, PackEntry]] = {}
            fallback: dict[bytes, tuple[str, PackEntry]] = {}
            for _index_name, doc in docs:
                for pack in doc["packs"]:
                    name = pack["id"]
                    self._pack_sizes[name] = pack["size"]
                    where = fallback if name in self.condemned else out
                    for kind, id_hex, offset, length in pack["blobs"]:
                        entry = PackEntry(kind, bytes.fromhex(id_hex), offset, length)
                        where.setdefault(entry.id, (name, entry))
            for id_, loc in fallback.items():  # read from a condemned pack only if no live one
                out.setdefault(id_, loc)
            self._index = out
        return self._index

    def pack(self, name: str) -> bytes:
        if name not in self._packs:
            self._packs[name] = self.read(pack_object_name(name))
        return self._packs[name]

    def sealed_blob(self, kind: int, id_: bytes) -> bytes:
        try:
            name, entry = self.index()[id_]
        except KeyError:
            raise Corrupt(f"blob {id_.hex()} is in no listed index") from None
        if entry.kind != kind:
            raise Corrupt(f"blob {id_.hex()} is indexed as kind {entry.kind}, not {kind}")
        return self.pack(name)[entry.offset : entry.offset + entry.length]

    def blob(self, kind: int, id_: bytes) -> bytes:
        return open_blob(self.keys, self.repo_id, kind, id_, self.sealed_blob(kind, id_))

    def blob_body(self, kind: int, id_: bytes) -> bytes:
        """The decrypted body (flags || length || data) of a blob, to see how it was stored."""
        return open_body(self.keys, self.repo_id, kind, id_, self.sealed_blob(kind, id_))

    def tree(self, tree_id: str) -> list[dict[str, Any]]:
        doc = json.loads(self.blob(KIND_TREE, bytes.fromhex(tree_id)))
        entries: list[dict[str, Any]] = doc["entries"]
        names = [e["name"] for e in entries]
        for n in names:
            if not isinstance(n, str) or n in ("", ".", "..") or "/" in n:
                raise Corrupt(f"bad name {n!r} in tree {tree_id}")
        if names != sorted(set(names)):
            raise Corrupt(f"tree {tree_id} is not sorted by name or has duplicate names")
        return entries

    # -- restore --

    def restore(self, snapshot: str = "latest") -> Tree:
        """{path: bytes | ("symlink", target) | "dir"}, paths relative to the snapshot root."""
        doc = self.snapshot(self.resolve(snapshot))
        out: Tree = {}
        self._walk(doc["tree"], "", out)
        return out

    def walk(self, snapshot: str = "latest") -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (path, tree entry) of a snapshot, depth first in tree order."""
        doc = self.snapshot(self.resolve(snapshot))
        yield from self._entries(doc["tree"], "")

    def _entries(self, tree_id: str, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for e in self.tree(tree_id):
            path = prefix + e["name"]
            yield path, e
            if e["type"] == "dir":
                yield from self._entries(e["subtree"], path + "/")

    def _walk(self, tree_id: str, prefix: str, out: Tree) -> None:
        for path, e in self._entries(tree_id, prefix):
            kind = e["type"]
            if kind == "file":
                data = b"".join(self.blob(KIND_DATA, bytes.fromhex(c)) for c in e["content"])
                if len(data) != e["size"]:
                    raise Corrupt(f"{path}: {len(data)} bytes, the tree says {e['size']}")
                out[path] = data
            elif kind == "dir":
                out[path] = "dir"
            elif kind == "symlink":
                out[path] = ("symlink", e["target"])
            else:
                raise Corrupt(f"{path}: unknown entry type {kind!r}")

    # -- check --

    def check(self, read_data: bool = True) -> list[str]:
        """Problems found (empty if none): every listed snapshot and its trees, every indexed
        pack's header against the index, and with ``read_data`` every blob."""
        problems: list[str] = []
        try:
            index = self.index()
        except (RepoError, OSError) as e:
            return [f"index: {e}"]
        by_pack: dict[str, list[PackEntry]] = {}
        for name, entry in index.values():
            by_pack.setdefault(name, []).append(entry)
        for name, entries in sorted(by_pack.items()):
            if name in self.condemned and not (self.root / pack_object_name(name)).is_file():
                continue  # deleted by a prune after its grace period
            try:
                pack = self.pack(name)
                header = parse_pack(self.keys, self.repo_id, name, pack)
            except (RepoError, OSError) as e:
                problems.append(f"pack {name}: {e}")
                continue
            if len(pack) != self._pack_sizes[name]:
                problems.append(f"pack {name}: {len(pack)} bytes, the index says otherwise")
            missing = set(entries) - set(header)
            if missing:
                problems.append(f"pack {name}: {len(missing)} indexed blobs not in its header")
            if read_data:
                for en in header:
                    try:
                        sealed = pack[en.offset : en.offset + en.length]
                        open_blob(self.keys, self.repo_id, en.kind, en.id, sealed)
                    except RepoError as e:
                        problems.append(f"pack {name}: {e}")
        for sid in self.head.snapshots:
            try:
                for path, te in self.walk(sid):
                    for c in te.get("content", []) if te["type"] == "file" else []:
                        if bytes.fromhex(c) not in index:
                            problems.append(f"{sid[:8]}:{path}: blob {c} not indexed")
            except (RepoError, OSError, KeyError, ValueError) as e:
                problems.append(f"snapshot {sid}: {type(e).__name__}: {e}")
        return problems


# ---- writing ---------------------------------------------------------------------------------

Random: TypeAlias = Callable[[str, int], bytes]
"""rand(purpose, n): n 'random' bytes for a purpose; the writer asks for each one by name."""


@dataclass(frozen=True)
class Meta:
    mode: int = 0o644
    mtime_ns: int = 1_764_115_200_000_000_000
    ctime_ns: int = 1_764_115_200_000_000_000
    ino: int = 0
    uid: int = 1000
    gid: int = 1000


@dataclass(frozen=True)
class File:
    data: bytes
    meta: Meta = Meta()


@dataclass(frozen=True)
class Symlink:
    target: str
    meta: Meta = Meta(mode=0o777)


@dataclass(frozen=True)
class Dir:
    entries: dict[str, Node_]
    meta: Meta = Meta(mode=0o755)


Node_: TypeAlias = File | Symlink | Dir

# Leading bytes of formats the writer stores without zstd (a subset of the spec's list).
COMPRESSED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"\x1f\x8b", b"%PDF")


def expected_tree(entries: dict[str, Node_], prefix: str = "") -> Tree:
    """What a restore of a root holding ``entries`` gives."""
    out: Tree = {}
    for name in sorted(entries):
        node, path = entries[name], prefix + name
        if isinstance(node, File):
            out[path] = node.data
        elif isinstance(node, Symlink):
            out[path] = ("symlink", node.target)
        else:
            out[path] = "dir"
            out.update(expected_tree(node.entries, path + "/"))
    return out


class Writer:
    """A minimal writer: init, then backups of explicit in-memory trees, and forget. Every
    random input (names, salts) comes from ``rand``; the output is a function of the inputs."""

    def __init__(
        self,
        root: Path,
        *,
        data_key: bytes,
        repo_id: bytes,
        rand: Random,
        chunker: tuple[int, int, int] = DEFAULT_CHUNKER,
        pack_size: int = 16 * 1024 * 1024,
        version: int = VERSION,
    ) -> None:
        assert version in VERSIONS
        assert len(data_key) == 32
        assert len(repo_id) == REPO_ID_SIZE
        check_chunker_params(*chunker)
        self.root = root
        self.data_key = data_key
        self.repo_id = repo_id
        self.keys = Keys.derive(data_key)
        self.rand = rand
        self.chunker = chunker
        self.pack_size = pack_size
        self.version = version
        self.counter = 0
        self.known: set[bytes] = set()
        self.seq = 0
        self.snapshots: list[str] = []
        self.indexes: list[str] = []
        self.head_name: str | None = None
        # version 3: what this writer wrote, so that it need not read it back
        self.v3_heads: dict[str, Head] = {}
        self.index_docs: dict[str, dict[str, Any]] = {}
        self.snapshot_blobs: dict[str, set[bytes]] = {}
        self.snapshot_hosts: dict[str, str] = {}

    # -- plumbing --

    def _salt(self, what: str) -> bytes:
        self.counter += 1
        return self.rand(f"salt/{self.counter}/{what}", c2sp.SALT_SIZE)

    def _name(self, what: str) -> str:
        self.counter += 1
        return self.rand(f"name/{self.counter}/{what}", 32).hex()

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise FileExistsError(name)  # objects are written once
        path.write_bytes(data)

    def delete(self, name: str) -> None:
        (self.root / name).unlink()

    def seal_metadata(self, name: str, doc: Any) -> bytes:
        return seal_metadata(self.keys.metadata, self.repo_id, name, doc, self._salt(name))

    def put_metadata(self, name: str, doc: Any) -> None:
        self.put(name, self.seal_metadata(name, doc))

    # -- init --

    def config_bytes(self) -> bytes:
        fixed = MAGIC + bytes([self.version]) + self.repo_id
        mn, avg, mx = self.chunker
        body = _dumps({"version": self.version, "chunker": {"min": mn, "avg": avg, "max": mx}})
        salt = self._salt("config")
        return fixed + c2sp.encrypt_with_salt(
            self.keys.config, salt, CONFIG_CONTEXT + fixed, AES, body
        )

    def add_key(self, spec: sref.SlotSpec) -> str:
        name = f"keys/{self._name('key')}"
        self.put(name, encode_key_object(sref.make_slot(spec, self.repo_id, self.data_key)))
        return name

    def init(self, slots: list[sref.SlotSpec]) -> None:
        """Key objects first (and in version 2 the head with seq 0), the config last: the
        repository exists once it can be opened."""
        assert slots
        for spec in slots:
            self.add_key(spec)
        if self.version >= 2:
            self.first_head()
        self.put("config", self.config_bytes())

    def first_head(self, time: float = 0) -> str:
        """The head with seq 0 (version 2): no snapshots, no parent (version 3: no parents,
        written at ``time``)."""
        assert self.seq == 0
        assert self.head_name is None
        if self.version >= 3:
            return self.commit(time=time, base=[])
        name, stored = self.seal_head(0, [], [], None)
        self.put(name, stored)
        self.head_name = name
        return name

    # -- backup --

    def body(self, kind: int, plaintext: bytes) -> bytes:
        """The blob body: zstd unless the data starts like a compressed format or zstd does not
        shrink it by 3 %. (Tests override this to store malformed bodies.)"""
        if kind == KIND_DATA and plaintext.startswith(COMPRESSED_MAGIC):
            return encode_body(plaintext, False)
        body = encode_body(plaintext, True)
        if len(body) > (len(plaintext) + 5) * 97 // 100:
            return encode_body(plaintext, False)
        return body

    def tree_bytes(self, entries: list[dict[str, Any]]) -> bytes:
        """A tree blob's plaintext. (Tests override this to store malformed trees.)"""
        return _dumps({"entries": entries})

    def _seal_blob(self, kind: int, plaintext: bytes) -> tuple[bytes, bytes]:
        id_ = blob_id(self.keys.blob_id, plaintext)
        body = self.body(kind, plaintext)
        context = blob_context(self.repo_id, kind, id_)
        sealed = c2sp.encrypt_with_salt(self.keys.blob, self._salt("blob"), context, AES, body)
        return id_, sealed

    def _write_packs(self, kind: int, blobs: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        """Pack sealed blobs (id, sealed) of one kind; return the index entries of the packs."""
        groups: list[list[tuple[bytes, bytes]]] = []
        size = self.pack_size
        for b in blobs:
            if size >= self.pack_size:
                groups.append([])
                size = 0
            groups[-1].append(b)
            size += len(b[1])
        out = []
        for group in groups:
            name = self._name("pack")
            header = b"".join(struct.pack(">B32sI", kind, i, len(s)) for i, s in group)
            context = PACK_HEADER_CONTEXT + self.repo_id + name.encode("ascii")
            sealed_header = c2sp.encrypt_with_salt(
                self.keys.pack_header, self._salt("pack-header"), context, AES, header
            )
            body = b"".join(s for _, s in group)
            pack = body + sealed_header + struct.pack(">I", len(sealed_header))
            self.put(pack_object_name(name), pack)
            entries, offset = [], 0
            for i, s in group:
                entries.append([kind, i.hex(), offset, len(s)])
                offset += len(s)
            out.append({"id": name, "size": len(pack), "blobs": entries})
        return out

    def backup(
        self,
        roots: dict[str, Node_],
        *,
        time: float,
        started: float,
        paths: list[str],
        hostname: str = "host",
        username: str = "user",
        tags: list[str] | None = None,
        commit: bool = True,
        delete_old_head: bool = True,
        base: list[str] | None = None,
    ) -> str:
        """Store a snapshot of a root directory holding ``roots`` (one entry per backed-up path)
        and return its id: packs, then one index, then the snapshot, then the next head (the old
        head deleted after, unless ``delete_old_head`` is false). ``commit=False`` stops before
        the head, as an interrupted backup does: the snapshot is stored but not listed.

        Version 3: the writer starts from the heads ``base`` (by default the top heads), merged;
        it deduplicates only against blobs of their live packs, and commits a head on them."""
        new: dict[int, list[tuple[bytes, bytes]]] = {KIND_DATA: [], KIND_TREE: []}
        stats = {"files": 0, "dirs": 0, "bytes": 0, "blobs_added": 0}
        if self.version >= 3:
            base = self.top_heads() if base is None else base
            self.known = self.live_blobs(base)
        known_before = set(self.known)
        used: set[bytes] = set()

        def store(kind: int, plaintext: bytes) -> bytes:
            id_ = blob_id(self.keys.blob_id, plaintext)
            used.add(id_)
            if id_ not in self.known:
                self.known.add(id_)
                new[kind].append(self._seal_blob(kind, plaintext))
                stats["blobs_added"] += 1
            return id_

        def tree_of(entries: dict[str, Node_]) -> bytes:
            out = []
            for name in sorted(entries):
                node = entries[name]
                m = node.meta
                e: dict[str, Any] = {"name": name}
                if isinstance(node, File):
                    e["type"] = "file"
                elif isinstance(node, Dir):
                    e["type"] = "dir"
                else:
                    e["type"] = "symlink"
                e.update(
                    mode=m.mode,
                    mtime_ns=m.mtime_ns,
                    ctime_ns=m.ctime_ns,
                    ino=m.ino,
                    uid=m.uid,
                    gid=m.gid,
                )
                if isinstance(node, File):
                    chunks = split(self.keys.chunker, node.data, *self.chunker)
                    e["size"] = len(node.data)
                    e["content"] = [store(KIND_DATA, c).hex() for c in chunks]
                    stats["files"] += 1
                    stats["bytes"] += len(node.data)
                elif isinstance(node, Dir):
                    e["subtree"] = tree_of(node.entries).hex()
                    stats["dirs"] += 1
                else:
                    e["target"] = node.target
                out.append(e)
            return store(KIND_TREE, self.tree_bytes(out))

        tree = tree_of(roots).hex()
        packs = self._write_packs(KIND_DATA, new[KIND_DATA])
        packs += self._write_packs(KIND_TREE, new[KIND_TREE])
        index_name = f"index/{self._name('index')}" if packs else None
        if index_name is not None:
            self.put_metadata(index_name, {"packs": packs})
        snapshot_id = self._name("snapshot")
        doc = {
            "id": snapshot_id,
            "time": time,
            "started": started,
            "hostname": hostname,
            "username": username,
            "paths": paths,
            "tree": tree,
            "parent": self._snapshot_parent(hostname, base),
            "tags": tags or [],
            "stats": stats,
        }
        self.put_metadata(f"snapshots/{snapshot_id}", doc)
        self.snapshot_blobs[snapshot_id] = used
        self.snapshot_hosts[snapshot_id] = hostname
        if index_name is not None:
            self.index_docs[index_name] = {"packs": packs}
        if self.version >= 3:
            if commit:
                added = [index_name] if index_name is not None else []
                self.commit(time=time, base=base, add_snapshots=[snapshot_id], add_indexes=added)
            return snapshot_id
        if not commit:
            self.known = known_before  # its blobs are in packs no listed index names
            return snapshot_id
        if index_name is not None:
            self.indexes.append(index_name)
        self.snapshots.append(snapshot_id)
        self.write_head(delete_old=delete_old_head)
        return snapshot_id

    def seal_head(
        self, seq: int, snapshots: list[str], indexes: list[str], parent: str | None
    ) -> tuple[str, bytes]:
        """A version-2 head object (name, stored bytes); tests also make forks with it."""
        name = f"heads/{seq:016x}-{self._name('head')}"
        doc = {"seq": seq, "snapshots": snapshots, "indexes": indexes, "parent": parent}
        return name, self.seal_metadata(name, doc)

    def write_head(self, *, delete_old: bool = True) -> str:
        """The next head. Version 1: without parent, the old head deleted unless asked not to.
        Version 2: naming its parent, older heads kept (the spec deletes only beyond 100)."""
        self.seq += 1
        if self.version >= 2:
            assert self.head_name is not None, "init writes the first head"
            parent = head_hash((self.root / self.head_name).read_bytes())
            name, stored = self.seal_head(self.seq, self.snapshots, self.indexes, parent)
            self.put(name, stored)
            self.head_name = name
            return name
        name = f"heads/{self.seq:016x}-{self._name('head')}"
        doc = {"seq": self.seq, "snapshots": self.snapshots, "indexes": self.indexes}
        self.put_metadata(name, doc)
        if self.head_name is not None and delete_old:
            self.delete(self.head_name)
        self.head_name = name
        return name

    def forget(self, snapshot_id: str, *, time: float = 0, base: list[str] | None = None) -> None:
        """Drop a snapshot from the head, then delete its object (its blobs stay: no prune).
        Version 3: a head with a tombstone for it; its object stays until a prune deletes it
        after the grace period."""
        if self.version >= 3:
            self.commit(time=time, base=base, remove=[f"snapshots/{snapshot_id}"])
            return
        self.snapshots = [s for s in self.snapshots if s != snapshot_id]
        self.write_head()
        self.delete(f"snapshots/{snapshot_id}")

    # -- version 3 --

    def _snapshot_parent(self, hostname: str, base: list[str] | None) -> str | None:
        """A snapshot's ``parent``: version 1 and 2 the last listed snapshot; version 3 the last
        one of the same host among those the base lists."""
        if self.version < 3:
            return self.snapshots[-1] if self.snapshots else None
        snaps, _, _ = merge([self.v3_heads[n] for n in base or []])
        mine = [s for s in snaps if self.snapshot_hosts.get(s) == hostname]
        return mine[-1] if mine else None

    def top_heads(self) -> list[str]:
        """The names of the stored heads with the highest seq."""
        heads = [
            (int(m.group(1), 16), n)
            for n in object_names(self.root, "heads/")
            if (m := HEAD_NAME.fullmatch(n))
        ]
        top = max(s for s, _ in heads)
        return [n for s, n in heads if s == top]

    def pack_states(self, indexes: list[str]) -> dict[str, dict[str, Any]]:
        """Every pack the index objects list, once: {"id", "size", "blobs", "condemned"} where
        ``condemned`` is None when some listing has none, else the greatest time."""
        packs: dict[str, dict[str, Any]] = {}
        for index_name in indexes:
            for p in self.index_docs[index_name]["packs"]:
                when = p.get("condemned")
                seen = packs.get(p["id"])
                if seen is None:
                    packs[p["id"]] = {**p, "condemned": when}
                elif seen["condemned"] is not None:
                    seen["condemned"] = None if when is None else max(seen["condemned"], when)
        return packs

    def live_blobs(self, base: list[str]) -> set[bytes]:
        """Blobs a writer starting from ``base`` may deduplicate against: those of live packs."""
        _, indexes, _ = merge([self.v3_heads[n] for n in base])
        return {
            bytes.fromhex(b[1])
            for p in self.pack_states(indexes).values()
            if p["condemned"] is None
            for b in p["blobs"]
        }

    def seal_head_doc(self, seq: int, doc: dict[str, Any]) -> tuple[str, bytes]:
        """Any head document sealed under a new name with ``seq`` (tests make invalid ones)."""
        name = f"heads/{seq:016x}-{self._name('head')}"
        return name, self.seal_metadata(name, doc)

    def commit(
        self,
        *,
        time: float,
        base: list[str] | None = None,
        add_snapshots: list[str] | None = None,
        add_indexes: list[str] | None = None,
        remove: list[str] | None = None,
        keep_tombstone: Callable[[str, float], bool] | None = None,
    ) -> str:
        """Step 2 of a version-3 commit: the head on ``base`` (default: the top heads; [] for
        the head with seq 0), the merged lists with the additions appended and the names in
        ``remove`` taken out, the merged tombstones plus one per removed name. Returns its
        name."""
        assert self.version >= 3
        base = self.top_heads() if base is None else base
        heads = sorted((self.v3_heads[n] for n in base), key=lambda h: str(h.hash))
        snaps, indexes, dropped = merge(heads)
        gone = set(remove or [])
        for n in sorted(gone):
            dropped[n] = time
        if keep_tombstone is not None:
            dropped = {n: t for n, t in dropped.items() if keep_tombstone(n, t)}
        snaps = [s for s in snaps if f"snapshots/{s}" not in gone] + list(add_snapshots or [])
        indexes = [i for i in indexes if i not in gone] + list(add_indexes or [])
        seq = max((h.seq for h in heads), default=-1) + 1
        doc = {
            "seq": seq,
            "time": time,
            "parents": [[h.seq, h.hash] for h in heads],
            "snapshots": snaps,
            "indexes": indexes,
            "dropped": [[n, dropped[n]] for n in sorted(dropped)],
        }
        name, stored = self.seal_head_doc(seq, doc)
        self.put(name, stored)
        self.v3_heads[name] = parse_head_v3(name, seq, doc, stored, version=self.version)
        self.head_name = name
        self.seq = seq
        self.snapshots, self.indexes = snaps, indexes
        return name

    def prune(self, *, time: float, base: list[str] | None = None, grace: float = 86400) -> str:
        """Two-phase prune (version 3), steps 1 to 5, without repacking: condemn the live packs
        that hold no used blob, make live again the condemned packs holding a used blob that no
        live pack holds, store one index of every pack read (less condemned packs an earlier
        prune deleted) and commit a head replacing the indexes read with it; then delete what
        the grace period allows (the deleted packs stay listed, condemned). Returns the
        head."""
        assert self.version >= 3
        base = self.top_heads() if base is None else base
        snaps, indexes, _ = merge([self.v3_heads[n] for n in base])
        used = set().union(*(self.snapshot_blobs[s] for s in snaps))
        packs = self.pack_states(indexes)
        for pid in [k for k, p in packs.items() if p["condemned"] is not None]:
            if not (self.root / pack_object_name(pid)).is_file():
                del packs[pid]  # deleted by an earlier prune: dropped from the index now
        ids = {p["id"]: {bytes.fromhex(b[1]) for b in p["blobs"]} for p in packs.values()}
        for p in packs.values():
            if p["condemned"] is None and not ids[p["id"]] & used:
                p["condemned"] = time
        live = set().union(*(ids[p["id"]] for p in packs.values() if p["condemned"] is None))
        for p in packs.values():
            if p["condemned"] is not None and (ids[p["id"]] & used) - live:
                p["condemned"] = None
                live |= ids[p["id"]]
        doc = {
            "packs": [
                {k: v for k, v in p.items() if k != "condemned" or v is not None}
                for p in packs.values()
            ]
        }
        index_name = f"index/{self._name('index')}"
        self.put_metadata(index_name, doc)
        self.index_docs[index_name] = doc

        def keep(name: str, when: float) -> bool:
            return when > time - 86400 or (self.root / name).is_file()

        head = self.commit(
            time=time, base=base, add_indexes=[index_name], remove=indexes, keep_tombstone=keep
        )
        for p in packs.values():
            if p["condemned"] is not None and p["condemned"] <= time - grace:
                path = self.root / pack_object_name(p["id"])
                if path.is_file():
                    path.unlink()
        for name, when in self.v3_heads[head].dropped:
            if when <= time - grace and (self.root / name).is_file():
                self.delete(name)
        return head
