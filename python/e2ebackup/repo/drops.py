"""Drops: snapshots added by writers that cannot read (docs/FORMAT.md, "Writers that cannot
read (version 4)", is normative).

A *writer token* (issued by anyone who can open the repository) holds the repository's writer
recipient ``W`` and the writer's authentication key ``WA``. A writer seals each backup's
session key ``SK`` to ``W`` and authenticates the drop with a key derived from ``WA``: the
token opens nothing, and once ``SK`` is gone the writer cannot read what it wrote. Readers
derive ``W``'s identity and every writer's ``WA`` from the data key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import (
    CorruptKeySlot,
    E2EBackupError,
    InvalidArgument,
    InvalidTag,
    KeyMismatch,
    NoMatchingKeySlot,
    RepositoryCorrupted,
)
from e2ebackup.keyring.slots import KIND_RECIPIENT, KeySlots
from e2ebackup.recipients import Identity, Recipient, bech32_decode, bech32_encode
from e2ebackup.repo.index import parse_pack
from e2ebackup.repo.labels import RepoKeys, derive
from e2ebackup.repo.names import is_id
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.repo.tree import snapshot_fields_valid

__all__ = [
    "MAGIC",
    "TOKEN_HRP",
    "Drop",
    "WriterToken",
    "drop_keys",
    "is_drop_name",
    "open_drop",
    "seal_drop",
    "writer_identity",
]

MAGIC = b"E2EBDROP"
DROP_VERSION = 1
TOKEN_HRP = "e2ebackup-writer-"  # noqa: S105 (a Bech32 prefix, not a secret)

LABEL_WRITER_IDENTITY = b"e2ebackup/v4/repo/writer-identity"
LABEL_WRITER_AUTH = b"e2ebackup/v4/repo/writer-auth"
LABEL_DROP_MAC_KEY = b"e2ebackup/v4/writer/drop-mac"
LABEL_WRITER_BLOB_ID = b"e2ebackup/v4/writer/blob-id"
LABEL_WRITER_CHUNKER = b"e2ebackup/v4/writer/chunker"
LABEL_DROP_METADATA = b"e2ebackup/v4/drop/metadata"
LABEL_DROP_BLOB = b"e2ebackup/v4/drop/blob"
LABEL_DROP_PACK = b"e2ebackup/v4/drop/pack-header"
CONTEXT_DROP = b"e2ebackup/v4/repo/drop"
CONTEXT_MAC = b"e2ebackup/v4/repo/drop-mac"
CONTEXT_SLOTS = b"e2ebackup/v4/repo/drop-slots"
#: A drop's slot area: 32 recipient slots take about 40 KB.
MAX_SLOTS_LEN = 65536

WRITER_ID_SIZE = 16
MAC_SIZE = 32
MAX_SEQ = 1 << 53
_FIXED = struct.Struct(">8sB16s")
_LENGTH = struct.Struct(">I")
_DROP_NAME = re.compile(r"^drops/[0-9a-f]{64}\Z")
_WRITER_HEX = re.compile(r"^[0-9a-f]{32}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


def is_drop_name(name: str) -> bool:
    return bool(_DROP_NAME.match(name))


def writer_identity(data_key: bytes) -> Identity:
    """The identity every drop is sealed to; its recipient is ``W``, in every token."""
    return Identity(derive(data_key, LABEL_WRITER_IDENTITY))


def _writer_auth(data_key: bytes, writer_id: bytes) -> bytes:
    return _core.hkdf_sha256(data_key, info=LABEL_WRITER_AUTH + writer_id)


def drop_keys(repo_id: bytes, auth: bytes, session_key: bytes) -> RepoKeys:
    """The keys a drop's objects are under: the session's (metadata, blob, pack header) and
    the writer's (blob ids, chunker). No config key: a writer has none."""
    return RepoKeys(
        repo_id,
        b"",
        derive(session_key, LABEL_DROP_METADATA),
        derive(session_key, LABEL_DROP_BLOB),
        derive(auth, LABEL_WRITER_BLOB_ID),
        derive(auth, LABEL_WRITER_CHUNKER),
        derive(session_key, LABEL_DROP_PACK),
    )


