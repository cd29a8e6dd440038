# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""A restore on a real Dask cluster (``e2ebackup.dask.restore``): two worker processes started
by ``distributed.LocalCluster`` read the packs and write the files into a folder they share
with this process, which checks the budget, makes the folders and sets their metadata last.
The tree must be the plain restore's, byte for byte and in its metadata (a read-only folder
with files in it, modes, times, symlinks, empty files, repeated contents); a snapshot over the
budget is refused before anything is written; a damaged pack raises the plain restore's error
and leaves no complete-looking file for it; a worker killed during a restore changes nothing;
the keys never reach the scheduler; the command line's ``restore --dask local`` does the same;
and the workers read a repository on a real S3 server."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dask.base
import distributed
import pytest
from dask_helpers import kill_workers, s3_ready_cluster, scheduler_view, wait_busy
from e2ebackup.dask import StorageSpec, restore as dask_restore
from e2ebackup.errors import RepositoryCorrupted, RestoreLimitExceeded
from e2ebackup.repo.backup import backup
from e2ebackup.repo.names import pack_name
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import FileJob, Restorer, RestoreStats, restore
from e2ebackup.repo.tree import Entry
from e2ebackup.storage import open_storage
from repo_helpers import FAST, PASSWORD, cli, make_tree, new_repo, open_repo, snapshot_of

if TYPE_CHECKING:
    from servers.cloud import S3Server

# The S3 server fixture; its module is imported through pytest, so its asserts are rewritten.
pytest_plugins = ["servers.cloud"]

MIB = 1 << 20
TASK = "e2ebackup-restore-"
# A file's name and content that must not reach the scheduler.
MARKER_NAME = "marker-name-7f3a.txt"
MARKER = b"marker content 51c9e0 " * 10
# A file of the snapshot named as a writer's temporary file (the coordinator removes those).
TEMPORARY_LOOKALIKE = ".a.bin.0123abcd.e2ebackup-tmp"


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def mixed_tree(root: Path) -> None:
    """make_tree's odd names, empty files and folders, symlinks and modes, two files of a few
    MiB, the same bytes in several files and folders, nested folders, odd modes, and a
    read-only folder with files in it (its mode must come after its files)."""
    make_tree(root, small_files=120, big=[3 * MIB, 5 * MIB])
    shared = os.urandom(2 * MIB + 12345)
    for rel in ["dup/a.bin", "dup/deep/er/b.bin", "other/c.bin"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(shared)
    (root / "dup" / "zeros.bin").write_bytes(bytes(3 * MIB))
    (root / MARKER_NAME).write_bytes(MARKER)
    (root / "dup" / TEMPORARY_LOOKALIKE).write_bytes(b"a file of the snapshot, kept")
    locked = root / "read-only"
    (locked / "inner").mkdir(parents=True)
    for i in range(5):
        (locked / f"r{i}.txt").write_bytes(b"read-only folder %d\n" % i)
    (locked / "inner" / "x").write_bytes(b"x" * 5000)
    os.chmod(locked / "r0.txt", 0o400)
    os.chmod(locked / "r1.txt", 0o751)
    os.chmod(locked / "inner", 0o500)
    os.chmod(locked, 0o555)
    os.chmod(root / "dup" / "deep", 0o711)
    os.utime(root / "dup", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))


def view(root: Path) -> dict[bytes, tuple[object, ...]]:
    """snapshot_of, with the folders' times too (set last, by the coordinator)."""
    out = snapshot_of(root)
    base = os.fsencode(str(root))
    for rel, what in list(out.items()):
        if what[0] == "dir":
            out[rel] = (*what, os.lstat(os.path.join(base, rel)).st_mtime_ns)
    return out


