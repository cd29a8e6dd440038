# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client and LocalCluster are not.)
"""Issue 14's first "done when": two independent CLI backups and a backup on Dask land in one
repository at the same moment (format version 3: no exclusive lock, merged heads), all three
snapshots are listed, verify --read-data passes and each tree restores byte-identical."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest
from dask_helpers import s3_ready_cluster, write_files
from e2ebackup.dask import backup as dask_backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.repository import SnapshotFilter
from e2ebackup.repo.restore import restore
from repo_helpers import PASSWORD, new_repo, open_repo, snapshot_of

MIB = 1 << 20


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def _tree(root: Path, seed: int) -> None:
    files = {f"d{i % 4}/f{i}.bin": os.urandom(30_000 + seed * 7 + i) for i in range(60)}
    files["media/clip.mp4"] = os.urandom(6 * MIB + seed)
    write_files(root, files)


def test_cli_backups_and_a_dask_backup_at_once(tmp_path: Path, client: distributed.Client) -> None:
    repo_path = tmp_path / "repo"
    new_repo(repo_path)
    trees = {name: tmp_path / name for name in ("on-dask", "cli-a", "cli-b")}
    for seed, root in enumerate(trees.values()):
        _tree(root, seed)
    env = dict(os.environ, E2EBACKUP_PASSWORD=PASSWORD)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "e2ebackup", "backup", "-r", str(repo_path), str(trees[n])],
            env=dict(env, E2EBACKUP_STATE_DIR=str(tmp_path / f"state-{n}")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ("cli-a", "cli-b")
    ]
    repo = open_repo(repo_path)
    assert repo.many_writers
    sid, _ = dask_backup(repo, [trees["on-dask"]], client=client, unit_bytes=2 * MIB)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    repo = open_repo(repo_path)
    listed = {tuple(snap["paths"]): snap_id for snap_id, snap in repo.snapshots()}
    assert set(listed) == {(str(root),) for root in trees.values()}
    assert listed[(str(trees["on-dask"]),)] == sid
    assert verify(repo, read_data=True).ok
    for name, root in trees.items():
        target = tmp_path / f"restored-{name}"
        restore(repo, "latest", str(target), where=SnapshotFilter(paths=(str(root),)))
        assert snapshot_of(target / name) == snapshot_of(root)
