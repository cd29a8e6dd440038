"""The narrow storage interface every backend implements (after restic's ``internal/backend``).

Objects are named by ``/``-separated relative names (``data/3f/3fa9...``), written once, read
whole or by byte range, listed by prefix, and deleted. Data streams in and out: a backend never
needs to hold a whole object in memory. Retries and concurrency limits are wrappers
(:mod:`e2ebackup.storage.wrappers`), not backend code, and one conformance suite
(``tests/storage_conformance.py``) runs against every backend.
"""

from __future__ import annotations

import abc
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from e2ebackup.errors import InvalidArgument, ObjectTooLarge, StorageError

__all__ = [
    "ObjectInfo",
    "PartsReader",
    "Storage",
    "check_name",
    "valid_name",
    "whole_read_limit",
]

_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
# Streaming block for uploads and downloads.
BLOCK = 1 << 20
_MIB = 1 << 20

# The largest object a whole-object read accepts, by the first part of its name: honest objects
# are far smaller (a config or a key slot is a few hundred bytes, a head about 70 bytes per
# snapshot, an index about 90 bytes per blob: 1 GiB is some 11 million blobs), and the storage
# must not be able to make a reader allocate more. Packs are read by range, or whole with the
# size their authenticated index gives.
_WHOLE_READ_LIMITS = {
    "config": 1 * _MIB,
    "keys": 1 * _MIB,
    "locks": 1 * _MIB,
    "heads": 64 * _MIB,
    "snapshots": 64 * _MIB,
    "index": 1024 * _MIB,
    "drops": 1024 * _MIB,  # a drop lists its packs as an index does
}
_OTHER_LIMIT = 256 * _MIB


class PartsReader(io.RawIOBase):
    """A seekable binary stream over a list of ``bytes``, without joining them, that computes
    their SHA-256 once, as it is made (``sha256``; ``size``: their length).

    An object assembled from parts (a pack) is uploaded from one of these: a backend that
    recognises it may write ``parts`` as they are (no copy into read blocks) and check the
    ``sha256`` it is given against this one instead of hashing the same bytes a second time;
    ``bytes`` cannot change after they were hashed, so the check means what hashing again would.
    Other parts (``bytearray``, ``memoryview``) are copied into ``bytes`` first."""

    def __init__(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        super().__init__()
        self.parts: tuple[bytes, ...] = tuple(p if type(p) is bytes else bytes(p) for p in parts)
        self.size = sum(len(p) for p in self.parts)
        digest = hashlib.sha256()
        for part in self.parts:
            digest.update(part)  # without the GIL above 2 KiB
        self.sha256 = digest.digest()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        out = memoryview(buffer).cast("B")
        done, start = 0, 0
        for part in self.parts:
            end = start + len(part)
            if end > self._pos and done < len(out):
                lo = self._pos - start
                n = min(len(part) - lo, len(out) - done)
                out[done : done + n] = memoryview(part)[lo : lo + n]
                done += n
                self._pos += n
            start = end
        return done


def whole_read_limit(name: str) -> int:
    """How many bytes a read of the whole object ``name`` accepts (see ``Storage.read``)."""
    return _WHOLE_READ_LIMITS.get(name.split("/", 1)[0], _OTHER_LIMIT)


def valid_name(name: str) -> bool:
    """Whether ``name`` can be an object's name: a plain relative path, no ``.`` or ``..``
    component, no leading ``/``, no characters but ``[A-Za-z0-9_.-]``. Listings leave out
    what is not (things other tools left), so every name they give can be used."""
    return _NAME.fullmatch(name) is not None and not any(
        part in (".", "..") for part in name.split("/")
    )


def check_name(name: str) -> str:
    """``name`` if it is a valid object name (:func:`valid_name`), else InvalidArgument."""
    if not valid_name(name):
        raise InvalidArgument(f"invalid object name {name!r}")
    return name


def read_at_most(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes from ``stream``: fewer only at its end."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        block = stream.read(min(n - got, 4 * BLOCK))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int


class Storage(abc.ABC):
    """A place to keep encrypted objects. Implementations must be safe to call from several
    threads at once."""

    #: Human-readable location, for messages (never contains credentials).
    location: str = ""
    #: Uploads worth running at once: a local disk gains little from more than two; a remote
    #: store hides its latency behind more.
    upload_concurrency: int = 2

    @property
    def read_concurrency(self) -> int:
        """Reads worth running at once (restore, verify, loading indexes and snapshots): as
        many as uploads, and two at least, so reading overlaps with decrypting even locally."""
        return max(2, self.upload_concurrency)

    @abc.abstractmethod
    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        """Stores ``size`` bytes read from ``data`` as ``name``, atomically: readers see the
        whole object or nothing. ``sha256`` is the digest of those bytes; bytes read that do not
        match ``size`` and ``sha256`` raise :class:`StorageDataMismatch` and store nothing; the
        backend verifies the stored object too (size, and the checksum where the backend can)
        and raises :class:`StorageError` if it differs. Raises :class:`ObjectExists` if ``name``
        exists."""

    @abc.abstractmethod
    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        """A stream of the object's bytes ``[offset, offset + length)`` (to the end if
        ``length`` is None). Raises :class:`ObjectNotFound`."""

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Raises :class:`ObjectNotFound`."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in no particular order."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Removes ``name``; deleting a missing object is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing
        """Releases connections and helper processes."""

    # Conveniences on top of the five operations.

    def put_bytes(self, name: str, data: bytes) -> None:
        self.put(name, io.BytesIO(data), size=len(data), sha256=hashlib.sha256(data).digest())

    def read(
        self,
        name: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
    ) -> bytes:
        """The bytes ``[offset, offset + length)`` of ``name`` (to the end if ``length`` is
        None). The storage's answer is read only up to what was asked for: more than
        ``length`` bytes, or (``length`` None) more than ``max_size`` (default: the limit for
        the object's kind, :func:`whole_read_limit`), raise :class:`ObjectTooLarge` having
        held at most one byte more than that."""
        if offset < 0 or (length is not None and length < 0):
            # Offsets and lengths come from stored (if authenticated) bytes: a typed refusal,
            # not an OSError from seek.
            raise InvalidArgument(f"{name}: no bytes at offset {offset}, length {length}")
        limit = length if length is not None else max_size
        if limit is None:
            limit = whole_read_limit(name)
        with self.open(name, offset=offset, length=length) as f:
            data = read_at_most(f, limit + 1)
        if len(data) > limit:
            raise ObjectTooLarge(
                f"{self.location}: {name}: the storage sent more than the {limit} bytes "
                "a reader accepts here; refused"
            )
        if length is not None and len(data) != length:
            raise StorageError(
                f"{self.location}: short read of {name}: wanted {length} bytes, got {len(data)}"
            )
        return data

    def exists(self, name: str) -> bool:
        from e2ebackup.errors import ObjectNotFound

        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