def unlock(root: Path) -> None:
    """Makes a restored tree removable (it holds read-only folders)."""
    for folder, dirs, _ in os.walk(root):
        for d in dirs:
            path = os.path.join(folder, d)
            if not os.path.islink(path):
                os.chmod(path, 0o755)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A repository with one snapshot of the mixed tree, and its plain restore."""
    root = tmp_path_factory.mktemp("pristine")
    mixed_tree(root / "src")
    backup(new_repo(root / "repo"), [root / "src"])
    restore(open_repo(root / "repo"), "latest", root / "plain")
    yield root / "repo", root / "plain"
    unlock(root)


@pytest.fixture
def copy(pristine: tuple[Path, Path], tmp_path: Path) -> Iterator[Path]:
    shutil.copytree(pristine[0], tmp_path / "repo")
    yield tmp_path / "repo"
    unlock(tmp_path)


def plain_stats(repo: Path, target: Path, **options: object) -> RestoreStats:
    return restore(open_repo(repo), "latest", target, **options)  # type: ignore[arg-type]


def on_cluster(
    repo: Path | Repository, target: Path, client: distributed.Client, **options: object
) -> RestoreStats:
    opened = repo if isinstance(repo, Repository) else open_repo(repo)
    return dask_restore(opened, "latest", target, client=client, **options)  # type: ignore[arg-type]


def test_the_tree_is_the_plain_restore_one(
    copy: Path, pristine: tuple[Path, Path], client: distributed.Client, tmp_path: Path
) -> None:
    plain = pristine[1]
    expected = plain_stats(copy, tmp_path / "plain")
    with distributed.get_task_stream(client) as stream:
        stats = on_cluster(copy, tmp_path / "out", client, unit_bytes=MIB)
    assert view(tmp_path / "out") == view(plain)
    assert stats == expected
    assert stats.files > 130
    assert stats.symlinks == 2
    assert stats.skipped_existing == []
    ran = [t for t in stream.data if str(t["key"]).startswith(TASK)]
    assert len(ran) >= 8  # the big files alone, the small ones a few units
    assert len({t["worker"] for t in ran}) == 2  # on both workers
    # The read-only folder got its mode after its files were in (by this process).
    (locked,) = (tmp_path / "out").rglob("read-only")
    assert stat.S_IMODE(os.lstat(locked).st_mode) == 0o555


def test_in_many_windows(
    copy: Path,
    pristine: tuple[Path, Path],
    client: distributed.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coordinator holds a window of files at a time (here 25 files: six windows, one
    after the other): the same tree."""
    module = sys.modules["e2ebackup.dask.restore"]  # the package's name is the function
    monkeypatch.setattr(module, "MAX_WINDOW_FILES", 25)
    with distributed.get_task_stream(client) as stream:
        stats = on_cluster(copy, tmp_path / "out", client)
    assert view(tmp_path / "out") == view(pristine[1])
    assert stats == plain_stats(copy, tmp_path / "plain")
    assert len([t for t in stream.data if str(t["key"]).startswith(TASK)]) >= 6


def test_parts_and_excludes_as_the_plain_restore(
    copy: Path, client: distributed.Client, tmp_path: Path
) -> None:
    options: dict[str, object] = {
        "subpath": ["src/dup/deep", "src/read-only/inner", "src/many"],
        "exclude": ["f0001*"],
    }
    expected = plain_stats(copy, tmp_path / "plain", **options)
    stats = on_cluster(copy, tmp_path / "out", client, **options)
    assert view(tmp_path / "out") == view(tmp_path / "plain")
    assert stats == expected
    assert expected.excluded > 0


