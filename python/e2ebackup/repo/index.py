"""The index: which blob is in which pack, at which offset. Kept in memory while the
repository is open (about 160 bytes a blob: 1M blobs is about 160 MB) and stored as
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

__all__ = ["Index", "parse_pack"]

# A blob's place is held as one integer, not a BlobLocation (161 bytes a blob with its id and
# the dict's slot, against 286): the pack's number in ``Index._pack_ids``, the offset and the
# length (each below 2^63, as the index objects' numbers are), and the kind (0 or 1).
_FIELD = 64
_MASK = (1 << _FIELD) - 1


def _pack_number(code: int) -> int:
    return code >> (2 * _FIELD + 1)


class Index:
    """Which blob is where. In a version-3 repository a pack may be *condemned* (a prune marked
    it for deletion, docs/FORMAT.md, Many writers): a pack listed live by any index is live;
    otherwise the greatest ``condemned`` time counts. Blobs that only condemned packs hold are
    left out of :meth:`get` and ``in`` (a backup must not deduplicate against them) but found
    by :meth:`locate` and :meth:`find` (a restore may read them)."""

    def __init__(self) -> None:
        # Every (pack, blob) entry is in exactly one of these three: the live location of a
        # blob, the condemned location of a blob no live pack holds, or a further copy.
        self._blobs: dict[bytes, int] = {}  # blob id: its place (see _FIELD)
        self._condemned_blobs: dict[bytes, int] = {}
        self._pack_ids: list[str] = []  # by number; one shared string a pack
        self._pack_numbers: dict[str, int] = {}
        self._copies: dict[str, list[tuple[bytes, BlobLocation]]] = {}
        #: Every listed pack, live or condemned, and its size.
        self.pack_sizes: dict[str, int] = {}
        #: Version 3: the condemned packs and the time each was condemned (the greatest).
        self.condemned: dict[str, float] = {}
        self._new: dict[str, tuple[list[tuple[bytes, BlobLocation]], float | None]] = {}
        self._lock = threading.Lock()
        self.names: list[str] = []

    def __contains__(self, blob_id: object) -> bool:
        """Whether a live pack holds the blob: what a backup may deduplicate against."""
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def _encode(self, loc: BlobLocation) -> int:
        number = self._pack_numbers.get(loc.pack)
        if number is None:
            number = self._pack_numbers[loc.pack] = len(self._pack_ids)
            self._pack_ids.append(loc.pack)
        if not (0 <= loc.offset <= _MASK and 0 <= loc.length <= _MASK and loc.kind in (0, 1)):
            raise ValueError("a blob place out of range")  # parse_pack lets none through
        return (((number << _FIELD | loc.offset) << _FIELD | loc.length) << 1) | loc.kind

    def _decode(self, code: int) -> BlobLocation:
        return BlobLocation(
            code & 1,
            self._pack_ids[_pack_number(code)],
            (code >> (_FIELD + 1)) & _MASK,
            (code >> 1) & _MASK,
        )

    def get(self, blob_id: bytes) -> BlobLocation:
        """The blob's place in a live pack (what a backup may reuse)."""
        try:
            return self._decode(self._blobs[blob_id])
        except KeyError:
            raise RepositoryCorrupted(f"blob {blob_id.hex()[:16]} is not in the index") from None

    def find(self, blob_id: bytes) -> BlobLocation | None:
        """The blob's place for reading: in a live pack, else in a condemned one, else None."""
        code = self._blobs.get(blob_id)
        if code is None:
            code = self._condemned_blobs.get(blob_id)
        return None if code is None else self._decode(code)

    def locate(self, blob_id: bytes) -> BlobLocation:
        """The blob's place for reading (restore, verify): a condemned pack is read when no
        live pack holds the blob (it is deleted only after the grace period)."""
        loc = self.find(blob_id)
        if loc is None:
            raise RepositoryCorrupted(f"blob {blob_id.hex()[:16]} is not in the index")
        return loc

    def items(self) -> Iterator[tuple[bytes, BlobLocation]]:
        """Every blob once, at the place :meth:`locate` reads it from."""
        held = list(self._blobs.items()) + list(self._condemned_blobs.items())
        return ((blob_id, self._decode(code)) for blob_id, code in held)

    def live_ids(self) -> list[bytes]:
        """The ids of the blobs a live pack holds (what a backup may deduplicate against)."""
        return list(self._blobs)

    def pack_entries(self) -> dict[str, list[tuple[bytes, BlobLocation]]]:
        """Every listed pack's blobs, including those another pack holds too (two writers of a
        version-3 repository may store the same blob)."""
        packs: dict[str, list[tuple[bytes, BlobLocation]]] = {p: [] for p in self.pack_sizes}
        for table in (self._blobs, self._condemned_blobs):
            for blob_id, code in table.items():
                loc = self._decode(code)
                packs[loc.pack].append((blob_id, loc))
        for pack_id, copies in self._copies.items():
            packs[pack_id].extend(copies)
        return packs

    def add_pack(
        self,
        pack_id: str,
        size: int,
        entries: Iterable[tuple[bytes, BlobLocation]],
        *,
        new: bool = True,
        condemned: float | None = None,
    ) -> None:
        """Adds a pack, live or (version 3) ``condemned`` at that time. A pack listed live
        once is live, however often it is listed condemned."""
        entries = list(entries)
        with self._lock:
            known = pack_id in self.pack_sizes
            self.pack_sizes[pack_id] = size
            if new:
                self._new[pack_id] = (entries, condemned)
            if condemned is not None and (not known or pack_id in self.condemned):
                self.condemned[pack_id] = max(condemned, self.condemned.get(pack_id, condemned))
                for blob_id, loc in entries:
                    self._place_condemned(blob_id, loc)
                return
            if pack_id in self.condemned:
                self._revive(pack_id)
            for blob_id, loc in entries:
                self._place_live(blob_id, loc)

    def _place_live(self, blob_id: bytes, loc: BlobLocation) -> None:
        held = self._blobs.get(blob_id)
        if held is None:
            self._blobs[blob_id] = self._encode(loc)
            other = self._condemned_blobs.pop(blob_id, None)
            if other is not None:
                moved = self._decode(other)
                self._copies.setdefault(moved.pack, []).append((blob_id, moved))
        elif self._pack_ids[_pack_number(held)] != loc.pack:
            self._copies.setdefault(loc.pack, []).append((blob_id, loc))

    def _place_condemned(self, blob_id: bytes, loc: BlobLocation) -> None:
        held = self._blobs.get(blob_id)
        if held is None:
            held = self._condemned_blobs.get(blob_id)
        if held is None:
            self._condemned_blobs[blob_id] = self._encode(loc)
        elif self._pack_ids[_pack_number(held)] != loc.pack:
            self._copies.setdefault(loc.pack, []).append((blob_id, loc))

    def _revive(self, pack_id: str) -> None:
        """A condemned pack listed live after all: its entries move to the live table."""
        del self.condemned[pack_id]
        number = self._pack_numbers.get(pack_id)
        entries = [
            (b, self._decode(code))
            for b, code in self._condemned_blobs.items()
            if _pack_number(code) == number
        ]
        for blob_id, _ in entries:
            del self._condemned_blobs[blob_id]
        entries += self._copies.pop(pack_id, [])
        for blob_id, loc in entries:
            self._place_live(blob_id, loc)

    def has_new(self) -> bool:
        return bool(self._new)

    def save_new(self, storage: Storage, keys: RepoKeys) -> str | None:
        """Writes the packs added since the last save as one ``index/`` object."""
        with self._lock:
            if not self._new:
                return None
            packs = []
            for pack_id, (entries, condemned) in self._new.items():
                pack: dict[str, object] = {
                    "id": pack_id,
                    "size": self.pack_sizes[pack_id],
                    "blobs": [
                        [loc.kind, bid.hex(), loc.offset, loc.length] for bid, loc in entries
                    ],
                }
                if condemned is not None:
                    pack["condemned"] = condemned
                packs.append(pack)
            self._new = {}
        name = f"index/{new_id()}"
        write_json(storage, keys, name, {"packs": packs})
        self.names.append(name)
        return name

    @classmethod
    def load(
        cls,
        storage: Storage,
        keys: RepoKeys,
        names: Iterable[str],
        *,
        condemned: bool = False,
    ) -> Index:
        """The index objects ``names``, merged. ``condemned`` (a version-3 repository) accepts
        entries that carry ``condemned``; elsewhere such an entry is damage."""
        index = cls()
        names = list(names)

        def fetch(name: str) -> Any:
            return read_json(storage, keys, name)

        # A remote store answers faster several at once (a year of daily backups is 365 index
        # objects until a prune merges them).
        fetched = list(ordered_map(fetch, names, threads=storage.read_concurrency))
        # First which packs are live (listed without ``condemned`` by some index), then the
        # entries: the merged rule does not depend on the order of the index objects.
        live: set[str] = set()
        for name, value in zip(names, fetched, strict=True):
            try:
                for pack in value["packs"]:
                    pack_id, size = pack["id"], pack["size"]
                    if not is_id(pack_id) or not _count(size):
                        raise ValueError
                    if "condemned" not in pack:
                        live.add(pack_id)
                    elif not condemned or not _time(pack["condemned"]):
                        raise ValueError
            except (KeyError, TypeError, ValueError, IndexError):
                raise RepositoryCorrupted(f"{name} is malformed") from None
        for name, value in zip(names, fetched, strict=True):
            try:
                for pack in value["packs"]:
                    pack_id, size = pack["id"], pack["size"]
                    entries = [_entry(b, pack_id, size) for b in pack["blobs"]]
                    when = None if pack_id in live else float(pack["condemned"])
                    index.add_pack(pack_id, size, entries, new=False, condemned=when)
            except (KeyError, TypeError, ValueError, IndexError):
                raise RepositoryCorrupted(f"{name} is malformed") from None
            index.names.append(name)
        return index


def parse_pack(pack: Any, *, condemned: bool) -> tuple[str, int, list[tuple[bytes, BlobLocation]]]:
    """One ``{"id", "size", "blobs"}`` entry of an index object (or a drop), checked; a
    ``condemned`` time is refused unless allowed (it is not read here). Raises KeyError,
    TypeError, ValueError or IndexError on anything malformed."""
    if not isinstance(pack, dict):
        raise TypeError
    pack_id, size = pack["id"], pack["size"]
    if not is_id(pack_id) or not _count(size):
        raise ValueError
    if "condemned" in pack and (not condemned or not _time(pack["condemned"])):
        raise ValueError
    return pack_id, size, [_entry(b, pack_id, size) for b in pack["blobs"]]


def _time(value: object) -> bool:
    """A JSON number that can be a Unix time (0 to 2^34, not a bool)."""
    return type(value) in (int, float) and 0 <= value <= 1 << 34  # type: ignore[operator]


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
