# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""``verify --read-data`` on a real Dask cluster (``e2ebackup.dask.verify_repository``): two
worker processes started by ``distributed.LocalCluster`` read the packs of a repository made
with the public API, on a local folder and on a real S3 server. The report must be the single
process's, clean or damaged (a flipped byte in a blob, in blobs of two packs or in a pack
header, a truncated pack, a deleted pack, a pack swapped for another's bytes), from Python and
from the command line; a worker killed during a run changes nothing; and the repository's keys
never reach the scheduler."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dask.base
import distributed
import pytest
from dask_helpers import kill_workers, s3_ready_cluster, scheduler_view, wait_busy, write_files
from e2ebackup.dask import verify_repository
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import VerifyReport, verify
from e2ebackup.repo.names import pack_name
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage, open_storage
from repo_helpers import FAST, PASSWORD, cli, new_repo, open_repo

if TYPE_CHECKING:
    from servers.cloud import S3Server

# The S3 server fixture; its module is imported through pytest, so its asserts are rewritten.
pytest_plugins = ["servers.cloud"]


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def _fill(repo: Repository, src: Path) -> None:
    """Three snapshots: 20 MiB of media and small files, then a changed and a new file, then a
    new small file: data packs of several sizes and a tree pack per backup."""
    media = {f"Media/IMG_{i:04d}.jpg": os.urandom(5 << 20) for i in range(4)}
    small = {f"chats/c{i:03d}.txt": f"message {i}\n".encode() * (i + 1) for i in range(40)}
    write_files(src, {**media, **small})
    backup(repo, [src])
    write_files(
        src, {"Media/IMG_0001.jpg": os.urandom(3 << 20), "Media/new.mp4": os.urandom(9 << 20)}
    )
    backup(repo, [src])
    write_files(src, {"chats/late.txt": b"late\n"})
    backup(repo, [src])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository made with the public API; each test works on a copy."""
    root = tmp_path_factory.mktemp("pristine")
    _fill(new_repo(root / "repo"), root / "src")
    return root / "repo"


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "repo")
    return tmp_path / "repo"


def single(path: Path) -> VerifyReport:
    return verify(open_repo(path), read_data=True)


def on_cluster(path: Path | str, client: distributed.Client, **options: object) -> VerifyReport:
    # One pack a task: both workers take part, each with several tasks.
    options.setdefault("unit_bytes", 1)
    return verify_repository(path, client=client, password=PASSWORD, **options)  # type: ignore[arg-type]


def _packs(path: Path) -> list[tuple[str, int]]:
    """The repository's packs, largest first."""
    sizes = open_repo(path).index.pack_sizes
    return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_report_is_the_single_process_one(copy: Path, client: distributed.Client) -> None:
    expected = single(copy)
    assert expected.ok, expected.errors
    assert expected.snapshots == 3
    assert expected.packs == len(_packs(copy)) >= 6
    with distributed.get_task_stream(client) as stream:
        report = on_cluster(copy, client)
    assert report == expected
    ran = [t for t in stream.data if str(t["key"]).startswith("e2ebackup-verify-")]
    assert len(ran) == expected.packs  # one pack a task (unit_bytes=1)
    assert len({t["worker"] for t in ran}) == 2  # on both workers
    # Units of any size, and a part of the packs (--read-data-subset n/t), the same.
    assert on_cluster(copy, client, unit_bytes=None) == expected
    part = verify(open_repo(copy), subset="1/2")
    assert on_cluster(copy, client, read_data=False, subset="1/2") == part
    assert 0 < part.packs < expected.packs


