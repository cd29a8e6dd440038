"""User-facing key material: 64-digit recovery keys, passwords, password-hashing parameters,
and keys written as 64 hex digits (key files). What a user holds, not where it is stored: the
key slots that a password or recovery key opens are ``keyring``'s.

A recovery key is 256 bits from the OS CSPRNG, written as 64 hex digits in 16 groups of four
(WhatsApp's form). It is never shown by ``repr`` or ``str``: call :meth:`RecoveryKey.reveal`
to get the digits on purpose. A :class:`Password` is normalised once, where it enters the
library, and is as hidden. Neither can be pickled: a pickle is a copy of the secret on disk or
on the wire that nobody asked for.
"""

from __future__ import annotations

import hmac
import io
import os
import string
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from e2ebackup import _core
from e2ebackup.errors import InvalidArgument
from e2ebackup.paths import atomic_output

__all__ = [
    "KEY_DIGITS",
    "Argon2idParams",
    "KdfParams",
    "Password",
    "RecoveryKey",
    "ScryptParams",
    "calibrate",
    "format_hex_key",
    "parse_hex_key",
    "read_key_file",
]


# -- keys as 64 hex digits (WhatsApp's "64-digit encryption key" form) --------------------
KEY_DIGITS = 64
_SEPARATORS = frozenset(" \t\r\n-_:")
_HEX = frozenset(string.hexdigits)


def format_hex_key(key: bytes) -> str:
    """``abcd 0123 ...``: 16 groups of 4 lowercase hex digits."""
    digits = key.hex()
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def parse_hex_key(text: str) -> bytes:
    """Parses 64 hex digits in any case, ignoring spaces, dashes, colons and newlines.

    The error names the problem (how many digits were found, or which character is not a hex
    digit and where) but never echoes the digits themselves.
    """
    digits = []
    for position, char in enumerate(text, start=1):
        if char in _SEPARATORS:
            continue
        if char not in _HEX:
            shown = char if char.isprintable() else repr(char)
            raise InvalidArgument(
                f"key contains {shown!r} at position {position}, which is not a hex digit"
            )
        digits.append(char)
    if len(digits) != KEY_DIGITS:
        raise InvalidArgument(f"key must have {KEY_DIGITS} hex digits, found {len(digits)}")
    return bytes.fromhex("".join(digits))


def read_key_file(data: bytes) -> bytes:
    """A key file holds 64 hex digits (as written by ``e2ebackup keygen``) or 32 raw bytes."""
    if len(data) == KEY_DIGITS // 2:
        try:
            return parse_hex_key(data.decode("ascii"))
        except (UnicodeDecodeError, InvalidArgument):
            return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"key file must hold 64 hex digits or 32 raw bytes, not {len(data)} bytes"
        ) from None
    return parse_hex_key(text)


