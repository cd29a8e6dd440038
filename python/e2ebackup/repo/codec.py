"""Encrypted metadata objects and the config: JSON sealed under the repository's keys, each
bound to its repository and its own name. Which keys is ``labels``'s; which names, ``names``'s.

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
import struct
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import InvalidTag, NotARepository, RepositoryCorrupted
from e2ebackup.repo.labels import LABEL_CONFIG, LABEL_METADATA, RepoKeys
from e2ebackup.storage.base import Storage

__all__ = [
    "MAGIC",
    "REPO_ID_SIZE",
    "VERSION",
    "VERSIONS",
    "decode_config",
    "encode_config",
    "open_json",
    "parse_config_header",
    "read_json",
    "seal_json",
    "write_json",
]

MAGIC = b"E2EBREPO"
VERSION = 4  # new repositories: many writers, and writers that cannot read (drops)
VERSIONS = (1, 2, 3, 4)  # what this version opens
REPO_ID_SIZE = 16
_FIXED = struct.Struct(">8sB16s")


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