def _damage(path: Path, how: str) -> str:
    """Damages the largest pack ``how``; returns what the report must say about it."""
    (victim, size), (other, _) = _packs(path)[:2]
    file = path / pack_name(victim)
    if how == "flipped-blob":
        _flip(file, size // 3)
        return "is damaged"
    if how == "flipped-blobs":  # in two packs, read by different tasks: the same order
        _flip(file, size // 3)
        _flip(path / pack_name(other), 100)
        return f"pack {other[:16]}: blob"
    if how == "flipped-header":
        _flip(file, size - 10)  # inside the sealed header (the trailer is the last 4 bytes)
        return "header does not authenticate"
    if how == "truncated":
        os.truncate(file, size - 1000)
        return f"has {size - 1000} bytes, the index says {size}"
    if how == "deleted":
        file.unlink()
        return "is missing from the storage"
    assert how == "swapped"
    shutil.copyfile(path / pack_name(other), file)
    return f"pack {victim[:16]} has"


DAMAGE = ["flipped-blob", "flipped-blobs", "flipped-header", "truncated", "deleted", "swapped"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damage_is_found_and_reported_the_same_way(
    copy: Path, client: distributed.Client, how: str
) -> None:
    said = _damage(copy, how)
    expected = single(copy)
    assert not expected.ok
    assert any(said in e for e in expected.errors), expected.errors
    assert on_cluster(copy, client) == expected


def _summary(r: subprocess.CompletedProcess[str]) -> tuple[int, object, list[str]]:
    """The exit status, the JSON report and the error lines."""
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    return r.returncode, json.loads(r.stdout or "null"), errors


@pytest.mark.parametrize("how", [None, *DAMAGE])
def test_the_command_line_exits_as_the_single_process_one(
    copy: Path, client: distributed.Client, how: str | None
) -> None:
    """``verify --read-data --dask ADDRESS`` against the cluster's scheduler over TCP: the same
    JSON report, the same error lines, the same exit status (0 clean, 1 damaged)."""
    if how is not None:
        _damage(copy, how)
    tmp = copy.parent

    def run(*extra: str) -> tuple[int, object, list[str]]:
        return _summary(cli(tmp, "verify", "-r", str(copy), "--read-data", "--json", *extra,
                            E2EBACKUP_PASSWORD=PASSWORD))  # fmt: skip

    alone = run()
    assert alone[0] == (0 if how is None else 1), alone
    assert run("--dask", client.scheduler_info()["address"]) == alone


def test_a_worker_killed_mid_run_changes_nothing(copy: Path, client: distributed.Client) -> None:
    """A worker is killed with SIGKILL once a task is running (reads are slowed down so that
    the run lasts): the units it held are lost with it, and sent again with the keys; the
    report is the one of the single process."""
    expected = single(copy)
    outcome: list[VerifyReport] = []
    runner = threading.Thread(
        target=lambda: outcome.append(on_cluster(copy, client, limit_download=8 << 20))
    )
    runner.start()

    kill_workers(client, wait_busy(client, "e2ebackup-verify-", runner)[0])
    runner.join(120)
    assert not runner.is_alive()
    assert outcome == [expected]
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


def test_dask_needs_read_data(copy: Path) -> None:
    r = cli(copy.parent, "verify", "-r", str(copy), "--dask", "local", E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 2
    assert "--read-data" in r.stderr


def test_the_keys_never_reach_the_scheduler(copy: Path, client: distributed.Client) -> None:
    """The scheduler holds task names, states and run specs: none carries a key of the
    repository (the data key, the keys derived from it), its hex or a hash of it, the password,
    nor a blob id (the index stays off it too). The keys went to the workers by a direct
    scatter."""
    repo = open_repo(copy)
    with scheduler_view(client) as seen:
        report = on_cluster(copy, client)
    assert report.ok
    names = [text for text, _ in seen]
    assert any("e2ebackup-verify-" in text for text in names)  # the watcher saw the tasks
    assert any("PackKeys-" in text for text in names)  # and the scattered keys' name
    keys = repo.keys
    secrets = [repo._data_key, keys.pack, keys.blob, keys.blob_id, keys.metadata, keys.config]
    tokens = {PASSWORD.encode()}
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
    """The workers open the bucket themselves, with the credentials of their environment: a
    clean repository, then one with a flipped byte in a pack, each reported as the single
    process reports it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    prefix = f"verify-{uuid.uuid4().hex[:8]}"
    url, endpoint = f"s3://e2ebackup/{prefix}", s3_server.endpoint

    def storage() -> Repository:
        return Repository.open(open_storage(url, s3_endpoint=endpoint), password=PASSWORD)

    repo = Repository.init(open_storage(url, s3_endpoint=endpoint), password=PASSWORD, kdf=FAST)
    src = tmp_path / "src"
    write_files(src, {"a.bin": os.urandom(6 << 20), "b/c.txt": b"c\n" * 1000})
    backup(repo, [src])
    write_files(src, {"d.bin": os.urandom(2 << 20)})
    backup(repo, [src])

    def both() -> tuple[VerifyReport, VerifyReport]:
        alone = verify(storage(), read_data=True)
        return alone, on_cluster(url, client, s3_endpoint=endpoint)

    alone, spread = both()
    assert alone.ok, alone.errors
    assert alone.packs >= 4
    assert spread == alone

    victim, size = max(storage().index.pack_sizes.items(), key=lambda kv: kv[1])
    s3 = s3_server.client()
    key = f"{prefix}/{pack_name(victim)}"
    data = bytearray(s3.get_object(Bucket="e2ebackup", Key=key)["Body"].read())
    assert len(data) == size
    data[size // 2] ^= 0x01
    s3.put_object(Bucket="e2ebackup", Key=key, Body=bytes(data))
    alone, spread = both()
    assert any("is damaged" in e for e in alone.errors), alone.errors
    assert spread == alone


def test_writers_drops_are_read_with_their_own_keys(copy: Path, client: distributed.Client) -> None:
    """A writer's drop (format version 4) holds packs under the drop's own keys: the workers get
    them with the repository's (scattered, never through the scheduler) and report what the
    single process reports; a damaged drop pack is found on the cluster too."""
    from e2ebackup.repo import WriterToken, backup_as_writer

    src = copy.parent / "phone"
    write_files(src, {"DCIM/a.jpg": os.urandom(3 << 20), "notes.txt": b"n\n" * 100})
    token = WriterToken.parse(open_repo(copy).issue_writer_token().secret())
    backup_as_writer(open_storage(str(copy)), token, [src])
    expected = single(copy)
    assert expected.ok, expected.errors
    assert expected.snapshots == 4
    assert on_cluster(copy, client) == expected
    repo = open_repo(copy)
    sizes = repo.index.pack_sizes
    drop_pack = max((p for p in sizes if repo.is_drop_pack(p)), key=lambda p: sizes[p])
    _flip(copy / pack_name(drop_pack), 100)
    damaged = single(copy)
    assert not damaged.ok
    assert on_cluster(copy, client).errors == damaged.errors


def test_an_identity_repository_verifies_on_the_cluster(
    tmp_path: Path, client: distributed.Client
) -> None:
    """A repository opened by an identity only (made with a recipient, no password: the owner
    of writer tokens) verifies with ``-i FILE`` on the cluster as on one process, a writer's
    drop included, without asking for a password."""
    from e2ebackup.recipients import Identity
    from e2ebackup.repo import backup_as_writer

    identity = Identity.generate()
    id_file = tmp_path / "owner.identity"
    id_file.write_text(identity.secret() + "\n")
    where = tmp_path / "repo"
    owner = Repository.init(LocalStorage(where), recipients=[identity.recipient])
    src = tmp_path / "phone"
    write_files(src, {"DCIM/a.jpg": os.urandom(2 << 20), "notes.txt": b"n\n" * 50})
    backup(owner, [src])
    backup_as_writer(open_storage(str(where)), owner.issue_writer_token(), [src])
    report = verify_repository(where, client=client, identity=identity)
    assert report.ok, report.errors
    assert report.snapshots == 2
    single_report = verify(
        Repository.open(open_storage(str(where)), identity=identity), read_data=True
    )
    assert report == single_report
    r = cli(tmp_path, "verify", "-r", str(where), "--read-data", "-i", str(id_file), "--json",
            "--dask", client.scheduler_info()["address"], E2EBACKUP_PASSWORD="")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
