"""Consistent copies of live SQLite databases (a chat app's message store) through SQLite's
online backup API: a database that an app is writing to is captured as of one transaction."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator

SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def consistent_copy(path: str, scratch: str | None = None) -> Iterator[str]:
    """Yields the path of a consistent copy of the database at ``path``, removed afterwards.
    The source is opened read-only; writers keep going while it is copied."""
    fd, tmp = tempfile.mkstemp(prefix="e2ebackup-sqlite-", suffix=".db", dir=scratch)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
