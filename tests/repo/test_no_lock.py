"""--no-lock: a device with read-only access to the storage can still list, search, verify and
restore (tested on a real read-only bind mount of the repository, which binds root too)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_helpers import cli, snapshot_of


@pytest.fixture
def read_only_repo(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a repository with one backup, the same repository mounted read-only)."""
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    for i in range(20):
        (src / "many" / f"f{i:05d}.txt").write_text(f"file {i}\n" * (i + 1))
    (src / "big.bin").write_bytes(os.urandom(2 << 20))
    repo = tmp_path / "repo"
    assert cli(tmp_path, "init", "-r", str(repo)).returncode == 0
    assert cli(tmp_path, "backup", "-r", str(repo), str(src)).returncode == 0
    view = tmp_path / "ro"
    view.mkdir()
    bind = subprocess.run(["mount", "--bind", str(repo), str(view)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot make the bind mount read-only: {ro.stderr.decode().strip()}")
        yield src, view
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_reading_without_a_lock(tmp_path: Path, read_only_repo: tuple[Path, Path]) -> None:
    src, view = read_only_repo
    locked = cli(tmp_path, "snapshots", "-r", str(view))
    assert locked.returncode != 0  # a shared lock is an object written to the storage
    assert "Traceback" not in locked.stderr
    assert "--no-lock reads without one" in locked.stderr
    listed = cli(tmp_path, "snapshots", "-r", str(view), "--no-lock", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    for args in (
        ("ls", "latest"),
        ("find", "f0000*"),
        ("stats",),
        ("verify", "--read-data"),
    ):
        done = cli(tmp_path, args[0], "-r", str(view), *args[1:], "--no-lock")
        assert done.returncode == 0, (args, done.stderr)
    out = tmp_path / "out"
    done = cli(tmp_path, "restore", "-r", str(view), "latest", "--target", str(out), "--no-lock")
    assert done.returncode == 0, done.stderr
    assert snapshot_of(out / "src") == snapshot_of(src)
    # Writing commands do not take the option at all.
    refused = cli(tmp_path, "backup", "-r", str(view), str(src), "--no-lock")
    assert refused.returncode == 2
