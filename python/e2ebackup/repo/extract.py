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
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from dataclasses import dataclass, field
from typing import IO

from e2ebackup._paths import link_hidden, link_unnamed, open_unnamed
from e2ebackup.repo.objects import RepositoryCorrupted
from e2ebackup.repo.tree import MODE_BITS, Entry

__all__ = ["Extractor", "RestoreStats"]

# Folders held open below the target; shallower ones are reopened (with O_NOFOLLOW) when the
# walk climbs back to them, so a deep snapshot does not run out of file descriptors.
OPEN_FOLDERS = 32

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
    stream: IO[bytes]
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
        self._folders = _Folders(target)
        self._file: _OpenFile | None = None

    def close(self) -> None:
        self.discard()
        self._folders.close()

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
        self._file = _OpenFile(os.fdopen(fd, "wb"), tmp, path, declared)

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
        f.stream.write(blob)
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
            if f.size != f.declared:
                raise RepositoryCorrupted(
                    f"{f.path}: restored {f.size} bytes, the snapshot says {f.declared}"
                )
            f.stream.flush()
            self._set_metadata(f.stream.fileno(), entry, 0o644)
            if f.tmp is None and not self.overwrite:
                self._place_unnamed(f, folder)  # straight to its name: no hidden one ever
                f.stream.close()
                return
            if f.tmp is None:
                f.tmp = link_hidden(f.stream.fileno(), entry["name"], dir_fd=folder)
            f.stream.close()
            self._place(f, folder)
        except BaseException:
            f.stream.close()
            if f.tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(f.tmp, dir_fd=folder)
            raise

    def _place_unnamed(self, f: _OpenFile, folder: int) -> None:
        """Links a finished unnamed file at its name, unless something appeared there."""
        name = os.path.basename(f.path)
        try:
            link_unnamed(f.stream.fileno(), name, dir_fd=folder)
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
            f.stream.close()
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
