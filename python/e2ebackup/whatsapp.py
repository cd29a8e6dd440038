"""WhatsApp's encrypted local backups: open ``msgstore.db.crypt15`` with the 64-digit key.

WhatsApp's "end-to-end encrypted backup" with a 64-digit key writes ``.crypt15`` files:
AES-256-GCM (16-byte IV, key = HKDF-SHA256 of the 64-digit root key with the label
"backup encryption") over the zlib-compressed SQLite database, after a small protobuf prefix
and before an MD5 checksum. This module reads and writes them, and reads the older crypt14 with
the legacy ``key`` file. All the bulk work runs in Rust with the GIL released, streaming: a
2 GB ``msgstore`` takes a few MiB of memory.

Decryption never hands out unauthenticated data: the database is written to a temporary file
next to the destination and renamed into place only after the GCM tag and the MD5 checksum were
checked; on any error nothing is left behind. See ``docs/WHATSAPP.md``.

>>> key = load_key("encrypted_backup.key")                # doctest: +SKIP
>>> decrypt_crypt15("msgstore.db.crypt15", "msgstore.db", key)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from e2ebackup import _core
from e2ebackup.errors import InvalidArgument, WhatsAppFormatError
from e2ebackup.keys import KEY_DIGITS, parse_hex_key
from e2ebackup.paths import StrPath, atomic_output

__all__ = [
    "DEFAULT_APP_VERSION",
    "DEFAULT_FEATURES",
    "KEY_ENV",
    "Crypt15Info",
    "DecryptResult",
    "WhatsAppKey",
    "decrypt_crypt15",
    "encrypt_crypt15",
    "import_crypt15",
    "key_file_bytes",
    "load_key",
    "parse_key",
    "read_crypt15_info",
]

#: The environment variable the command line reads the 64 digits from (with ``KEY`` = ``-``).
KEY_ENV = "E2EBACKUP_WHATSAPP_KEY"
#: What the prefix of a new backup says by default (wa-crypt-tools' defaults, taken from a 2023
#: msgstore backup). Restoring onto a phone works best with ``reference=`` an original backup.
DEFAULT_APP_VERSION = "2.23.18.12"
DEFAULT_JID_SUFFIX = "00"
DEFAULT_FEATURES: tuple[int, ...] = (*range(5, 34), 35, 36, 37, 39)
_MAX_FEATURE = 39

Progress = Callable[[int], object]

# Java serialization of a byte[]: magic, version, TC_ARRAY, TC_CLASSDESC "[B" with its
# serialVersionUID, flags SC_SERIALIZABLE, no fields, TC_ENDBLOCKDATA, no superclass (TC_NULL);
# then the array length (4 bytes, big-endian) and the bytes. Android's encrypted_backup.key is
# this with 32 bytes (59 in all); the crypt14 ``key`` file is this with 131 bytes.
_JAVA_BYTE_ARRAY = bytes.fromhex("aced0005757200025b42acf317f8060854e00200007870")
_JAVA_HEADER_SIZE = len(_JAVA_BYTE_ARRAY) + 4  # 27
_CRYPT14_KEY_SIZE = 131
_HEADER_READ = 64 * 1024 + 8


@dataclass(frozen=True)
class WhatsAppKey:
    """A key that opens WhatsApp backups. Its repr never shows the key.

    ``kind`` is ``"crypt15"`` for the 64-digit root key (``encrypted_backup.key``) and
    ``"crypt14"`` for the AES key of the legacy 131-byte ``key`` file.
    """

    kind: Literal["crypt15", "crypt14"]
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise InvalidArgument(f"a WhatsApp key is 32 bytes, got {len(self.key)}")

    def __repr__(self) -> str:
        return f"WhatsAppKey(kind={self.kind!r})"

    def hex(self) -> str:
        """The 64 digits, as WhatsApp shows them (crypt15 keys only). Handle with care."""
        if self.kind != "crypt15":
            raise InvalidArgument("only a crypt15 key has a 64-digit form")
        return self.key.hex()


def _java_byte_array(data: bytes) -> bytes | None:
    """The array inside a Java-serialized ``byte[]``, or None if ``data`` is not one."""
    if not data.startswith(_JAVA_BYTE_ARRAY) or len(data) < _JAVA_HEADER_SIZE:
        return None
    length = int.from_bytes(data[len(_JAVA_BYTE_ARRAY) : _JAVA_HEADER_SIZE], "big")
    body = data[_JAVA_HEADER_SIZE:]
    if length != len(body):
        raise WhatsAppFormatError(
            f"the key file is a Java byte array of {length} bytes but holds {len(body)}"
        )
    return body


def parse_key(data: bytes | str) -> WhatsAppKey:
    """A key from the content of a key file, or from the 64 digits.

    Accepted: Android's ``encrypted_backup.key`` (a Java-serialized ``byte[32]``, 59 bytes), the
    64 hex digits (any case; spaces, dashes and newlines ignored), 32 raw bytes, and the crypt14
    ``key`` file (a Java-serialized ``byte[131]``, or the 131 bytes themselves). Errors never
    echo the key.
    """
    if isinstance(data, str):
        return WhatsAppKey("crypt15", parse_hex_key(data))
    body = _java_byte_array(data)
    if body is None:
        body = data
    if len(body) == 32:
        return WhatsAppKey("crypt15", bytes(body))
    if len(body) == _CRYPT14_KEY_SIZE:
        # cipher version (2) | key version (1) | server salt (32) | google id (16) |
        # SHA-256 of the google id (32) | zeros (16) | AES key (32)
        return WhatsAppKey("crypt14", bytes(body[-32:]))
    try:
        text = bytes(body).decode("ascii")
    except UnicodeDecodeError:
        raise WhatsAppFormatError(
            f"not a WhatsApp key file: {len(data)} bytes, neither encrypted_backup.key (59), "
            "32 raw bytes, 64 hex digits, nor a crypt14 key file"
        ) from None
    return WhatsAppKey("crypt15", parse_hex_key(text))


def load_key(source: StrPath | bytes | WhatsAppKey) -> WhatsAppKey:
    """A key from a key file's path, from the bytes of one, or from the 64 digits as a string.

    A string that parses as 64 hex digits and is not an existing file is taken as the digits
    (so a key typed by mistake is never echoed in a "file not found" message).
    """
    if isinstance(source, WhatsAppKey):
        return source
    if isinstance(source, bytes | bytearray | memoryview):
        return parse_key(bytes(source))
    path = os.fspath(source)
    if isinstance(path, str) and not os.path.exists(path):
        hexdigits = sum(c in "0123456789abcdefABCDEF" for c in path)
        if hexdigits >= KEY_DIGITS // 2:
            try:
                return parse_key(path)
            except InvalidArgument:
                raise InvalidArgument(
                    "the key is neither an existing key file nor 64 hex digits"
                ) from None
    with open(path, "rb") as f:
        data = f.read(4096)
    return parse_key(data)


def key_file_bytes(key: WhatsAppKey) -> bytes:
    """``key`` as Android's ``encrypted_backup.key`` (59 bytes), for tools that want that form."""
    if key.kind != "crypt15":
        raise InvalidArgument("only a crypt15 key has an encrypted_backup.key form")
    return _JAVA_BYTE_ARRAY + len(key.key).to_bytes(4, "big") + key.key


