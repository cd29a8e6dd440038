# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""A backup on a real Dask cluster (``e2ebackup.dask.backup``): two worker processes started by
``distributed.LocalCluster`` read, chunk, seal and upload the files, this process walks the
tree and writes the snapshot. What it stores must restore byte-identical with the normal
restore and pass ``verify --read-data``, on a local folder and on a real S3 server; a second
backup reads only what changed; a worker killed during a backup loses nothing; a file that
cannot be read is reported and left out; the keys never reach the scheduler; and the command
line's ``backup --dask local`` does the same."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dask.base
import distributed
import pytest
from dask_helpers import kill_workers, s3_ready_cluster, scheduler_view, wait_busy, write_files
from e2ebackup.dask import KnownBlobs, StorageSpec, backup as dask_backup
from e2ebackup.repo.backup import BackupStats, backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.names import pack_name
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from e2ebackup.storage import open_storage
from repo_helpers import FAST, PASSWORD, cli, new_repo, open_repo, snapshot_of

if TYPE_CHECKING:
    from servers.cloud import S3Server

# The S3 server fixture; its module is imported through pytest, so its asserts are rewritten.
pytest_plugins = ["servers.cloud"]

MIB = 1 << 20


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def mixed_tree(root: Path) -> dict[str, bytes]:
    """Empty files, files of a few MiB, the same bytes in several files (and so in several
    work units), nested and empty folders, symlinks, a live SQLite database."""
    shared = os.urandom(3 * MIB)
    files = {
        "empty": b"",
        "Media/2026/IMG_0001.jpg": os.urandom(4 * MIB),
        "Media/2026/IMG_0002.jpg": shared,
        "Media/2025/copy-of-0002.jpg": shared,
        "Media/2025/deep/er/still/copy.jpg": shared,
        "Media/2025/deep/empty": b"",
        "docs/notes.txt": b"hello\n" * 1000,
        "docs/prefix.bin": shared[: 2 * MIB] + os.urandom(MIB),  # chunks shared in part
    }
    files.update({f"chats/c{i:03d}.txt": f"message {i}\n".encode() * (i + 1) for i in range(60)})
    write_files(root, files)
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    os.symlink("Media/2026/IMG_0001.jpg", root / "link-to-image")
    os.symlink("does/not/exist", root / "dangling")
    os.chmod(root / "docs" / "notes.txt", 0o600)
    con = sqlite3.connect(root / "chats" / "msgstore.db")
    con.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, text TEXT)")
    con.executemany("INSERT INTO m (text) VALUES (?)", [(f"row {i}",) for i in range(500)])
    con.commit()
    con.close()
    return files


def restored_equal(repo: Repository, sid: str, src: Path, target: Path) -> None:
    """The normal restore gives back every file, folder and link, byte for byte and with its
    metadata (the database as SQLite sees it: a captured copy may differ in header counters)."""
    restore(repo, sid, target)
    out = target / src.name
    db = Path("chats") / "msgstore.db"
    ours = {k: v for k, v in snapshot_of(src).items() if k != os.fsencode(db)}
    theirs = {k: v for k, v in snapshot_of(out).items() if k != os.fsencode(db)}
    assert theirs == ours
    if (src / db).exists():
        rows = sqlite3.connect(out / db).execute("SELECT count(*) FROM m").fetchone()
        assert rows == (500,)


def clean(repo: Repository, *, orphans: bool = False) -> None:
    """``verify --read-data`` passes: no error, and no warning but (with ``orphans``) about
    packs in no index (a killed worker's, adopted by the next backup)."""
    report = verify(repo, read_data=True)
    assert report.ok, report.errors
    assert all(orphans and "is not in the index" in w for w in report.warnings), report.warnings


def files_in(stats: BackupStats) -> int:
    return stats.files_new + stats.files_changed + stats.files_unmodified


def test_a_mixed_tree_restores_byte_identical(tmp_path: Path, client: distributed.Client) -> None:
    src = tmp_path / "src"
    files = mixed_tree(src)
    repo = new_repo(tmp_path / "repo")
    sid, stats = dask_backup(repo, [src], client=client, unit_bytes=MIB)
    assert stats.files_new == len(files) + 1  # and the database
    assert stats.sqlite_captured == 1
    assert stats.errors == stats.files_changed == stats.files_unmodified == 0
    assert stats.bytes_read >= sum(len(d) for d in files.values())
    assert 0 < stats.bytes_added < stats.bytes_read  # the shared chunks once (per unit at most)
    restored_equal(open_repo(tmp_path / "repo"), sid, src, tmp_path / "out")
    clean(open_repo(tmp_path / "repo"))
    # The snapshot is the one the single process makes: the same listings, so the same root.
    again = open_repo(tmp_path / "repo")
    sid2, stats2 = backup(again, [src])
    assert (stats2.files_unmodified, stats2.bytes_read) == (len(files) + 1, 0)
    assert again.load_snapshot(sid2)["tree"] == again.load_snapshot(sid)["tree"]


