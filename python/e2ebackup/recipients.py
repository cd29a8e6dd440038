"""Recipient keys: seal to someone's public key, open with their identity (docs/FORMAT.md,
Recipient slots).

An :class:`Identity` is the secret: 32 random bytes from which an X25519 key and an ML-KEM-768
key are derived (a hybrid, so a copy of a sealed file taken today stays private against a
future quantum computer as long as ML-KEM holds, and against today's attacks as long as
X25519 does). Its :class:`Recipient` is the public key, given to whoever should be able to
seal files for it; a writer holding only recipients can seal but never open.

Text forms, age-style Bech32 (BIP 173 checksum, no length limit)::

    e2ebackup1...                 a recipient (1216 bytes: ML-KEM-768 key, X25519 key)
    E2EBACKUP-SECRET-KEY-1...     an identity (its 32-byte seed), upper case

An identity is also shown as 64 hex digits, like a recovery key, for paper and QR codes. An
identity file (:mod:`e2ebackup.identity_file`) holds the secret line, optionally sealed with a
password.
"""

from __future__ import annotations

import hmac
import io
import os
from pathlib import Path
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import format_hex_key, parse_hex_key
from e2ebackup.paths import StrPath, atomic_output

__all__ = [
    "IDENTITY_HRP",
    "RECIPIENT_HRP",
    "Identity",
    "Recipient",
    "bech32_decode",
    "bech32_encode",
    "parse_recipients",
]

RECIPIENT_HRP = "e2ebackup"
IDENTITY_HRP = "e2ebackup-secret-key-"

# No key's text is longer (a recipient is 1962 characters): longer input is refused unread.
MAX_TEXT = 4096

# -- Bech32 (BIP 173), as age uses it: the checksum of BIP 173, no 90-character limit ----------
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


