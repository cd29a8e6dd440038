"""Shared fixtures."""

from __future__ import annotations

import e2ebackup
import pytest


@pytest.fixture
def key() -> bytes:
    return e2ebackup.generate_key()
