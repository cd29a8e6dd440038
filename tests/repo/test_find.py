"""find: which snapshots hold a file, by name glob or path glob, through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2ebackup.repo.backup import backup
from e2ebackup.repo.find import find
from e2ebackup.repo.repository import SnapshotFilter
from repo_helpers import cli, new_repo


def test_find_across_snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    (photos / "2025").mkdir()
    (photos / "2024" / "beach.jpg").write_bytes(b"\xff\xd8\xff" + b"1" * 500)
    (photos / "2024" / "beach.txt").write_text("notes")
    (photos / "2025" / "city.jpg").write_bytes(b"\xff\xd8\xff" + b"2" * 700)
    repo = new_repo(tmp_path / "repo")
    first, _ = backup(repo, [str(photos)])
    (photos / "2024" / "beach.jpg").unlink()
    (photos / "2025" / "beach-again.jpg").write_bytes(b"\xff\xd8\xff" + b"3" * 900)
    second, _ = backup(repo, [str(photos)], tags=["later"])

    def hits(*patterns: str, where: SnapshotFilter | None = None) -> set[tuple[str, str, int]]:
        return {(f.snapshot, f.path, f.size) for f in find(repo, patterns, where)}

    assert hits("beach*.jpg") == {
        (first, "photos/2024/beach.jpg", 503),
        (second, "photos/2025/beach-again.jpg", 903),
    }
    assert hits("2024/*.jpg") == {(first, "photos/2024/beach.jpg", 503)}
    assert hits(str(photos / "2025" / "city.jpg")) == {
        (first, "photos/2025/city.jpg", 703),
        (second, "photos/2025/city.jpg", 703),
    }
    assert {p for _, p, _ in hits("2024")} == {"photos/2024"}  # folders match too
    assert hits("*.jpg", where=SnapshotFilter(tags=("later",))) == {
        (second, "photos/2025/beach-again.jpg", 903),
        (second, "photos/2025/city.jpg", 703),
    }
    assert hits("nothing-like-this") == set()


def test_find_command(tmp_path: Path) -> None:
    src = tmp_path / "chats"
    (src / "Media").mkdir(parents=True)
    (src / "Media" / "IMG-20260101-WA0001.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 50)
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    found = cli(tmp_path, "find", "-r", repo, "IMG-2026*", "--json")
    assert found.returncode == 0, found.stderr
    [row] = json.loads(found.stdout)
    assert row["path"] == "chats/Media/IMG-20260101-WA0001.jpg"
    assert row["size"] == 53
    text = cli(tmp_path, "find", "-r", repo, "IMG-2026*")
    assert "chats/Media/IMG-20260101-WA0001.jpg" in text.stdout
    missing = cli(tmp_path, "find", "-r", repo, "*.mp4")
    assert missing.returncode == 1
    assert "no match" in missing.stdout
    bad = cli(tmp_path, "find", "-r", repo, "[oops")
    assert bad.returncode == 2


def test_find_and_diff_wait_for_no_one_holding_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read under a shared lock: while a prune (an exclusive lock) runs, they refuse
    rather than read packs that may be going away."""
    from e2ebackup.errors import RepositoryLocked
    from e2ebackup.repo import diff

    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    repo = new_repo(tmp_path / "repo")
    sid, _ = backup(repo, [str(src)])
    with repo.lock(exclusive=True):
        with pytest.raises(RepositoryLocked):
            list(find(repo, ["a.txt"]))
        with pytest.raises(RepositoryLocked):
            list(diff(repo, sid, "latest"))
    assert [f.path for f in find(repo, ["a.txt"])] == ["src/a.txt"]
