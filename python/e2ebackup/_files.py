"""Whole-file encryption and decryption: streaming, bounded memory, parallel, atomic output."""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from e2ebackup._core import CHUNK_SIZE, Decryptor, Encryptor
from e2ebackup._paths import StrPath, atomic_output
from e2ebackup.errors import InvalidArgument

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from e2ebackup.keys import KdfParams, RecoveryKey

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
) -> int:
    """Streams ``src`` through ``context`` into ``dst``; returns the bytes read."""
    inbuf = bytearray(BLOCK_SIZE)
    outbuf = bytearray(context.update_length(BLOCK_SIZE))
    done = 0
    while True:
        n = _readinto(src, inbuf)
        if not n:
            break
        needed = context.update_length(n)
        if needed > len(outbuf):
            outbuf = bytearray(needed)
        written = context.update_into(memoryview(inbuf)[:n], outbuf)
        dst.write(memoryview(outbuf)[:written])
        done += n
        if progress is not None:
            progress(done)
    dst.write(context.finalize())
    return done


def _one_credential(key: object, password: object, recovery_key: object) -> None:
    given = sum(x is not None for x in (key, password, recovery_key))
    if given == 0:
        raise InvalidArgument("give key=, password= or recovery_key=")
    if key is not None and given > 1:
        raise InvalidArgument(
            "key= makes a plain C2SP message; it does not combine with a password"
        )


def encrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer | None = None,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    kdf: KdfParams | None = None,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Encrypts ``src`` into ``dst``; paths or binary file objects.

    With ``key`` (32 bytes) the result is one plain C2SP chunked-encryption message, readable
    by ``cryptography.cobblestone`` too. With ``password`` and/or ``recovery_key`` it is a
    sealed file (docs/FORMAT.md) that either opens. A ``dst`` path is written to a temporary
    file and renamed only once complete. ``progress`` is called with the plaintext bytes done
    so far. Returns the plaintext size.
    """
    _one_credential(key, password, recovery_key)
    if key is None:
        from e2ebackup.sealed import seal_file

        return seal_file(
            src,
            dst,
            password=password,
            recovery_key=recovery_key,
            kdf=kdf,
            algorithm=algorithm,
            threads=threads,
            progress=progress,
            overwrite=overwrite,
        )
    encryptor = Encryptor(key, context, algorithm=algorithm, threads=threads)
    with _source(src) as fin, _destination(dst, overwrite) as fout:
        return _pump(fin, fout, encryptor, progress)


def decrypt_file(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: Buffer | None = None,
    *,
    password: str | bytes | None = None,
    recovery_key: RecoveryKey | str | None = None,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> int:
    """Decrypts ``src`` into ``dst``: a plain message with ``key``, a sealed file with
    ``password`` or ``recovery_key``. Nothing is left at a ``dst`` path unless all of it
    authenticated: on any error the temporary file is removed and a typed
    :mod:`e2ebackup.errors` error raised. ``progress`` is called with the ciphertext bytes done
    so far. Returns the ciphertext bytes read."""
    _one_credential(key, password, recovery_key)
    if key is None:
        from e2ebackup.sealed import unseal_file

        return unseal_file(
            src,
            dst,
            password=password,
            recovery_key=recovery_key,
            threads=threads,
            progress=progress,
            overwrite=overwrite,
        )
    decryptor = Decryptor(key, context, algorithm=algorithm, threads=threads)
    with _source(src) as fin, _destination(dst, overwrite) as fout:
        return _pump(fin, fout, decryptor, progress)
