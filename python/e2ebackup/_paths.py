"""Atomic file output: write to a temporary file beside the target, fsync, rename.

A reader of the target sees either its old content or the complete new content, never a
half-written file, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
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
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".e2ebackup-tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and os.path.lexists(target):
            raise FileExistsError(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


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
