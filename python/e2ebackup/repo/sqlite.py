"""Consistent images of live SQLite databases (a chat app's message store), taken through
SQLite itself in one read transaction: a database that an app is writing to is captured as of
one transaction, its write-ahead log included.

The image is plaintext, so it never goes to the system's temporary folder (often on disk, and
left there by a crash or ``kill -9``; docs/WHATSAPP.md has users decrypt into ``/dev/shm`` for
that reason). An image of up to :data:`IN_MEMORY` bytes is kept in memory. A larger one goes to
a scratch file in the database's own folder, which is as private as the database itself: it is
created with mode 0600 and unlinked as soon as SQLite has opened it, before any page is written
into it, so no exit (an error, a signal, ``kill -9``, a power cut) leaves a copy behind; at
worst an empty ``.e2ebackup-sqlite-*`` file, if the process dies in the instant between
creating and unlinking it. A folder that refuses the scratch file (read-only) gets the image in
memory whatever its size.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

SQLITE_MAGIC = b"SQLite format 3\x00"
#: The largest image kept in memory (taking it holds two copies for a moment: SQLite's and
#: Python's); larger ones go to an unlinked scratch file beside the database.
IN_MEMORY = 128 << 20
SCRATCH_PREFIX = ".e2ebackup-sqlite-"

log = logging.getLogger("e2ebackup.backup")


def is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def capture(path: str, *, in_memory: int = IN_MEMORY) -> Iterator[tuple[BinaryIO, int]]:
    """A consistent image of the database at ``path``: a stream positioned at its start, and
    its size. The source is opened read-only; writers keep going meanwhile."""
    source = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=30)
    scratch: BinaryIO | None = None
    try:
        (page_size,) = source.execute("pragma page_size").fetchone()
        (pages,) = source.execute("pragma page_count").fetchone()
        if page_size * pages > in_memory:
            scratch = _scratch_copy(source, os.path.dirname(os.path.abspath(path)))
        image = source.serialize() if scratch is None else b""
    finally:
        source.close()
    if scratch is None:
        yield io.BytesIO(image), len(image)
        return
    with scratch:
        yield scratch, os.fstat(scratch.fileno()).st_size


def _scratch_copy(source: sqlite3.Connection, folder: str) -> BinaryIO | None:
    """The database copied by SQLite's backup API into a file of ``folder`` that has no name
    any more (see the module's docstring); None if ``folder`` does not take one."""
    name = os.path.join(folder, SCRATCH_PREFIX + secrets.token_hex(8))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o600)
    except OSError as e:
        log.info("no scratch file in %s (%s): the database image is kept in memory", folder, e)
        return None
    named = True
    try:
        target = sqlite3.connect(name, isolation_level=None)
        try:
            # No journal (it would be a named file); the first statement makes SQLite open the
            # file, which is unlinked before any page of the database is written to it.
            target.execute("pragma journal_mode=off").fetchone()
            os.unlink(name)
            named = False
            source.backup(target)
        finally:
            target.close()
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        if named:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise
    return stream
