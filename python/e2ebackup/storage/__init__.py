"""Storage backends behind one narrow interface; see :mod:`e2ebackup.storage.base` and
docs/STORAGE.md."""

from __future__ import annotations

import os

from e2ebackup.errors import InvalidArgument
from e2ebackup.storage.base import ObjectInfo, Storage
from e2ebackup.storage.local import LocalStorage
from e2ebackup.storage.rclone import RcloneStorage
from e2ebackup.storage.s3 import S3Storage
from e2ebackup.storage.wrappers import LimitedStorage, RetryingStorage, ThrottledStorage

__all__ = [
    "LimitedStorage",
    "LocalStorage",
    "ObjectInfo",
    "RcloneStorage",
    "RetryingStorage",
    "S3Storage",
    "Storage",
    "ThrottledStorage",
    "open_storage",
]

# Operations in flight at once per backend: S3 takes many connections (each multipart put also
# runs its own parts in parallel); cloud drives behind rclone rate-limit hard, and every
# operation there is a process.
S3_OPERATIONS = 16
RCLONE_OPERATIONS = 4


def open_storage(
    url: str | os.PathLike[str],
    *,
    create: bool = False,
    s3_endpoint: str | None = None,
    rclone_config: str | os.PathLike[str] | None = None,
    limit_upload: float | None = None,
    limit_download: float | None = None,
) -> Storage:
    """The backend for a repository location.

    * a plain path: a local folder (:class:`LocalStorage`; ``create`` makes it);
    * ``s3://bucket/prefix``: S3 or an S3-compatible service (:class:`S3Storage`), at
      ``s3_endpoint`` or ``AWS_ENDPOINT_URL`` (AWS itself without either), with boto3's usual
      credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...);
    * ``rclone:remote:path``: any remote set up with ``rclone config``
      (:class:`RcloneStorage`), for example ``rclone:gdrive:backups``.

    Remote backends come wrapped in :class:`RetryingStorage` (transient failures are retried
    with backoff) around :class:`LimitedStorage` (a bound on operations in flight).
    ``limit_upload`` / ``limit_download`` (bytes a second) add a :class:`ThrottledStorage`
    inside the retries.
    """

    def throttled(backend: Storage) -> Storage:
        if not (limit_upload or limit_download):
            return backend
        return ThrottledStorage(backend, upload=limit_upload, download=limit_download)

    text = os.fspath(url)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise InvalidArgument(f"no bucket in {text!r}: use s3://bucket/prefix")
        return RetryingStorage(
            LimitedStorage(
                throttled(S3Storage(bucket, prefix, endpoint_url=s3_endpoint)), S3_OPERATIONS
            )
        )
    if text.startswith("rclone:"):
        remote = text[len("rclone:") :]
        if not remote:
            raise InvalidArgument(f"no remote in {text!r}: use rclone:remote:path")
        return RetryingStorage(
            LimitedStorage(
                throttled(RcloneStorage(remote, config=rclone_config)), RCLONE_OPERATIONS
            )
        )
    if "://" in text:
        raise InvalidArgument(f"unsupported repository location {text!r}")
    return throttled(LocalStorage(text, create=create))