def test_existing_files_are_kept_as_the_plain_restore_keeps_them(
    copy: Path, client: distributed.Client, tmp_path: Path
) -> None:
    """Without overwrite, files in the way are left and reported; with it, replaced."""
    for name in ("plain", "out"):
        (tmp_path / name / "src" / "dup").mkdir(parents=True)
        (tmp_path / name / "src" / "dup" / "a.bin").write_bytes(b"mine")
        (tmp_path / name / "src" / MARKER_NAME).write_bytes(b"mine too")
    expected = plain_stats(copy, tmp_path / "plain")
    stats = on_cluster(copy, tmp_path / "out", client)
    # What was there keeps its content and mode (its times differ: made at other moments).
    there = {b"src", b"src/dup", b"src/dup/a.bin", b"src/" + MARKER_NAME.encode()}

    def kept(root: Path) -> dict[bytes, tuple[object, ...]]:
        return {k: v[:2] + v[3:] if k in there else v for k, v in view(root).items()}

    assert kept(tmp_path / "out") == kept(tmp_path / "plain")
    assert (tmp_path / "out" / "src" / "dup" / "a.bin").read_bytes() == b"mine"
    assert sorted(stats.skipped_existing) == sorted(
        p.replace(str(tmp_path / "plain"), str(tmp_path / "out")) for p in expected.skipped_existing
    )
    assert len(stats.skipped_existing) == 2
    stats = on_cluster(copy, tmp_path / "out", client, overwrite=True)
    expected = plain_stats(copy, tmp_path / "plain", overwrite=True)
    assert view(tmp_path / "out") == view(tmp_path / "plain")
    assert stats.skipped_existing == []
    assert stats.files == expected.files


@pytest.mark.parametrize("limit", ["max_files", "max_size"])
def test_over_the_budget_nothing_is_written(
    copy: Path, client: distributed.Client, tmp_path: Path, limit: str
) -> None:
    with distributed.get_task_stream(client) as stream, pytest.raises(RestoreLimitExceeded):
        on_cluster(copy, tmp_path / "out", client, **{limit: 10})
    assert not (tmp_path / "out").exists()  # not even the target
    assert [t for t in stream.data if str(t["key"]).startswith(TASK)] == []
    # Into an existing target: nothing is added to it.
    (tmp_path / "out").mkdir()
    with pytest.raises(RestoreLimitExceeded):
        on_cluster(copy, tmp_path / "out", client, **{limit: 10})
    assert list((tmp_path / "out").iterdir()) == []


def _idle(client: distributed.Client) -> None:
    """Waits until no worker runs a task (a task whose result was dropped still runs)."""

    def executing(dask_worker: distributed.Worker) -> int:
        return int(dask_worker.state.executing_count)

    for _ in range(6000):
        if not any(client.run(executing).values()):
            return
        time.sleep(0.01)
    raise AssertionError("the workers stayed busy")


def _files(repo: Repository) -> dict[str, Entry]:
    """Every file of the latest snapshot by path."""
    _, snap = repo.find_snapshot("latest")
    out: dict[str, Entry] = {}
    todo = [("", repo.read_tree(str(snap["tree"])))]
    while todo:
        base, entries = todo.pop()
        for e in entries:
            rel = f"{base}/{e['name']}" if base else e["name"]
            if e.get("type") == "dir":
                todo.append((rel, repo.read_tree(e["subtree"])))
            elif e.get("type") == "file":
                out[rel] = e
    return out


def test_a_damaged_pack_raises_and_leaves_no_complete_looking_file(
    copy: Path, pristine: tuple[Path, Path], client: distributed.Client, tmp_path: Path
) -> None:
    repo = open_repo(copy)
    sizes = repo.index.pack_sizes
    victim = max(sizes, key=lambda p: sizes[p])
    data = bytearray((copy / pack_name(victim)).read_bytes())
    flipped = len(data) // 3
    data[flipped] ^= 0x01
    (copy / pack_name(victim)).write_bytes(bytes(data))
    (damaged,) = [
        blob_id
        for blob_id, loc in repo.index.items()
        if loc.pack == victim and loc.offset <= flipped < loc.offset + loc.length
    ]
    with pytest.raises(RepositoryCorrupted, match="damaged"):
        plain_stats(copy, tmp_path / "plain")
    with pytest.raises(RepositoryCorrupted, match="damaged"):
        on_cluster(copy, tmp_path / "out", client, unit_bytes=MIB)
    _idle(client)
    # What is in the target is complete and right; no file holding a blob of that pack is.
    files = _files(repo)
    hit = {path for path, e in files.items() if damaged.hex() in e.get("content", [])}
    assert hit
    out = view(tmp_path / "out")
    good = view(pristine[1])
    for rel, what in out.items():
        if what[0] != "dir":
            assert good[rel][:5] == what[:5], rel  # folders' metadata was never set
    for path in hit:
        assert not (tmp_path / "out" / path).exists()
    leftovers = [
        p
        for p in (tmp_path / "out").rglob("*")
        if p.name.endswith(".e2ebackup-tmp") and p.name != TEMPORARY_LOOKALIKE
    ]
    assert leftovers == []


