"""A ``keys/`` object listed, then gone before it is read: a slot replaced meanwhile (``key
passwd`` stores the new slot, then deletes the old), or a delete that a killed process left
under way at the storage (the S3 crash campaign met it). Opening and verifying skip it, as
the replacement opens; before, the open failed with "no such object"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from e2ebackup.repo.check import verify
from e2ebackup.repo.names import key_object_name, new_id
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage
from e2ebackup.storage.base import ObjectInfo
from repo_helpers import PASSWORD, new_repo


class _ListsAGoneKey(LocalStorage):
    """A folder whose listing of ``keys/`` names one more object than it holds."""

    gone = key_object_name(new_id())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from super().list(prefix)
        if "keys/".startswith(prefix) or prefix.startswith("keys/"):
            yield ObjectInfo(self.gone, 600)


def test_a_key_object_gone_after_the_listing_is_skipped(tmp_path: Path) -> None:
    new_repo(tmp_path / "repo")
    storage = _ListsAGoneKey(tmp_path / "repo", create=False)
    assert _ListsAGoneKey.gone in [o.name for o in storage.list("keys/")]
    repo = Repository.open(storage, password=PASSWORD)
    slots, names = repo.key_slots()
    assert len(slots.slots) == 1
    assert _ListsAGoneKey.gone not in names
    report = verify(repo)
    assert report.ok, report.errors