@dataclass(frozen=True)
class Crypt15Info:
    """What the cleartext prefix of a backup says. Nothing here is secret: the IV is public and
    the phone-number suffix is two digits."""

    version: str
    iv: bytes
    key_type: int | None
    key_type_v2: int | None
    app_version: str | None
    jid_suffix: str | None
    backup_version: int | None
    features: tuple[int, ...]
    feature_flags: tuple[tuple[int, bool], ...]
    unknown_fields: tuple[int, ...]
    header_length: int
    file_size: int | None = None
    checksum: bool | None = None
    crypt14: dict[str, bytes] | None = None
    info_raw: bytes = field(default=b"", repr=False)

    @classmethod
    def _from_core(cls, d: dict[str, Any], file_size: int | None = None) -> Crypt15Info:
        info: dict[str, Any] = d.get("info") or {}
        flags = tuple((int(n), bool(on)) for n, on in info.get("features", []))
        c14 = d.get("c14")
        return cls(
            version=d["version"],
            iv=d["iv"],
            key_type=d["key_type"],
            key_type_v2=d["key_type_v2"],
            app_version=info.get("app_version"),
            jid_suffix=info.get("jid_suffix"),
            backup_version=info.get("backup_version"),
            features=tuple(n for n, on in flags if on),
            feature_flags=flags,
            unknown_fields=tuple(d["unknown_fields"]) + tuple(info.get("unknown_fields", [])),
            header_length=d["header_length"],
            file_size=file_size,
            crypt14=dict(c14) if c14 else None,
            info_raw=info.get("raw", b""),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as hex."""
        out: dict[str, Any] = {
            "version": self.version,
            "iv": self.iv.hex(),
            "key_type": self.key_type,
            "key_type_v2": self.key_type_v2,
            "app_version": self.app_version,
            "jid_suffix": self.jid_suffix,
            "backup_version": self.backup_version,
            "features": list(self.features),
            "unknown_fields": list(self.unknown_fields),
            "header_length": self.header_length,
            "file_size": self.file_size,
            "checksum": self.checksum,
        }
        if self.crypt14 is not None:
            out["crypt14"] = {k: v.hex() for k, v in self.crypt14.items()}
        return out


@dataclass(frozen=True)
class DecryptResult:
    """What :func:`decrypt_crypt15` found: the prefix, the layout (``"single-file"`` with an MD5
    trailer, ``"multi-file"`` without), the payload (``"zlib"``: a database, inflated;
    ``"zip"``: a multi-file archive; ``"raw"``) and the sizes."""

    info: Crypt15Info
    layout: str
    payload: str
    input_length: int
    output_length: int


@contextlib.contextmanager
def _input(src: StrPath | BinaryIO) -> Iterator[int | BinaryIO]:
    if isinstance(src, str | os.PathLike):
        fd = os.open(os.fspath(src), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            yield fd
        finally:
            os.close(fd)
    else:
        yield src


def _coerce_key(key: WhatsAppKey | StrPath | bytes) -> WhatsAppKey:
    return load_key(key)


def read_crypt15_info(src: StrPath | BinaryIO, *, check: bool = False) -> Crypt15Info:
    """The prefix of a backup, without the key. With ``check``, also whether the file ends with
    a valid MD5 of everything before it (``checksum``: True; False means a damaged single-file
    backup, or a multi-file one, which has no checksum)."""
    with _input(src) as f:
        if isinstance(f, int):
            head = os.pread(f, _HEADER_READ, 0)
            size: int | None = os.fstat(f).st_size
        else:
            head = f.read(_HEADER_READ)
            size = None
        d = _core.whatsapp_parse_header(head, at_eof=len(head) < _HEADER_READ)
        if d is None:  # pragma: no cover - a 64 KiB read always holds a valid header
            raise WhatsAppFormatError("the backup's header is too long")
        info = Crypt15Info._from_core(d, size)
        if not check:
            return info
        ok = _md5_trailer_ok(f, head)
    return dataclasses.replace(info, checksum=ok)


def _md5_trailer_ok(f: int | BinaryIO, head: bytes) -> bool:
    """Whether the last 16 bytes are the MD5 of everything before them (read from the start)."""
    digest = hashlib.md5(usedforsecurity=False)
    tail = b""
    chunk = head
    offset = len(head)
    while chunk:
        data = tail + chunk
        digest.update(data[:-16])
        tail = data[-16:]
        chunk = os.pread(f, 8 << 20, offset) if isinstance(f, int) else f.read(8 << 20)
        offset += len(chunk)
    return len(tail) == 16 and hmac.compare_digest(digest.digest(), tail)


def decrypt_crypt15(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: WhatsAppKey | StrPath | bytes,
    *,
    decompress: bool = True,
    overwrite: bool = True,
    progress: Progress | None = None,
) -> DecryptResult:
    """Decrypts a crypt15 (or crypt14) backup into ``dst``: the SQLite database.

    ``key``: a :class:`WhatsAppKey`, a key file's path, or the 64 digits as a string. A ``dst``
    path is written to a temporary file beside it (mode 0600) and renamed into place only once
    the GCM tag and the MD5 checksum are verified; a ``dst`` file object is only written then
    (from an unnamed temporary file). On any error nothing is left: a wrong key raises
    :class:`~e2ebackup.errors.InvalidTag`, a damaged file
    :class:`~e2ebackup.errors.WhatsAppCorruptedError`, a cut-off one
    :class:`~e2ebackup.errors.WhatsAppTruncatedError`, anything that is no backup
    :class:`~e2ebackup.errors.WhatsAppFormatError`. With ``decompress=False`` the payload is
    written as stored (zlib). ``progress`` is called with the bytes read so far.
    """
    k = _coerce_key(key)
    with _input(src) as fin:
        if isinstance(dst, str | os.PathLike):
            with atomic_output(dst, overwrite=overwrite) as fout:
                os.fchmod(fout.fileno(), 0o600)
                report = _core.whatsapp_decrypt(
                    k.key, k.kind, fin, fout.fileno(), decompress=decompress, progress=progress
                )
        else:
            with tempfile.TemporaryFile() as spool:
                report = _core.whatsapp_decrypt(
                    k.key, k.kind, fin, spool.fileno(), decompress=decompress, progress=progress
                )
                spool.seek(0)
                shutil.copyfileobj(spool, dst, 8 << 20)
    return DecryptResult(
        info=Crypt15Info._from_core(report, report["input_length"]),
        layout=report["layout"],
        payload=report["payload"],
        input_length=report["input_length"],
        output_length=report["output_length"],
    )


class _EncryptingSink:
    """A write-only file object that encrypts what it is given (C2SP chunked encryption, as
    :func:`e2ebackup.encrypt_file` does) into ``out``: the decrypted database only ever exists
    in memory, a block at a time."""

    def __init__(self, out: BinaryIO, key: bytes, context: bytes) -> None:
        self._out = out
        self._encryptor = _core.Encryptor(key, context)
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        needed = self._encryptor.update_length(len(data))
        if len(self._buf) < needed:
            self._buf = bytearray(needed)
        n = self._encryptor.update_into(data, self._buf)
        self._out.write(memoryview(self._buf)[:n])
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self._out.write(self._encryptor.finalize())


def import_crypt15(
    src: StrPath | BinaryIO,
    dst: StrPath,
    key: WhatsAppKey | StrPath | bytes,
    e2e_key: bytes,
    *,
    context: bytes = b"",
    overwrite: bool = True,
    progress: Progress | None = None,
) -> DecryptResult:
    """Decrypts a WhatsApp backup straight into an e2ebackup-encrypted file.

    The database is re-encrypted block by block with ``e2e_key`` (32 bytes; the file is one
    C2SP chunked-encryption message, as written by :func:`e2ebackup.encrypt_file` and read by
    :func:`e2ebackup.decrypt_file` or ``e2ebackup decrypt -k``), so the plaintext never touches
    the disk. ``dst`` is written atomically and only once the WhatsApp backup authenticated.
    """
    k = _coerce_key(key)
    with _input(src) as fin, atomic_output(dst, overwrite=overwrite) as fout:
        sink = _EncryptingSink(fout, e2e_key, context)
        report = _core.whatsapp_decrypt(k.key, k.kind, fin, sink, progress=progress)
        sink.finish()
    return DecryptResult(
        info=Crypt15Info._from_core(report, report["input_length"]),
        layout=report["layout"],
        payload=report["payload"],
        input_length=report["input_length"],
        output_length=report["output_length"],
    )


def encrypt_crypt15(
    src: StrPath | BinaryIO,
    dst: StrPath | BinaryIO,
    key: WhatsAppKey | StrPath | bytes,
    *,
    reference: StrPath | None = None,
    app_version: str | None = None,
    jid_suffix: str | None = None,
    backup_version: int | None = None,
    features: tuple[int, ...] | list[int] | None = None,
    level: int = 2,
    multi_file: bool = False,
    overwrite: bool = True,
    progress: Progress | None = None,
) -> Crypt15Info:
    """Writes ``src`` (a SQLite database) as a crypt15 backup that WhatsApp can restore.

    The prefix's info (app version, the last two digits of the phone number, feature flags) is
    copied from ``reference`` (an existing backup of the same phone: the safest choice for a
    restore), or built from the arguments (defaults: wa-crypt-tools' 2023 values). The IV is 16
    fresh bytes from the OS CSPRNG; the payload is zlib at ``level`` (default 2: with zlib-rs,
    about the size WhatsApp's own level 1 gives, and faster).
    ``multi_file`` stores ``src`` (a ZIP archive, for stickers/wallpapers) uncompressed, with
    no MD5 trailer. A ``dst`` path is written atomically. Returns the new backup's prefix.
    """
    k = _coerce_key(key)
    if k.kind != "crypt15":
        raise InvalidArgument("encrypting needs a crypt15 (64-digit) key")
    if not 0 <= level <= 9:
        raise InvalidArgument(f"level must be 0 to 9, got {level}")
    kwargs: dict[str, Any] = {"level": level, "multi_file": multi_file, "progress": progress}
    fields_given = (app_version, jid_suffix, backup_version, features) != (None,) * 4
    if reference is not None:
        if fields_given:
            raise InvalidArgument("give reference= or the info fields, not both")
        kwargs["info_raw"] = read_crypt15_info(reference).info_raw
    else:
        on = set(DEFAULT_FEATURES if features is None else features)
        if any(not 5 <= f < 2**29 for f in on):
            raise InvalidArgument("feature numbers start at 5")
        top = max([_MAX_FEATURE, *on])
        flags = [(n, n in on) for n in range(5, top + 1) if n != 38 or n in on]
        kwargs["info_fields"] = (
            DEFAULT_APP_VERSION if app_version is None else app_version,
            DEFAULT_JID_SUFFIX if jid_suffix is None else jid_suffix,
            0 if backup_version is None else backup_version,
            flags,
        )
    with _input(src) as fin:
        if isinstance(dst, str | os.PathLike):
            with atomic_output(dst, overwrite=overwrite) as fout:
                report = _core.whatsapp_encrypt(k.key, fin, fout.fileno(), **kwargs)
        else:
            report = _core.whatsapp_encrypt(k.key, fin, dst, **kwargs)
    return Crypt15Info._from_core(report, report["output_length"])
