"""Files that change between the walk's ``lstat`` and their reading (a log appended to, a
download in progress, a file truncated by its program): the snapshot keeps what was read,
with the size of what was read, and restores it. Before, the listed size was kept with the
chunks of what was read, and the restore refused the file as damaged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.repo.backup import Archiver, backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.restore import restore
from repo_helpers import new_repo

GROWN = b"appended while it was read\n" * 100


def test_a_file_that_grows_or_shrinks_while_read_restores_as_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "grows.log").write_bytes(os.urandom(300_000))
    (src / "shrinks.bin").write_bytes(os.urandom(300_000))
    (src / "steady.txt").write_bytes(b"steady\n" * 1000)
    read_file = Archiver.read_file

    def changing(self: Archiver, path: str, size: int, **kw: Any) -> tuple[list[str], int]:
        # Between the listing (size was taken) and the reading.
        if path.endswith("grows.log"):
            with open(path, "ab") as f:
                f.write(GROWN)
        elif path.endswith("shrinks.bin"):
            os.truncate(path, 1234)
        return read_file(self, path, size, **kw)

    monkeypatch.setattr(Archiver, "read_file", changing)
    repo = new_repo(tmp_path / "repo")
    sid, stats = backup(repo, [src])
    assert stats.errors == 0
    assert stats.bytes_read == 300_000 + len(GROWN) + 1234 + 7000
    monkeypatch.setattr(Archiver, "read_file", read_file)
    report = verify(repo, read_data=True)
    assert report.ok, report.errors
    restore(repo, sid, tmp_path / "out")
    for name in ("grows.log", "shrinks.bin", "steady.txt"):
        restored = next((tmp_path / "out").rglob(name))
        assert restored.read_bytes() == (src / name).read_bytes(), name
    assert (src / "grows.log").stat().st_size == 300_000 + len(GROWN)


def test_verify_reports_a_file_whose_chunks_disagree_with_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot as e2ebackup made it before the fix (the listed size kept for a file that
    grew while it was read): ``verify --read-data`` names the file, where before it passed and
    only the restore found it. Without reading the data nothing is known of the plaintext."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "grows.log").write_bytes(b"x" * 5000)
    (src / "steady.txt").write_bytes(b"steady\n")
    read_file = Archiver.read_file

    def listed_size(self: Archiver, path: str, size: int, **kw: Any) -> tuple[list[str], int]:
        if path.endswith("grows.log"):
            with open(path, "ab") as f:
                f.write(GROWN)
        return read_file(self, path, size, **kw)[0], size  # the old behaviour

    monkeypatch.setattr(Archiver, "read_file", listed_size)
    repo = new_repo(tmp_path / "repo")
    backup(repo, [src])
    assert verify(repo).ok  # the structure is sound
    report = verify(repo, read_data=True)
    assert not report.ok
    assert len(report.errors) == 1
    assert "grows.log: its chunks hold" in report.errors[0]
    assert f"{5000 + len(GROWN):,} bytes, the snapshot says 5,000" in report.errors[0]
