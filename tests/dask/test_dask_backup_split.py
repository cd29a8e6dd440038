# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""A large file of a backup on Dask read in pieces (``e2ebackup.dask.backup``, ``piece_bytes``):
each piece by the task that gets it, the chunk ids joined in order by the coordinator. The
file restores byte-identical whatever its size around the piece boundaries; the pieces go to
several tasks; a re-run cuts the same chunks; a live SQLite database is still captured whole,
once; a piece that cannot be read fails its file, reported once; the statistics are the single
process's."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest
from dask_helpers import s3_ready_cluster, write_files
from e2ebackup.dask import backup as dask_backup
from e2ebackup.dask.backup import (
    _Captured,
    _FileError,
    _InFirstPiece,
    _joined,
    _pieces,
)
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.backup import BackupStats, backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.labels import KIND_DATA
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from e2ebackup.storage import LocalStorage
from repo_helpers import FAST, PASSWORD, device, open_repo, snapshot_of

MIB = 1 << 20
P = MIB  # the pieces of these tests (the least allowed): a few MiB make several pieces
# Chunks of about 64 KiB: a piece holds a dozen, as a 64 MiB piece holds dozens of 1 MiB ones.
SMALL_CHUNKS = {"min": 16 << 10, "avg": 64 << 10, "max": 256 << 10}


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def new_repo(path: Path) -> Repository:
    return Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST, chunker=SMALL_CHUNKS)


def restores_identical(tmp: Path, repo_path: Path, sid: str, src: Path, name: str) -> None:
    """The single-process restore gives back every file byte for byte, and verify
    ``--read-data`` passes."""
    restore(open_repo(repo_path), sid, tmp / name)
    assert snapshot_of(tmp / name / src.name) == snapshot_of(src)
    report = verify(open_repo(repo_path), read_data=True)
    assert report.ok, report.errors
    assert not report.warnings


def data_blobs(repo_path: Path) -> set[bytes]:
    return {b for b, loc in open_repo(repo_path).index.items() if loc.kind == KIND_DATA}


def tasks_per_file(calls: list[str]) -> Counter[str]:
    """How many finished tasks each file ended: the coordinator reports progress once a task,
    with the last path of its unit (and "" when it commits)."""
    return Counter(os.path.basename(p) for p in calls if p)


def test_a_file_of_several_pieces_is_read_by_several_tasks(
    tmp_path: Path, client: distributed.Client
) -> None:
    """A 7-piece file beside small ones, one piece a unit: seven tasks end with a piece of
    it, and it restores byte-identical (so do the small files, grouped as before)."""
    src = tmp_path / "src"
    write_files(
        src,
        {
            "video.mp4": os.urandom(6 * P + 12345),
            "notes.txt": b"hello\n" * 100,
            "empty": b"",
            "sub/photo.jpg": os.urandom(P // 2),
        },
    )
    new_repo(tmp_path / "repo")
    calls: list[str] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [src],
        client=client,
        unit_bytes=P,
        piece_bytes=P,
        progress=lambda _, path: calls.append(path),
    )
    assert tasks_per_file(calls)["video.mp4"] == 7
    assert (stats.files_new, stats.errors) == (4, 0)
    assert stats.bytes_read == 6 * P + 12345 + 600 + P // 2
    restores_identical(tmp_path, tmp_path / "repo", sid, src, "out")


def test_sizes_around_the_piece_boundaries(tmp_path: Path, client: distributed.Client) -> None:
    """One byte either side of a multiple of the piece: 2P - 1 is read whole, 2P is two
    pieces, 3P - 1 three (the last one byte short), 3P three, 3P + 1 four (the last of one
    byte). Each restores byte-identical, and its size in the snapshot is its size."""
    sizes = {"a": 2 * P - 1, "b": 2 * P, "c": 3 * P - 1, "d": 3 * P, "e": 3 * P + 1}
    src = tmp_path / "src"
    write_files(src, {name: os.urandom(n) for name, n in sizes.items()})
    new_repo(tmp_path / "repo")
    calls: list[str] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [src],
        client=client,
        unit_bytes=P,
        piece_bytes=P,
        progress=lambda _, path: calls.append(path),
    )
    assert tasks_per_file(calls) == {"a": 1, "b": 2, "c": 3, "d": 3, "e": 4}
    assert stats.bytes_read == sum(sizes.values())
    assert (stats.files_new, stats.errors) == (5, 0)
    root = open_repo(tmp_path / "repo").load_snapshot(sid)["tree"]
    (top,) = open_repo(tmp_path / "repo").read_tree(root)
    listed = {e["name"]: e["size"] for e in open_repo(tmp_path / "repo").read_tree(top["subtree"])}
    assert listed == sizes
    restores_identical(tmp_path, tmp_path / "repo", sid, src, "out")