def test_a_second_backup_reads_only_the_changed_file(
    tmp_path: Path, client: distributed.Client
) -> None:
    src = tmp_path / "src"
    files = {f"Media/IMG_{i:04d}.jpg": os.urandom(MIB + i) for i in range(6)}
    files["notes/a.txt"] = b"a\n"
    write_files(src, files)
    repo = new_repo(tmp_path / "repo")
    first, stats = dask_backup(repo, [src], client=client, unit_bytes=MIB)
    assert stats.files_new == 7
    changed = os.urandom(MIB // 2)
    (src / "Media" / "IMG_0003.jpg").write_bytes(changed)
    repo = open_repo(tmp_path / "repo")
    second, stats = dask_backup(repo, [src], client=client, unit_bytes=MIB)
    assert (stats.files_new, stats.files_changed, stats.files_unmodified) == (0, 1, 6)
    assert stats.bytes_read == len(changed)
    assert stats.bytes_unmodified == sum(len(d) for d in files.values()) - MIB - 3
    assert repo.load_snapshot(second)["parent"] == first
    restored_equal(open_repo(tmp_path / "repo"), second, src, tmp_path / "out")
    clean(open_repo(tmp_path / "repo"))


def test_copies_of_a_file_in_two_folders_are_stored_once(
    tmp_path: Path, client: distributed.Client
) -> None:
    """Files of the same size go to one work unit (up to its bytes), so the task that reads
    a photo and its copy in another folder stores the chunks once; cut in walk order alone,
    the filler between them would send the copy to another unit, which would store it
    again."""
    src = tmp_path / "src"
    photo = os.urandom(3 * MIB)
    write_files(src, {"a/x.jpg": photo, "b/filler.mp4": os.urandom(3 * MIB + 1), "c/y.jpg": photo})
    repo = new_repo(tmp_path / "repo")
    sid, stats = dask_backup(repo, [src], client=client, unit_bytes=8 * MIB)
    assert stats.bytes_read == 9 * MIB + 1
    assert 6 * MIB < stats.bytes_added < 7 * MIB
    restored_equal(open_repo(tmp_path / "repo"), sid, src, tmp_path / "out")


def test_an_unreadable_file_is_reported_and_left_out(
    tmp_path: Path, client: distributed.Client
) -> None:
    """A file listed by the coordinator and gone when its worker reads it: reported through
    ``on_error`` as the single process reports it, left out of the snapshot; the rest is
    saved."""
    src = tmp_path / "src"
    write_files(src, {"z-keep.txt": b"kept\n", "b.bin": os.urandom(MIB)})
    repo = new_repo(tmp_path / "repo")
    dask_backup(repo, [src], client=client)
    write_files(src, {"a-vanishes.bin": os.urandom(MIB), "c-new.txt": b"new\n"})
    victim = src / "a-vanishes.bin"

    def progress(stats: BackupStats, path: str) -> None:
        # z-keep.txt is unchanged: reported while the tree is walked, after a-vanishes.bin
        # was listed and before any worker read it.
        if path.endswith("z-keep.txt") and victim.exists():
            victim.unlink()

    reported: list[tuple[str, Exception]] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [src],
        client=client,
        progress=progress,
        on_error=lambda p, e: reported.append((p, e)),
    )
    assert [p for p, _ in reported] == [str(victim)]
    assert isinstance(reported[0][1], FileNotFoundError)
    assert stats.errors == 1
    assert (stats.files_new, stats.files_unmodified) == (1, 2)
    restored_equal(open_repo(tmp_path / "repo"), sid, src, tmp_path / "out")
    clean(open_repo(tmp_path / "repo"))


def test_workers_killed_mid_backup_lose_nothing(tmp_path: Path, client: distributed.Client) -> None:
    """Both workers are killed with SIGKILL while each runs its task, once a pack of those
    tasks is stored: Dask runs the tasks again on the workers the nannies start, the backup
    completes and restores byte-identical. The packs the dead attempts uploaded are in no
    index until the next (single-process) backup adopts them: then every pack stored is
    indexed, and verify passes."""
    src = tmp_path / "src"
    write_files(src, {f"v/clip{i:02d}.mp4": os.urandom(4 * MIB) for i in range(24)})
    repo = new_repo(tmp_path / "repo")
    data = tmp_path / "repo" / "data"
    outcome: list[tuple[str, BackupStats]] = []
    # Two units of 48 MiB, one a worker: each stores a 16 MiB pack long before it ends.
    runner = threading.Thread(
        target=lambda: outcome.append(dask_backup(repo, [src], client=client, unit_bytes=48 * MIB))
    )
    runner.start()

    def stored() -> bool:
        return any(not p.name.startswith(".") for p in data.glob("*/*"))

    kill_workers(client, *wait_busy(client, "e2ebackup-backup-", runner, ready=stored, workers=2))
    runner.join(300)
    assert not runner.is_alive()
    assert len(outcome) == 1
    sid, stats = outcome[0]
    assert stats.files_new == 24
    assert stats.errors == 0
    restored_equal(open_repo(tmp_path / "repo"), sid, src, tmp_path / "out")
    clean(open_repo(tmp_path / "repo"), orphans=True)
    after = open_repo(tmp_path / "repo")
    _, next_stats = backup(after, [src])
    assert next_stats.files_unmodified == 24
    assert next_stats.packs_recovered >= 1  # the dead attempts' packs, adopted
    stored_names = {info.name for info in after.storage.list("data/")}
    assert stored_names == {pack_name(p) for p in open_repo(tmp_path / "repo").index.pack_sizes}
    clean(open_repo(tmp_path / "repo"))
    client.wait_for_workers(2, timeout=60)  # the nannies restarted them, for the next tests


