"""diff between two snapshots: added, removed, modified, type-changed and metadata-only
entries, through the API and the command line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from e2ebackup.repo import Change, backup, diff
from repo_helpers import cli, new_repo


def make(root: Path) -> None:
    (root / "keep" / "deep").mkdir(parents=True)
    (root / "keep" / "same.txt").write_text("same")
    (root / "keep" / "deep" / "edit.txt").write_text("before")
    (root / "gone").mkdir()
    (root / "gone" / "a.txt").write_text("a")
    (root / "chmod.sh").write_text("#!/bin/sh\n")
    (root / "becomes-dir").write_text("file first")


def change(root: Path) -> None:
    (root / "keep" / "deep" / "edit.txt").write_text("after!")
    shutil.rmtree(root / "gone")
    (root / "new").mkdir()
    (root / "new" / "b.bin").write_bytes(b"b" * 10)
    os.chmod(root / "chmod.sh", 0o755)
    (root / "becomes-dir").unlink()
    (root / "becomes-dir").mkdir()


def test_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "src"
    make(src)
    repo = new_repo(tmp_path / "repo")
    first, _ = backup(repo, [str(src)])
    change(src)
    second, _ = backup(repo, [str(src)])
    got = {(c.kind, c.path) for c in diff(repo, first, second)}
    assert got == {
        ("M", "src/keep/deep/edit.txt"),
        ("-", "src/gone"),
        ("-", "src/gone/a.txt"),
        ("+", "src/new"),
        ("+", "src/new/b.bin"),
        ("U", "src/chmod.sh"),
        ("T", "src/becomes-dir"),
        ("U", "src"),  # its mtime changed with its entries; keep/deep's did not (a file
    }  # rewritten in place leaves its folder alone), so it is only opened, not listed
    assert Change("+", "src/new/b.bin", "file", 10) in list(diff(repo, first, second))
    assert list(diff(repo, second, second)) == []
    assert {(c.kind, c.path) for c in diff(repo, second, first)} >= {
        ("+", "src/gone/a.txt"),
        ("-", "src/new/b.bin"),
    }


def test_diff_command(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make(src)
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    first = json.loads(cli(tmp_path, "snapshots", "-r", repo, "--json").stdout)[0]["id"]
    change(src)
    assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    shown = cli(tmp_path, "diff", "-r", repo, first[:8], "latest")
    assert shown.returncode == 0, shown.stderr
    assert "M  src/keep/deep/edit.txt" in shown.stdout
    assert "+  src/new/" in shown.stdout
    assert "1 modified" in shown.stdout
    rows = json.loads(cli(tmp_path, "diff", "-r", repo, first, "latest", "--json").stdout)
    assert {"kind": "-", "path": "src/gone/a.txt", "type": "file", "size": 1} in rows
