"""File objects over C2SP chunked encryption (``e2ebackup.open``): a streaming writer and a
seekable reader, for code that wants read()/write()/seek() rather than a whole file at once
(that is ``files``/``_files``, which stream through ``streams``).

The reader decrypts only the chunks a read touches, and authenticates the final chunk before it
reports the end of the message or honours a seek relative to the end, as the spec requires:
otherwise a truncated message could pass for a complete one.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Literal, overload

from e2ebackup._core import (
    CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    ChunkOpener,
    Encryptor,
    plaintext_length as _plaintext_length,
)
from e2ebackup.errors import InvalidArgument, InvalidTag
from e2ebackup.paths import StrPath, atomic_output

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["EncryptedReader", "EncryptedWriter", "open"]

_CHUNK_CT = CHUNK_SIZE + TAG_SIZE
# Chunks decrypted per batch by a large read: bounds memory at about 2 x 4 MiB per read call.
_BATCH_CHUNKS = 256


def _is_path(file: object) -> bool:
    return isinstance(file, str | bytes | os.PathLike)


class EncryptedWriter(io.BufferedIOBase):
    """Encrypts everything written to it into one message.

    Given a path, the ciphertext goes to a temporary file that replaces the target only when the
    writer is closed cleanly; leaving a ``with`` block by an exception, or calling
    :meth:`abort`, discards it. Given a file object, ciphertext is written to it as it is
    produced and the file object is left open.
    """

    def __init__(
        self,
        file: StrPath | BinaryIO,
        *,
        key: Buffer,
        context: Buffer | None = None,
        algorithm: str = "aes-256-gcm",
        threads: int | None = None,
        overwrite: bool = True,
    ) -> None:
        super().__init__()
        self._encryptor = Encryptor(key, context, algorithm=algorithm, threads=threads)
        self._stack = contextlib.ExitStack()
        if _is_path(file):
            self._raw: BinaryIO = self._stack.enter_context(
                atomic_output(file, overwrite=overwrite)  # type: ignore[arg-type]
            )
        else:
            self._raw = file  # type: ignore[assignment]
        self._failed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        if self.closed:
            raise ValueError("write to a closed EncryptedWriter")
        if self._failed:
            raise ValueError("an earlier write failed; this writer can only be closed")
        try:
            self._raw.write(self._encryptor.update(data))
        except BaseException:
            self._failed = True
            raise
        return memoryview(data).nbytes

    def abort(self) -> None:
        """Closes without completing the message; a temporary target file is removed."""
        if not self.closed:
            self._failed = True
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._failed:
                # Unwinding the temporary file without an exception would publish it.
                self._stack.__exit__(InvalidArgument, InvalidArgument("aborted"), None)
            else:
                self._raw.write(self._encryptor.finalize())
                self._raw.flush()
                self._stack.close()
        except BaseException:
            self._stack.__exit__(InvalidArgument, InvalidArgument("aborted"), None)
            raise
        finally:
            super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class EncryptedReader(io.BufferedIOBase):
    """Reads one message with random access. The file must be seekable."""

    def __init__(
        self,
        file: StrPath | BinaryIO,
        *,
        key: Buffer,
        context: Buffer | None = None,
        algorithm: str = "aes-256-gcm",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self._owns_raw = _is_path(file)
        # The reader owns a file it opened for its whole life, so no context manager here.
        self._raw: BinaryIO = (
            builtins.open(file, "rb")  # type: ignore[arg-type]  # noqa: SIM115
            if self._owns_raw
            else file  # type: ignore[assignment]
        )
        try:
            if not self._raw.seekable():
                raise io.UnsupportedOperation(
                    "EncryptedReader needs a seekable file; use e2ebackup.Decryptor for streams"
                )
            self._start = self._raw.tell()
            ciphertext_size = self._raw.seek(0, io.SEEK_END) - self._start
            self._size = _plaintext_length(ciphertext_size)
            header = self._pread(0, HEADER_SIZE)
            self._opener = ChunkOpener(key, header, context, algorithm=algorithm, threads=threads)
        except BaseException:
            if self._owns_raw:
                self._raw.close()
            raise
        self._last_chunk = self._size // CHUNK_SIZE
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None
        self._final_verified = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        """Plaintext size. Reading it authenticates the final chunk first."""
        self._verify_final()
        return self._size

    def _pread(self, offset: int, length: int) -> bytes:
        self._raw.seek(self._start + offset)
        data = self._raw.read(length)
        if len(data) != length:
            # The file shrank under us: treat it like any other truncation.
            raise InvalidTag("the encrypted file was truncated while being read")
        return data

    def _open_run(self, first: int, count: int) -> bytes:
        """Decrypts ``count`` chunks starting at chunk ``first``."""
        end = first + count - 1
        last = end == self._last_chunk
        start = HEADER_SIZE + first * _CHUNK_CT
        length = (count - 1) * _CHUNK_CT + (
            self._size - end * CHUNK_SIZE + TAG_SIZE if last else _CHUNK_CT
        )
        plaintext = self._opener.open(first, self._pread(start, length), last)
        if last:
            self._final_verified = True
        self._cached = (end, plaintext[(count - 1) * CHUNK_SIZE :])
        return plaintext

    def _verify_final(self) -> None:
        if not self._final_verified:
            self._open_run(self._last_chunk, 1)

    def readinto(self, buffer: Buffer) -> int:
        self._check_open()
        out = memoryview(buffer).cast("B")
        wanted = min(len(out), max(0, self._size - self._pos))
        done = 0
        while done < wanted:
            pos = self._pos + done
            chunk = pos // CHUNK_SIZE
            offset = pos - chunk * CHUNK_SIZE
            if self._cached is not None and self._cached[0] == chunk:
                plaintext = self._cached[1]
            else:
                last_needed = (self._pos + wanted - 1) // CHUNK_SIZE
                count = min(last_needed - chunk + 1, _BATCH_CHUNKS)
                plaintext = self._open_run(chunk, count)
            n = min(len(plaintext) - offset, wanted - done)
            out[done : done + n] = plaintext[offset : offset + n]
            done += n
        self._pos += done
        if self._pos >= self._size and len(out) > 0:
            # Reporting the end of the message: it must be the authentic end.
            self._verify_final()
        return done

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        remaining = max(0, self._size - self._pos)
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n == 0:
            if size != 0:
                self._verify_final()
            return b""
        buffer = bytearray(n)
        got = self.readinto(buffer)
        del buffer[got:]
        return bytes(buffer)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto1(self, buffer: Buffer) -> int:
        return self.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            self._verify_final()
            target = self._size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, not {whence!r}")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed EncryptedReader")

    def close(self) -> None:
        if not self.closed:
            self._cached = None
            if self._owns_raw:
                self._raw.close()
        super().close()


@overload
def open(
    file: StrPath | BinaryIO,
    mode: Literal["rb"] = "rb",
    *,
    key: Buffer,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> EncryptedReader: ...


@overload
def open(
    file: StrPath | BinaryIO,
    mode: Literal["wb", "xb"],
    *,
    key: Buffer,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> EncryptedWriter: ...


def open(
    file: StrPath | BinaryIO,
    mode: Literal["rb", "wb", "xb"] = "rb",
    *,
    key: Buffer,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> EncryptedReader | EncryptedWriter:
    """Opens an encrypted file (one C2SP chunked-encryption message) like :func:`builtins.open`.

    ``mode`` is ``"rb"`` for an :class:`EncryptedReader` (seekable; it decrypts only the chunks
    a read touches and authenticates the end before reporting it), ``"wb"`` for an
    :class:`EncryptedWriter` that replaces the file when closed cleanly, or ``"xb"`` for one that
    fails with :class:`FileExistsError` if the file exists. ``file`` is a path (``str`` or
    :class:`os.PathLike`, e.g. :class:`pathlib.Path`) or a binary file object, seekable for
    reading. ``key``, ``context``, ``algorithm`` and ``threads`` are as for
    :func:`e2ebackup.encrypt`. A bad chunk raises :class:`e2ebackup.errors.InvalidTag`.

    Example::

        with e2ebackup.open("notes.enc", "wb", key=key) as f:
            f.write(b"secret")
        with e2ebackup.open("notes.enc", key=key) as f:
            assert f.read() == b"secret"
    """
    if mode == "rb":
        return EncryptedReader(file, key=key, context=context, algorithm=algorithm, threads=threads)
    if mode in ("wb", "xb"):
        return EncryptedWriter(
            file,
            key=key,
            context=context,
            algorithm=algorithm,
            threads=threads,
            overwrite=mode == "wb",
        )
    raise ValueError(f"mode must be 'rb', 'wb' or 'xb', not {mode!r}")
