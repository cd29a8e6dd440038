"""A local folder as storage: the embedded default.

Writes go to a temporary file in the target folder, are fsynced, checked against the expected
size and SHA-256, then renamed into place; the folder is fsynced so the rename is durable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from e2ebackup._paths import fsync_directory
from e2ebackup.errors import (
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
)
from e2ebackup.storage.base import BLOCK, ObjectInfo, Storage, check_name

__all__ = ["LocalStorage"]


def _translate(e: OSError, what: str) -> StorageError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left on the storage while writing {what}")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoragePermissionDenied(f"permission denied: {what}")
    if e.errno == errno.ENOENT:
        return ObjectNotFound(f"no such object: {what}")
    return StorageError(f"{what}: {e.strerror or e}")


class _RangeReader:
    """A file object limited to ``length`` bytes."""

    def __init__(self, f: BinaryIO, length: int | None) -> None:
        self._f = f
        self._left = length

    def read(self, n: int = -1) -> bytes:
        if self._left is None:
            return self._f.read(n)
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.location = self.root
        if create:
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as e:
                raise _translate(e, self.root) from None
        elif not os.path.isdir(self.root):
            raise ObjectNotFound(f"no storage folder at {self.root}")

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *check_name(name).split("/"))

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        path = self._path(name)
        if os.path.lexists(path):
            raise ObjectExists(f"{name} already exists in {self.root}")
        folder = os.path.dirname(path)
        tmp = None
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as f:
                while block := data.read(BLOCK):
                    digest.update(block)
                    f.write(block)
                    written += len(block)
                f.flush()
                os.fsync(f.fileno())
            if written != size or digest.digest() != sha256:
                raise StorageError(
                    f"{name}: stored {written} bytes that do not match the expected {size} "
                    "bytes and checksum; not stored"
                )
            # link() fails if the name appeared meanwhile, where rename() would replace it.
            os.link(tmp, path)
            os.unlink(tmp)
            tmp = None
            fsync_directory(folder)
        except FileExistsError:
            raise ObjectExists(f"{name} already exists in {self.root}") from None
        except OSError as e:
            raise _translate(e, name) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        try:
            f = open(self._path(name), "rb")  # noqa: SIM115 - returned to the caller
        except OSError as e:
            raise _translate(e, name) from None
        f.seek(offset)
        return _RangeReader(f, length)  # type: ignore[return-value]

    def stat(self, name: str) -> ObjectInfo:
        try:
            return ObjectInfo(name, os.stat(self._path(name)).st_size)
        except OSError as e:
            raise _translate(e, name) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = os.path.relpath(folder, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if prefix and not (base.startswith(prefix) or prefix.startswith(base)):
                dirs.clear()
                continue
            for file in sorted(files):
                name = base + file
                if file.startswith(".tmp-") or not name.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(folder, file)).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(name, size)

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return
        except OSError as e:
            raise _translate(e, name) from None