def test_the_keys_never_reach_the_scheduler(tmp_path: Path, client: distributed.Client) -> None:
    """The scheduler holds task names, states and run specs: none carries a key of the
    repository (the data key, the keys derived from it), its hex or a hash of it, the password,
    a blob id, nor a name of the files backed up. They went to the workers by direct
    scatters."""
    src = tmp_path / "src"
    secret_name = f"secret-{uuid.uuid4().hex}.jpg"
    write_files(src, {secret_name: os.urandom(2 * MIB), "other.txt": b"x" * 5000})
    repo = new_repo(tmp_path / "repo")
    with scheduler_view(client) as seen:
        dask_backup(repo, [src], client=client, unit_bytes=MIB)
    names = [text for text, _ in seen]
    assert any("e2ebackup-backup-" in text for text in names)  # the watcher saw the tasks
    assert any("WorkerKeys-" in text for text in names)  # and the scattered keys' name
    repo = open_repo(tmp_path / "repo")
    keys = repo.keys
    secrets = [
        repo._data_key,
        keys.pack,
        keys.blob,
        keys.blob_id,
        keys.chunker,
        keys.metadata,
        keys.config,
    ]
    tokens = {PASSWORD.encode(), secret_name.encode()}
    for secret in secrets:
        tokens |= {secret, secret.hex().encode(), dask.base.tokenize(secret).encode()}
    blob_ids = [blob_id for blob_id, _ in repo.index.items()]
    tokens |= {blob_id.hex()[:16].encode() for blob_id in blob_ids} | set(blob_ids)
    for text, spec in seen:
        for token in tokens:
            assert token not in text.encode()
            assert token not in spec


def test_on_a_real_s3_server(
    tmp_path: Path,
    client: distributed.Client,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers open the bucket themselves, with the credentials of their environment and
    the endpoint the coordinator's repository was opened at."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url, endpoint = f"s3://e2ebackup/backup-{uuid.uuid4().hex[:8]}", s3_server.endpoint

    def opened() -> Repository:
        return Repository.open(open_storage(url, s3_endpoint=endpoint), password=PASSWORD)

    Repository.init(open_storage(url, s3_endpoint=endpoint), password=PASSWORD, kdf=FAST)
    src = tmp_path / "src"
    files = mixed_tree(src)
    sid, stats = dask_backup(opened(), [src], client=client, unit_bytes=2 * MIB)
    assert stats.files_new == len(files) + 1
    restored_equal(opened(), sid, src, tmp_path / "out")
    clean(opened())
    (src / "docs" / "notes.txt").write_bytes(b"changed\n")
    spec = StorageSpec(url, s3_endpoint=endpoint)  # told rather than found: the same
    sid, stats = dask_backup(opened(), [src], client=client, storage=spec)
    assert stats.files_changed == 1
    assert stats.bytes_read < MIB  # and the database, captured
    restored_equal(opened(), sid, src, tmp_path / "out2")
    clean(opened())


def test_the_command_line_with_a_local_cluster(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mixed_tree(src)
    new_repo(tmp_path / "repo")
    common = ("-r", str(tmp_path / "repo"))
    r = cli(tmp_path, "backup", *common, "--dask", "local", str(src), E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 0, r.stderr
    assert "69 files (69 new" in r.stdout, r.stdout
    r = cli(tmp_path, "restore", *common, "latest", "--target", str(tmp_path / "out"),
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    restored_equal_tree(src, tmp_path / "out" / "src")
    r = cli(tmp_path, "verify", *common, "--read-data", E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 0, r.stderr + r.stdout


def restored_equal_tree(src: Path, out: Path) -> None:
    db = os.fsencode(Path("chats") / "msgstore.db")
    assert {k: v for k, v in snapshot_of(out).items() if k != db} == {
        k: v for k, v in snapshot_of(src).items() if k != db
    }


def test_the_command_line_refuses_stdin_and_dry_run(tmp_path: Path) -> None:
    new_repo(tmp_path / "repo")
    for extra in (("--stdin",), ("--dry-run", str(tmp_path))):
        r = cli(tmp_path, "backup", "-r", str(tmp_path / "repo"), "--dask", "local", *extra,
                E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
        assert r.returncode == 2
        assert "--dask" in r.stderr


def test_known_blobs_is_a_sorted_array_of_ids() -> None:
    ids = [os.urandom(32) for _ in range(1000)]
    known = KnownBlobs.of(ids)
    assert len(known) == 1000
    assert all(i in known for i in ids)
    assert not any(os.urandom(32) in known for _ in range(1000))
    assert b"short" not in known
    assert "text" not in known
    assert KnownBlobs.of([]).__contains__(ids[0]) is False
