"""The repository: round trips, dedup, tampering and rollback, live SQLite, locks, keys."""

from __future__ import annotations

import errno
import functools
import importlib
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.errors import (
    InvalidArgument,
    NotARepository,
    RepositoryCorrupted,
    RepositoryLocked,
    WrongPassword,
    WrongRecoveryKey,
)
from e2ebackup.keys import RecoveryKey
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.codec import write_json
from e2ebackup.repo.diff import diff
from e2ebackup.repo.prune import forget
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import Restorer, restore
from e2ebackup.repo.sqlite import capture
from e2ebackup.storage import LocalStorage
from repo_helpers import PASSWORD, make_tree, new_repo, open_repo, snapshot_of

# The modules, not the functions of the same names that e2ebackup.repo exports.
restore_module = importlib.import_module("e2ebackup.repo.restore")
backup_module = importlib.import_module("e2ebackup.repo.backup")
extract_module = importlib.import_module("e2ebackup.repo.extract")


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))


def test_round_trip_restores_bit_identical(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=2000, big=[20 << 20, 3 << 20])
    repo = new_repo(tmp_path / "repo")
    sid, stats = backup(repo, [str(src)])
    assert stats.errors == 0
    restore(open_repo(tmp_path / "repo"), "latest", str(tmp_path / "out"))
    assert snapshot_of(tmp_path / "out" / "src") == snapshot_of(src)
    # One file, and one subtree: each at its path in the snapshot.
    restore(repo, sid[:10], str(tmp_path / "one"), subpath="src/big1.bin")
    assert os.listdir(tmp_path / "one") == ["src"]
    assert (tmp_path / "one" / "src" / "big1.bin").read_bytes() == (src / "big1.bin").read_bytes()
    restore(repo, sid, str(tmp_path / "sub"), subpath="src/many")
    assert snapshot_of(tmp_path / "sub" / "src" / "many") == snapshot_of(src / "many")
    report = verify(repo, read_data=True)
    assert report.ok, report.errors
    # 2000 small files became a handful of pack objects, not 2000.
    assert len(list(repo.storage.list("data/"))) < 10


@pytest.mark.slow
def test_round_trip_with_large_files(tmp_path: Path) -> None:
    # Peak use is two copies of 2 GiB. CI's disk is shared with other machines: with less free
    # it would fill the disk and fail the tests after it, so it is skipped, saying so (-ra).
    free = shutil.disk_usage(tmp_path).free
    if free < 5 << 30:
        pytest.skip(f"needs 5 GiB free in {tmp_path.parent}, has {free >> 20} MiB")
    src = tmp_path / "src"
    make_tree(src, small_files=10_000, big=[1 << 30, 1 << 30])
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    expected = snapshot_of(src)
    # The source goes before the restore: CI's disk is shared, and this keeps the test's peak
    # at two copies of the 2 GiB (source and repository, then repository and restore).
    shutil.rmtree(src)
    restore(repo, "latest", str(tmp_path / "out"))
    assert snapshot_of(tmp_path / "out" / "src") == expected


def test_incremental_backups_store_only_what_changed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=100, big=[64 << 20])
    repo = new_repo(tmp_path / "repo")
    _, first = backup(repo, [str(src)])
    _, again = backup(repo, [str(src)])
    assert again.bytes_added < 0.01 * first.bytes_added
    assert again.bytes_read == 0  # unchanged files are not even read
    with open(src / "big0.bin", "ab") as f:
        f.write(os.urandom(1 << 20))
    _, appended = backup(repo, [str(src)])
    # About the appended megabyte (one or two chunks around the old end), not 65 MiB.
    assert (1 << 20) <= appended.bytes_added < 12 << 20
    assert appended.files_changed == 1
    restore(repo, "latest", str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "big0.bin").read_bytes() == (src / "big0.bin").read_bytes()