class WriterToken:
    """What a writer holds: the repository id, its writer id, its authentication key and the
    repository's writer recipient. Hidden from ``repr``; :meth:`secret` is its text."""

    __slots__ = ("_auth", "recipient", "repo_id", "writer_id")

    def __init__(self, repo_id: bytes, writer_id: bytes, auth: bytes, recipient: Recipient):
        if len(repo_id) != 16 or len(writer_id) != WRITER_ID_SIZE or len(auth) != 32:
            raise InvalidArgument("a writer token's ids and key have the wrong sizes")
        self.repo_id = bytes(repo_id)
        self.writer_id = bytes(writer_id)
        self._auth = bytes(auth)
        self.recipient = recipient

    @classmethod
    def issue(cls, data_key: bytes, repo_id: bytes) -> WriterToken:
        """A new writer of the repository whose data key is ``data_key``."""
        writer_id = _core.generate_key()[:WRITER_ID_SIZE]
        return cls(
            repo_id,
            writer_id,
            _writer_auth(data_key, writer_id),
            writer_identity(data_key).recipient,
        )

    @classmethod
    def parse(cls, text: str) -> WriterToken:
        """From its ``E2EBACKUP-WRITER-1...`` text (surrounding space ignored)."""
        if not isinstance(text, str):
            raise InvalidArgument("a writer token is given as text")
        hrp, data = bech32_decode(text.strip())
        if hrp != TOKEN_HRP:
            raise InvalidArgument("not an e2ebackup writer token")
        if len(data) != 16 + WRITER_ID_SIZE + 32 + _core.RECIPIENT_PUBLIC_SIZE:
            raise InvalidArgument("a writer token has the wrong length")
        return cls(data[:16], data[16:32], data[32:64], Recipient(data[64:]))

    def secret(self) -> str:
        """The token's text: it lets its holder add drops as this writer (it opens nothing)."""
        data = self.repo_id + self.writer_id + self._auth + self.recipient.public
        return bech32_encode(TOKEN_HRP, data).upper()

    @property
    def auth(self) -> bytes:
        return self._auth

    def __repr__(self) -> str:
        rid, wid = self.repo_id.hex(), self.writer_id.hex()
        return f"WriterToken(repo={rid}, writer={wid}, <key hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a writer token cannot be pickled (it would copy its key)")


@dataclass
class Drop:
    """An opened, checked drop."""

    name: str
    digest: str  # SHA-256 hex of the stored bytes
    writer: str  # 32 hex
    seq: int
    prev: tuple[str, str] | None
    time: float
    snapshot: dict[str, Any]
    packs: list[tuple[str, int, list[tuple[bytes, BlobLocation]]]]
    #: The writer's chunker sizes: a restore refuses a data blob over its ``max``.
    chunker: dict[str, int]
    keys: RepoKeys = field(repr=False)

    @property
    def snapshot_id(self) -> str:
        return str(self.snapshot["id"])


def _mac(auth: bytes, name: str, signed: bytes) -> bytes:
    key = derive(auth, LABEL_DROP_MAC_KEY)
    return hmac.new(key, CONTEXT_MAC + b"\x00" + name.encode() + signed, hashlib.sha256).digest()


def _body_context(repo_id: bytes, name: str) -> bytes:
    return CONTEXT_DROP + b"\x00" + repo_id + name.encode()


def _container_id(repo_id: bytes, name: str) -> bytes:
    """The slots' container id: bound to the drop, and never a repository's (whose slots wrap
    the data key, where a drop's wrap a session key)."""
    return hashlib.sha256(CONTEXT_SLOTS + b"\x00" + repo_id + name.encode()).digest()[:16]


def seal_drop(name: str, token: WriterToken, session_key: bytes, value: dict[str, Any]) -> bytes:
    """The stored bytes of the drop ``name``: ``session_key`` sealed to the token's recipient,
    ``value`` (the JSON of FORMAT.md) under the session's metadata key, the writer's MAC."""
    if not is_drop_name(name):
        raise InvalidArgument(f"{name!r} is not a drop name")
    keys = drop_keys(token.repo_id, token.auth, session_key)
    slots = KeySlots(_container_id(token.repo_id, name))
    slots.add_recipient(session_key, token.recipient)
    area = slots.encode()
    body_json = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    body = _core.encrypt(keys.metadata, body_json, context=_body_context(token.repo_id, name))
    signed = (
        _FIXED.pack(MAGIC, DROP_VERSION, token.repo_id)
        + _LENGTH.pack(len(area))
        + area
        + _LENGTH.pack(len(body))
        + body
    )
    return signed + _mac(token.auth, name, signed)