def test_the_pieces_are_cut_at_fixed_offsets() -> None:
    assert _pieces(2 * P - 1, P) == [(0, None)]
    assert _pieces(2 * P, P) == [(0, P), (P, P)]
    assert _pieces(3 * P + 1, P) == [(0, P), (P, P), (2 * P, P), (3 * P, 1)]
    assert _pieces(0, P) == [(0, None)]


def test_a_touched_file_is_read_again_and_stores_no_new_chunk(
    tmp_path: Path, client: distributed.Client
) -> None:
    """The offsets depend on the file, not on the cluster: a file whose times changed is read
    again by other units (another unit size, as another cluster would choose) and gives the
    same chunks, so no data blob is added."""
    src = tmp_path / "src"
    write_files(src, {"big.bin": os.urandom(5 * P + 777)})
    new_repo(tmp_path / "repo")
    dask_backup(open_repo(tmp_path / "repo"), [src], client=client, unit_bytes=P, piece_bytes=P)
    before = data_blobs(tmp_path / "repo")
    os.utime(src / "big.bin", ns=(1_000_000_000, 2_000_000_000))
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"), [src], client=client, unit_bytes=3 * P, piece_bytes=P
    )
    assert (stats.files_changed, stats.bytes_read) == (1, 5 * P + 777)
    assert data_blobs(tmp_path / "repo") == before
    assert stats.blobs_added == 2  # the two listings with the new times; no data
    restores_identical(tmp_path, tmp_path / "repo", sid, src, "out")


def live_database(path: Path) -> tuple[sqlite3.Connection, int]:
    """A WAL database of about 3 MiB in its file, more committed rows only in its WAL, and a
    transaction under way (rows written, not committed). Returns the writer, still open, and
    the rows one consistent read sees."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=0")
    con.execute("create table m (id integer primary key, body blob)")
    con.execute("begin")
    con.executemany("insert into m (body) values (?)", [(os.urandom(1000),) for _ in range(3500)])
    con.execute("commit")
    con.execute("pragma wal_checkpoint(truncate)")
    con.execute("begin")
    con.executemany("insert into m (body) values (?)", [(os.urandom(1000),) for _ in range(200)])
    con.execute("commit")  # in the WAL only: a copy of the file's bytes would miss these
    con.execute("begin")
    con.executemany("insert into m (body) values (?)", [(os.urandom(1000),) for _ in range(500)])
    return con, 3700  # the last 500 are not committed: no consistent read sees them


def test_a_large_sqlite_database_is_captured_whole_once(
    tmp_path: Path, client: distributed.Client
) -> None:
    """A live database large enough for pieces: the task of the first piece captures it
    whole, through SQLite, as of one transaction (the rows committed in the WAL included, the
    uncommitted ones left out); the others read nothing. One capture, its bytes read once:
    the single process's statistics."""
    src = tmp_path / "src"
    src.mkdir()
    con, committed = live_database(src / "msgstore.db")
    try:
        assert (src / "msgstore.db").stat().st_size >= 3 * P
        new_repo(tmp_path / "repo")
        shutil.copytree(tmp_path / "repo", tmp_path / "single")  # the same keys
        calls: list[str] = []
        sid, stats = dask_backup(
            open_repo(tmp_path / "repo"),
            [src],
            client=client,
            unit_bytes=P,
            piece_bytes=P,
            progress=lambda _, path: calls.append(path),
        )
        with device(tmp_path / "other-device"):  # the copy has the same id: trusted apart
            _, single = backup(open_repo(tmp_path / "single"), [src])
    finally:
        con.rollback()
        con.close()
    assert tasks_per_file(calls)["msgstore.db"] >= 3  # it was cut into pieces
    assert (stats.sqlite_captured, stats.files_new, stats.errors) == (1, 1, 0)
    assert stats.sqlite_sidecars_skipped == 2  # the WAL and shared memory
    assert stats.bytes_read == single.bytes_read  # the image, once
    restore(open_repo(tmp_path / "repo"), sid, tmp_path / "out")
    out = sqlite3.connect(tmp_path / "out" / "src" / "msgstore.db")
    assert out.execute("pragma integrity_check").fetchone() == ("ok",)
    assert out.execute("select count(*) from m").fetchone() == (committed,)
    out.close()
    report = verify(open_repo(tmp_path / "repo"), read_data=True)
    assert report.ok, report.errors


