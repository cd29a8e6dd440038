"""Whole-file encryption and decryption: streaming, bounded memory, parallel, atomic output."""

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
from e2ebackup._paths import StrPath, atomic_output
from e2ebackup.errors import InvalidArgument, OutputTooLarge as OutputTooLarge

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from e2ebackup.keys import KdfParams, RecoveryKey

__all__ = ["decrypt_file", "encrypt_file"]

# Bytes read per step: 256 chunks (4 MiB), enough work to keep every core busy. Two input and
# two output blocks are alive at once (reading, encrypting and writing overlap), so memory is
# about 16 MiB whatever the file size; small files get blocks of their own size.
BLOCK_SIZE = 256 * CHUNK_SIZE

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


def readinto(src: BinaryIO, buf: bytearray) -> int:
    """``readinto`` where the file has it (no copy), ``read`` otherwise."""
    method = getattr(src, "readinto", None)
    if method is not None:
        return int(method(buf) or 0)
    data = src.read(len(buf))
    buf[: len(data)] = data
    return len(data)


def _block_size(src: BinaryIO) -> int:
    """BLOCK_SIZE, or less for a small regular file (zero-filling big buffers costs ms)."""
    try:
        st = os.fstat(src.fileno())
        left = st.st_size - src.tell()
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return BLOCK_SIZE
    if not stat.S_ISREG(st.st_mode) or left < 0:
        return BLOCK_SIZE
    return max(CHUNK_SIZE, min(BLOCK_SIZE, left + 1))


def _pump(
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
    :mod:`e2ebackup.errors` error raised. A seekable file object is truncated back; one that
    cannot seek (a pipe, a socket) gets plaintext as it authenticates, so a damaged file hands
    it a prefix before the error (``e2ebackup decrypt SRC -`` holds the plaintext back in
    memory instead, until the end authenticated). ``progress`` is called with the ciphertext
    bytes done so far. Returns the ciphertext bytes read."""
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
