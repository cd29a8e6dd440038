"""Storage backends behind one narrow interface; see :mod:`e2ebackup.storage.base`."""

from __future__ import annotations

import os

from e2ebackup.errors import InvalidArgument
from e2ebackup.storage.base import ObjectInfo, Storage
from e2ebackup.storage.local import LocalStorage
from e2ebackup.storage.wrappers import LimitedStorage, RetryingStorage

__all__ = [
    "LimitedStorage",
    "LocalStorage",
    "ObjectInfo",
    "RetryingStorage",
    "Storage",
    "open_storage",
]


def open_storage(url: str | os.PathLike[str], *, create: bool = False) -> Storage:
    """The backend for a repository location: a plain path (a local folder). Other schemes
    (``s3://``, ``rclone:``) are added by the cloud backends."""
    text = os.fspath(url)
    if "://" in text or text.startswith("rclone:"):
        raise InvalidArgument(f"unsupported repository location {text!r}")
    return LocalStorage(text, create=create)
