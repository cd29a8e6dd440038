"""Shared fixtures."""

from __future__ import annotations

import pytest

import e2ebackup


@pytest.fixture
def key() -> bytes:
    return e2ebackup.generate_key()
