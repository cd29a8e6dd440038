"""Several ``--include`` parts inside the same folders: the folders that lead to them are
made, entered and left once, so they get the snapshot's times and modes, however the writer
threads keep up. Before, each part entered them again: a folder whose metadata was set while
the first part was left got a later part's folders in it, and the time of that moment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2ebackup.errors import RestoreLimitExceeded
from e2ebackup.repo import extract
from e2ebackup.repo.backup import backup
from e2ebackup.repo.restore import restore
from repo_helpers import new_repo

OLD = 1_500_000_000_000_000_000  # ns: 2017


@pytest.mark.parametrize("order", [["a", "b/deep", "c"], ["c", "b/deep", "a"]])
def test_shared_folders_of_parts_keep_the_snapshots_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: list[str]
) -> None:
    src = tmp_path / "src"
    for rel in ["a/x.txt", "b/deep/y.txt", "c/z.txt", "d/left-out.txt"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode())
    os.chmod(src / "b", 0o750)
    for folder in [src / "a", src / "b" / "deep", src / "b", src / "c", src / "d", src]:
        os.utime(folder, ns=(OLD, OLD))
    repo = new_repo(tmp_path / "repo")
    sid, _ = backup(repo, [src])
    # Each folder's metadata settles as soon as it is left (no folder waits for the writers):
    # the order in which a shared folder could be set too early.
    monkeypatch.setattr(extract, "OPEN_FOLDERS", 0)
    out = tmp_path / "out"
    stats = restore(repo, sid, out, subpath=[f"src/{p}" for p in order])
    for rel in ["src", "src/b", "src/a", "src/c"]:
        assert os.stat(out / rel).st_mtime_ns == OLD, rel
    assert os.stat(out / "src" / "b").st_mode & 0o777 == 0o750
    assert not (out / "src" / "d").exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")) == [
        "src/a/x.txt",
        "src/b/deep/y.txt",
        "src/c/z.txt",
    ]
    # src and src/b once each, with a, b/deep and c.
    assert stats.dirs == 5


def test_shared_folders_count_once_against_max_files(tmp_path: Path) -> None:
    """Three parts in ``src`` and ``src/b``: 3 files, 3 folders of their own, and the two
    folders that lead to them once each: 8 entries fit in ``max_files=8``."""
    src = tmp_path / "src"
    for rel in ["a/x.txt", "b/deep/y.txt", "b/c/z.txt"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode())
    repo = new_repo(tmp_path / "repo")
    sid, _ = backup(repo, [src])
    parts = ["src/a", "src/b/deep", "src/b/c"]
    stats = restore(repo, sid, tmp_path / "out", subpath=parts, max_files=8)
    assert stats.files == 3
    with pytest.raises(RestoreLimitExceeded):
        restore(repo, sid, tmp_path / "out2", subpath=parts, max_files=7)
