"""The index: which blob is in which pack, at which offset. Kept in memory while the
repository is open (about 150 bytes a blob: 100k blobs is about 15 MB) and stored as
encrypted ``index/`` objects, one per backup or prune."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from e2ebackup._parallel import ordered_map
from e2ebackup.errors import RepositoryCorrupted
from e2ebackup.repo.codec import read_json, write_json
from e2ebackup.repo.labels import KIND_DATA, KIND_TREE, RepoKeys
from e2ebackup.repo.names import is_id, new_id
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.storage.base import Storage


class Index:
    def __init__(self) -> None:
        self._blobs: dict[bytes, BlobLocation] = {}
        self.pack_sizes: dict[str, int] = {}
        self._new: dict[str, list[tuple[bytes, BlobLocation]]] = {}
        self._lock = threading.Lock()
        self.names: list[str] = []

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def get(self, blob_id: bytes) -> BlobLocation:
        try:
            return self._blobs[blob_id]
        except KeyError:
            raise RepositoryCorrupted(f"blob {blob_id.hex()[:16]} is not in the index") from None

    def items(self) -> Iterator[tuple[bytes, BlobLocation]]:
        return iter(list(self._blobs.items()))

    def add_pack(
        self,
        pack_id: str,
        size: int,
        entries: Iterable[tuple[bytes, BlobLocation]],
        *,
        new: bool = True,
    ) -> None:
        entries = list(entries)
        with self._lock:
            self.pack_sizes[pack_id] = size
            for blob_id, loc in entries:
                self._blobs.setdefault(blob_id, loc)
            if new:
                self._new[pack_id] = entries

    def has_new(self) -> bool:
        return bool(self._new)

    def save_new(self, storage: Storage, keys: RepoKeys) -> str | None:
        """Writes the packs added since the last save as one ``index/`` object."""
        with self._lock:
            if not self._new:
                return None
            packs = [
                {
                    "id": pack_id,
                    "size": self.pack_sizes[pack_id],
                    "blobs": [
                        [loc.kind, bid.hex(), loc.offset, loc.length] for bid, loc in entries
                    ],
                }
                for pack_id, entries in self._new.items()
            ]
            self._new = {}
        name = f"index/{new_id()}"
        write_json(storage, keys, name, {"packs": packs})
        self.names.append(name)
        return name

    @classmethod
    def load(cls, storage: Storage, keys: RepoKeys, names: Iterable[str]) -> Index:
        index = cls()
        names = list(names)

        def fetch(name: str) -> Any:
            return read_json(storage, keys, name)

        # A remote store answers faster several at once (a year of daily backups is 365 index
        # objects until a prune merges them).
        fetched = ordered_map(fetch, names, threads=storage.read_concurrency)
        for name, value in zip(names, fetched, strict=True):
            try:
                for pack in value["packs"]:
                    pack_id, size = pack["id"], pack["size"]
                    if not is_id(pack_id) or not _count(size):
                        raise ValueError
                    entries = [_entry(b, pack_id, size) for b in pack["blobs"]]
                    index.add_pack(pack_id, size, entries, new=False)
            except (KeyError, TypeError, ValueError, IndexError):
                raise RepositoryCorrupted(f"{name} is malformed") from None
            index.names.append(name)
        return index


def _count(value: object) -> bool:
    """A JSON integer that can be a size or an offset (not a bool, not a float)."""
    return type(value) is int and 0 <= value < 1 << 63


def _entry(blob: Any, pack_id: str, pack_size: int) -> tuple[bytes, BlobLocation]:
    """One ``[kind, id hex, offset, length]`` of an index, checked: the names and numbers in an
    index decide which objects are read and deleted, so nothing odd is let through (an id that
    is not 64 hex digits, a blob outside its pack)."""
    kind, blob_id, offset, length = blob
    if (
        kind not in (KIND_DATA, KIND_TREE)
        or type(kind) is not int
        or not is_id(blob_id)
        or not (_count(offset) and _count(length))
        or offset + length > pack_size
    ):
        raise ValueError
    return bytes.fromhex(blob_id), BlobLocation(kind, pack_id, offset, length)
