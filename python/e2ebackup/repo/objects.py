"""The repository's stored objects: names, the config, key objects, and encrypted metadata.

Layout on storage (normative in docs/FORMAT.md, section Repository)::

    config                    fixed header + config body encrypted under the config key
    keys/<id>                 one key slot each (adding a key never rewrites another)
    data/<id[:2]>/<id>        pack files of encrypted blobs
    index/<id>                encrypted lists of which blob is where
    snapshots/<id>            encrypted snapshot manifests
    heads/<seq>-<id>          encrypted list of the live snapshots and indexes (rollback checks)
    locks/<id>                encrypted lock records

Every encrypted object is one C2SP message whose context binds the repository id and the
object's name, so an object moved or copied to another name, or into another repository, does
not decrypt.
"""

from __future__ import annotations

import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import E2EBackupError, InvalidTag
from e2ebackup.keyslots import KeySlots
from e2ebackup.storage.base import Storage

MAGIC = b"E2EBREPO"
VERSION = 1
REPO_ID_SIZE = 16
_FIXED = struct.Struct(">8sB16s")

# HKDF labels of the key hierarchy (docs/FORMAT.md, Key hierarchy).
LABEL_CONFIG = b"e2ebackup/v1/repo/config"
LABEL_METADATA = b"e2ebackup/v1/repo/metadata"
LABEL_BLOB = b"e2ebackup/v1/repo/blob"
LABEL_BLOB_ID = b"e2ebackup/v1/repo/blob-id"
LABEL_CHUNKER = b"e2ebackup/v1/repo/chunker"
LABEL_PACK = b"e2ebackup/v1/repo/pack-header"

KIND_DATA = 0
KIND_TREE = 1


class NotARepository(E2EBackupError):
    """There is no e2ebackup repository at that location (or its config is unreadable)."""


class RepositoryCorrupted(E2EBackupError):
    """An object of the repository is missing, damaged, replayed or does not authenticate."""


def new_id() -> str:
    """A random object name: 32 bytes from the OS CSPRNG, hex."""
    return secrets.token_hex(32)


def derive(data_key: bytes, label: bytes) -> bytes:
    return _core.hkdf_sha256(data_key, info=label)


@dataclass
class RepoKeys:
    """Every key of one repository, derived from its data key."""

    repo_id: bytes
    config: bytes
    metadata: bytes
    blob: bytes
    blob_id: bytes
    chunker: bytes
    pack: bytes

    @classmethod
    def from_data_key(cls, data_key: bytes, repo_id: bytes) -> RepoKeys:
        return cls(
            repo_id,
            derive(data_key, LABEL_CONFIG),
            derive(data_key, LABEL_METADATA),
            derive(data_key, LABEL_BLOB),
            derive(data_key, LABEL_BLOB_ID),
            derive(data_key, LABEL_CHUNKER),
            derive(data_key, LABEL_PACK),
        )

    def codec(self) -> _core.BlobCodec:
        return _core.BlobCodec(self.blob_id, self.blob, self.repo_id)

    def __repr__(self) -> str:
        return f"RepoKeys(repo_id={self.repo_id.hex()}, <keys hidden>)"


def _context(domain: bytes, repo_id: bytes, name: str) -> bytes:
    return domain + b"\x00" + repo_id + name.encode()


def seal_json(keys: RepoKeys, name: str, value: Any) -> bytes:
    """An encrypted JSON metadata object, bound to the repository and its own name."""
    body = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return _core.encrypt(keys.metadata, body, context=_context(LABEL_METADATA, keys.repo_id, name))


def open_json(keys: RepoKeys, name: str, blob: bytes) -> Any:
    try:
        body = _core.decrypt(
            keys.metadata, blob, context=_context(LABEL_METADATA, keys.repo_id, name)
        )
    except InvalidTag:
        raise RepositoryCorrupted(
            f"{name} does not authenticate (modified, moved or replayed)"
        ) from None
    return json.loads(body)


def write_json(storage: Storage, keys: RepoKeys, name: str, value: Any) -> None:
    storage.put_bytes(name, seal_json(keys, name, value))


def read_json(storage: Storage, keys: RepoKeys, name: str) -> Any:
    return open_json(keys, name, storage.read(name))


# -- config -------------------------------------------------------------------------------------


def encode_config(keys: RepoKeys, body: dict[str, Any]) -> bytes:
    fixed = _FIXED.pack(MAGIC, VERSION, keys.repo_id)
    sealed = _core.encrypt(
        keys.config,
        json.dumps(body, sort_keys=True).encode(),
        context=LABEL_CONFIG + b"\x00" + fixed,
    )
    return fixed + sealed


def parse_config_header(blob: bytes) -> bytes:
    """The repository id, from the config's fixed header."""
    if len(blob) < _FIXED.size or not blob.startswith(MAGIC):
        raise NotARepository("not an e2ebackup repository (no config)")
    _, version, repo_id = _FIXED.unpack(blob[: _FIXED.size])
    if version != VERSION:
        raise NotARepository(f"repository format version {version} is not supported")
    return bytes(repo_id)


def decode_config(keys: RepoKeys, blob: bytes) -> dict[str, Any]:
    fixed = blob[: _FIXED.size]
    try:
        body = _core.decrypt(
            keys.config, blob[_FIXED.size :], context=LABEL_CONFIG + b"\x00" + fixed
        )
    except InvalidTag:
        raise RepositoryCorrupted("the repository config does not authenticate") from None
    value = json.loads(body)
    if not isinstance(value, dict):
        raise RepositoryCorrupted("the repository config is malformed")
    return value


# -- key objects --------------------------------------------------------------------------------


def key_object_name(slot_id: str) -> str:
    return f"keys/{slot_id}"


def load_key_slots(storage: Storage, repo_id: bytes) -> tuple[KeySlots, list[str]]:
    """All key slots, one per ``keys/`` object, with the object names in the same order."""
    slots = KeySlots(repo_id)
    names: list[str] = []
    for info in sorted(storage.list("keys/"), key=lambda o: o.name):
        one = KeySlots.decode(repo_id, storage.read(info.name))
        slots.damaged_kinds.extend(one.damaged_kinds)
        slots.unknown.extend(one.unknown)
        for slot in one.slots:
            slots.slots.append(slot)
            names.append(info.name)
    return slots, names


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"