class RecoveryKey:
    """A 256-bit key the user writes down. Compared in constant time; hidden from ``repr``."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise InvalidArgument(f"a recovery key is 32 bytes, got {len(key)}")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> RecoveryKey:
        return cls(_core.generate_key())

    @classmethod
    def parse(cls, text: str) -> RecoveryKey:
        """64 hex digits in any case; spaces, dashes and newlines are ignored."""
        return cls(parse_hex_key(text))

    @property
    def key(self) -> bytes:
        return self._key

    def reveal(self) -> str:
        """The digits, ``abcd 0123 ...``: for showing to the user once, or printing."""
        return format_hex_key(self._key)

    def qr(self) -> object:
        """A segno QR code of the digits (``.terminal()``, ``.save("key.png")``, ``.svg``)."""
        import segno

        return segno.make(self.reveal().replace(" ", "").upper(), error="m", micro=False)

    def qr_terminal(self) -> str:
        out = io.StringIO()
        self.qr().terminal(out=out, compact=True)  # type: ignore[attr-defined]
        return out.getvalue()

    def save_qr(self, path: str | os.PathLike[str], *, scale: int = 8) -> None:
        """Writes the QR code as PNG or SVG, chosen by the file name's suffix. The file opens
        the data as the key does, so it is created mode 0600 (never readable by others, not
        even for a moment) and appears only once complete."""
        kind = Path(path).suffix.lower().lstrip(".")
        if kind not in ("png", "svg"):
            raise InvalidArgument("a QR code file must end in .png or .svg")
        with atomic_output(path) as f:  # a new temporary file: mode 0600 from the start
            self.qr().save(f, kind=kind, scale=scale)  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecoveryKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash((RecoveryKey, _core.hkdf_sha256(self._key, info=b"e2ebackup/hash")))

    def __repr__(self) -> str:
        return "RecoveryKey(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a recovery key cannot be pickled (it would copy the key)")

    def __copy__(self) -> RecoveryKey:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> RecoveryKey:
        return self


class Password:
    """A password, as the KDF and the vault see it: the UTF-8 of its NFC form (or bytes that
    are not UTF-8, as given), normalised once here. Hidden from ``repr``/``str``; refuses to
    be pickled; compared in constant time."""

    __slots__ = ("_secret",)

    def __init__(self, password: str | bytes | Password) -> None:
        if isinstance(password, Password):
            self._secret: bytes = password._secret
        else:
            self._secret = normalize_password(password)

    @classmethod
    def of(cls, password: str | bytes | Password | None) -> Password | None:
        """``password`` as a :class:`Password` (None stays None)."""
        return None if password is None else cls(password)

    @property
    def secret(self) -> bytes:
        """The normalised bytes the KDF hashes."""
        return self._secret

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Password):
            return NotImplemented
        return hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash((Password, _core.hkdf_sha256(self._secret, info=b"e2ebackup/hash")))

    def __repr__(self) -> str:
        return "Password(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a password cannot be pickled (it would copy the password)")

    def __copy__(self) -> Password:
        return self

    def __deepcopy__(self, memo: object) -> Password:
        return self


def normalize_password(password: str | bytes | Password) -> bytes:
    """Passwords are hashed as UTF-8 of their NFC form, so the same password typed on
    different systems (composed or decomposed accents) opens the same slot."""
    if isinstance(password, Password):
        return password.secret
    if isinstance(password, bytes):
        if not password:
            raise InvalidArgument("the password must not be empty")
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return password  # not text: used as given
    elif isinstance(password, str):
        text = password
    else:
        raise TypeError("a password must be str or bytes")
    if not text:
        raise InvalidArgument("the password must not be empty")
    return unicodedata.normalize("NFC", text).encode("utf-8")


@dataclass(frozen=True)
class Argon2idParams:
    """Argon2id parameters; the default is RFC 9106's second recommendation."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    parallelism: int = 4
    name: Literal["argon2id"] = "argon2id"

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return _core.argon2id(
            password,
            salt,
            memory_kib=self.memory_kib,
            iterations=self.iterations,
            parallelism=self.parallelism,
        )

    def describe(self) -> str:
        m = self.memory_kib
        memory = f"{m // 1024}MiB" if m % 1024 == 0 else f"{m}KiB"
        return f"argon2id m={memory} t={self.iterations} p={self.parallelism}"


@dataclass(frozen=True)
class ScryptParams:
    """scrypt parameters, N = 2**log2_n; the default is N=2^17, r=8, p=1."""

    log2_n: int = 17
    r: int = 8
    p: int = 1
    name: Literal["scrypt"] = "scrypt"

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return _core.scrypt(password, salt, log2_n=self.log2_n, r=self.r, p=self.p)

    def describe(self) -> str:
        return f"scrypt N=2^{self.log2_n} r={self.r} p={self.p}"


KdfParams = Argon2idParams | ScryptParams


def calibrate(
    target_seconds: float = 1.0,
    *,
    kdf: Literal["argon2id", "scrypt"] = "argon2id",
    max_memory_kib: int = 1024 * 1024,
) -> KdfParams:
    """Picks parameters that take about ``target_seconds`` on this machine: memory first (up
    to ``max_memory_kib``), then passes. Never weaker than the defaults."""
    if target_seconds <= 0:
        raise InvalidArgument("target_seconds must be positive")
    salt = b"\0" * 16

    def cost(params: KdfParams) -> float:
        start = time.perf_counter()
        params.derive(b"calibration", salt)
        return time.perf_counter() - start

    if kdf == "scrypt":
        s = ScryptParams()
        while (
            cost(s) * 2 <= target_seconds
            and 128 * s.r * 2 ** (s.log2_n + 1) <= max_memory_kib * 1024
        ):
            s = ScryptParams(log2_n=s.log2_n + 1, r=s.r, p=s.p)
        return s
    a = Argon2idParams()
    while cost(a) * 2 <= target_seconds and a.memory_kib * 2 <= max_memory_kib:
        a = Argon2idParams(
            memory_kib=a.memory_kib * 2, iterations=a.iterations, parallelism=a.parallelism
        )
    elapsed = cost(a)
    if elapsed < target_seconds:
        iterations = min(64, max(a.iterations, int(a.iterations * target_seconds / elapsed)))
        a = Argon2idParams(
            memory_kib=a.memory_kib, iterations=iterations, parallelism=a.parallelism
        )
    return a
