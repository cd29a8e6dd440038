"""Attack: the storage provider (whoever controls the folder, bucket or remote that holds the
repository) plants symbolic links, bogus object names and oversized objects, to make e2ebackup
read, write or delete files outside the repository, or run out of memory.

Two defences, tested apart:

* the primary one needs no key to attack: a local storage folder refuses symbolic links (and
  anything but plain files and folders) at every component under its root, for reads, writes,
  deletes and listings, and remote reads are capped at what was asked for;
* defence in depth: every object name taken from an index, a header or a head (pack ids,
  snapshot ids, index names) must be an id (64 lowercase hex) before it becomes a path. The
  provider cannot write an index or a head that authenticates (it has no key), so those tests
  craft them with the repository's key, standing in for a bug or a leaked key.

And a damaged pack header must not pass plain ``verify`` silently (a restore never reads it).
"""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2ebackup.errors import ObjectTooLarge, RepositoryCorrupted, StorageError, UnsafeStoragePath
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.codec import write_json
from e2ebackup.repo.index import Index
from e2ebackup.repo.names import new_id
from e2ebackup.repo.pack import HEADER_GUESS
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage, RcloneStorage, S3Storage
from repo_helpers import PASSWORD, cli, env, new_repo, open_repo

if TYPE_CHECKING:
    from servers.cloud import S3Server

pytest_plugins = ["servers.cloud"]

MIB = 1 << 20
# Reading an oversized object may cost a few blocks of buffering, never the object.
MEMORY_BOUND = 16 * MIB


