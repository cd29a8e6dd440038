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
    assert verify(repo, read_data=True).ok
    restore(repo, sid, tmp_path / "out")
    for name in ("grows.log", "shrinks.bin", "steady.txt"):
        restored = next((tmp_path / "out").rglob(name))
        assert restored.read_bytes() == (src / name).read_bytes(), name
    assert (src / "grows.log").stat().st_size == 300_000 + len(GROWN)