def _split(name: str, stored: bytes, repo_id: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(area, body, signed, mac) of a drop's bytes, by step 1 of FORMAT.md."""

    def damaged(why: str) -> RepositoryCorrupted:
        return RepositoryCorrupted(f"{name} is damaged: {why}")

    view = memoryview(stored)
    if len(view) < _FIXED.size + 2 * _LENGTH.size + MAC_SIZE:
        raise damaged("too short")
    magic, version, rid = _FIXED.unpack(view[: _FIXED.size])
    if magic != MAGIC or version != DROP_VERSION:
        raise damaged("not a drop of this format version")
    if rid != repo_id:
        raise damaged("made for another repository")
    at = _FIXED.size
    (area_len,) = _LENGTH.unpack(view[at : at + 4])
    at += 4
    if area_len > MAX_SLOTS_LEN:
        raise damaged(f"its slot area is over {MAX_SLOTS_LEN} bytes")
    area = view[at : at + area_len]
    at += area_len
    if len(area) != area_len or at + 4 > len(view):
        raise damaged("its slot area runs past its end")
    (body_len,) = _LENGTH.unpack(view[at : at + 4])
    at += 4
    body = view[at : at + body_len]
    at += body_len
    if len(body) != body_len or at + MAC_SIZE != len(view):
        raise damaged("its body runs past its end, or bytes trail its MAC")
    return bytes(area), bytes(body), bytes(view[:at]), bytes(view[at:])


def open_drop(name: str, stored: bytes, *, repo_id: bytes, data_key: bytes) -> Drop:
    """The drop ``name`` from its stored bytes, checked by FORMAT.md's four reader rules;
    :class:`RepositoryCorrupted` names the first rule it breaks."""
    if not is_drop_name(name):
        raise RepositoryCorrupted(f"{name} is not a drop name")
    area, body, signed, mac = _split(name, stored, repo_id)
    try:
        slots = KeySlots.decode(_container_id(repo_id, name), area)
    except CorruptKeySlot:
        raise RepositoryCorrupted(f"{name} is damaged: its slot area does not parse") from None
    if (
        slots.unknown
        or any(s.kind != KIND_RECIPIENT for s in slots.slots)
        or any(k != KIND_RECIPIENT for k in slots.damaged_kinds)
    ):
        raise RepositoryCorrupted(f"{name} is damaged: it holds a slot that is not a recipient's")
    try:
        session_key = slots.unlock_identity(writer_identity(data_key))
    except (NoMatchingKeySlot, CorruptKeySlot, KeyMismatch):
        raise RepositoryCorrupted(
            f"{name} is damaged: no slot opens with this repository's writer identity"
        ) from None
    metadata = derive(session_key, LABEL_DROP_METADATA)
    try:
        plain = _core.decrypt(metadata, body, context=_body_context(repo_id, name))
    except InvalidTag:
        raise RepositoryCorrupted(f"{name} is damaged: its body does not authenticate") from None
    try:
        value = json.loads(plain)
    except (ValueError, RecursionError):
        raise RepositoryCorrupted(f"{name} is damaged: its body is not valid JSON") from None
    writer = value.get("writer") if isinstance(value, dict) else None
    if not isinstance(writer, str) or not _WRITER_HEX.match(writer):
        raise RepositoryCorrupted(f"{name} is damaged: no writer id")
    auth = _writer_auth(data_key, bytes.fromhex(writer))
    if not hmac.compare_digest(_mac(auth, name, signed), mac):
        raise RepositoryCorrupted(
            f"{name} is damaged: its MAC does not match its writer (forged or modified)"
        )
    return _fields(name, stored, writer, value, drop_keys(repo_id, auth, session_key))


def _fields(name: str, stored: bytes, writer: str, value: dict[str, Any], keys: RepoKeys) -> Drop:
    """Step 4: the fields of an authenticated drop."""
    seq, prev, when, snapshot, packs = (
        value.get("seq"),
        value.get("prev"),
        value.get("time"),
        value.get("snapshot"),
        value.get("packs"),
    )
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise RepositoryCorrupted(f"{name} is damaged: its seq is not 1 to 2^53")
    if (prev is None) != (seq == 1) or (
        prev is not None
        and not (
            isinstance(prev, list)
            and len(prev) == 2
            and isinstance(prev[0], str)
            and is_drop_name(prev[0])
            and isinstance(prev[1], str)
            and _HEX64.match(prev[1])
        )
    ):
        raise RepositoryCorrupted(f"{name} is damaged: its prev does not fit its seq")
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        raise RepositoryCorrupted(f"{name} is damaged: its time is not a Unix time")
    if not (math.isfinite(when) and 0 <= when <= 1 << 34):
        raise RepositoryCorrupted(f"{name} is damaged: its time is not a Unix time")
    if (
        not isinstance(snapshot, dict)
        or not is_id(snapshot.get("id"))
        or not snapshot_fields_valid(snapshot)
    ):
        raise RepositoryCorrupted(f"{name} is damaged: its snapshot is malformed")
    chunker = value.get("chunker")
    try:
        if not isinstance(chunker, dict) or set(chunker) != {"min", "avg", "max"}:
            raise TypeError
        if any(type(v) is not int for v in chunker.values()):
            raise TypeError
        _core.Chunker(
            keys.chunker,
            min_size=chunker["min"],
            avg_size=chunker["avg"],
            max_size=chunker["max"],
        )
    except (TypeError, ValueError, OverflowError, E2EBackupError):
        raise RepositoryCorrupted(
            f"{name} is damaged: its chunker sizes break the limits"
        ) from None
    if not isinstance(packs, list):
        raise RepositoryCorrupted(f"{name} is damaged: no pack list")
    try:
        parsed = [parse_pack(p, condemned=False) for p in packs]
    except (KeyError, TypeError, ValueError, IndexError):
        raise RepositoryCorrupted(f"{name} is damaged: a pack entry is malformed") from None
    if len({p[0] for p in parsed}) != len(parsed):
        raise RepositoryCorrupted(f"{name} is damaged: it lists a pack twice")
    return Drop(
        name,
        hashlib.sha256(stored).hexdigest(),
        writer,
        seq,
        (prev[0], prev[1]) if prev is not None else None,
        float(when),
        snapshot,
        [(p[0], p[1], p[2]) for p in parsed],
        dict(chunker),
        keys,
    )
