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
import re
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import (
    HistoryForked as HistoryForked,
    HistoryNotTrusted as HistoryNotTrusted,
    HistoryUnverifiable as HistoryUnverifiable,
    InvalidTag,
    NotARepository as NotARepository,
    RepositoryCorrupted as RepositoryCorrupted,
    RolledBack as RolledBack,
)
from e2ebackup.storage.base import Storage

MAGIC = b"E2EBREPO"
VERSION = 2  # new repositories: heads name their parent (docs/FORMAT.md, Heads)
VERSIONS = (1, 2)  # what this version opens
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
    return _loads(body, name)


def _loads(body: bytes, what: str) -> Any:
    """JSON from authenticated bytes, which a holder of the key may still have made invalid
    (not UTF-8, not JSON, nested past the parser's recursion limit): a damaged object."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RepositoryCorrupted(f"{what} is not valid JSON") from None


def write_json(storage: Storage, keys: RepoKeys, name: str, value: Any) -> None:
    storage.put_bytes(name, seal_json(keys, name, value))


def read_json(storage: Storage, keys: RepoKeys, name: str) -> Any:
    return open_json(keys, name, storage.read(name))


# -- config -------------------------------------------------------------------------------------


def encode_config(keys: RepoKeys, body: dict[str, Any]) -> bytes:
    fixed = _FIXED.pack(MAGIC, body["version"], keys.repo_id)
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
    if version not in VERSIONS:
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
    value = _loads(body, "the repository config")
    if not isinstance(value, dict) or value.get("version") != blob[len(MAGIC)]:
        raise RepositoryCorrupted("the repository config is malformed")
    return value


# -- key objects --------------------------------------------------------------------------------


def key_object_name(slot_id: str) -> str:
    return f"keys/{slot_id}"


_ID = re.compile(r"[0-9a-f]{64}")


def is_id(value: object) -> bool:
    """Whether ``value`` is an object id: 64 lowercase hex digits."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, what: str) -> str:
    """``value`` if it is an object id, else :class:`RepositoryCorrupted`. Every id read from
    storage (an index's pack ids, a head's snapshot ids and index names, a listing) passes
    here before it becomes part of an object name: a name like ``thesis.docx`` must never
    reach a path (defence in depth beside the storage's own refusal of links)."""
    if not is_id(value):
        raise RepositoryCorrupted(f"{what} id {str(value)[:80]!r} is malformed")
    return str(value)


def pack_name(pack_id: str) -> str:
    pack_id = check_id(pack_id, "pack")
    return f"data/{pack_id[:2]}/{pack_id}"
