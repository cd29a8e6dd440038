"""Prune and writers' drops (docs/FORMAT.md, Writers that cannot read): a drop's pack that no
live snapshot uses is condemned (a tombstone for readers, a ``condemned/`` mark for writers,
who read no head) and deleted after the grace period; a forgotten drop whose packs are all
gone is deleted; nothing a live snapshot needs is lost, and no device reports damage."""

from __future__ import annotations

import os
from pathlib import Path

from e2ebackup.keys import RecoveryKey
from e2ebackup.repo.check import verify
from e2ebackup.repo.drops import WriterToken
from e2ebackup.repo.prune import forget
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from e2ebackup.repo.writer import backup_as_writer
from e2ebackup.storage import LocalStorage
from repo_helpers import device, snapshot_of


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo_path = tmp / "repo"
        self.src = tmp / "src"
        self.src.mkdir()
        self.key = RecoveryKey.generate()
        with device(tmp / "state-reader"):
            repo = Repository.init(LocalStorage(self.repo_path), recovery_key=self.key)
            self.token = repo.issue_writer_token().secret()

    def write(self, **kw: object) -> tuple[str, int]:
        with device(self.tmp / "state-writer"):
            sid, stats, _ = backup_as_writer(
                LocalStorage(self.repo_path, create=False),
                WriterToken.parse(self.token),
                [self.src],
                **kw,  # type: ignore[arg-type]
            )
        return sid, stats.bytes_added

    def reader(self, state: str = "state-reader") -> Repository:
        with device(self.tmp / state):
            return Repository.open(
                LocalStorage(self.repo_path, create=False), recovery_key=self.key
            )

    def names(self, prefix: str) -> set[str]:
        return {i.name for i in LocalStorage(self.repo_path, create=False).list(prefix)}

    def restores(self, sid: str, out: str) -> bool:
        with device(self.tmp / "state-reader"):
            restore(self.reader(), sid, self.tmp / out)
        return snapshot_of(self.tmp / out / "src") == snapshot_of(self.src)


def test_a_forgotten_drops_own_packs_are_condemned_then_deleted(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    (s.src / "old.bin").write_bytes(os.urandom(2_000_000))
    first, _ = s.write()
    packs_first = s.names("data/")
    (s.src / "old.bin").unlink()
    (s.src / "new.bin").write_bytes(os.urandom(2_000_000))
    second, _ = s.write()
    with device(tmp_path / "state-reader"):
        repo = s.reader()
        repo.commit(remove_snapshots=[first])
        stats = forget(s.reader(), keep_last=1000, prune=True, grace=3600)
    assert stats.packs_condemned >= 1
    assert stats.packs_deleted == 0
    marks = s.names("condemned/")
    assert marks
    assert {f"data/{m[10:12]}/{m[10:]}" for m in marks} <= packs_first

    # Within the grace period: nothing deleted, every device sees no damage.
    with device(tmp_path / "state-reader"):
        assert s.reader("state-new").drop_view().problems == []
        stats = forget(s.reader(), keep_last=1000, prune=True, grace=0)
    assert stats.packs_deleted >= 1
    assert not s.names("condemned/")
    assert not (packs_first - s.names("data/")).isdisjoint(packs_first)
    with device(tmp_path / "state-reader"):
        for state in ("state-reader", "state-new-2"):
            repo = s.reader(state)
            assert repo.drop_view().problems == []
            assert repo.snapshot_ids() == [second]
            assert verify(repo, read_data=True).ok
    assert s.restores(second, "out")
    # The forgotten drop is deleted once its packs are; the writer's chain goes on.
    third, _ = s.write()
    with device(tmp_path / "state-reader"):
        repo = s.reader("state-new-3")
        assert repo.drop_view().problems == []
        assert sorted(repo.snapshot_ids()) == sorted([second, third])


def test_a_writer_does_not_reuse_a_condemned_pack_and_a_reused_one_is_revived(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path)
    data = os.urandom(2_000_000)
    (s.src / "a.bin").write_bytes(data)
    first, _ = s.write()
    (s.src / "a.bin").unlink()
    (s.src / "b.txt").write_text("b")
    s.write()
    with device(tmp_path / "state-reader"):
        s.reader().commit(remove_snapshots=[first])
        forget(s.reader(), keep_last=1000, prune=True, grace=3600)
    marks = s.names("condemned/")
    assert marks
    # The file comes back: the writer sees the mark and stores its blobs again.
    (s.src / "a.bin").write_bytes(data)
    third, added = s.write()
    assert added > 1_000_000  # the 2 MB file's chunks
    assert s.restores(third, "out3")

    # A writer that did not see the mark (it listed before the prune put it) reuses the pack:
    # the next prune finds it used and makes it live again.
    (s.src / "a.bin").unlink()
    fourth, _ = s.write()
    with device(tmp_path / "state-reader"):
        s.reader().commit(remove_snapshots=[third])
        forget(s.reader(), keep_last=1000, prune=True, grace=3600)
    for mark in s.names("condemned/"):
        LocalStorage(s.repo_path, create=False).delete(mark)
    (s.src / "a.bin").write_bytes(data)
    fifth, added = s.write()
    assert added < 100_000  # only listings: the file's chunks are in the condemned pack
    with device(tmp_path / "state-reader"):
        stats = forget(s.reader(), keep_last=1000, prune=True, grace=0)
        assert stats.packs_revived >= 1
        repo = s.reader("state-new")
        assert repo.drop_view().problems == []
        assert verify(repo, read_data=True).ok
    assert s.restores(fifth, "out5")
    assert fourth in s.reader().snapshot_ids()
