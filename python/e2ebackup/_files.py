"""Whole-file encryption and decryption: streaming, bounded memory, parallel, atomic output."""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from e2ebackup._core import CHUNK_SIZE, Decryptor, Encryptor
from e2ebackup._paths import StrPath, atomic_output

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["decrypt_file", "encrypt_file"]

# Plaintext read per step: 512 chunks (8 MiB). Peak memory is about twice this, whatever the
# file size, and it is enough work to keep every core busy between reads.
BLOCK_SIZE = 512 * CHUNK_SIZE

Progress = Callable[[int], object]


def _is_path(file: object) -> bool:
    return isinstance(file, str | os.PathLike)


@contextlib.contextmanager
def _source(src: StrPath | BinaryIO) -> Iterator[BinaryIO]:
    if _is_path(src):
        with builtins.open(src, "rb") as f:  # type: ignore[arg-type]
            yield f  # type: ignore[misc]
    else:
        yield src  # type: ignore[misc]


@contextlib.contextmanager
def _destination(dst: StrPath | BinaryIO, overwrite: bool) -> Iterator[BinaryIO]:
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


def _readinto(src: BinaryIO, buf: bytearray) -> int:
    """``readinto`` where the file has it (no copy), ``read`` otherwise."""
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        return int(readinto(buf) or 0)
    data = src.read(len(buf))
    buf[: len(data)] = data
    return len(data)


def _pump(
    src: BinaryIO,
    dst: BinaryIO,
    context: Encryptor | Decryptor,
    progress: Progress | None,
    overhead: int,
) -> int:
    """Streams ``src`` through ``context`` into ``dst``; returns the bytes read."""
    inbuf = bytearray(BLOCK_SIZE)
    outbuf = bytearray(BLOCK_SIZE + overhead)
    done = 0
    while True:
        n = _readinto(src, inbuf)
        if not n:
            break
        written = context.update_into(memoryview(inbuf)[:n], outbuf)
        dst.write(memoryview(outbuf)[:written])
        done += n
        if progress is not None:
            progress(done)
    dst.write(context.finalize())
    return done


def encrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Encrypts ``src`` into ``dst`` as one C2SP chunked-encryption message.

    Paths or binary file objects. A ``dst`` path is written to a temporary file and renamed
    only once complete. ``progress`` is called with the plaintext bytes done so far. Returns
    the plaintext size.
    """
    encryptor = Encryptor(key, context, algorithm=algorithm, threads=threads)
    with _source(src) as fin, _destination(dst, overwrite) as fout:
        overhead = encryptor.update_length(BLOCK_SIZE) - BLOCK_SIZE
        return _pump(fin, fout, encryptor, progress, overhead)


def decrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Decrypts ``src`` into ``dst``. Nothing is left at a ``dst`` path unless the whole message
    authenticated: on any error the temporary file is removed and the error raised (a typed
    :mod:`e2ebackup.errors` error for bad ciphertext). ``progress`` is called with the
    ciphertext bytes done so far. Returns the ciphertext size."""
    decryptor = Decryptor(key, context, algorithm=algorithm, threads=threads)
    with _source(src) as fin, _destination(dst, overwrite) as fout:
        return _pump(fin, fout, decryptor, progress, 0)
