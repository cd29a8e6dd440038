"""Two-phase prune and the prune lock (format version 3, FORMAT.md "Many writers": Locks,
Two-phase prune).

Prune condemns what nothing uses and deletes it only after the grace period; a backup that
loaded its index before a prune condemned a pack and reuses one of its blobs stays restorable,
and the next prune makes that pack live again instead of deleting it. Version-2 repositories
prune at once, as before.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.errors import InvalidArgument, RepositoryCorrupted, RepositoryLocked
from e2ebackup.repo import repository as repository_module
from e2ebackup.repo.backup import BackupStats, backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.codec import write_json
from e2ebackup.repo.index import Index
from e2ebackup.repo.labels import KIND_DATA
from e2ebackup.repo.lock import Lock
from e2ebackup.repo.names import new_id
from e2ebackup.repo.pack import PackWriter
from e2ebackup.repo.prune import DEFAULT_GRACE, forget
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from repo_helpers import cli, new_repo, open_repo, snapshot_of

DAY = 86400.0


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))


def v3_repo(path: Path) -> Repository:
    repo = new_repo(path)
    assert repo.version >= 3
    return repo


def write_random(path: Path, size: int = 2 << 20) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def packs_on_disk(repo_path: Path) -> set[str]:
    return {p.name for p in (repo_path / "data").rglob("*") if p.is_file()}


def stored(repo_path: Path, prefix: str) -> set[str]:
    folder = repo_path / prefix
    return {f"{prefix}/{p.name}" for p in folder.iterdir()} if folder.exists() else set()


def restored_equal(repo: Repository, sid: str, src: Path, target: Path) -> bool:
    restore(repo, sid, target)
    return snapshot_of(target / src.name) == snapshot_of(src)


def forgotten_state(tmp_path: Path) -> tuple[Path, Repository, Path, Path]:
    """A repository with two snapshots (``old`` of a 2 MiB random file, ``new`` of another
    folder) where forgetting the older leaves its packs unused."""
    path = tmp_path / "repo"
    repo = v3_repo(path)
    old, new = tmp_path / "old", tmp_path / "new"
    write_random(old / "x.bin")
    write_random(new / "y.bin", 1 << 20)
    backup(repo, [old])
    backup(repo, [new])
    return path, repo, old, new


def condemn_everything(repo: Repository) -> None:
    """Replaces the repository's index objects with one that lists every pack condemned (as a
    prune does when it finds them unused)."""
    head = repo.head(refresh=True)
    repo.reload_index()
    index = repo.index
    condemned = Index()
    when = time.time()
    for pack_id, entries in index.pack_entries().items():
        condemned.add_pack(pack_id, index.pack_sizes[pack_id], entries, condemned=when)
    name = condemned.save_new(repo.storage, repo.keys)
    assert name is not None
    repo.commit(remove_indexes=head.indexes, add_indexes=[name])
    repo.reload_index()


# ---- prune: condemn, wait, delete -----------------------------------------------------------


def test_prune_condemns_and_deletes_nothing_within_the_grace_period(tmp_path: Path) -> None:
    path, repo, _, new = forgotten_state(tmp_path)
    packs, snaps, indexes = packs_on_disk(path), stored(path, "snapshots"), stored(path, "index")
    stats = forget(repo, keep_last=1, group_by=(), prune=True)
    assert stats.snapshots_removed == 1
    assert stats.packs_condemned >= 1
    assert stats.packs_kept_condemned == stats.packs_condemned
    assert stats.bytes_condemned > 2 << 20
    assert stats.packs_deleted == 0
    assert packs_on_disk(path) == packs, "no pack is deleted within the grace period"
    assert stored(path, "snapshots") == snaps, "the forgotten snapshot waits too"
    assert stored(path, "index") >= indexes, "so do the index objects prune replaced"
    reopened = open_repo(path)
    assert len(reopened.index.condemned) == stats.packs_condemned
    assert len(reopened.head().snapshots) == 1
    assert restored_equal(reopened, reopened.head().snapshots[0], new, tmp_path / "out")
    report = verify(reopened, read_data=True)
    assert report.ok, report.errors
    assert not any("interrupted" in w for w in report.warnings), "forgotten, not a stray"
    # Again within the grace period: the condemned packs stay condemned, nothing is deleted.
    again = forget(reopened, keep_last=1, group_by=(), prune=True)
    assert (again.packs_condemned, again.packs_deleted) == (0, 0)
    assert again.packs_kept_condemned == stats.packs_condemned
    assert packs_on_disk(path) == packs


def test_grace_zero_deletes_what_an_earlier_prune_condemned(tmp_path: Path) -> None:
    path, repo, _, new = forgotten_state(tmp_path)
    first = forget(repo, keep_last=1, group_by=(), prune=True)
    second = forget(repo, keep_last=1, group_by=(), prune=True, grace=0)
    assert second.packs_deleted == first.packs_condemned >= 1
    assert second.bytes_freed > 2 << 20
    live = set(repo.head(refresh=True).snapshots)
    assert stored(path, "snapshots") == {f"snapshots/{s}" for s in live}
    assert stored(path, "index") == set(repo.head().indexes)
    # The deleted packs stay listed (condemned) until the next prune sees them gone, so that
    # no backup adopts them meanwhile as packs nobody indexed; verify accepts that.
    report = verify(open_repo(path), read_data=True)
    assert report.ok, report.errors
    third = forget(repo, keep_last=1, group_by=(), prune=True, grace=0)
    assert third.packs_deleted == 0
    assert not open_repo(path).index.condemned
    assert restored_equal(repo, repo.head().snapshots[0], new, tmp_path / "out")


def test_grace_zero_in_one_run_deletes_at_once(tmp_path: Path) -> None:
    path, repo, _, _ = forgotten_state(tmp_path)
    before = packs_on_disk(path)
    stats = forget(repo, keep_last=1, group_by=(), prune=True, grace=0)
    assert stats.packs_condemned == stats.packs_deleted >= 1
    assert stats.packs_kept_condemned == 0
    assert len(packs_on_disk(path)) == len(before) - stats.packs_deleted
    assert len(stored(path, "snapshots")) == 1


def test_after_the_grace_period_prune_deletes_and_clears_old_tombstones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, repo, _, new = forgotten_state(tmp_path)
    first = forget(repo, keep_last=1, group_by=(), prune=True)
    dropped = set(repo.head(refresh=True).dropped)
    assert any(n.startswith("snapshots/") for n in dropped)
    assert any(n.startswith("index/") for n in dropped)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + DEFAULT_GRACE + DAY)
    second = forget(repo, keep_last=1, group_by=(), prune=True)
    assert second.packs_deleted == first.packs_condemned
    assert len(stored(path, "snapshots")) == 1
    head = repo.head(refresh=True)
    assert stored(path, "index") >= set(head.indexes)
    # Objects deleted and tombstones over a day old: left out of the head. (The index object
    # the first prune wrote is now replaced in turn and waits for its own grace period.)
    assert not dropped & (stored(path, "index") | stored(path, "snapshots"))
    assert not dropped & set(head.dropped)
    assert restored_equal(repo, head.snapshots[0], new, tmp_path / "out")


def test_forget_without_prune_keeps_the_snapshot_object(tmp_path: Path) -> None:
    path, repo, _, _ = forgotten_state(tmp_path)
    stats = forget(repo, keep_last=1, group_by=())
    assert stats.snapshots_removed == 1
    assert len(stored(path, "snapshots")) == 2
    assert len(repo.head(refresh=True).snapshots) == 1


def test_prune_leaves_packs_no_index_lists_alone(tmp_path: Path) -> None:
    path, repo, _, _ = forgotten_state(tmp_path)
    orphan = write_orphan_pack(repo)
    forget(repo, keep_last=1, group_by=(), prune=True, grace=0)
    assert orphan in packs_on_disk(path), "it may be a running backup's pack"


def write_orphan_pack(repo: Repository) -> str:
    """A pack stored as a running (or crashed) backup stores it, in no index."""
    names: list[str] = []
    writer = PackWriter(
        repo.storage, repo.keys, lambda pack_id, size, entries: names.append(pack_id)
    )
    ((blob_id, sealed),) = repo.codec.seal_many(KIND_DATA, [os.urandom(1000)], threads=1)
    writer.add(KIND_DATA, blob_id, sealed)
    writer.finish()
    (pack_id,) = names
    return pack_id


def test_prune_leaves_unlisted_objects_without_tombstone_alone(tmp_path: Path) -> None:
    """A snapshot or index object that no head lists and no tombstone names may be a running
    backup's, stored before its head: prune does not delete it."""
    path, repo, _, _ = forgotten_state(tmp_path)
    sid = repo.write_snapshot({"time": time.time(), "paths": [], "tree": "0" * 64})
    index_name = f"index/{new_id()}"
    write_json(repo.storage, repo.keys, index_name, {"packs": []})
    forget(repo, keep_last=1, group_by=(), prune=True, grace=0)
    assert f"snapshots/{sid}" in stored(path, "snapshots")
    assert index_name in stored(path, "index")