def two_snapshots(tmp_path: Path) -> tuple[Path, Repository]:
    """A repository whose first snapshot's file is gone from the second: forgetting the first
    and pruning deletes packs."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.bin").write_bytes(os.urandom(300_000))
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    (src / "old.bin").unlink()
    (src / "new.bin").write_bytes(os.urandom(300_000))
    backup(repo, [str(src)])
    return src, repo


def read_everything(root: Path) -> None:
    """Every object a restore touches, through the Python API."""
    repo = open_repo(root)
    repo.head(refresh=True)
    for _, snap in repo.snapshots():
        repo.read_tree(snap["tree"])
    for blob_id, loc in repo.index.items():
        repo.read_blob(loc.kind, blob_id)


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    done = cli(tmp_path, *args, E2EBACKUP_PASSWORD=PASSWORD)
    return done.returncode, done.stdout + done.stderr


# ---------------------------------------------------------------- symbolic links (no key)


def test_prune_deletes_nothing_through_a_symlinked_pack_folder(tmp_path: Path) -> None:
    """The provider moves every pack folder out of the repository and leaves symbolic links to
    them: forget --prune must fail rather than delete the packs it follows them to."""
    two_snapshots(tmp_path)
    data = tmp_path / "repo" / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    for folder in sorted(data.iterdir()):
        shutil.move(str(folder), outside / folder.name)
        os.symlink(os.path.join("..", "..", "outside", folder.name), folder)
    before = files_under(outside)

    rc, out = run(
        tmp_path,
        "forget",
        "-r",
        str(tmp_path / "repo"),
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0",
    )

    assert files_under(outside) == before, "prune deleted files outside the repository"
    assert rc == 1
    assert "symbolic link" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("what", ["config", "keys", "heads", "index", "pack", "pack folder"])
def test_nothing_is_read_through_a_symlink(tmp_path: Path, what: str) -> None:
    """One object (or a pack's folder) is replaced by a symbolic link to a copy outside the
    repository: what a restore or a verify reads must refuse to follow it, not read through
    it."""
    two_snapshots(tmp_path)
    root = tmp_path / "repo"
    if what == "config":
        victim = root / "config"
    elif what == "pack folder":
        victim = next((root / "data").iterdir())
    elif what == "pack":
        victim = next((root / "data").rglob("*/*"))
    else:
        victim = next((root / what).iterdir())
    outside = tmp_path / "outside" / victim.name
    outside.parent.mkdir()
    shutil.move(str(victim), outside)
    os.symlink(outside, victim)

    with pytest.raises(UnsafeStoragePath, match="symbolic link"):
        read_everything(root)
    # ...and the command line, reading every pack.
    rc, out = run(tmp_path, "verify", "-r", str(root), "--read-data")
    assert rc == 1
    assert "symbolic link" in out
    assert "Traceback" not in out


def test_a_symlinked_storage_root_is_the_users_choice(tmp_path: Path) -> None:
    """The repository folder itself may be a link (~/backups -> /mnt/usb/backups): only what is
    inside it must be plain folders and files."""
    real = tmp_path / "usb" / "repo"
    real.parent.mkdir()
    new_repo(real)
    os.symlink(real, tmp_path / "link")
    assert open_repo(tmp_path / "link").head().seq == 0


def test_writes_and_listings_do_not_follow_symlinks(tmp_path: Path) -> None:
    """A planted link where a new pack's folder will be: the write is refused (not stored
    outside), a listing does not walk into it, and a linked object is not listed as one."""
    storage = LocalStorage(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not the repository's")
    os.makedirs(tmp_path / "repo" / "data")
    os.symlink(outside, tmp_path / "repo" / "data" / "ab")
    with pytest.raises(UnsafeStoragePath):
        storage.put_bytes("data/ab/" + "ab" * 32, b"pack")
    assert os.listdir(outside) == ["secret.txt"]
    with pytest.raises(UnsafeStoragePath):
        list(storage.list("data/"))
    with pytest.raises(UnsafeStoragePath):
        storage.delete("data/ab/secret.txt")
    assert (outside / "secret.txt").exists()


def test_listings_leave_out_names_no_object_can_have(tmp_path: Path) -> None:
    """Files planted with names that no object can have are not offered to the repository as
    objects (where a prune would pass their names on to delete)."""
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("data/ab/" + "ab" * 32, b"pack")
    (tmp_path / "repo" / "data" / "ab" / "thesis draft.docx").write_bytes(b"mine")
    (tmp_path / "repo" / "data" / "ab" / "notes\n").write_bytes(b"mine too")
    assert [o.name for o in storage.list("data/")] == ["data/ab/" + "ab" * 32]


def test_a_fifo_in_place_of_an_object_does_not_hang(tmp_path: Path) -> None:
    """A named pipe where the config should be would block a plain open() for ever (run in a
    child process with a timeout, so that a hang fails the test rather than the suite)."""
    new_repo(tmp_path / "repo")
    (tmp_path / "repo" / "config").unlink()
    os.mkfifo(tmp_path / "repo" / "config")
    done = subprocess.run(
        [sys.executable, "-m", "e2ebackup", "snapshots", "-r", str(tmp_path / "repo")],
        env=env(tmp_path, E2EBACKUP_PASSWORD=PASSWORD),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "not a plain file" in done.stderr


# ---------------------------------------------------------------- names (crafted with the key)


def plant_index(repo: Repository, pack_id: str, blob_id: bytes, size: int) -> None:
    """Writes (with the repository's key) an index naming ``pack_id``, and a head listing it."""
    name = f"index/{new_id()}"
    write_json(
        repo.storage,
        repo.keys,
        name,
        {"packs": [{"id": pack_id, "size": size, "blobs": [[0, blob_id.hex(), 0, size]]}]},
    )
    repo.commit(add_indexes=[name])


def test_a_pack_id_that_is_a_file_name_is_refused(tmp_path: Path) -> None:
    """Name validation alone (no link): an index naming pack ``thesis.docx`` would have prune
    delete ``data/th/thesis.docx``. The index must be refused as corrupted when it is read."""
    _, repo = two_snapshots(tmp_path)
    victim = tmp_path / "repo" / "data" / "th" / "thesis.docx"
    victim.parent.mkdir()
    victim.write_bytes(b"my thesis")
    plant_index(repo, "thesis.docx", os.urandom(32), len(b"my thesis"))

    with pytest.raises(RepositoryCorrupted, match="malformed"):
        Index.load(repo.storage, repo.keys, repo.head(refresh=True).indexes)
    rc, out = run(
        tmp_path,
        "forget",
        "-r",
        str(tmp_path / "repo"),
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0",
    )
    assert rc == 1
    assert victim.read_bytes() == b"my thesis"
    assert "Traceback" not in out


def test_the_thesis_attack(tmp_path: Path) -> None:
    """The attack as reported: an index listing pack ``thesis.docx``, plus ``data/th`` linked to
    the user's Documents. Both defences stand in the way; the file must survive."""
    _, repo = two_snapshots(tmp_path)
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "thesis.docx").write_bytes(b"four years of work")
    os.symlink(os.path.join("..", "..", "Documents"), tmp_path / "repo" / "data" / "th")
    plant_index(repo, "thesis.docx", os.urandom(32), len(b"four years of work"))

    rc, out = run(
        tmp_path,
        "forget",
        "-r",
        str(tmp_path / "repo"),
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0",
    )

    assert (documents / "thesis.docx").read_bytes() == b"four years of work"
    assert rc == 1
    assert "Traceback" not in out