def test_a_file_gone_before_its_pieces_are_read_is_reported_once(
    tmp_path: Path, client: distributed.Client
) -> None:
    """A file listed by the coordinator and removed before any task read it: each of its four
    pieces fails, the file is reported once through ``on_error``, counted once as an error and
    not as new, and left out; the files beside it are saved."""
    src = tmp_path / "src"
    write_files(src, {"z-keep.txt": b"kept\n"})
    new_repo(tmp_path / "repo")
    dask_backup(open_repo(tmp_path / "repo"), [src], client=client, piece_bytes=P)
    write_files(src, {"a-vanishes.bin": os.urandom(4 * P), "c-new.bin": os.urandom(2 * P + 1)})
    victim = src / "a-vanishes.bin"

    def progress(stats: BackupStats, path: str) -> None:
        # z-keep.txt is unchanged: reported while the tree is walked, after a-vanishes.bin
        # was listed and before any task read it.
        if path.endswith("z-keep.txt") and victim.exists():
            victim.unlink()

    reported: list[tuple[str, Exception]] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [src],
        client=client,
        unit_bytes=P,
        piece_bytes=P,
        progress=progress,
        on_error=lambda p, e: reported.append((p, e)),
    )
    assert [p for p, _ in reported] == [str(victim)]
    assert isinstance(reported[0][1], FileNotFoundError)
    assert (stats.errors, stats.files_new, stats.files_unmodified) == (1, 1, 1)
    assert stats.bytes_read == 2 * P + 1
    restores_identical(tmp_path, tmp_path / "repo", sid, src, "out")


def test_a_file_that_grew_or_shrank_after_the_walk_restores_as_stored(
    tmp_path: Path, client: distributed.Client
) -> None:
    """Files changed between the walk and their reading: one that grew is stored up to the
    size the walk listed (its last piece ends there); one that shrank is stored as its pieces
    read it (a piece cut short, one past the end empty), with that size. Both restore, their
    blobs authenticated and their sizes matched, and verify passes."""
    src = tmp_path / "src"
    write_files(src, {"z-keep.txt": b"kept\n"})
    new_repo(tmp_path / "repo")
    dask_backup(open_repo(tmp_path / "repo"), [src], client=client, piece_bytes=P)
    grows, shrinks = os.urandom(3 * P + 5), os.urandom(4 * P)
    write_files(src, {"a-grows.bin": grows, "b-shrinks.bin": shrinks})

    def progress(stats: BackupStats, path: str) -> None:
        # z-keep.txt is unchanged: reported during the walk, after both were listed.
        if path.endswith("z-keep.txt") and len(calls) == 0:
            calls.append(path)
            with open(src / "a-grows.bin", "ab") as f:
                f.write(os.urandom(P // 2))
            os.truncate(src / "b-shrinks.bin", 2 * P + 7)

    calls: list[str] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [src],
        client=client,
        unit_bytes=P,
        piece_bytes=P,
        progress=progress,
    )
    assert calls
    assert (stats.errors, stats.files_new) == (0, 2)
    assert stats.bytes_read == len(grows) + 2 * P + 7
    restore(open_repo(tmp_path / "repo"), sid, tmp_path / "out")
    assert (tmp_path / "out" / "src" / "a-grows.bin").read_bytes() == grows
    assert (tmp_path / "out" / "src" / "b-shrinks.bin").read_bytes() == shrinks[: 2 * P + 7]
    report = verify(open_repo(tmp_path / "repo"), read_data=True)
    assert report.ok, report.errors


def test_copies_of_a_large_file_are_stored_once(tmp_path: Path, client: distributed.Client) -> None:
    """The same piece of two files of the same size goes to one unit (up to its bytes), whose
    task stores the chunks of the copy once; so do their short last pieces."""
    src = tmp_path / "src"
    video = os.urandom(4 * P + 3)
    write_files(src, {"a/v.mp4": video, "b/filler.bin": os.urandom(P + 1), "c/v.mp4": video})
    new_repo(tmp_path / "repo")
    calls: list[str] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [src],
        client=client,
        unit_bytes=2 * P,
        piece_bytes=P,
        progress=lambda _, path: calls.append(path),
    )
    assert stats.bytes_read == 2 * len(video) + P + 1
    assert len(video) + P < stats.bytes_added < len(video) + 2 * P  # once, and the filler
    # Units: the first piece of both copies, the second of both... the 3-byte last pieces
    # of both with the filler.
    assert tasks_per_file(calls) == {"v.mp4": 4, "filler.bin": 1}
    restores_identical(tmp_path, tmp_path / "repo", sid, src, "out")


