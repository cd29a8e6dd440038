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

Files are written by writer threads, not by the walk: a file of at most ``BATCH_FILE_MAX`` bytes is
kept whole (its blobs already authenticated, its size matched) and handed over with others of
its folder in one batch, which ``_core.write_new_files`` writes without the GIL (an unnamed file
each: content, owner, mode and times through the descriptor, then its name); a larger file's
chunks are written with ``pwrite`` at their offsets as they come, and it gets its metadata and its
name once every write to it returned. At most ``WRITE_AHEAD`` bytes and ``MAX_PENDING`` tasks are
handed over and not yet written; a folder's own metadata is set once everything in it is done.

When several processes write into one target at once (:mod:`e2ebackup.dask.restore`), none of
them sets a folder's metadata as it goes (``folder_metadata=False``: a read-only folder would
shut the others out, and their new entries change its times): the folders are recorded in
``folders_left``, and :meth:`Extractor.set_folders` sets their metadata once all are done.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import secrets
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from e2ebackup import _core
from e2ebackup.errors import RepositoryCorrupted
from e2ebackup.paths import link_hidden, link_unnamed, open_unnamed
from e2ebackup.repo.tree import MODE_BITS, Entry

__all__ = ["Extractor", "RestoreStats"]

# Folders held open below the target; shallower ones are reopened (with O_NOFOLLOW) when the
# walk climbs back to them, so a deep snapshot does not run out of file descriptors.
OPEN_FOLDERS = 32

# Files up to this size are kept whole and written in batches (one GIL release a batch).
BATCH_FILE_MAX = 2 << 20
# A batch is handed to the writers when it holds this many bytes or files (or its folder ends).
BATCH_BYTES = 1 << 20
BATCH_FILES = 256
# Bytes handed to the writers and not yet written: all restore holds beyond its read-ahead.
WRITE_AHEAD = 16 << 20
# Tasks handed over and not finished, and folders waiting for theirs (each holds a descriptor).
MAX_PENDING = 256
# Writer threads: they spend their time in system calls, without the GIL.
WRITERS = 2

_CAN_PWRITE = hasattr(os, "pwrite")
_CAN_BATCH = hasattr(_core, "write_new_files")  # Linux: unnamed files linked through /proc

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC

# A temporary name of a file not yet in place (``_named_temporary``, ``paths.link_hidden``).
_TEMPORARY_NAME = re.compile(r"\..*\.[0-9a-f]{8}\.e2ebackup-tmp", re.DOTALL)


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
    batchable: bool = False  # on the target's file system, which makes unnamed files


class _Folders:
    """The folders restore writes into, from the target down, as open descriptors: every
    level is opened relative to its parent with O_NOFOLLOW. ``before_close`` runs before a
    descriptor of a folder still on the stack is closed (writes in flight may use it)."""

    def __init__(self, target: str, before_close: Callable[[], None]) -> None:
        # The target itself may be reached through a symlink: the user named it.
        self._levels = [_Level(target, os.open(target, _DIR_FLAGS & ~os.O_NOFOLLOW))]
        self._before_close = before_close

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
                    self._before_close()
                    os.close(parent.fd)
                    parent.fd = None
        assert level.fd is not None
        return level.fd

    def top_level(self) -> _Level:
        return self._levels[-1]

    def push(self, level: _Level) -> None:
        self._levels.append(level)
        open_below = [x for x in self._levels[1:] if x.fd is not None]
        if len(open_below) > OPEN_FOLDERS:
            fd = open_below[0].fd
            assert fd is not None
            self._before_close()
            open_below[0].fd = None
            os.close(fd)

    def pop(self) -> _Level:
        return self._levels.pop()

    def path(self) -> str:
        """The deepest folder's path relative to the target."""
        return "/".join(level.name for level in self._levels[1:])

    def close(self) -> None:
        for level in self._levels:
            if level.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(level.fd)
                level.fd = None
        self._levels.clear()


@dataclass
class _OpenFile:
    #: A streamed file's descriptor (written with pwrite at each chunk's offset); -1 for a
    #: batched file (no descriptor until a writer makes it) or once closed.
    fd: int
    #: Its temporary name in ``folder``; None for an unnamed file (O_TMPFILE), which a kill
    #: leaves nothing of.
    tmp: str | None
    path: str
    declared: int  # the size the snapshot gives: its chunks may not add up to more
    folder: int = -1
    size: int = 0
    blobs: list[bytes] | None = None  # a batched file: its content, written whole
    writes: list[Future[object]] = field(default_factory=list)  # a streamed file's writes


