"""Pack files: many encrypted blobs in one storage object, so that 100k small files do not
become 100k cloud objects, and individual blob sizes are not visible from storage.

    pack   = sealed_blob_1 || ... || sealed_blob_n || sealed_header || header_length (u32 BE)
    header = n x (kind (1) || id (32) || sealed length (u32 BE))
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from e2ebackup import _core
from e2ebackup.errors import InvalidTag, RepositoryCorrupted
from e2ebackup.repo.labels import LABEL_PACK, RepoKeys
from e2ebackup.repo.names import new_id, pack_name
from e2ebackup.storage.base import PartsReader, Storage

_ENTRY = struct.Struct(">B32sI")
_TRAILER = struct.Struct(">I")
# Target pack size: large enough for efficient cloud uploads, small enough to bound memory.
PACK_TARGET = 16 << 20
MAX_HEADER = 64 << 20
# Bytes read from a pack's end to find its header: 37 bytes a blob, so the header of a pack of
# 1 MiB chunks (a few hundred bytes) and most tree packs fit in one read.
HEADER_GUESS = 64 << 10


@dataclass(frozen=True)
class BlobLocation:
    kind: int
    pack: str
    offset: int
    length: int


def _header_context(keys: RepoKeys, pack_id: str) -> bytes:
    return LABEL_PACK + b"\x00" + keys.repo_id + pack_id.encode()


def parse_pack_header(
    keys: RepoKeys, pack_id: str, tail: bytes, pack_size: int
) -> list[tuple[bytes, BlobLocation]]:
    """Blob entries from a pack's trailing bytes (``tail`` must hold the header and trailer)."""
    if len(tail) < _TRAILER.size:
        raise RepositoryCorrupted(f"pack {pack_id} is truncated")
    (header_len,) = _TRAILER.unpack(tail[-_TRAILER.size :])
    if (
        header_len > min(MAX_HEADER, pack_size - _TRAILER.size)
        or header_len > len(tail) - _TRAILER.size
    ):
        raise RepositoryCorrupted(f"pack {pack_id} has an impossible header length")
    sealed = tail[-_TRAILER.size - header_len : -_TRAILER.size]
    try:
        header = _core.decrypt(keys.pack, sealed, context=_header_context(keys, pack_id))
    except InvalidTag:
        raise RepositoryCorrupted(f"pack {pack_id} header does not authenticate") from None
    if len(header) % _ENTRY.size:
        raise RepositoryCorrupted(f"pack {pack_id} header is malformed")
    entries, offset = [], 0
    for i in range(0, len(header), _ENTRY.size):
        kind, blob_id, length = _ENTRY.unpack_from(header, i)
        entries.append((bytes(blob_id), BlobLocation(kind, pack_id, offset, length)))
        offset += length
    if offset + header_len + _TRAILER.size != pack_size:
        raise RepositoryCorrupted(f"pack {pack_id} size does not match its header")
    return entries


def read_pack_header(
    storage: Storage, keys: RepoKeys, pack_id: str, pack_size: int
) -> list[tuple[bytes, BlobLocation]]:
    """A pack's authenticated header, read from its end: one read of the last
    ``HEADER_GUESS`` bytes, which hold the header of all but packs of many small blobs, and a
    second read for the rest of a longer header."""
    name = pack_name(pack_id)
    if pack_size < _TRAILER.size:  # a size from a listing or an index: the storage's word
        raise RepositoryCorrupted(f"pack {pack_id} is truncated")
    guess = min(pack_size, HEADER_GUESS)
    tail = storage.read(name, offset=pack_size - guess, length=guess)
    (header_len,) = _TRAILER.unpack(tail[-_TRAILER.size :])
    if header_len > min(MAX_HEADER, pack_size - _TRAILER.size):
        raise RepositoryCorrupted(f"pack {pack_id} has an impossible header length")
    missing = header_len + _TRAILER.size - len(tail)
    if missing > 0:
        tail = storage.read(name, offset=pack_size - guess - missing, length=missing) + tail
    return parse_pack_header(keys, pack_id, tail, pack_size)


@dataclass
class _OpenPack:
    pack_id: str = field(default_factory=new_id)
    parts: list[bytes] = field(default_factory=list)
    entries: list[tuple[int, bytes, int]] = field(default_factory=list)
    size: int = 0


class PackWriter:
    """Collects sealed blobs into packs and uploads full packs in the background, with at most
    ``uploads`` packs in flight (the storage's ``upload_concurrency`` by default; memory: about
    PACK_TARGET x (uploads + 1)), so encryption and upload overlap. ``on_stored`` is
    called with each stored pack's blob locations, after the upload succeeded."""

    def __init__(
        self,
        storage: Storage,
        keys: RepoKeys,
        on_stored: Callable[[str, int, list[tuple[bytes, BlobLocation]]], None],
        *,
        uploads: int | None = None,
        target: int = PACK_TARGET,
    ) -> None:
        uploads = uploads or storage.upload_concurrency
        self._storage = storage
        self._keys = keys
        self._on_stored = on_stored
        self._target = target
        self._pool = ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="e2ebackup-upload")
        self._slots = threading.BoundedSemaphore(uploads)
        self._futures: list[Future[None]] = []
        self._open: dict[int, _OpenPack] = {}
        self.bytes_uploaded = 0

    def add(self, kind: int, blob_id: bytes, sealed: bytes) -> None:
        # Data and trees go to separate packs, so reading trees never downloads file data.
        pack = self._open.setdefault(kind, _OpenPack())
        pack.parts.append(sealed)
        pack.entries.append((kind, blob_id, len(sealed)))
        pack.size += len(sealed)
        if pack.size >= self._target:
            self._flush(kind)

    def _flush(self, kind: int) -> None:
        pack = self._open.pop(kind, None)
        if pack is None or not pack.entries:
            return
        self._raise_failed()
        self._slots.acquire()
        try:
            future = self._pool.submit(self._upload, pack)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def _upload(self, pack: _OpenPack) -> None:
        header = b"".join(_ENTRY.pack(k, i, n) for k, i, n in pack.entries)
        sealed_header = _core.encrypt(
            self._keys.pack, header, context=_header_context(self._keys, pack.pack_id)
        )
        pack.parts.append(sealed_header)
        pack.parts.append(_TRAILER.pack(len(sealed_header)))
        # Streamed from the parts: no second 16 MiB copy of the pack. Hashed once, here; local
        # storage writes the parts as they are and checks this digest instead of hashing again.
        reader = PartsReader(pack.parts)
        size = reader.size
        self._storage.put(pack_name(pack.pack_id), reader, size=size, sha256=reader.sha256)  # type: ignore[arg-type]
        pack.parts.clear()
        self.bytes_uploaded += size
        entries, offset = [], 0
        for kind, blob_id, length in pack.entries:
            entries.append((blob_id, BlobLocation(kind, pack.pack_id, offset, length)))
            offset += length
        self._on_stored(pack.pack_id, size, entries)

    def _raise_failed(self) -> None:
        for f in [f for f in self._futures if f.done()]:
            self._futures.remove(f)
            f.result()

    def finish(self) -> None:
        """Uploads the partial packs and waits for every upload; re-raises the first failure."""
        for kind in list(self._open):
            self._flush(kind)
        try:
            for f in self._futures:
                f.result()
        finally:
            self._futures.clear()
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        self._open.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
