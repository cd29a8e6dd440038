"""Which snapshot ``latest`` means when one repository holds several backups (photos daily,
the chat database hourly): --host, --path and --tag, as restic's filters, on snapshots, ls
and restore; and the Python API's SnapshotFilter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.backup import backup
from e2ebackup.repo.repository import SnapshotFilter
from e2ebackup.repo.restore import restore
from repo_helpers import cli, new_repo


def test_latest_of_a_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    photos, chats = tmp_path / "photos", tmp_path / "chats"
    photos.mkdir()
    chats.mkdir()
    (photos / "a.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(100))
    (chats / "msgstore.db").write_bytes(b"not really sqlite")
    repo = new_repo(tmp_path / "repo")
    photo_id, _ = backup(repo, [str(photos)], tags=["daily"])
    chat_id, _ = backup(repo, [str(chats)], tags=["hourly"])
    assert repo.find_snapshot("latest")[0] == chat_id
    assert repo.find_snapshot("latest", SnapshotFilter(paths=(str(photos),)))[0] == photo_id
    assert repo.find_snapshot("latest", SnapshotFilter(tags=("daily",)))[0] == photo_id
    here = SnapshotFilter(host=socket.gethostname(), tags=("hourly",))
    assert repo.find_snapshot("latest", here)[0] == chat_id
    with pytest.raises(InvalidArgument, match="no snapshot from host elsewhere"):
        repo.find_snapshot("latest", SnapshotFilter(host="elsewhere"))
    # An id is an id: the filter does not hide it.
    assert repo.find_snapshot(photo_id[:10], SnapshotFilter(tags=("hourly",)))[0] == photo_id
    restore(repo, "latest", str(tmp_path / "out"), where=SnapshotFilter(tags=("daily",)))
    assert os.listdir(tmp_path / "out") == ["photos"]


def test_command_line_filters(tmp_path: Path) -> None:
    def here(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(tmp_path, *args, cwd=tmp_path)  # --path as given, relative to here

    for name in ("photos", "chats"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.bin").write_bytes(name.encode() * 100)
    repo = str(tmp_path / "repo")
    assert here("init", "-r", repo).returncode == 0
    assert here("backup", "-r", repo, "photos", "--tag", "media").returncode == 0
    assert here("backup", "-r", repo, "chats").returncode == 0
    listed = json.loads(here("snapshots", "-r", repo, "--tag", "media", "--json").stdout)
    assert [s["paths"] for s in listed] == [[str(tmp_path / "photos")]]
    table = here("snapshots", "-r", repo).stdout.splitlines()
    assert table[0].split() == ["ID", "TIME", "HOST", "SIZE", "TAGS", "PATHS"]
    assert "600 B  media" in table[1]
    assert table[1].endswith(str(tmp_path / "photos"))
    assert table[2].endswith(str(tmp_path / "chats"))
    # --path takes the path as it was given to backup (relative to the current folder).
    shown = here("ls", "-r", repo, "latest", "--path", "photos", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {e["path"] for e in json.loads(shown.stdout)} >= {"photos/photos.bin"}
    done = here("restore", "-r", repo, "latest", "--path", "photos", "--target", "out")
    assert done.returncode == 0, done.stderr
    assert os.listdir(tmp_path / "out") == ["photos"]
    missing = here("restore", "-r", repo, "latest", "--host", "nowhere", "--target", "out2")
    assert missing.returncode == 2
    assert "no snapshot from host nowhere" in missing.stderr


def test_stats_command(tmp_path: Path) -> None:
    """Two backups of the same 2 MB of random data hold 4 MB and store about 2 MB."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2_000_000))
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    for _ in range(2):
        assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    shown = cli(tmp_path, "stats", "-r", repo, "--json")
    assert shown.returncode == 0, shown.stderr
    value = json.loads(shown.stdout)
    assert value["snapshots"] == 2
    assert value["snapshot_bytes"] == 4_000_000
    assert value["latest_bytes"] == 2_000_000
    assert 2_000_000 < value["stored_bytes"] < 2_100_000
    assert 1.9 < value["saving"] <= 2.0
    text = cli(tmp_path, "stats", "-r", repo).stdout
    assert "2 snapshots hold 4.0 MB (the newest 2.0 MB)" in text
