"""Bulk work on a Dask cluster (``pip install 'e2ebackup[dask]'``, docs/SCALE.md): the
scheduling, retrying and moving of results are Dask's ``distributed``.

- :func:`encrypt_files` / :func:`decrypt_files` (:mod:`e2ebackup.dask.files`): every file of
  a collection into one encrypted file, without a repository: the "drop-in encryptor" at
  scale.
- :func:`verify_repository` (:mod:`e2ebackup.dask.verify`): ``verify --read-data`` of a
  repository, its packs read and authenticated by the workers.
- :func:`backup` (:mod:`e2ebackup.dask.backup`): a backup whose files are read, chunked,
  sealed and uploaded by the workers; this process walks the tree (or lists an fsspec URL,
  :mod:`e2ebackup.dask.sources`) and writes the snapshot.
- :func:`restore` (:mod:`e2ebackup.dask.restore`): a restore whose files are read and written
  by the workers into a folder they share; :func:`restore_to_s3`
  (:mod:`e2ebackup.dask.restore_s3`): into an S3 prefix as plaintext objects, only when asked
  (``plaintext_to_cloud=True``).

In each the key material goes from the client straight to the workers, never through the
scheduler, and tasks have random names (:mod:`e2ebackup.dask.runner`).
"""

from __future__ import annotations

try:
    import distributed  # noqa: F401 (the extra's one requirement, checked here)
except ModuleNotFoundError as e:  # one line that names the extra
    raise ModuleNotFoundError(
        f"e2ebackup.dask needs the dask extra ({e.name} is not installed): "
        "pip install 'e2ebackup[dask]'",
        name=e.name,
    ) from e

from e2ebackup.dask.backup import (
    DEFAULT_BACKUP_UNIT_BYTES,
    DEFAULT_PIECE_BYTES,
    KnownBlobs,
    backup,
    storage_spec,
)
from e2ebackup.dask.files import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_FILES,
    DEFAULT_SUFFIX,
    Batch,
    Failure,
    Report,
    decrypt_files,
    encrypt_files,
    split_batches,
)
from e2ebackup.dask.restore import restore as restore
from e2ebackup.dask.restore_s3 import S3RestoreStats, S3Target, restore_to_s3
from e2ebackup.dask.verify import DEFAULT_UNIT_BYTES, StorageSpec, verify_repository

__all__ = [
    "DEFAULT_BACKUP_UNIT_BYTES",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_FILES",
    "DEFAULT_PIECE_BYTES",
    "DEFAULT_SUFFIX",
    "DEFAULT_UNIT_BYTES",
    "Batch",
    "Failure",
    "KnownBlobs",
    "Report",
    "S3RestoreStats",
    "S3Target",
    "StorageSpec",
    "backup",
    "decrypt_files",
    "encrypt_files",
    "restore_to_s3",
    "split_batches",
    "storage_spec",
    "verify_repository",
]