@dataclass
class _Batch:
    """Complete small files of one folder, for ``_core.write_new_files``."""

    folder: int
    files: list[tuple[bytes, list[bytes], int, int, int, int]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    size: int = 0


@dataclass
class _Leave:
    """A folder whose files are handed over: its metadata is set, its descriptor closed, once
    every task before it is done."""

    fd: int
    entry: Entry
    created: bool
    path: str  # relative to the target, "/" between names


#: A folder left by a writer that does not set folders' metadata: its path relative to the
#: target ("/" between names), its entry, and whether this writer made it.
LeftFolder = tuple[str, Entry, bool]


@dataclass
class _Pending:
    future: Future[object] | None
    size: int
    what: _Batch | _OpenFile | _Leave | None  # None: one chunk of a streamed file


class Extractor:
    """Puts entries into ``target`` in the order of a depth-first walk: :meth:`enter` a
    folder, its files (:meth:`start_file`, :meth:`write`, :meth:`finish_file`) and symlinks,
    :meth:`leave` it; :meth:`finish` waits for the writers."""

    def __init__(
        self,
        target: str,
        stats: RestoreStats,
        *,
        overwrite: bool = False,
        keep_special_bits: bool = False,
        same_owner: bool = True,
        folder_metadata: bool = True,
    ) -> None:
        self.stats = stats
        self.overwrite = overwrite
        # False: folders are recorded in folders_left, for set_folders, not set on leaving.
        self.folder_metadata = folder_metadata
        self.folders_left: list[LeftFolder] = []
        self.mode_mask = MODE_BITS if keep_special_bits else 0o777
        # Owners only as root (another user cannot give files away), as tar's --same-owner.
        self.same_owner = same_owner and os.geteuid() == 0
        self._target = target
        self._folders = _Folders(target, self._drain)
        top = self._folders.top()
        assert top is not None  # the target is opened, never skipped
        self._device = os.fstat(top).st_dev
        self._other_devices = False  # a folder that was there is a mount point
        # Batches need unnamed files (probed once on the target) and never replace a name.
        self._folders.top_level().batchable = _CAN_BATCH and not overwrite and _can_unnamed(top)
        self._file: _OpenFile | None = None
        self._batch: _Batch | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._pending_leaves = 0  # folders waiting for their metadata: descriptors held

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

    # -- the writers

    def _submit(
        self,
        size: int,
        what: _Batch | _OpenFile | None,
        fn: Callable[..., object],
        *args: object,
    ) -> Future[object]:
        self._settle_done(WRITE_AHEAD - size, MAX_PENDING - 1)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(WRITERS, thread_name_prefix="e2ebackup-write")
        future: Future[object] = self._writer.submit(fn, *args)
        self._pending.append(_Pending(future, size, what))
        self._pending_bytes += size
        return future

    def _settle_done(self, max_bytes: int, max_tasks: int) -> None:
        """Settles finished tasks in the order they were handed over, waiting for the oldest
        while more than ``max_bytes``, ``max_tasks`` or ``OPEN_FOLDERS`` folders waiting for
        their metadata are pending; re-raises a failure."""
        pending = self._pending
        while pending:
            first = pending[0]
            if (
                first.future is not None
                and not first.future.done()
                and self._pending_bytes <= max_bytes
                and len(pending) <= max_tasks
                and self._pending_leaves <= OPEN_FOLDERS
            ):
                return
            pending.popleft()
            self._pending_bytes -= first.size
            if isinstance(first.what, _Leave):
                self._pending_leaves -= 1
            self._settle(first)

    def _drain(self) -> None:
        """Waits for every task handed over."""
        self._settle_done(-1, -1)

    def _settle(self, p: _Pending) -> None:
        what = p.what
        if isinstance(what, _Leave):
            if not self.folder_metadata:
                os.close(what.fd)
                self.folders_left.append((what.path, what.entry, what.created))
                return
            try:
                # A folder that was there is left as it was unless overwriting.
                if what.created or self.overwrite:
                    self._set_metadata(what.fd, what.entry, 0o755)
            finally:
                os.close(what.fd)
            self.stats.dirs += 1
            return
        assert p.future is not None
        result = p.future.result()
        if isinstance(what, _Batch):
            assert isinstance(result, list)
            for placed, path in zip(result, what.paths, strict=True):
                if placed:
                    self.stats.files += 1
                else:
                    self.stats.skipped_existing.append(path)
        elif isinstance(what, _OpenFile):
            if result:
                self.stats.files += 1
            else:
                self.stats.skipped_existing.append(what.path)

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None and batch.files:
            self._submit(batch.size, batch, _core.write_new_files, batch.folder, batch.files)

    def finish(self) -> None:
        """Hands over the last batch and waits for every write; re-raises a failure."""
        self._flush_batch()
        self._drain()

    # -- files

    def start_file(self, entry: Entry, path: str) -> None:
        folder = self._folders.top()
        if folder is None:
            return  # in a folder that was in the way
        declared = int(entry.get("size", 0))
        if declared <= BATCH_FILE_MAX and self._folders.top_level().batchable:
            self._file = _OpenFile(-1, None, path, declared, folder, blobs=[])
            return
        tmp: str | None = None
        # No name until it is complete, where the system allows: a killed restore leaves no
        # partial file behind; elsewhere a hidden temporary name.
        unnamed = open_unnamed(folder)
        if unnamed is None:
            tmp, fd = _named_temporary(entry["name"], folder)
        else:
            fd = unnamed
        self._file = _OpenFile(fd, tmp, path, declared, folder)

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
        if f.blobs is not None:
            f.blobs.append(blob)
        elif not _CAN_PWRITE:
            _write_all(f.fd, blob)
        else:
            f.writes.append(self._submit(len(blob), None, _pwrite_all, f.fd, blob, f.size))
        f.size += len(blob)
        self.stats.bytes += len(blob)

    def finish_file(self, entry: Entry) -> None:
        f = self._file
        if f is None:
            return
        if f.size != f.declared:
            raise RepositoryCorrupted(
                f"{f.path}: restored {f.size} bytes, the snapshot says {f.declared}"
            )
        self._file = None
        if f.blobs is not None:
            batch = self._batch
            if batch is None or batch.folder != f.folder:
                self._flush_batch()
                batch = self._batch = _Batch(f.folder)
            uid = entry["uid"] if self.same_owner and "uid" in entry else -1
            batch.files.append(
                (
                    os.fsencode(entry["name"]),
                    f.blobs,
                    entry.get("mode", 0o644) & self.mode_mask,
                    uid,
                    entry.get("gid", -1),
                    entry.get("mtime_ns", 0),
                )
            )
            batch.paths.append(f.path)
            batch.size += f.size
            if batch.size >= BATCH_BYTES or len(batch.files) >= BATCH_FILES:
                self._flush_batch()
            return
        try:
            self._submit(0, f, self._finish_streamed, f, entry)
        except BaseException:
            self._file = f  # discard() cleans it up
            raise

    def _finish_streamed(self, f: _OpenFile, entry: Entry) -> bool:
        """A writer: once every write to the file returned, its metadata and its name; False if
        the name was taken (without ``overwrite``)."""
        try:
            for w in f.writes:
                w.result()
            self._set_metadata(f.fd, entry, 0o644)
            if f.tmp is None and not self.overwrite:
                return self._place_unnamed(f)  # straight to its name: no hidden one ever
            if f.tmp is None:
                f.tmp = link_hidden(f.fd, entry["name"], dir_fd=f.folder)
            _close(f)
            return self._place(f)
        except BaseException:
            if f.tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(f.tmp, dir_fd=f.folder)
            raise
        finally:
            _close(f)

    @staticmethod
    def _place_unnamed(f: _OpenFile) -> bool:
        """Links a finished unnamed file at its name, unless something appeared there."""
        try:
            link_unnamed(f.fd, os.path.basename(f.path), dir_fd=f.folder)
        except FileExistsError:
            return False
        return True

    def _place(self, f: _OpenFile) -> bool:
        """Renames the finished file into place; without ``overwrite``, never over a file that
        appeared meanwhile (a hard link fails if the name exists; a file system without hard
        links falls back to checking first)."""
        name = os.path.basename(f.path)
        folder = f.folder
        assert f.tmp is not None
        if self.overwrite:
            os.replace(f.tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            return True
        try:
            os.link(f.tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            os.unlink(f.tmp, dir_fd=folder)
        except FileExistsError:
            os.unlink(f.tmp, dir_fd=folder)
            return False
        except OSError:
            if _exists(name, folder):
                os.unlink(f.tmp, dir_fd=folder)
                return False
            os.replace(f.tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        return True

    def discard(self) -> None:
        """After an error: stops the writers, removes the files not yet in place (an unnamed
        one vanishes when closed) and closes the folders waiting for their metadata."""
        f, self._file = self._file, None
        self._batch = None
        pending = list(self._pending)
        self._pending.clear()
        self._pending_bytes = self._pending_leaves = 0
        for p in pending:
            if p.future is not None:
                p.future.cancel()
        if f is not None:
            for w in f.writes:
                w.cancel()
        for p in pending:  # a write in progress must return before its descriptor is closed
            if p.future is not None and not p.future.cancelled():
                p.future.exception()
        if f is not None:
            for w in f.writes:
                if not w.cancelled():
                    w.exception()
        for p in pending:
            what = p.what
            if isinstance(what, _Leave):
                with contextlib.suppress(OSError):
                    os.close(what.fd)
            elif isinstance(what, _OpenFile) and p.future is not None and p.future.cancelled():
                _forget(what)  # its writer never ran
        if f is not None:
            _forget(f)

    def _set_metadata(self, fd: int, entry: Entry, default_mode: int) -> None:
        if self.same_owner and "uid" in entry:
            with contextlib.suppress(OSError):  # before the mode: chown clears setuid
                os.fchown(fd, entry["uid"], entry.get("gid", -1))
        os.fchmod(fd, entry.get("mode", default_mode) & self.mode_mask)
        os.utime(fd, ns=(entry.get("mtime_ns", 0),) * 2)

    # -- folders

    def enter(self, entry: Entry, path: str) -> None:
        self._flush_batch()
        parent_level = self._folders.top_level()
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
        same_device = created
        if not created:
            same_device = os.fstat(fd).st_dev == self._device
            self._other_devices |= not same_device
        batchable = parent_level.batchable and same_device
        self._folders.push(_Level(name, fd, created=created, batchable=batchable))

    def leave(self, entry: Entry) -> None:
        self._flush_batch()
        fd = self._folders.top()
        path = self._folders.path()
        level = self._folders.pop()
        if fd is None:
            return
        # Its metadata once the files in it are placed (placing one changes its times).
        self._pending.append(_Pending(None, 0, _Leave(fd, entry, level.created, path)))
        self._pending_leaves += 1
        self._settle_done(WRITE_AHEAD, MAX_PENDING)

    @property
    def in_skipped_folder(self) -> bool:
        """Whether the current folder was in the way (nothing is written in it)."""
        return self._folders.top() is None

    def set_folders(self, folders: Iterable[LeftFolder], keep: Collection[str] = ()) -> None:
        """After writers with ``folder_metadata=False`` are all done: the metadata of
        ``folders`` (their ``folders_left``, children before parents), set as :meth:`leave`
        sets it, each folder opened from the target with O_NOFOLLOW at every level (one that
        is no longer a folder is left alone). In the folders made by this restore, files with
        the temporary names of a writer that was killed are removed first, except the paths
        in ``keep`` (files of the snapshot that happen to have such a name)."""
        root = os.open(self._target, _DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            for path, entry, created in folders:
                try:
                    fd = _open_below(root, path)
                except OSError:
                    continue  # replaced or removed since: not followed
                try:
                    if created:
                        _remove_temporaries(fd, path, keep)
                    if created or self.overwrite:
                        self._set_metadata(fd, entry, 0o755)
                finally:
                    os.close(fd)
                self.stats.dirs += 1
        finally:
            os.close(root)

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


def _open_below(root: int, path: str) -> int:
    """The folder at ``path`` (relative, "/" between names) below the folder ``root``, each
    level opened with O_NOFOLLOW; the target itself for ""."""
    fd = os.dup(root)
    for name in path.split("/") if path else []:
        try:
            below = os.open(name, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = below
    return fd


def _remove_temporaries(folder: int, path: str, keep: Collection[str]) -> None:
    """Removes the files of ``folder`` (at ``path``) that have a writer's temporary name."""
    with os.scandir(folder) as found:
        names = [e.name for e in found if e.is_file(follow_symlinks=False)]
    for name in names:
        rel = f"{path}/{name}" if path else name
        if _TEMPORARY_NAME.fullmatch(name) and rel not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=folder)


def _can_unnamed(folder: int) -> bool:
    """Whether the file system of ``folder`` makes unnamed files (O_TMPFILE)."""
    fd = open_unnamed(folder)
    if fd is None:
        return False
    os.close(fd)
    return True


def _forget(f: _OpenFile) -> None:
    """Closes a file that will not be placed and removes its temporary name."""
    _close(f)
    if f.tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(f.tmp, dir_fd=f.folder)


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
