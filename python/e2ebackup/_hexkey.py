"""Reading and writing 256-bit keys as 64 hex digits, the form WhatsApp uses for its
"64-digit encryption key": shown in groups of four, parsed tolerantly."""

from __future__ import annotations

import string

from e2ebackup.errors import InvalidArgument

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
