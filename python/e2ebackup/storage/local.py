"""A local folder as storage: the embedded default.

Writes go to a temporary file in the target folder, are fsynced, checked against the expected
size and SHA-256, then linked into place; the folder is fsynced so the new name is durable.

Whoever else can write to the folder (a sync client, a NAS, another account) must not be able to
make e2ebackup read, write or delete anything outside it: every path is walked from the root one
component at a time, each opened relative to the one before with ``O_NOFOLLOW``, so a symbolic
link (or a named pipe, a device) anywhere under the root is refused with
:class:`UnsafeStoragePath`, without a window between a check and the use. The root itself may be
a link: that is the user's choice (``~/backups -> /mnt/usb/backups``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from typing import BinaryIO

from e2ebackup.errors import (
    ObjectExists,
    ObjectNotFound,
    StorageDataMismatch,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
    UnsafeStoragePath,
)
from e2ebackup.storage.base import (
    BLOCK,
    ObjectInfo,
    PartsReader,
    Storage,
    check_name,
    valid_name,
)

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


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a named pipe planted in place of an object must not wait for a writer.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
# What open() says about a symbolic link with O_NOFOLLOW (Linux and macOS: ELOOP; FreeBSD:
# EMLINK), or about a file where a folder should be (ENOTDIR).
_NOT_FOLLOWED = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)


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

    def _unsafe(self, rel: str) -> UnsafeStoragePath:
        return UnsafeStoragePath(
            f"{self.root}: {rel} is a symbolic link or not a plain file or folder: refusing to "
            "follow it (remove it if you did not put it there)"
        )

    @contextlib.contextmanager
    def _folder(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the folder ``parts`` under the root, opened a component at a time
        without following links (``create``: making the missing ones)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        try:
            for i, part in enumerate(parts):
                rel = "/".join(parts[: i + 1])
                try:
                    child = self._open_folder(fd, part, rel)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                    child = self._open_folder(fd, part, rel)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self, parent: int, part: str, rel: str) -> int:
        """The folder ``part`` of ``parent``; :class:`UnsafeStoragePath` if it is a link or
        not a folder."""
        try:
            return os.open(part, _FOLDER, dir_fd=parent)
        except OSError as e:
            if e.errno in _NOT_FOLLOWED:
                raise self._unsafe(rel) from None
            raise

    def _lstat(self, parent: int, leaf: str, name: str) -> os.stat_result:
        """The object's own metadata: a plain file, or :class:`UnsafeStoragePath`."""
        st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise self._unsafe(name)
        return st

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders, create=True) as parent:
                with contextlib.suppress(FileNotFoundError):
                    os.stat(leaf, dir_fd=parent, follow_symlinks=False)
                    raise ObjectExists(f"{name} already exists in {self.root}")
                tmp = f".tmp-{secrets.token_hex(8)}"
                try:
                    fd = os.open(tmp, _CREATE, 0o600, dir_fd=parent)
                    self._write(fd, name, data, size, sha256)
                    # link() fails if the name appeared meanwhile, where rename() would replace
                    # it; both names are in the folder opened above, whatever happens to paths.
                    os.link(tmp, leaf, src_dir_fd=parent, dst_dir_fd=parent)
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=parent)
                with contextlib.suppress(OSError):
                    os.fsync(parent)  # the new name is durable
        except FileExistsError:
            raise ObjectExists(f"{name} already exists in {self.root}") from None
        except OSError as e:
            raise _translate(e, name) from None

    @staticmethod
    def _write(fd: int, name: str, data: BinaryIO, size: int, sha256: bytes) -> None:
        reader: object = data
        if type(reader) is PartsReader and reader.tell() == 0:  # not a subclass: its own digest
            # Parts hashed once by the reader, as they are written here (immutable bytes):
            # compared, not hashed again, and written without copying them into blocks.
            try:
                for part in reader.parts:
                    _write_all(fd, part)
                os.fsync(fd)
            finally:
                os.close(fd)
            reader.seek(0, os.SEEK_END)
            written, actual = reader.size, reader.sha256
        else:
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as f:
                while block := data.read(BLOCK):
                    digest.update(block)
                    f.write(block)
                    written += len(block)
                f.flush()
                os.fsync(f.fileno())
            actual = digest.digest()
        if written != size or actual != sha256:
            raise StorageDataMismatch(
                f"{name}: stored {written} bytes that do not match the expected {size} "
                "bytes and checksum; not stored"
            )

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders) as parent:
                try:
                    fd = os.open(leaf, _READ, dir_fd=parent)
                except OSError as e:
                    if e.errno in _NOT_FOLLOWED:
                        raise self._unsafe(name) from None
                    raise
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise self._unsafe(name)
                os.set_blocking(fd, True)
                f = os.fdopen(fd, "rb")
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            raise _translate(e, name) from None
        f.seek(offset)
        return _RangeReader(f, length)  # type: ignore[return-value]

    def stat(self, name: str) -> ObjectInfo:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders) as parent:
                return ObjectInfo(name, self._lstat(parent, leaf, name).st_size)
        except OSError as e:
            raise _translate(e, name) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # fwalk opens each folder relative to its parent and never descends into a link; a
        # link met on the way is refused rather than skipped, so it cannot hide an object.
        # It starts from a descriptor of the root, which (alone) may be a link.
        try:
            root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except OSError as e:
            raise _translate(e, self.root) from None
        try:
            yield from self._walk(root, prefix)
        finally:
            os.close(root)

    def _walk(self, root: int, prefix: str) -> Iterator[ObjectInfo]:
        for folder, dirs, files, fd in os.fwalk(".", dir_fd=root, follow_symlinks=False):
            dirs.sort()
            rel = os.path.normpath(folder)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if prefix and not (base.startswith(prefix) or prefix.startswith(base)):
                dirs.clear()
                continue
            for sub in dirs:
                if self._kind(fd, sub) != stat.S_IFDIR:
                    raise self._unsafe(base + sub)
            for file in sorted(files):
                name = base + file
                if file.startswith(".tmp-") or not name.startswith(prefix):
                    continue
                if not valid_name(name):
                    continue  # not an object of ours (a name no object can have)
                try:
                    st = os.stat(file, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise self._unsafe(name)
                yield ObjectInfo(name, st.st_size)

    @staticmethod
    def _kind(fd: int, name: str) -> int:
        try:
            return stat.S_IFMT(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return stat.S_IFDIR  # gone meanwhile: nothing to refuse

    def delete(self, name: str) -> None:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders) as parent:
                # unlink() never follows a link: a linked object loses only its link.
                os.unlink(leaf, dir_fd=parent)
        except FileNotFoundError:
            return
        except OSError as e:
            raise _translate(e, name) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[written:]
