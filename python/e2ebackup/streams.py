"""Byte streams below every file format: open a source or an atomic destination, pump one
through an encryptor or decryptor in overlapping blocks, hold output until it authenticated.

Knows nothing of keys, headers or credentials: the raw-key C2SP files (``_files``), the sealed
container (``sealed``) and the repository's backup all sit above it and bring their own context.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

from e2ebackup._core import CHUNK_SIZE, Decryptor, Encryptor
from e2ebackup.errors import OutputTooLarge
from e2ebackup.paths import StrPath, atomic_output

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "BLOCK_SIZE",
    "HeldOutput",
    "Progress",
    "open_destination",
    "open_source",
    "pump",
    "readinto",
]

# Bytes read per step: 256 chunks (4 MiB), enough work to keep every core busy. Two input and
# two output blocks are alive at once (reading, encrypting and writing overlap), so memory is
# about 16 MiB whatever the file size; small files get blocks of their own size.
BLOCK_SIZE = 256 * CHUNK_SIZE

Progress = Callable[[int], object]


def _is_path(file: object) -> bool:
    return isinstance(file, str | os.PathLike)


@contextlib.contextmanager
def open_source(src: StrPath | BinaryIO) -> Iterator[BinaryIO]:
    """A path opened for reading (and closed after); a file object as it is."""
    if _is_path(src):
        with builtins.open(src, "rb") as f:  # type: ignore[arg-type]
            yield f  # type: ignore[misc]
    else:
        yield src  # type: ignore[misc]


@contextlib.contextmanager
def open_destination(dst: StrPath | BinaryIO, overwrite: bool) -> Iterator[BinaryIO]:
    """A path gets an atomic temporary file; a file object is rolled back to where it started
    if anything fails, when it is seekable."""
    if _is_path(dst):
        with atomic_output(dst, overwrite=overwrite) as f:  # type: ignore[arg-type]
            yield f
        return
    out: BinaryIO = dst  # type: ignore[assignment]
    start = out.tell() if out.seekable() else None
    try:
        yield out
    except BaseException:
        if start is not None:
            with contextlib.suppress(OSError):
                out.seek(start)
                out.truncate()
        raise


class HeldOutput(io.BytesIO):
    """Plaintext held in memory, up to ``limit`` bytes, until the whole message authenticated.

    For a sink that cannot take bytes back (a pipe, a terminal, a socket): streaming into it
    would hand a reader the prefix of a truncated or altered file before the error. Memory, not
    a temporary file, so no plaintext reaches a disk the user did not choose."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def seekable(self) -> bool:
        return False  # nothing to roll back: it is dropped whole on failure

    def write(self, data: Buffer) -> int:
        n = memoryview(data).nbytes
        if self.tell() + n > self.limit:  # only ever appended to: tell() is the size
            raise OutputTooLarge(self.limit)
        return super().write(data)

    def release(self, out: BinaryIO) -> None:
        """Writes what is held to ``out``, then wipes and closes the buffer."""
        try:
            with self.getbuffer() as view:
                out.write(view)
            out.flush()
        finally:
            self.wipe()

    def wipe(self) -> None:
        if not self.closed:
            with self.getbuffer() as view:
                view[:] = bytes(view.nbytes)
            self.close()


def readinto(src: BinaryIO, buf: bytearray | memoryview) -> int:
    """``readinto`` where the file has it (no copy), ``read`` otherwise."""
    method = getattr(src, "readinto", None)
    if method is not None:
        return int(method(buf) or 0)
    data = src.read(len(buf))
    buf[: len(data)] = data
    return len(data)


def _bytes_left(src: BinaryIO) -> int | None:
    """What is left to read, when the source can say: a regular file, or any seekable stream
    (``BytesIO``); None for a pipe, a socket or a stream that cannot tell."""
    try:
        st = os.fstat(src.fileno())
        return st.st_size - src.tell() if stat.S_ISREG(st.st_mode) else None
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        pass
    try:
        if not src.seekable():
            return None
        here = src.tell()
        end = src.seek(0, io.SEEK_END)
        src.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None


def _block_size(src: BinaryIO) -> int:
    """BLOCK_SIZE, or less for a small input (zero-filling four 4 MiB buffers costs ms)."""
    left = _bytes_left(src)
    if left is None or left < 0:
        return BLOCK_SIZE
    return max(CHUNK_SIZE, min(BLOCK_SIZE, left + 1))


def pump(
    src: BinaryIO,
    dst: BinaryIO,
    context: Encryptor | Decryptor,
    progress: Progress | None,
) -> int:
    """Streams ``src`` through ``context`` into ``dst``; returns the bytes read.

    Three stages overlap, each releasing the GIL: reading the next block, encrypting this one
    (in Rust, across cores), writing the previous one. Writes stay in order: at most one is in
    flight."""
    block = _block_size(src)
    # The most one update can return: a held-back chunk comes out with the next block.
    out_size = max(context.update_length(block), block) + CHUNK_SIZE + 16
    inbufs = (bytearray(block), bytearray(block))
    outbufs = (bytearray(out_size), bytearray(out_size))
    done = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="e2ebackup-io") as pool:
        reading = pool.submit(readinto, src, inbufs[0])
        writing: Future[object] | None = None
        i = 0
        try:
            while n := reading.result():
                current = inbufs[i % 2]
                reading = pool.submit(readinto, src, inbufs[(i + 1) % 2])
                out = outbufs[i % 2]
                written = context.update_into(memoryview(current)[:n], out)
                if writing is not None:
                    writing.result()
                writing = pool.submit(dst.write, memoryview(out)[:written])
                done += n
                i += 1
                if progress is not None:
                    progress(done)
            if writing is not None:
                writing.result()
        finally:
            # Never leave a read or write running against buffers or files we give back.
            for f in (reading, writing):
                if f is not None:
                    f.cancel()
                    with contextlib.suppress(BaseException):
                        f.result()
    dst.write(context.finalize())
    return done
