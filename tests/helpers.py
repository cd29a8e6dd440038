"""Shared test data helpers."""

from __future__ import annotations

import os

import e2ebackup

CHUNK = e2ebackup.CHUNK_SIZE
# Lengths around chunk boundaries, where C2SP's "the last chunk is shorter" rule bites.
BOUNDARY_LENGTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1]


def random_bytes(n: int) -> bytes:
    return os.urandom(n)
