"""The writing side of restore: folders, files and symlinks put into the target, safely.

A snapshot is not trusted more than a tar archive from a stranger (whoever holds the keys wrote
it), so this writes as GNU tar and libarchive do by default, and stricter:

- only inside the target, through folders held open as descriptors (``openat``-style, every
  level opened with O_NOFOLLOW): a symlink is never followed, whether it was there before or
  was put in place of a folder while restore runs;
- a folder that existed keeps its mode, owner and times unless ``overwrite`` is set;
- setuid, setgid and sticky bits are cleared unless ``keep_special_bits`` is set; owners are
  set only when running as root (``same_owner``, as tar), and before the mode (chown clears
  setuid);
- a file is written under a temporary name and renamed into place once complete and its size
  matched; its chunks may not add up to more than its ``size`` (refused before writing past
  it); without ``overwrite`` it never replaces a file that appeared meanwhile.

Large chunks are written behind: handed to a writer thread (``pwrite`` at the chunk's offset,
the GIL released) while the caller goes on opening the next ones, at most ``WRITE_BEHIND`` bytes
at a time; a file is given its name only after every write to it returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import secrets
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from e2ebackup.errors import RepositoryCorrupted
from e2ebackup.paths import link_hidden, link_unnamed, open_unnamed
from e2ebackup.repo.tree import MODE_BITS, Entry

__all__ = ["Extractor", "RestoreStats"]

# Folders held open below the target; shallower ones are reopened (with O_NOFOLLOW) when the
# walk climbs back to them, so a deep snapshot does not run out of file descriptors.
OPEN_FOLDERS = 32

# Chunks at least this large are written by the writer thread; a smaller one costs less to write
# in place than to hand over (restoring many small files stays on one thread).
WRITE_BEHIND_MIN = 256 << 10
# Bytes handed to the writer and not yet written: all restore holds beyond its read-ahead.
WRITE_BEHIND = 16 << 20
_CAN_PWRITE = hasattr(os, "pwrite")

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    bytes_total: int = 0
    excluded: int = 0
    skipped_existing: list[str] = field(default_factory=list)


@dataclass
class _Level:
    name: str
    fd: int | None  # None: closed for now (reopened by name) or, with skipped, never opened
    created: bool = False  # made by this restore: its metadata is set when it is done
    skipped: bool = False  # in the way and not replaced: nothing is written under it


class _Folders:
    """The folders restore writes into, from the target down, as open descriptors: every
    level is opened relative to its parent with O_NOFOLLOW."""

    def __init__(self, target: str) -> None:
        # The target itself may be reached through a symlink: the user named it.
        self._levels = [_Level(target, os.open(target, _DIR_FLAGS & ~os.O_NOFOLLOW))]

    def top(self) -> int | None:
        """The deepest folder's descriptor, or None if it is skipped."""
        level = self._levels[-1]
        if level.skipped:
            return None
        if level.fd is None:
            # From the deepest open ancestor down, keeping open only the deepest few.
            first = max(i for i, x in enumerate(self._levels) if x.fd is not None)
            keep_from = len(self._levels) - OPEN_FOLDERS
            for i, (parent, child) in enumerate(
                itertools.pairwise(self._levels[first:]), start=first
            ):
                assert parent.fd is not None
                child.fd = os.open(child.name, _DIR_FLAGS, dir_fd=parent.fd)
                if first < i < keep_from:
                    os.close(parent.fd)
                    parent.fd = None
        assert level.fd is not None
        return level.fd

    def push(self, level: _Level) -> None:
        self._levels.append(level)
        open_below = [x for x in self._levels[1:] if x.fd is not None]
        if len(open_below) > OPEN_FOLDERS:
            fd = open_below[0].fd
            assert fd is not None
            open_below[0].fd = None
            os.close(fd)

    def pop(self) -> _Level:
        return self._levels.pop()

    def close(self) -> None:
        for level in self._levels:
            if level.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(level.fd)
                level.fd = None
        self._levels.clear()


@dataclass
class _OpenFile:
    fd: int  # written with pwrite at the chunk's offset: no buffered file object per file
    #: Its temporary name in the folder on top of the stack; None for an unnamed file
    #: (O_TMPFILE), which a kill leaves nothing of.
    tmp: str | None
    path: str
    declared: int  # the size the snapshot gives: its chunks may not add up to more
    size: int = 0


