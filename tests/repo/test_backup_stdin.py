"""backup --stdin: a stream (a database dump piped in) backed up as one file, deduplicated
against earlier ones, restored byte for byte; through the API and the command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.backup import backup_stream
from e2ebackup.repo.restore import restore
from repo_helpers import cli, env, new_repo


class ReadOnly:
    """A stream with read() alone (no readinto), as some wrappers are."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(min(n, 1000) if n > 0 else n)  # short reads, like a pipe


def test_stream_round_trip_and_dedup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    repo = new_repo(tmp_path / "repo")
    dump = os.urandom(24 << 20)
    first, stats = backup_stream(repo, io.BytesIO(dump), "msgstore.sql", tags=["dump"])
    assert stats.bytes_read == len(dump)
    second, again = backup_stream(repo, ReadOnly(dump + b"-- one more row\n"), "msgstore.sql")  # type: ignore[arg-type]
    assert again.bytes_added < len(dump) // 2  # all but the last chunk was stored already
    snaps = dict(repo.snapshots())
    assert snaps[first]["paths"] == ["/msgstore.sql"]
    assert snaps[first]["tags"] == ["dump"]
    restore(repo, first, str(tmp_path / "one"))
    assert (tmp_path / "one" / "msgstore.sql").read_bytes() == dump
    restore(repo, second, str(tmp_path / "two"))
    assert (tmp_path / "two" / "msgstore.sql").read_bytes() == dump + b"-- one more row\n"
    empty, _ = backup_stream(repo, io.BytesIO(b""), "empty")
    restore(repo, empty, str(tmp_path / "three"))
    assert (tmp_path / "three" / "empty").read_bytes() == b""


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0"])
def test_bad_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    repo = new_repo(tmp_path / "repo")
    with pytest.raises(InvalidArgument, match="cannot be a file name"):
        backup_stream(repo, io.BytesIO(b"x"), name)
    assert list(repo.snapshots()) == []


def test_command_line(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    dump = b"CREATE TABLE messages(body);\n" + os.urandom(3 << 20)
    piped = subprocess.run(
        [sys.executable, "-m", "e2ebackup", "backup", "-r", repo, "--stdin",
         "--stdin-filename", "chats.sql", "--json"],
        input=dump, capture_output=True, env=env(tmp_path), timeout=300, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["stats"]["bytes_read"] == len(dump)
    done = cli(tmp_path, "restore", "-r", repo, "latest", "--path", "/chats.sql",
               "--target", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "chats.sql").read_bytes() == dump
    both = cli(tmp_path, "backup", "-r", repo, "--stdin", str(tmp_path))
    assert both.returncode == 2
    assert "no paths" in both.stderr
    dry = cli(tmp_path, "backup", "-r", repo, "--stdin", "--dry-run")
    assert dry.returncode == 2
    assert "--dry-run" in dry.stderr
    nothing = cli(tmp_path, "backup", "-r", repo)
    assert nothing.returncode == 2
    assert "give at least one path, or --stdin" in nothing.stderr