def test_a_worker_killed_mid_restore_changes_nothing(
    copy: Path, pristine: tuple[Path, Path], client: distributed.Client, tmp_path: Path
) -> None:
    """The worker running the restore (one unit: all of it) is killed with SIGKILL once a file
    of a few MiB is in place (reads are slowed down so that the run lasts): Dask runs the unit
    again on the other worker, which finds the files the dead attempt placed and counts them
    as written (the statistics would list them as left in the way otherwise), while the files
    the dead attempt was writing had no name yet; the tree and the statistics are the plain
    restore's."""
    expected = plain_stats(copy, tmp_path / "plain")
    outcome: list[RestoreStats] = []
    slow = StorageSpec(str(copy), limit_download=4 * MIB)
    out = tmp_path / "out"
    runner = threading.Thread(
        target=lambda: outcome.append(
            on_cluster(copy, out, client, unit_bytes=1 << 30, storage=slow)
        )
    )
    runner.start()

    def placed() -> bool:
        return any(p.is_file() and p.stat().st_size > MIB for p in out.rglob("*"))

    busy = wait_busy(client, TASK, runner, ready=lambda: out.exists() and placed())
    kill_workers(client, busy[0])
    runner.join(300)
    assert not runner.is_alive()
    assert outcome == [expected]
    assert view(out) == view(pristine[1])
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


def test_a_retried_unit_counts_the_files_placed_before(copy: Path, tmp_path: Path) -> None:
    """What a task does when Dask runs it again after its worker died: files already at their
    path with the entry's size, time and mode count as written; another file is left and
    reported; a file the dead attempt did not finish is written."""
    repo = open_repo(copy)
    out = tmp_path / "out"
    attempts: list[RestoreStats] = []

    def write_twice(taken: Iterator[FileJob], stats: RestoreStats) -> None:
        jobs = list(taken)
        first = Restorer(repo).write_files(str(out), jobs)
        assert first.skipped_existing == []
        (out / "src" / "dup" / "a.bin").unlink()  # not finished by the dead attempt
        (out / "src" / "empty-file").unlink()
        (out / "src" / MARKER_NAME).unlink()
        (out / "src" / MARKER_NAME).write_bytes(MARKER)  # the same bytes, another file: kept
        again = Restorer(repo).write_files(str(out), jobs)
        attempts.extend([first, again])
        stats.files += again.files
        stats.bytes += again.bytes
        stats.skipped_existing += again.skipped_existing

    _, snap = repo.find_snapshot("latest")
    stats = Restorer(repo).run_delegated(snap, str(out), None, write_twice)
    first, again = attempts
    assert again.files == first.files - 1
    assert again.bytes == first.bytes - len(MARKER)
    assert again.skipped_existing == [str(out / "src" / MARKER_NAME)]
    assert stats.files == first.files - 1