def test_live_sqlite_database_is_captured_consistently(tmp_path: Path) -> None:
    db = tmp_path / "src" / "msgstore.db"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("pragma journal_mode=wal")  # chat apps use WAL; the -wal file holds new rows
    con.execute("create table messages (id integer primary key, body text, mirror text)")
    con.commit()
    stop = threading.Event()

    def writer() -> None:
        w = sqlite3.connect(db)
        i = 0
        while not stop.is_set():
            # Two rows per transaction that must always agree.
            body = f"message {i} " * 50
            w.execute("insert into messages (body, mirror) values (?, ?)", (body, body))
            w.execute("insert into messages (body, mirror) values (?, ?)", (body, body))
            w.commit()
            i += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        repo = new_repo(tmp_path / "repo")
        _, stats = backup(repo, [str(db.parent)])
    finally:
        stop.set()
        t.join()
    assert stats.sqlite_captured == 1
    restore(repo, "latest", str(tmp_path / "out"))
    # A journal or WAL caught mid-transaction must not come back beside the consistent copy.
    assert sorted(os.listdir(tmp_path / "out" / "src")) == ["msgstore.db"]
    restored = sqlite3.connect(tmp_path / "out" / "src" / "msgstore.db")
    assert restored.execute("pragma integrity_check").fetchone() == ("ok",)
    count, bad = restored.execute("select count(*), sum(body != mirror) from messages").fetchone()
    assert count > 0
    assert count % 2 == 0
    assert not bad


# The header fields SQLite's backup API rewrites in the copy it makes: the file change counter
# (bytes 24-27) and the "version-valid-for" number (bytes 92-95).
SQLITE_COUNTERS = set(range(24, 28)) | set(range(92, 96))


@pytest.mark.parametrize("through_scratch", [False, True])
def test_restored_sqlite_capture_differs_only_in_header_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through_scratch: bool
) -> None:
    """A database captured online comes back with the same pages; one captured through the
    backup API (over 128 MiB: a scratch file) differs from the source in the header's change
    counters only. Neither diff nor verify calls that a change or corruption."""
    if through_scratch:  # the path of large databases, without writing 128 MiB
        monkeypatch.setattr(backup_module, "capture", functools.partial(capture, in_memory=0))
    db = tmp_path / "src" / "app.db"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("create table notes (id integer primary key, body text)")
    for i in range(200):
        con.execute("insert into notes (body) values (?)", (f"note {i} " * 20,))
        con.commit()  # each commit bumps the source's change counter
    con.close()
    repo = new_repo(tmp_path / "repo")
    first, stats = backup(repo, [str(db.parent)])
    second, _ = backup(repo, [str(db.parent)])
    assert stats.sqlite_captured == 1
    restore(repo, "latest", str(tmp_path / "out"))
    source, restored = db.read_bytes(), (tmp_path / "out" / "src" / "app.db").read_bytes()
    assert len(restored) == len(source)
    differing = {i for i, (a, b) in enumerate(zip(source, restored, strict=True)) if a != b}
    assert differing <= SQLITE_COUNTERS
    assert bool(differing) == through_scratch
    check = sqlite3.connect(tmp_path / "out" / "src" / "app.db")
    assert check.execute("pragma integrity_check").fetchone() == ("ok",)
    assert list(check.iterdump()) == list(sqlite3.connect(db).iterdump())
    check.close()
    # The capture of an unchanged database is the same each time: no change between snapshots.
    # (The scratch file, made and unlinked in the database's folder, does change the folder's
    # mtime: the folder itself may show as "U".)
    assert [c for c in diff(repo, first, second) if c.path != "src"] == []
    report = verify(repo, read_data=True)
    assert report.ok, report.errors


def test_a_failed_write_behind_fails_the_restore_and_names_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large chunks are written by the writer thread: its error (a full disk) reaches the
    caller, and the file it was writing never gets a name."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "video.mp4").write_bytes(os.urandom(12 << 20))
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    writers: set[str] = set()
    real_pwrite = extract_module._pwrite_all

    def disk_full_past_4_mib(fd: int, data: bytes, offset: int) -> None:
        writers.add(threading.current_thread().name)
        if offset + len(data) > 4 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_pwrite(fd, data, offset)

    monkeypatch.setattr(extract_module, "_pwrite_all", disk_full_past_4_mib)
    with pytest.raises(OSError, match="No space left"):
        restore(repo, "latest", str(tmp_path / "out"))
    assert any(name.startswith("e2ebackup-write") for name in writers)
    assert os.listdir(tmp_path / "out" / "src") == []