class Extractor:
    """Puts entries into ``target`` in the order of a depth-first walk: :meth:`enter` a
    folder, its files (:meth:`start_file`, :meth:`write`, :meth:`finish_file`) and symlinks,
    :meth:`leave` it."""

    def __init__(
        self,
        target: str,
        stats: RestoreStats,
        *,
        overwrite: bool = False,
        keep_special_bits: bool = False,
        same_owner: bool = True,
    ) -> None:
        self.stats = stats
        self.overwrite = overwrite
        self.mode_mask = MODE_BITS if keep_special_bits else 0o777
        # Owners only as root (another user cannot give files away), as tar's --same-owner.
        self.same_owner = same_owner and os.geteuid() == 0
        self._target = target
        self._folders = _Folders(target)
        top = self._folders.top()
        assert top is not None  # the target is opened, never skipped
        self._device = os.fstat(top).st_dev
        self._other_devices = False  # a folder that was there is a mount point
        self._file: _OpenFile | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._behind: deque[tuple[Future[None], int]] = deque()
        self._behind_bytes = 0

    def close(self) -> None:
        try:
            self.discard()
            self._folders.close()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)

    def make_durable(self) -> None:
        """Flushes what restore wrote to disk, once at the end instead of an fsync per file
        (which made restoring many small files several times slower): ``syncfs`` of the target's
        file system, which does not wait for other file systems' writes (Linux); ``sync``
        where there is no ``syncfs`` or a folder that was there is another file system."""
        syncfs = _libc_syncfs()
        if syncfs is None or self._other_devices:
            os.sync()
            return
        fd = os.open(self._target, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        try:
            if syncfs(fd) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, os.strerror(errno), self._target)
        finally:
            os.close(fd)

    def _wait_behind(self, limit: int) -> None:
        """Waits for the oldest writes until at most ``limit`` bytes are pending; re-raises a
        failed write's error."""
        while self._behind and self._behind_bytes > limit:
            future, size = self._behind.popleft()
            self._behind_bytes -= size
            future.result()

    def _drain_quietly(self) -> None:
        """Waits for every pending write, ignoring failures: before a file is closed (its
        descriptor must not be written after it is closed, or reused)."""
        while self._behind:
            future, _ = self._behind.popleft()
            future.exception()
        self._behind_bytes = 0

    # -- files

    def start_file(self, entry: Entry, path: str) -> None:
        folder = self._folders.top()
        if folder is None:
            return  # in a folder that was in the way
        tmp: str | None = None
        # No name until it is complete, where the system allows: a killed restore leaves no
        # partial file behind; elsewhere a hidden temporary name.
        unnamed = open_unnamed(folder)
        if unnamed is None:
            tmp, fd = _named_temporary(entry["name"], folder)
        else:
            fd = unnamed
        declared = int(entry.get("size", 0))
        self._file = _OpenFile(fd, tmp, path, declared)

    @property
    def writing(self) -> str | None:
        """The temporary path of the file being written, if one is."""
        f = self._file
        if f is None:
            return None
        return f.path if f.tmp is None else os.path.join(os.path.dirname(f.path), f.tmp)

    def write(self, blob: bytes) -> None:
        f = self._file
        if f is None:
            return
        if f.size + len(blob) > f.declared:
            raise RepositoryCorrupted(
                f"{f.path}: its chunks are longer than the {f.declared:,} bytes the snapshot says"
            )
        if not _CAN_PWRITE:
            _write_all(f.fd, blob)
        elif len(blob) < WRITE_BEHIND_MIN:
            _pwrite_all(f.fd, blob, f.size)
        else:
            self._wait_behind(WRITE_BEHIND - len(blob))
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="e2ebackup-write")
            future = self._writer.submit(_pwrite_all, f.fd, blob, f.size)
            self._behind.append((future, len(blob)))
            self._behind_bytes += len(blob)
        f.size += len(blob)
        self.stats.bytes += len(blob)

    def finish_file(self, entry: Entry) -> None:
        f = self._file
        if f is None:
            return
        self._file = None
        folder = self._folders.top()
        assert folder is not None
        try:
            self._wait_behind(0)  # every byte written before the file gets its name
            if f.size != f.declared:
                raise RepositoryCorrupted(
                    f"{f.path}: restored {f.size} bytes, the snapshot says {f.declared}"
                )
            self._set_metadata(f.fd, entry, 0o644)
            if f.tmp is None and not self.overwrite:
                self._place_unnamed(f, folder)  # straight to its name: no hidden one ever
                return
            if f.tmp is None:
                f.tmp = link_hidden(f.fd, entry["name"], dir_fd=folder)
            _close(f)
            self._place(f, folder)
        except BaseException:
            self._drain_quietly()
            if f.tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(f.tmp, dir_fd=folder)
            raise
        finally:
            _close(f)  # after any pending write: a closed descriptor is never written to

    def _place_unnamed(self, f: _OpenFile, folder: int) -> None:
        """Links a finished unnamed file at its name, unless something appeared there."""
        name = os.path.basename(f.path)
        try:
            link_unnamed(f.fd, name, dir_fd=folder)
        except FileExistsError:
            self.stats.skipped_existing.append(f.path)
            return
        self.stats.files += 1

    def _place(self, f: _OpenFile, folder: int) -> None:
        """Renames the finished file into place; without ``overwrite``, never over a file that
        appeared meanwhile (a hard link fails if the name exists; a file system without hard
        links falls back to checking first)."""
        name = os.path.basename(f.path)
        assert f.tmp is not None
        if self.overwrite:
            os.replace(f.tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        else:
            try:
                os.link(f.tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
                os.unlink(f.tmp, dir_fd=folder)
            except FileExistsError:
                os.unlink(f.tmp, dir_fd=folder)
                self.stats.skipped_existing.append(f.path)
                return
            except OSError:
                if _exists(name, folder):
                    os.unlink(f.tmp, dir_fd=folder)
                    self.stats.skipped_existing.append(f.path)
                    return
                os.replace(f.tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        self.stats.files += 1

    def discard(self) -> None:
        """Removes the file being written (after an error)."""
        f = self._file
        if f is not None:
            self._file = None
            self._drain_quietly()
            _close(f)
            folder = self._folders.top()
            if folder is not None and f.tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(f.tmp, dir_fd=folder)

    def _set_metadata(self, fd: int, entry: Entry, default_mode: int) -> None:
        if self.same_owner and "uid" in entry:
            with contextlib.suppress(OSError):  # before the mode: chown clears setuid
                os.fchown(fd, entry["uid"], entry.get("gid", -1))
        os.fchmod(fd, entry.get("mode", default_mode) & self.mode_mask)
        os.utime(fd, ns=(entry.get("mtime_ns", 0),) * 2)

    # -- folders

    def enter(self, entry: Entry, path: str) -> None:
        parent = self._folders.top()
        name = entry["name"]
        if parent is None:
            self._folders.push(_Level(name, None, skipped=True))
            return
        created = _mkdir(name, parent)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError:  # a symlink or a file is in the way (put there since the plan)
            if created or not self.overwrite:
                self.stats.skipped_existing.append(path)
                self._folders.push(_Level(name, None, skipped=True))
                return
            os.unlink(name, dir_fd=parent)
            created = _mkdir(name, parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        if not created and os.fstat(fd).st_dev != self._device:
            self._other_devices = True
        self._folders.push(_Level(name, fd, created=created))

    def leave(self, entry: Entry) -> None:
        fd = self._folders.top()
        level = self._folders.pop()
        if fd is None:
            return
        try:
            # A folder that was there is left as it was unless overwriting.
            if level.created or self.overwrite:
                self._set_metadata(fd, entry, 0o755)
        finally:
            os.close(fd)
        self.stats.dirs += 1

    # -- symlinks

    def symlink(self, entry: Entry, path: str) -> None:
        folder = self._folders.top()
        if folder is None:
            return
        name = entry["name"]
        if _exists(name, folder):
            if not self.overwrite:
                self.stats.skipped_existing.append(path)
                return
            os.unlink(name, dir_fd=folder)
        os.symlink(entry.get("target", ""), name, dir_fd=folder)
        if self.same_owner and "uid" in entry:
            with contextlib.suppress(OSError):
                os.chown(
                    name, entry["uid"], entry.get("gid", -1), dir_fd=folder, follow_symlinks=False
                )
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(name, ns=(entry.get("mtime_ns", 0),) * 2, dir_fd=folder, follow_symlinks=False)
        self.stats.symlinks += 1


def _libc_syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs(int fd)``, or None (not Linux, or an old C library)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def _close(f: _OpenFile) -> None:
    """Closes the file's descriptor once (a second close could hit a reused number)."""
    if f.fd >= 0:
        fd, f.fd = f.fd, -1
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"write wrote {written} bytes")
        view = view[written:]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"pwrite wrote {written} bytes")
        view, offset = view[written:], offset + written


def _named_temporary(name: str, folder: int) -> tuple[str, int]:
    prefix = f".{name[:100]}."
    while True:
        tmp = f"{prefix}{secrets.token_hex(4)}.e2ebackup-tmp"
        try:
            return tmp, os.open(tmp, _NEW_FILE, 0o600, dir_fd=folder)
        except FileExistsError:
            continue


def _mkdir(name: str, parent: int) -> bool:
    """Makes the folder (private until its mode is set); False if the name exists."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
        return True
    except FileExistsError:
        return False


def _exists(name: str, folder: int) -> bool:
    try:
        os.lstat(name, dir_fd=folder)
        return True
    except FileNotFoundError:
        return False