# ---- condemned packs: read, not reused ------------------------------------------------------


def test_restore_reads_a_blob_only_a_condemned_pack_holds(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = v3_repo(path)
    src = tmp_path / "src"
    write_random(src / "x.bin")
    sid, _ = backup(repo, [src])
    condemn_everything(repo)
    reopened = open_repo(path)
    index = reopened.index
    assert index.condemned
    assert set(index.condemned) == set(index.pack_sizes)
    blob_id, loc = next(iter(index.items()))
    assert blob_id not in index
    with pytest.raises(RepositoryCorrupted):
        index.get(blob_id)
    assert index.locate(blob_id) == loc
    assert restored_equal(reopened, sid, src, tmp_path / "out")
    report = verify(reopened, read_data=True)
    assert report.ok, report.errors


def test_a_backup_does_not_deduplicate_against_a_condemned_blob(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = v3_repo(path)
    src = tmp_path / "src"
    write_random(src / "x.bin")
    first, _ = backup(repo, [src])
    condemn_everything(repo)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(src / "x.bin", other / "x-copy.bin")
    sid, stats = backup(open_repo(path), [other])
    assert stats.bytes_added > 2 << 20, "the blobs are stored again, in live packs"
    reopened = open_repo(path)
    assert all(b in reopened.index for b, loc in reopened.index.items() if loc.kind == KIND_DATA)
    # The condemned data pack holds nothing that no live pack holds now: deleted. The tree
    # pack holds the first snapshot's folder listing, used and held by no live pack: revived.
    stats_prune = forget(reopened, keep_last=2, group_by=(), prune=True, grace=0)
    assert (stats_prune.packs_revived, stats_prune.packs_deleted) == (1, 1)
    final = open_repo(path)
    assert restored_equal(final, sid, other, tmp_path / "out")
    assert restored_equal(final, first, src, tmp_path / "out-first")


def test_unchanged_file_is_read_again_when_its_blobs_are_condemned(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = v3_repo(path)
    src = tmp_path / "src"
    write_random(src / "x.bin")
    backup(repo, [src])
    condemn_everything(repo)
    _, stats = backup(open_repo(path), [src])
    assert stats.files_unmodified == 0
    assert stats.bytes_added > 2 << 20


# ---- the race: a backup beside a prune --------------------------------------------------------


def test_backup_racing_a_prune_stays_restorable_and_revives_the_pack(tmp_path: Path) -> None:
    """Backup B loads the index, then pauses (inside its progress callback) while a prune
    condemns the pack holding a blob B reuses; B commits after the prune. B's snapshot
    restores byte-identical, and the next prune, even with grace 0, makes that pack live
    again instead of deleting it."""
    path, repo, old, _ = forgotten_state(tmp_path)
    racer = tmp_path / "racer"
    racer.mkdir()
    shutil.copyfile(old / "x.bin", racer / "same-content.bin")
    inside, go = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def progress(stats: BackupStats, where: str) -> None:
        if not inside.is_set():
            inside.set()
            assert go.wait(120), "the prune did not finish"

    def run_backup() -> None:
        try:
            result["backup"] = backup(open_repo(path), [racer], progress=progress)
        except BaseException as e:  # handed to the test's thread
            result["error"] = e

    thread = threading.Thread(target=run_backup)
    thread.start()
    try:
        assert inside.wait(120), "the backup never reported progress"
        pruned = forget(repo, keep_last=1, group_by=(), prune=True)
    finally:
        go.set()
        thread.join(120)
    assert "error" not in result, result.get("error")
    sid, stats = result["backup"]
    assert pruned.packs_condemned >= 1
    assert stats.bytes_added < 1 << 20, "the backup reused the blobs of the condemned pack"
    reopened = open_repo(path)
    assert sid in reopened.head().snapshots
    assert reopened.index.condemned, "the reused pack is condemned until the next prune"
    assert restored_equal(reopened, sid, racer, tmp_path / "out1")
    # The next prune finds the blob used, held by no live pack: live again, not deleted.
    before = packs_on_disk(path)
    after = forget(reopened, keep_last=2, group_by=(), prune=True, grace=0)
    assert after.packs_revived == 1
    revived = before - packs_on_disk(path)
    assert len(revived) == after.packs_deleted
    final = open_repo(path)
    # Still listed condemned: only the packs just deleted (until the next prune sees them gone).
    assert not set(final.index.condemned) & packs_on_disk(path)
    assert all(b in final.index for b, loc in final.index.items() if loc.kind == KIND_DATA)
    assert restored_equal(final, sid, racer, tmp_path / "out2")
    report = verify(final, read_data=True)
    assert report.ok, report.errors


# ---- locks ------------------------------------------------------------------------------------


def test_prune_lock_conflicts_with_prune_and_exclusive_not_shared(tmp_path: Path) -> None:
    repo = v3_repo(tmp_path / "repo")
    with repo.lock(exclusive=False, prune=True):
        with pytest.raises(RepositoryLocked, match="prune lock"):
            repo.lock(exclusive=False, prune=True).acquire()
        with pytest.raises(RepositoryLocked):
            repo.lock(exclusive=True).acquire()
        with repo.lock(exclusive=False):
            pass
        with pytest.raises(RepositoryLocked):
            forget(repo, keep_last=1, prune=True)
    with repo.lock(exclusive=True), pytest.raises(RepositoryLocked):
        repo.lock(exclusive=False, prune=True).acquire()
    with repo.lock(exclusive=False):
        with repo.lock(exclusive=False, prune=True):
            pass
        forget(repo, keep_last=1, prune=True)  # beside a backup's or a reader's shared lock


def test_lock_records_say_prune_and_old_records_are_not_prune_locks(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = v3_repo(path)
    with repo.lock(exclusive=False, prune=True) as held:
        record = json.loads(json.dumps(read_lock_record(repo, held.name)))
        assert record["prune"] is True
        assert record["exclusive"] is False
    # A shared lock written before version 3 (no "prune"): no conflict with a prune lock.
    old = f"locks/{new_id()}"
    record = {"host": "elsewhere", "pid": 1, "time": time.time(), "exclusive": False}
    write_json(repo.storage, repo.keys, old, record)
    with repo.lock(exclusive=False, prune=True):
        pass
    with pytest.raises(InvalidArgument, match="exclusive or a prune lock"):
        Lock(repo.storage, repo.keys, exclusive=True, prune=True)


def read_lock_record(repo: Repository, name: str) -> dict[str, Any]:
    from e2ebackup.repo.codec import read_json

    value = read_json(repo.storage, repo.keys, name)
    assert isinstance(value, dict)
    return value


# ---- the index: merged rule and validation ---------------------------------------------------


def pack_listing(repo: Repository) -> list[dict[str, Any]]:
    index = repo.index
    return [
        {
            "id": pack_id,
            "size": index.pack_sizes[pack_id],
            "blobs": [[loc.kind, b.hex(), loc.offset, loc.length] for b, loc in entries],
        }
        for pack_id, entries in index.pack_entries().items()
    ]


@pytest.mark.parametrize("live_first", [True, False])
def test_a_pack_listed_live_by_any_index_is_live(tmp_path: Path, live_first: bool) -> None:
    repo = v3_repo(tmp_path / "repo")
    src = tmp_path / "src"
    write_random(src / "x.bin", 4000)
    backup(repo, [src])
    packs = pack_listing(repo)
    names = []
    for when in (None, 100.0, 200.0):
        name = f"index/{new_id()}"
        listed = [dict(p, condemned=when) if when is not None else p for p in packs]
        write_json(repo.storage, repo.keys, name, {"packs": listed})
        names.append(name)
    both = names[:2] if live_first else names[1::-1]
    index = Index.load(repo.storage, repo.keys, both, condemned=True)
    assert not index.condemned
    assert all(b in index for b, _ in index.items())
    index = Index.load(repo.storage, repo.keys, names[1:], condemned=True)
    assert set(index.condemned.values()) == {200.0}, "the greatest time counts"
    assert not any(b in index for b, _ in index.items())


@pytest.mark.parametrize("when", [-1, "1", True, None, float(2**34 + 1), [1]])
def test_a_bad_condemned_time_is_damage(tmp_path: Path, when: object) -> None:
    repo = v3_repo(tmp_path / "repo")
    src = tmp_path / "src"
    write_random(src / "x.bin", 4000)
    backup(repo, [src])
    name = f"index/{new_id()}"
    listed = [dict(p, condemned=when) for p in pack_listing(repo)]
    write_json(repo.storage, repo.keys, name, {"packs": listed})
    with pytest.raises(RepositoryCorrupted, match="malformed"):
        Index.load(repo.storage, repo.keys, [name], condemned=True)


def test_condemned_is_refused_before_version_3(tmp_path: Path) -> None:
    repo = v3_repo(tmp_path / "repo")
    src = tmp_path / "src"
    write_random(src / "x.bin", 4000)
    backup(repo, [src])
    name = f"index/{new_id()}"
    listed = [dict(p, condemned=1.5) for p in pack_listing(repo)]
    write_json(repo.storage, repo.keys, name, {"packs": listed})
    assert Index.load(repo.storage, repo.keys, [name], condemned=True).condemned
    with pytest.raises(RepositoryCorrupted, match="malformed"):
        Index.load(repo.storage, repo.keys, [name])


# ---- version 2 keeps pruning at once ----------------------------------------------------------


def test_version_2_prunes_at_once_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "VERSION", 2)
    path = tmp_path / "repo"
    repo = new_repo(path)
    assert open_repo(path).version == 2
    old, new = tmp_path / "old", tmp_path / "new"
    write_random(old / "x.bin")
    write_random(new / "y.bin", 1 << 20)
    backup(repo, [old])
    backup(repo, [new])
    orphan = write_orphan_pack(repo)
    before = packs_on_disk(path)
    stats = forget(repo, keep_last=1, group_by=(), prune=True)  # the default grace: ignored
    assert (stats.packs_condemned, stats.packs_kept_condemned, stats.packs_revived) == (0, 0, 0)
    assert stats.packs_deleted >= 2
    assert orphan not in packs_on_disk(path), "version 2 deletes unindexed packs, as before"
    assert len(packs_on_disk(path)) == len(before) - stats.packs_deleted
    assert len(stored(path, "snapshots")) == 1
    assert stored(path, "index") == set(repo.head(refresh=True).indexes)
    assert repo.index.condemned == {}
    # And forget takes the exclusive lock there.
    with repo.lock(exclusive=True), pytest.raises(RepositoryLocked):
        forget(repo, keep_last=1)
    assert restored_equal(repo, repo.head().snapshots[0], new, tmp_path / "out")


# ---- the command line -------------------------------------------------------------------------


def test_forget_prune_grace_on_the_command_line(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    r = cli(tmp_path, "init", "-r", repo, "--json")
    assert r.returncode == 0, r.stderr
    old, new = tmp_path / "old", tmp_path / "new"
    write_random(old / "x.bin")
    write_random(new / "y.bin", 1 << 20)
    for src in (old, new):
        assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    args = ("forget", "-r", repo, "--keep-last", "1", "--group-by", "", "--prune")
    r = cli(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    assert "marked for deletion" in r.stdout
    assert "waiting for the grace period" in r.stdout
    r = cli(tmp_path, *args, "--grace", "36h", "--json")
    out = json.loads(r.stdout)
    assert out["packs_deleted"] == 0
    assert out["packs_kept_condemned"] >= 1
    r = cli(tmp_path, *args, "--grace", "0", "--json")
    out = json.loads(r.stdout)
    assert out["packs_deleted"] >= 1
    assert out["packs_kept_condemned"] == 0
    r = cli(tmp_path, *args, "--grace", "1 day")
    assert r.returncode == 2
    assert "grace period" in r.stderr


def test_a_blob_two_packs_hold_is_repacked_once_and_verify_accepts_either_place(
    tmp_path: Path,
) -> None:
    """Found by the crash campaign: a killed prune's new packs, adopted by the next backup,
    hold blobs that the old packs hold too; the next prune copied such a blob from both packs
    into one new pack, and verify, reading that pack's header as a dict, reported every blob
    after the duplicates as misplaced. Now each blob is copied once, and a header that holds a
    blob twice (left by the old prune) passes verify wherever the index places it."""
    from e2ebackup.repo.names import pack_name
    from e2ebackup.repo.pack import read_pack_header

    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.bin").write_bytes(os.urandom(300_000))
    (src / "drop.bin").write_bytes(os.urandom(900_000))
    repo = new_repo(tmp_path / "repo")
    backup(repo, [src])
    (src / "drop.bin").unlink()
    backup(repo, [src])
    # A second copy of every data pack, listed live (what adopting a killed prune's packs does).
    index = repo.index
    copies = Index()
    writer = PackWriter(repo.storage, repo.keys, lambda p, n, e: copies.add_pack(p, n, e))
    for pack_id, entries in index.pack_entries().items():
        raw = repo.storage.read(pack_name(pack_id), length=index.pack_sizes[pack_id])
        for blob_id, loc in entries:
            if loc.kind == KIND_DATA:
                writer.add(loc.kind, blob_id, raw[loc.offset : loc.offset + loc.length])
    writer.finish()
    name = copies.save_new(repo.storage, repo.keys)
    assert name is not None
    repo.commit(add_indexes=[name])
    repo = open_repo(tmp_path / "repo")
    forget(repo, keep_last=1, prune=True, grace=0)
    repo = open_repo(tmp_path / "repo")
    for pack_id, size in repo.index.pack_sizes.items():
        if pack_id in repo.index.condemned:
            continue  # deleted (grace 0), listed until the next prune
        ids = [b for b, _ in read_pack_header(repo.storage, repo.keys, pack_id, size)]
        assert len(ids) == len(set(ids)), f"pack {pack_id[:8]} holds a blob twice"
    assert verify(repo, read_data=True).ok
    restore(repo, "latest", str(tmp_path / "out"))
    assert snapshot_of(tmp_path / "out" / "src") == snapshot_of(src)
