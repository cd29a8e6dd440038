"""The deterministic byte source of every vector file: SHA-256 in counter mode.

``sha256_ctr(seed, n)`` = the first ``n`` bytes of SHA-256(seed || 0) || SHA-256(seed || 1) || ...,
with the counter as a 4-byte big-endian integer. Shared by the generators in ``tools/`` and the
tests that rebuild plaintexts from a seed.
"""

from __future__ import annotations

import hashlib


def sha256_ctr(seed: str, length: int) -> bytes:
    blocks = range((length + 31) // 32)
    data = b"".join(hashlib.sha256(seed.encode() + i.to_bytes(4, "big")).digest() for i in blocks)
    return data[:length]