def test_temporary_files_of_killed_writers_are_removed(
    copy: Path, pristine: tuple[Path, Path], tmp_path: Path
) -> None:
    """Where the file system makes no unnamed files, a killed writer leaves a hidden temporary
    file: the coordinator removes those in the folders it made, and not the snapshot's own
    file with such a name."""
    repo = open_repo(copy)
    out = tmp_path / "out"
    leftover = out / "src" / "dup" / ".b.bin.89abcdef.e2ebackup-tmp"

    def write(taken: Iterator[FileJob], stats: RestoreStats) -> None:
        done = Restorer(repo).write_files(str(out), list(taken))
        leftover.write_bytes(b"half of a file")
        stats.files += done.files
        stats.bytes += done.bytes

    _, snap = repo.find_snapshot("latest")
    Restorer(repo).run_delegated(snap, str(out), None, write)
    assert not leftover.exists()
    assert (out / "src" / "dup" / TEMPORARY_LOOKALIKE).exists()
    assert view(out) == view(pristine[1])


def test_the_keys_never_reach_the_scheduler(copy: Path, client: distributed.Client) -> None:
    """The scheduler holds task names, states and run specs: none carries a key of the
    repository (the data key, the keys derived from it), its hex or a hash of it, the password,
    a blob id, a file's name or its content. The keys and the units went to the workers by a
    direct scatter."""
    repo = open_repo(copy)
    with scheduler_view(client) as seen:
        stats = on_cluster(repo, copy.parent / "out", client, unit_bytes=MIB)
    assert stats.files > 130
    names = [text for text, _ in seen]
    assert any(TASK in text for text in names)  # the watcher saw the tasks
    assert any("BlobKeys-" in text for text in names)  # and the scattered keys' name
    keys = repo.keys
    secrets = [repo._data_key, keys.pack, keys.blob, keys.blob_id, keys.metadata, keys.config]
    tokens = {PASSWORD.encode(), MARKER_NAME.encode(), MARKER[:20]}
    for secret in secrets:
        tokens |= {secret, secret.hex().encode(), dask.base.tokenize(secret).encode()}
    blob_ids = [blob_id for blob_id, _ in repo.index.items()]
    tokens |= {blob_id.hex()[:16].encode() for blob_id in blob_ids} | set(blob_ids)
    for text, spec in seen:
        for token in tokens:
            assert token not in text.encode()
            assert token not in spec


def test_the_command_line_with_a_local_cluster(
    copy: Path, pristine: tuple[Path, Path], tmp_path: Path
) -> None:
    r = cli(tmp_path, "restore", "-r", str(copy), "latest", "--target", str(tmp_path / "out"),
            "--dask", "local", E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stderr + r.stdout
    assert view(tmp_path / "out") == view(pristine[1])
    # Over the budget: refused, exit status of the plain restore, nothing written.
    over = ["restore", "-r", str(copy), "latest", "--max-files", "3", "--target"]
    alone = cli(tmp_path, *over, str(tmp_path / "plain"), E2EBACKUP_PASSWORD=PASSWORD)
    spread = cli(
        tmp_path, *over, str(tmp_path / "out2"), "--dask", "local", E2EBACKUP_PASSWORD=PASSWORD
    )
    assert spread.returncode == alone.returncode != 0
    assert not (tmp_path / "out2").exists()


def test_from_a_real_s3_server(
    tmp_path: Path,
    client: distributed.Client,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers open the bucket themselves, with the credentials of their environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = f"s3://e2ebackup/restore-{uuid.uuid4().hex[:8]}"
    endpoint = s3_server.endpoint
    repo = Repository.init(open_storage(url, s3_endpoint=endpoint), password=PASSWORD, kdf=FAST)
    src = tmp_path / "src"
    for rel, data in {
        "a.bin": os.urandom(6 * MIB),
        "b/c.txt": b"c\n" * 1000,
        "b/d/e.bin": os.urandom(2 * MIB),
        "empty": b"",
    }.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    backup(repo, [src])
    opened = Repository.open(open_storage(url, s3_endpoint=endpoint), password=PASSWORD)
    restore(opened, "latest", tmp_path / "plain")
    stats = on_cluster(opened, tmp_path / "out", client, unit_bytes=MIB)
    assert stats.files == 4
    assert view(tmp_path / "out") == view(tmp_path / "plain")
