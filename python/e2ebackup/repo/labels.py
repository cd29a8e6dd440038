"""The repository's key hierarchy: the HKDF labels, the keys derived from the data key under
them (docs/FORMAT.md, Key hierarchy), and the blob kinds the blob codec binds. No storage, no
encoding: ``codec`` encrypts objects with these keys, ``names`` names them."""

from __future__ import annotations

from dataclasses import dataclass

from e2ebackup import _core
from e2ebackup.errors import InvalidArgument

__all__ = [
    "KIND_DATA",
    "KIND_TREE",
    "LABEL_BLOB",
    "LABEL_BLOB_ID",
    "LABEL_CHUNKER",
    "LABEL_CONFIG",
    "LABEL_METADATA",
    "LABEL_PACK",
    "RepoKeys",
    "derive",
]

# HKDF labels of the key hierarchy (docs/FORMAT.md, Key hierarchy).
LABEL_CONFIG = b"e2ebackup/v1/repo/config"
LABEL_METADATA = b"e2ebackup/v1/repo/metadata"
LABEL_BLOB = b"e2ebackup/v1/repo/blob"
LABEL_BLOB_ID = b"e2ebackup/v1/repo/blob-id"
LABEL_CHUNKER = b"e2ebackup/v1/repo/chunker"
LABEL_PACK = b"e2ebackup/v1/repo/pack-header"

KIND_DATA = 0
KIND_TREE = 1


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

    def only(self, *names: str) -> RepoKeys:
        """These keys with every other one blanked: what a worker that needs only ``names``
        (``"blob"``, ``"pack"``...) is sent, so that it never holds the rest."""
        fields = ("config", "metadata", "blob", "blob_id", "chunker", "pack")
        unknown = set(names) - set(fields)
        if unknown:
            raise InvalidArgument(f"no such repository key: {', '.join(sorted(unknown))}")
        return RepoKeys(self.repo_id, *(getattr(self, f) if f in names else b"" for f in fields))

    def codec(self) -> _core.BlobCodec:
        return _core.BlobCodec(self.blob_id, self.blob, self.repo_id)

    def __repr__(self) -> str:
        return f"RepoKeys(repo_id={self.repo_id.hex()}, <keys hidden>)"