@pytest.mark.parametrize("bad", ["short", "A" * 64, "g" * 64, "0" * 63, "0" * 65])
def test_blob_and_pack_ids_in_an_index_must_be_ids(tmp_path: Path, bad: str) -> None:
    repo = new_repo(tmp_path / "repo")
    name = f"index/{new_id()}"
    write_json(
        repo.storage,
        repo.keys,
        name,
        {"packs": [{"id": bad, "size": 10, "blobs": [[0, "ab" * 32, 0, 10]]}]},
    )
    with pytest.raises(RepositoryCorrupted):
        Index.load(repo.storage, repo.keys, [name])
    write_json(
        repo.storage,
        repo.keys,
        name + "0",
        {"packs": [{"id": "cd" * 32, "size": 10, "blobs": [[0, bad, 0, 10]]}]},
    )
    with pytest.raises(RepositoryCorrupted):
        Index.load(repo.storage, repo.keys, [name + "0"])


# ---------------------------------------------------------------- oversized objects


def peak_memory_of(fn: object) -> tuple[BaseException | None, int]:
    """Runs ``fn()``; the exception it raised (or None) and the peak of Python allocations."""
    tracemalloc.start()
    try:
        try:
            fn()  # type: ignore[operator]
            raised = None
        except BaseException as e:  # returned to the test
            raised = e
        return raised, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def s3_prefix(s3_server: S3Server) -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def s3_storage(s3_server: S3Server, prefix: str, endpoint: str | None = None) -> S3Storage:
    return S3Storage(
        "e2ebackup",
        prefix,
        endpoint_url=endpoint or s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )


def test_an_oversized_s3_object_is_refused_unread(s3_server: S3Server, s3_prefix: str) -> None:
    """The provider replaces the config (a few hundred bytes) with 64 MiB: reading it must fail
    with a typed error before the object is in memory."""
    s3_server.client().put_object(
        Bucket="e2ebackup", Key=f"{s3_prefix}/config", Body=b"E2EBREPO" + bytes(64 * MIB)
    )
    storage = s3_storage(s3_server, s3_prefix)
    raised, peak = peak_memory_of(lambda: storage.read("config"))
    assert isinstance(raised, ObjectTooLarge), raised
    assert peak < MEMORY_BOUND


def test_an_oversized_rclone_object_is_refused_unread(rclone_config: Path, tmp_path: Path) -> None:
    """A key object (a few hundred bytes) of 80 MiB, read through rclone."""
    folder = tmp_path / "remote"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / new_id()).write_bytes(bytes(80 * MIB))
    storage = RcloneStorage(f"local:{folder}", config=rclone_config)
    name = next(storage.list("keys/")).name
    raised, peak = peak_memory_of(lambda: storage.read(name))
    assert isinstance(raised, ObjectTooLarge), raised
    assert peak < MEMORY_BOUND