def test_the_pieces_of_a_file_are_joined_in_order() -> None:
    """How the coordinator makes a file of its pieces' outcomes: the chunk ids in piece
    order; one piece that failed fails the file with its error; the first piece's capture of
    a database is the file; a later piece finding a database the first did not (the file
    replaced meanwhile) fails it; pieces past the end of a file that shrank add nothing."""
    a, b, c = (["a1", "a2"], P), (["b1"], P), (["c1", "c2"], 5)
    assert _joined([a, b, c]) == (["a1", "a2", "b1", "c1", "c2"], 2 * P + 5)
    lost = _FileError("PermissionError", "Permission denied", 13)
    assert _joined([a, lost, c]) is lost
    assert _joined([a, b, lost]) is lost
    assert _joined([_Captured(["db"], 4096), _InFirstPiece(), _InFirstPiece()]) == (["db"], 4096)
    assert _joined([_Captured(["db"], 4096), lost]) == (["db"], 4096)
    replaced = _joined([a, _InFirstPiece()])
    assert isinstance(replaced, _FileError)
    assert "replaced" in replaced.message
    empty = (["e"], 0)  # a piece past the end: the empty chunk
    assert _joined([a, (["b1"], 100), empty]) == (["a1", "a2", "b1"], P + 100)
    assert _joined([empty, empty]) == (["e"], 0)


def test_the_statistics_are_those_of_one_process(
    tmp_path: Path, client: distributed.Client
) -> None:
    """The same tree backed up by one process and on Dask with pieces, into two copies of one
    empty repository (the same keys, so the same chunker): every count and byte total is the
    same. The blobs added differ only around the cuts: a piece ends with a forced cut and the
    next starts afresh, so the chunks that cross an offset in one process are cut otherwise on
    Dask until the content-defined cuts fall in step again (a few chunks a cut); the other
    chunks are the same blobs."""
    src = tmp_path / "src"
    files = {
        "Media/clip.mp4": os.urandom(7 * P + 4321),
        "Media/other.mov": os.urandom(3 * P),
        "Media/photo.jpg": os.urandom(P + 5),
        "docs/a.txt": b"a\n" * 5000,
        "docs/empty": b"",
    }
    files.update({f"chats/c{i:02d}.txt": f"message {i}\n".encode() * (i + 1) for i in range(20)})
    write_files(src, files)
    os.symlink("Media/clip.mp4", src / "link")
    new_repo(tmp_path / "dask")
    shutil.copytree(tmp_path / "dask", tmp_path / "single")
    with device(tmp_path / "other-device"):  # the copy has the same id: trusted apart
        _, single = backup(open_repo(tmp_path / "single"), [src])
        ids_single = data_blobs(tmp_path / "single")
    sid, ours = dask_backup(
        open_repo(tmp_path / "dask"), [src], client=client, unit_bytes=2 * P, piece_bytes=P
    )
    differ = {"blobs_added", "bytes_added", "packs_recovered"}
    mine = {k: v for k, v in vars(ours).items() if k not in differ}
    theirs = {k: v for k, v in vars(single).items() if k not in differ}
    assert mine == theirs
    cuts = (8 - 1) + (3 - 1)  # clip.mp4 is 8 pieces, other.mov 3
    ids_dask = data_blobs(tmp_path / "dask")
    # About 2.5 chunks a cut on one side and 3 on the other (measured over thousands of
    # cuts: the chunker's phases, harder cuts below the average size, take a few chunks to
    # fall in step), with a long tail: 8 a cut is far beyond what 9 cuts reach.
    assert len(ids_single - ids_dask) <= 8 * cuts
    assert len(ids_dask - ids_single) <= 8 * cuts
    assert abs(ours.blobs_added - single.blobs_added) <= 8 * cuts
    restores_identical(tmp_path, tmp_path / "dask", sid, src, "out")


def test_pieces_smaller_than_a_mib_are_refused(tmp_path: Path, client: distributed.Client) -> None:
    new_repo(tmp_path / "repo")
    with pytest.raises(InvalidArgument, match="pieces"):
        dask_backup(open_repo(tmp_path / "repo"), [tmp_path], client=client, piece_bytes=P - 1)