def tamper(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampering_is_detected_by_verify_and_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=50, big=[4 << 20])
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    backup(repo, [str(src)])
    packs = sorted((repo_path / "data").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    biggest = max(packs, key=lambda p: p.stat().st_size)
    tamper(biggest, 1000)
    report = verify(open_repo(repo_path), read_data=True)
    assert not report.ok
    assert any("damaged" in e for e in report.errors)
    with pytest.raises(RepositoryCorrupted):
        restore(open_repo(repo_path), "latest", str(tmp_path / "out"))
    # The damaged file was never published under its name.
    assert not (tmp_path / "out" / "src" / "big0.bin").exists()
    leftovers = [p for p in (tmp_path / "out").rglob("*e2ebackup-tmp")]
    assert leftovers == []


def test_verify_reads_a_subset_of_the_packs(tmp_path: Path) -> None:
    """n/t parts are disjoint and together cover every pack; x% reads that share at random; a
    damaged pack is found by the part it falls in and only by it."""
    src = tmp_path / "src"
    make_tree(src, small_files=50, big=[56 << 20])
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    backup(repo, [str(src)])
    packs = sorted(repo.index.pack_sizes)
    assert len(packs) >= 4
    counts = [verify(repo, subset=f"{n}/3").packs for n in (1, 2, 3)]
    assert sum(counts) == len(packs)
    assert verify(repo, subset="50%").packs == -(-len(packs) // 2)
    assert verify(repo, subset="0.1%").packs == 1
    assert verify(repo, subset="100%").packs == len(packs)
    damaged = max(packs, key=lambda p: repo.index.pack_sizes[p])
    tamper(repo_path / "data" / damaged[:2] / damaged, 1000)
    part = int(damaged[:8], 16) % 3 + 1
    for n in (1, 2, 3):
        assert verify(open_repo(repo_path), subset=f"{n}/3").ok is (n != part)
    for bad in ("0/3", "4/3", "1/0", "3", "0%", "101%", "half"):
        with pytest.raises(InvalidArgument, match="read-data-subset"):
            verify(repo, subset=bad)


def test_restore_reads_ahead_within_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs are read and opened by worker threads ahead of the writer, never by more than
    LOOKAHEAD sealed bytes a thread (plus the run that crossed it); a small window restores every
    byte in order, across many runs per file."""
    monkeypatch.setattr(restore_module, "LOOKAHEAD", 2 << 20)
    monkeypatch.setattr(restore_module, "COALESCE", 1 << 20)
    monkeypatch.setattr(restore_module, "MAX_STEPS_AHEAD", 40)
    src = tmp_path / "src"
    make_tree(src, small_files=300, big=[12 << 20, 5 << 20])
    backup(new_repo(tmp_path / "repo"), [str(src)])
    lock = threading.Lock()
    ahead, peak, biggest_run = [0], [0], [0]
    fetchers: set[str] = set()

    class Watched(Restorer):
        def _fetch(self, run: Any) -> Any:
            with lock:
                ahead[0] += run.end - run.start
                peak[0] = max(peak[0], ahead[0])
                biggest_run[0] = max(biggest_run[0], run.end - run.start)
                fetchers.add(threading.current_thread().name)
            return super()._fetch(run)

        def _do(self, step: Any) -> None:
            super()._do(step)
            if hasattr(step, "read"):  # a run of blobs, written
                with lock:
                    ahead[0] -= step.end - step.start

    repo = open_repo(tmp_path / "repo")
    _, snapshot = repo.find_snapshot("latest")
    with repo.lock(exclusive=False):
        stats = Watched(repo, threads=3).run(snapshot, str(tmp_path / "out"))
    assert snapshot_of(tmp_path / "out" / "src") == snapshot_of(src)
    assert stats.bytes == stats.bytes_total
    assert 0 < peak[0] <= 3 * (2 << 20) + biggest_run[0]  # 3 threads
    assert fetchers
    assert all(name.startswith("e2ebackup-restore") for name in fetchers)


def test_overwrite_replaces_what_stands_in_the_way(tmp_path: Path) -> None:
    """Without ``overwrite`` nothing in the target is touched; with it, a file where a folder
    (with links inside) belongs and a link where a file belongs are replaced."""
    src = tmp_path / "src"
    make_tree(src, small_files=20)
    os.symlink("f00001.txt", src / "many" / "small" / "link")
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    out = tmp_path / "out" / "src"
    out.mkdir(parents=True)
    (out / "many").write_bytes(b"a file where a folder was")
    os.symlink("/etc/hostname", out / "script.sh")
    stats = restore(repo, "latest", str(tmp_path / "out"))
    assert sorted(stats.skipped_existing) == [str(out / "many"), str(out / "script.sh")]
    assert (out / "many").read_bytes() == b"a file where a folder was"
    assert os.readlink(out / "script.sh") == "/etc/hostname"
    restore(repo, "latest", str(tmp_path / "out"), overwrite=True)
    assert snapshot_of(out) == snapshot_of(src)


def test_deleted_swapped_and_replayed_objects(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=5)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    s1, _ = backup(repo, [str(src)])
    (src / "new.txt").write_text("more")
    s2, _ = backup(repo, [str(src)])
    snap1 = repo_path / "snapshots" / s1
    snap2 = repo_path / "snapshots" / s2
    # Swapped: the contents of two snapshot objects exchanged.
    a, b = snap1.read_bytes(), snap2.read_bytes()
    snap1.write_bytes(b)
    snap2.write_bytes(a)
    assert not verify(open_repo(repo_path)).ok
    with pytest.raises(RepositoryCorrupted):
        restore(open_repo(repo_path), s1, str(tmp_path / "x"))
    snap1.write_bytes(a)
    snap2.write_bytes(b)
    # Replayed: a forgotten snapshot put back is ignored and reported.
    old = snap1.read_bytes()
    forget(open_repo(repo_path), keep_last=1)
    snap1.write_bytes(old)
    repo = open_repo(repo_path)
    assert [sid for sid, _ in repo.snapshots()] == [s2]
    report = verify(repo)
    assert report.ok
    assert any("not in the repository's head" in w for w in report.warnings)
    with pytest.raises(InvalidArgument):
        restore(repo, s1[:12], str(tmp_path / "y"))
    # Deleted: a pack or a live snapshot removed from the storage.
    snap2.unlink()
    assert any("deleted" in e for e in verify(open_repo(repo_path)).errors)


def test_rollback_of_the_head_is_detected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=3)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    backup(repo, [str(src)])
    saved = {p.name: p.read_bytes() for p in (repo_path / "heads").iterdir()}
    backup(repo, [str(src)])
    for p in (repo_path / "heads").iterdir():
        p.unlink()
    for name, data in saved.items():
        (repo_path / "heads" / name).write_bytes(data)
    with pytest.raises(RepositoryCorrupted, match="rolled back"):
        open_repo(repo_path).head()


def test_forget_and_prune_free_space_and_keep_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=10, big=[8 << 20])
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    backup(repo, [str(src)])
    (src / "big0.bin").write_bytes(os.urandom(8 << 20))
    backup(repo, [str(src)])

    def size() -> int:
        return sum(p.stat().st_size for p in (repo_path / "data").rglob("*") if p.is_file())

    before = size()
    stats = forget(repo, keep_last=1, prune=True, grace=0)
    assert stats.snapshots_removed == 1
    assert size() < before - (7 << 20)
    assert verify(open_repo(repo_path), read_data=True).ok
    restore(open_repo(repo_path), "latest", str(tmp_path / "out"))
    assert snapshot_of(tmp_path / "out" / "src") == snapshot_of(src)


def test_prune_rewrites_a_pack_only_when_enough_of_it_is_unused(tmp_path: Path) -> None:
    """Forgetting the snapshot that alone used a small file leaves that file's blob in a pack
    that is otherwise live: rewriting 8 MiB to free 20 kB is not worth it (by default); with a
    zero threshold it is rewritten, and the bytes freed are the net saving."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "video.mp4").write_bytes(os.urandom(8 << 20))
    (src / "notes.txt").write_bytes(os.urandom(20_000))
    for threshold, name in ((None, "default"), (0.0, "eager")):
        repo = new_repo(tmp_path / name)
        backup(repo, [str(src)])
        (src / "notes.txt").write_bytes(os.urandom(20_000))
        backup(repo, [str(src)])
        kw = {} if threshold is None else {"repack_unused": threshold}
        stats = forget(repo, keep_last=1, prune=True, grace=0, **kw)  # type: ignore[arg-type]
        if threshold is None:
            assert stats.packs_repacked == 0
            assert 20_000 <= stats.bytes_unused_kept < 21_000
            assert stats.bytes_repacked == 0
        else:
            assert stats.packs_repacked >= 1
            assert stats.bytes_unused_kept == 0
            assert stats.bytes_repacked > 8 << 20
            assert 20_000 <= stats.bytes_freed < 40_000  # net, not the 8 MiB pack deleted
        assert verify(open_repo(tmp_path / name), read_data=True).ok
        restore(open_repo(tmp_path / name), "latest", str(tmp_path / f"out-{name}"))
        assert snapshot_of(tmp_path / f"out-{name}" / "src") == snapshot_of(src)


def test_locks_exclude_writers_and_stale_locks_are_recovered(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    (tmp_path / "src").mkdir()
    with repo.lock(exclusive=True):
        with pytest.raises(RepositoryLocked):
            backup(open_repo(tmp_path / "repo"), [str(tmp_path / "src")])
        with pytest.raises(RepositoryLocked):
            restore(open_repo(tmp_path / "repo"), "latest", str(tmp_path / "o"))
    # A lock left by a process that died (kill -9) is stale and removed.
    lock = repo.lock(exclusive=True)
    record = lock._record()  # forging the lock of a process that died
    record["pid"] = 2**22 + 12345
    write_json(repo.storage, repo.keys, lock.name, record)
    backup(open_repo(tmp_path / "repo"), [str(tmp_path / "src")])


def test_keys_of_a_repository(tmp_path: Path) -> None:
    rk = RecoveryKey.generate()
    path = tmp_path / "repo"
    repo = Repository.init(
        LocalStorage(path), password=PASSWORD, recovery_key=rk, kdf=__import__("repo_helpers").FAST
    )
    with pytest.raises(WrongPassword):
        Repository.open(LocalStorage(path), password="nope")
    with pytest.raises(WrongRecoveryKey):
        Repository.open(LocalStorage(path), recovery_key=RecoveryKey.generate())
    assert Repository.open(LocalStorage(path), recovery_key=rk).id == repo.id
    repo.change_password(PASSWORD, "new password")
    with pytest.raises(WrongPassword):
        Repository.open(LocalStorage(path), password=PASSWORD)
    repo2 = Repository.open(LocalStorage(path), password="new password")
    slots, _ = repo2.key_slots()
    assert sorted(str(s["kind"]) for s in slots.describe()) == ["password", "recovery-key"]
    repo2.remove_key(0)
    with pytest.raises(InvalidArgument, match="last key"):
        repo2.remove_key(0)
    with pytest.raises(NotARepository):
        Repository.open(LocalStorage(tmp_path / "empty"), password="x")
    with pytest.raises(InvalidArgument):
        Repository.init(LocalStorage(path), password="x")
    shutil.rmtree(path)


def test_rotate_copies_everything_under_a_new_key(tmp_path: Path) -> None:
    from e2ebackup.repo.rotate import rotate

    src = tmp_path / "src"
    make_tree(src, small_files=30, big=[3 << 20])
    old = new_repo(tmp_path / "old")
    backup(old, [str(src)])
    (src / "later.txt").write_text("second snapshot")
    backup(old, [str(src)])
    rk = RecoveryKey.generate()
    new = rotate(old, LocalStorage(tmp_path / "new"), password="new pw", recovery_key=rk)
    assert new.id != old.id
    assert len(list(new.snapshots())) == 2
    assert verify(new, read_data=True).ok
    reopened = Repository.open(LocalStorage(tmp_path / "new"), recovery_key=rk)
    restore(reopened, "latest", str(tmp_path / "out"))
    assert snapshot_of(tmp_path / "out" / "src") == snapshot_of(src)
    # No blob of the new repository opens with the old repository's keys.
    loc_id, loc = next(iter(new.index.items()))
    sealed = new.storage.read(
        f"data/{loc.pack[:2]}/{loc.pack}", offset=loc.offset, length=loc.length
    )
    from e2ebackup.errors import InvalidTag

    with pytest.raises(InvalidTag):
        old.codec.open(loc.kind, loc_id, sealed)
    with pytest.raises(WrongPassword):
        Repository.open(LocalStorage(tmp_path / "new"), password=PASSWORD)


def test_a_missing_snapshot_does_not_block_restoring_another(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=3)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    s1, _ = backup(repo, [str(src)])
    (src / "more.txt").write_text("x")
    s2, _ = backup(repo, [str(src)])
    (repo_path / "snapshots" / s2).unlink()
    restore(open_repo(repo_path), s1[:8], str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "script.sh").exists()
    # "latest" is the newest snapshot still stored (docs/FORMAT.md, Heads), with a warning.
    with pytest.warns(RuntimeWarning, match=f"{s2[:8]} is listed but missing"):
        restore(open_repo(repo_path), "latest", str(tmp_path / "out2"))
    assert not (tmp_path / "out2" / "src" / "more.txt").exists()
    assert (tmp_path / "out2" / "src" / "script.sh").exists()
    with pytest.raises(RepositoryCorrupted, match="missing"):
        restore(open_repo(repo_path), s2[:8], str(tmp_path / "out3"))
