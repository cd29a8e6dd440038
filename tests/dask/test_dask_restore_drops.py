# mypy: disable-error-code="no-untyped-call"
"""Writers' snapshots (format version 4, drops) restored on a Dask cluster: a drop's packs are
under the drop's own keys, so the workers get each needed drop's blob keys with the
repository's (scattered, never through the scheduler), and only those; the second backup of
a writer reuses blobs of its first drop, so one restore reads packs of two drops. Into a
shared folder and into an S3 prefix, the files are those of the plain restore."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import distributed
import pytest
from dask_helpers import s3_ready_cluster, scheduler_view, write_files
from e2ebackup.dask import S3Target, restore as dask_restore, restore_to_s3
from e2ebackup.dask.restore import BlobKeys
from e2ebackup.dask.verify import StorageSpec
from e2ebackup.recipients import Identity
from e2ebackup.repo import backup_as_writer
from e2ebackup.repo.backup import backup
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import Restorer, Walked, restore
from e2ebackup.storage import LocalStorage

if TYPE_CHECKING:
    from servers.cloud import S3Server

pytest_plugins = ["servers.cloud"]

MIB = 1 << 20


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def tree_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def owner(tmp_path: Path) -> tuple[Repository, Identity, Path, str]:
    """A repository opened by an identity, a backup of its own, and two backups of a phone
    that holds only a writer token: the second keeps the first's photo (its blobs are in the
    first drop's packs) and adds a video of several chunks."""
    identity = Identity.generate()
    repo = Repository.init(LocalStorage(tmp_path / "repo"), recipients=[identity.recipient])
    own = tmp_path / "own"
    write_files(own, {"own.txt": b"the owner's own\n" * 100})
    backup(repo, [own])
    phone = tmp_path / "phone"
    write_files(phone, {"DCIM/a.jpg": os.urandom(3 * MIB), "notes/n.txt": b"note\n" * 300})
    token = repo.issue_writer_token()
    backup_as_writer(LocalStorage(tmp_path / "repo"), token, [phone])
    write_files(phone, {"DCIM/b.mp4": os.urandom(5 * MIB + 17), "notes/m.txt": b"m\n"})
    sid, _, _ = backup_as_writer(LocalStorage(tmp_path / "repo"), token, [phone])
    repo = Repository.open(LocalStorage(tmp_path / "repo"), identity=identity)
    assert repo.drop_of(sid) is not None
    return repo, identity, phone, sid


def test_a_writers_snapshot_restores_into_a_shared_folder(
    owner: tuple[Repository, Identity, Path, str], client: distributed.Client, tmp_path: Path
) -> None:
    repo, _, phone, sid = owner
    expected = restore(repo, sid, tmp_path / "plain")
    with scheduler_view(client) as seen:
        stats = dask_restore(repo, sid, tmp_path / "out", client=client, unit_bytes=MIB)
    assert tree_of(tmp_path / "out") == tree_of(tmp_path / "plain")
    assert tree_of(tmp_path / "out" / phone.name) == tree_of(phone)
    assert (stats.files, stats.bytes) == (expected.files, expected.bytes)
    # The drops' keys went to the workers directly: none is on the scheduler.
    drop = repo.drop_of(sid)
    assert drop is not None
    secrets = [
        key
        for pack, _, _ in drop.packs
        for key in (repo.keys_for(pack).blob, repo.keys_for(pack).blob_id)
    ]
    assert secrets
    for _, spec in seen:
        for secret in secrets:
            assert secret not in spec
            assert secret.hex().encode() not in spec


def test_only_the_drops_read_travel(owner: tuple[Repository, Identity, Path, str]) -> None:
    """The holder carries the keys of the drops whose packs the files read, not every
    writer's: the owner's own snapshot needs none."""
    repo, _, _, sid = owner
    own_sid = next(s for s in repo.snapshot_ids() if repo.drop_of(s) is None)
    spec = StorageSpec("unused: nothing is read")

    def keys_for(snapshot_id: str) -> BlobKeys:
        jobs = Restorer(repo).plan_files(repo.load_snapshot(snapshot_id), None, Walked())
        return BlobKeys.of(repo, snapshot_id, spec, list(jobs))

    own = keys_for(own_sid)
    phone = keys_for(sid)
    drop_packs = [p for p in repo.index.pack_sizes if repo.is_drop_pack(p)]
    assert all(own.for_pack(p) is own.keys for p in drop_packs)
    # The second backup reads blobs of both of the writer's drops: two sets of keys.
    assert len({id(phone.for_pack(p)) for p in drop_packs} - {id(phone.keys)}) == 2
    assert phone.max_chunk == repo.chunker_max(sid)


def test_a_writers_snapshot_restores_into_an_s3_prefix(
    owner: tuple[Repository, Identity, Path, str],
    client: distributed.Client,
    s3_server: S3Server,
) -> None:
    repo, _, phone, sid = owner
    prefix = f"restored-{uuid.uuid4().hex[:8]}/"
    target = S3Target("e2ebackup", prefix, endpoint_url=s3_server.endpoint)
    stats = restore_to_s3(repo, sid, target, client=client, plaintext_to_cloud=True)
    s3 = s3_server.client()
    got = {}
    for item in s3.list_objects_v2(Bucket="e2ebackup", Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket="e2ebackup", Key=item["Key"])["Body"].read()
        got[item["Key"].removeprefix(prefix)] = body
    want = {f"{phone.name}/{k}": v for k, v in tree_of(phone).items()}
    assert got == want
    assert stats.files == len(want)