# BIP 173's inner loop over the five generator bits, as one lookup per top value.
_TOP_XOR = [
    _GENERATOR[0] * (t & 1)
    ^ _GENERATOR[1] * (t >> 1 & 1)
    ^ _GENERATOR[2] * (t >> 2 & 1)
    ^ _GENERATOR[3] * (t >> 3 & 1)
    ^ _GENERATOR[4] * (t >> 4 & 1)
    for t in range(32)
]


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        chk = ((chk & 0x1FFFFFF) << 5 ^ value) ^ _TOP_XOR[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _regroup(data: bytes | list[int], source: int, target: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out = []
    for value in data:
        acc = (acc << source) | value
        bits += source
        while bits >= target:
            bits -= target
            out.append((acc >> bits) & ((1 << target) - 1))
    if pad and bits:
        out.append((acc << (target - bits)) & ((1 << target) - 1))
    elif not pad and (bits >= source or (acc << (target - bits)) & ((1 << target) - 1)):
        return None  # non-zero padding or a whole spare group: not a canonical encoding
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Lower-case Bech32 of ``data`` under ``hrp``."""
    words = _regroup(data, 8, 5, True)
    assert words is not None
    checksum = _polymod(_hrp_expand(hrp) + words + [0] * 6) ^ 1
    words += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """``(hrp, data)``; :class:`InvalidArgument` for mixed case, a bad character, a bad
    checksum or bad padding. The message never echoes the text (it may be a secret)."""
    if len(text) > MAX_TEXT:
        raise InvalidArgument(f"Bech32 text is longer than the {MAX_TEXT} characters of a key")
    if text != text.lower() and text != text.upper():
        raise InvalidArgument("Bech32 text mixes upper and lower case")
    text = text.lower()
    split = text.rfind("1")
    if split < 1 or len(text) - split < 7:
        raise InvalidArgument("not Bech32 text (no separator or too short)")
    hrp, rest = text[:split], text[split + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp) or any(c not in _CHARSET for c in rest):
        raise InvalidArgument("Bech32 text holds a character outside its alphabet")
    words = [_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise InvalidArgument("Bech32 checksum does not match: the text was mistyped or cut")
    data = _regroup(words[:-6], 5, 8, False)
    if data is None:
        raise InvalidArgument("Bech32 text has invalid padding")
    return hrp, bytes(data)


# -- keys ----------------------------------------------------------------------------------------


class Recipient:
    """A recipient's public key. Safe to share, print and store."""

    __slots__ = ("_public",)

    def __init__(self, public: bytes) -> None:
        _core.recipient_check(public)  # InvalidArgument: wrong length, bad ML-KEM key
        self._public = bytes(public)

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """A recipient from its ``e2ebackup1...`` text (surrounding space ignored)."""
        if not isinstance(text, str):
            raise InvalidArgument("a recipient is given as text")
        hrp, data = bech32_decode(text.strip())
        if hrp != RECIPIENT_HRP:
            raise InvalidArgument(f"not an e2ebackup recipient (it starts with {hrp[:24]!r})")
        return cls(data)

    @property
    def public(self) -> bytes:
        return self._public

    def __str__(self) -> str:
        return bech32_encode(RECIPIENT_HRP, self._public)

    def __repr__(self) -> str:
        text = str(self)
        return f"Recipient({text[:20]}...{text[-8:]})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipient):
            return NotImplemented
        return self._public == other._public

    def __hash__(self) -> int:
        return hash((Recipient, self._public))


class Identity:
    """The secret half of a recipient key: opens what was sealed to :attr:`recipient`.
    Hidden from ``repr`` and ``str``, compared in constant time, never pickled."""

    __slots__ = ("_keys", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != _core.RECIPIENT_SEED_SIZE:
            raise InvalidArgument(f"an identity is {_core.RECIPIENT_SEED_SIZE} bytes")
        self._seed = bytes(seed)
        self._keys = _core.RecipientIdentity(self._seed)

    @classmethod
    def generate(cls) -> Identity:
        return cls(_core.generate_key())

    @classmethod
    def parse(cls, text: str) -> Identity:
        """From its ``E2EBACKUP-SECRET-KEY-1...`` line or its 64 hex digits."""
        if not isinstance(text, str):
            raise InvalidArgument("an identity is given as text")
        text = text.strip()
        if text.upper().startswith(IDENTITY_HRP.upper() + "1"):
            hrp, data = bech32_decode(text)
            if hrp != IDENTITY_HRP:
                raise InvalidArgument("not an e2ebackup identity")
            return cls(data)
        return cls(parse_hex_key(text))

    @property
    def recipient(self) -> Recipient:
        return Recipient(self._keys.public())

    def secret(self) -> str:
        """The ``E2EBACKUP-SECRET-KEY-1...`` line: for an identity file, on purpose only."""
        return bech32_encode(IDENTITY_HRP, self._seed).upper()

    def reveal(self) -> str:
        """The seed as 64 hex digits in groups of four, as a recovery key is shown."""
        return format_hex_key(self._seed)

    def save_qr(self, path: StrPath, *, scale: int = 8) -> None:
        """A QR code of the 64 digits, PNG or SVG by the suffix (as for a recovery key)."""
        import segno

        suffix = Path(path).suffix.lower()
        if suffix not in (".png", ".svg"):
            raise InvalidArgument("a QR code file must end in .png or .svg")
        code = segno.make(self.reveal().replace(" ", "").upper(), error="m", micro=False)
        image = io.BytesIO()
        code.save(image, kind=suffix[1:], scale=scale)
        # The code is the secret: mode 0600 from its creation, never over another file.
        with atomic_output(path, overwrite=False) as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(image.getvalue())

    def decapsulate(self, enc: bytes) -> bytes:
        """The key-encryption key of one recipient slot's encapsulation (the slot layer's)."""
        return self._keys.decapsulate(enc)

    # -- hiding -----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash((Identity, _core.hkdf_sha256(self._seed, info=b"e2ebackup/hash")))

    def __repr__(self) -> str:
        return "Identity(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an identity cannot be pickled (it would copy the secret key)")


def parse_recipients(text: str) -> list[Recipient]:
    """A recipients file: one ``e2ebackup1...`` per line; blank lines and ``#`` comments are
    skipped. The error names the line, not its content."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(Recipient.parse(line))
        except InvalidArgument as e:
            raise InvalidArgument(f"recipients line {number}: {e}") from None
    if not out:
        raise InvalidArgument("no recipient in the recipients file")
    return out
