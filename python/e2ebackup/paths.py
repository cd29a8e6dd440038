"""Atomic file output: write to a temporary file beside the target, fsync, rename. Files on
the local disk only, no encryption: ``streams`` writes through it, restore links through it.

A reader of the target sees either its old content or the complete new content, never a
half-written file, and a failed write leaves nothing behind. Where Linux allows it the file has
no name at all until it is complete (O_TMPFILE), so a process killed midway (kill -9, power
loss) leaves no partial file either, plaintext or not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

StrPath = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_output(target: StrPath, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yields a temporary file; on a clean exit it is fsynced and renamed onto ``target``."""
    target = os.fspath(target)
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(target)
    directory = os.path.dirname(os.path.abspath(target))
    unnamed = open_unnamed(directory)
    tmp: str | None = None
    if unnamed is None:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".e2ebackup-tmp", dir=directory
        )
    else:
        fd = unnamed
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if unnamed is not None and not overwrite:
                link_unnamed(f.fileno(), target)  # FileExistsError if the name appeared
            elif unnamed is not None:
                tmp = link_hidden(f.fileno(), os.path.abspath(target))
        if tmp is not None:
            if not overwrite and os.path.lexists(target):
                raise FileExistsError(target)
            os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    fsync_directory(directory)


#: Unnamed files (O_TMPFILE) are linked in through /proc, as open(2) describes.
CAN_LINK_UNNAMED = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def open_unnamed(directory: str | int) -> int | None:
    """A new unnamed file (mode 0600, open for writing) in ``directory``, a path or a folder
    descriptor; None where the system or the file system cannot make one."""
    if not CAN_LINK_UNNAMED:
        return None
    flags = os.O_TMPFILE | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        if isinstance(directory, int):
            return os.open(".", flags, 0o600, dir_fd=directory)
        return os.open(directory, flags, 0o600)
    except OSError:
        return None


def link_unnamed(fd: int, name: str, *, dir_fd: int | None = None) -> None:
    """Gives the unnamed file ``fd`` the name ``name``; FileExistsError if it is taken."""
    if dir_fd is None:
        # Without a folder descriptor CPython calls link(2), which does not follow the /proc
        # link; linkat(2) with AT_SYMLINK_FOLLOW needs one.
        directory, name = os.path.split(os.path.abspath(name))
        folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            link_unnamed(fd, name, dir_fd=folder)
        finally:
            os.close(folder)
        return
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)


def link_hidden(fd: int, name: str, *, dir_fd: int | None = None) -> str:
    """Links the complete unnamed file ``fd`` at a hidden name beside ``name`` (a path, or a
    name in the folder ``dir_fd``) and returns that name, to be renamed over ``name`` (rename
    replaces; link does not)."""
    directory, base = os.path.split(name)
    while True:
        tmp = os.path.join(directory, f".{base[:100]}.{secrets.token_hex(4)}.e2ebackup-tmp")
        try:
            link_unnamed(fd, tmp, dir_fd=dir_fd)
            return tmp
        except FileExistsError:
            continue


def fsync_directory(directory: str) -> None:
    """Makes a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
