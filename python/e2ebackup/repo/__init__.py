"""The backup repository from Python: what the ``e2ebackup`` command line does, as functions.

    repo = Repository.init(open_storage("./repo", create=True), password=..., recovery_key=...)
    snapshot_id, stats = backup(repo, ["/data/chats", "/data/Media"])
    restore(Repository.open(storage, recovery_key=key), "latest", "/restored")

The format is specified in docs/FORMAT.md (section Repository).
"""

from __future__ import annotations

from e2ebackup.repo.backup import BackupStats, backup, backup_stream
from e2ebackup.repo.check import VerifyReport, verify
from e2ebackup.repo.diff import Change, diff
from e2ebackup.repo.drops import WriterToken
from e2ebackup.repo.find import Found, find
from e2ebackup.repo.prune import PruneStats, forget
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.restore import RestoreStats, restore
from e2ebackup.repo.retention import Retention
from e2ebackup.repo.writer import backup_as_writer

__all__ = [
    "BackupStats",
    "Change",
    "Found",
    "PruneStats",
    "Repository",
    "RestoreStats",
    "Retention",
    "SnapshotFilter",
    "VerifyReport",
    "WriterToken",
    "backup",
    "backup_as_writer",
    "backup_stream",
    "diff",
    "find",
    "forget",
    "restore",
    "verify",
]