class _PaddingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards requests to the real S3 server unchanged (signatures stay valid) and answers a
    ranged GET with the right bytes followed by ``pad`` more, as a lying server would."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    pad = 64 * MIB
    padded_sent = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest("GET", self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in ("connection", "keep-alive"):
                    conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            # (`rclone serve s3` answers a ranged GET with 200, not 206.)
            extra = self.pad if self.headers.get("Range") else 0
            self.send_response_only(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            self.wfile.write(body)
            block = bytes(MIB)
            try:
                while extra > 0:
                    self.wfile.write(block[: min(extra, MIB)])
                    type(self).padded_sent += min(extra, MIB)
                    extra -= MIB
            except OSError:
                self.close_connection = True
        finally:
            conn.close()

    def do_HEAD(self) -> None:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest("HEAD", self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in ("connection", "keep-alive"):
                    conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            resp.read()
            self.send_response_only(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.end_headers()
        finally:
            conn.close()


@pytest.fixture
def padding_proxy(s3_server: S3Server) -> Iterator[str]:
    port = int(s3_server.endpoint.rsplit(":", 1)[1])

    class Handler(_PaddingProxy):
        upstream = ("127.0.0.1", port)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_ranged_read_answered_with_more_bytes_is_refused(
    s3_server: S3Server, s3_prefix: str, padding_proxy: str
) -> None:
    """A pack read by range (a restore reads blobs this way) answered with 64 MiB more than
    asked: refused, and the extra bytes are not read into memory."""
    pack = f"data/ab/{'ab' * 32}"
    s3_server.client().put_object(Bucket="e2ebackup", Key=f"{s3_prefix}/{pack}", Body=bytes(4096))
    storage = s3_storage(s3_server, s3_prefix, endpoint=padding_proxy)
    raised, peak = peak_memory_of(lambda: storage.read(pack, offset=100, length=200))
    assert isinstance(raised, StorageError), raised
    assert isinstance(raised, ObjectTooLarge), raised
    assert peak < MEMORY_BOUND


# ---------------------------------------------------------------- pack headers


def test_a_damaged_pack_header_fails_plain_verify(tmp_path: Path) -> None:
    """The storage flips a byte of a pack's sealed header. A restore never reads headers (each
    blob authenticates on its own) and still works; plain verify, which claims to check the
    structure, must report the header (docs/FORMAT.md, Packs), not pass."""
    src, _ = two_snapshots(tmp_path)
    root = tmp_path / "repo"
    pack = max((p for p in (root / "data").rglob("*/*")), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[-4 - 10] ^= 0x01  # inside the sealed header, before its length
    pack.write_bytes(bytes(data))

    rc, out = run(tmp_path, "verify", "-r", str(root))
    assert rc == 1, out
    assert f"pack {pack.name} header does not authenticate" in out
    rc, out = run(tmp_path, "restore", "-r", str(root), "latest", "--target", str(tmp_path / "out"))
    assert rc == 0, out
    assert (tmp_path / "out" / "src" / "new.bin").read_bytes() == (src / "new.bin").read_bytes()


def test_plain_verify_checks_long_headers_without_false_alarms(tmp_path: Path) -> None:
    """2,500 small files make a pack whose header (37 bytes a blob) is longer than the first
    read from the pack's end: every header is still read whole, authenticated and found to
    agree with the index."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2500):
        (src / f"{i}.txt").write_text(f"file {i}")
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    report = verify(open_repo(tmp_path / "repo"))
    assert report.ok, report.errors
    assert report.headers == len(repo.index.pack_sizes) >= 2
    packs = list((tmp_path / "repo" / "data").rglob("*/*"))
    assert len(packs) == report.headers
    longest = max(int.from_bytes(p.read_bytes()[-4:], "big") for p in packs)
    assert longest > HEADER_GUESS


def test_plain_verify_reports_an_index_that_disagrees_with_a_header(tmp_path: Path) -> None:
    """An index (written with the key) that places a blob in a real pack whose authenticated
    header does not list it: plain verify compares every header with the index."""
    _, repo = two_snapshots(tmp_path)
    pack_id, size = next(iter(repo.index.pack_sizes.items()))
    phantom = os.urandom(32)
    plant_index(repo, pack_id, phantom, size)
    report = verify(open_repo(tmp_path / "repo"))
    assert f"pack {pack_id[:16]}: blob {phantom.hex()[:16]} is not where the index says" in (
        report.errors
    )


def test_a_misplaced_object_in_data_does_not_stop_backups(tmp_path: Path) -> None:
    """The storage plants an object with a pack's name in another pack's folder: a backup,
    which looks for packs a crashed run left unindexed, must skip it, not fail on it."""
    src, _ = two_snapshots(tmp_path)
    misplaced = tmp_path / "repo" / "data" / "zz" / ("ab" * 32)
    misplaced.parent.mkdir()
    misplaced.write_bytes(os.urandom(1000))
    (src / "newer.bin").write_bytes(os.urandom(1000))
    rc, out = run(tmp_path, "backup", "-r", str(tmp_path / "repo"), str(src))
    assert rc == 0, out
    rc, out = run(tmp_path, "verify", "-r", str(tmp_path / "repo"))
    assert rc == 0, out
    assert "not in the index" in out
