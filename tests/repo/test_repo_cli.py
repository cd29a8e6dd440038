"""The repository through the command line, as a user runs it, including kill -9 mid-backup."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from repo_helpers import cli, env, make_tree, snapshot_of


def init(tmp: Path) -> str:
    repo = str(tmp / "repo")
    r = cli(tmp, "init", "-r", repo, "--recovery-key", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["recovery_key"].split()) == 16
    return repo


def test_init_backup_snapshots_ls_restore_verify_forget(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    make_tree(src, small_files=20, big=[2 << 20])
    repo = init(tmp_path)
    r = cli(tmp_path, "backup", "-r", repo, str(src), "--tag", "daily")
    assert r.returncode == 0, r.stderr
    assert "snapshot" in r.stdout
    r = cli(tmp_path, "backup", str(src), "--json", E2EBACKUP_REPOSITORY=repo)
    stats = json.loads(r.stdout)["stats"]
    assert stats["files_unmodified"] > 20
    assert stats["bytes_added"] < 10_000
    snaps = json.loads(cli(tmp_path, "snapshots", "-r", repo, "--json").stdout)
    assert len(snaps) == 2
    assert snaps[0]["tags"] == ["daily"]
    listing = json.loads(cli(tmp_path, "ls", "-r", repo, snaps[0]["id"][:8], "--json").stdout)
    assert any(row["path"] == "photos/big0.bin" for row in listing)
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert snapshot_of(tmp_path / "out" / "photos") == snapshot_of(src)
    # Never overwrites unless asked.
    (tmp_path / "out" / "photos" / "private.key").write_bytes(b"changed by the user")
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert r.returncode == 3
    assert "not replaced" in r.stderr
    assert (tmp_path / "out" / "photos" / "private.key").read_bytes() == b"changed by the user"
    r = cli(
        tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"), "--overwrite"
    )
    assert r.returncode == 0
    assert (tmp_path / "out" / "photos" / "private.key").read_bytes() == b"secret"
    r = cli(tmp_path, "verify", "-r", repo, "--read-data", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["ok"]
    r = cli(tmp_path, "forget", "-r", repo, "--keep-last", "1", "--prune")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(cli(tmp_path, "snapshots", "-r", repo, "--json").stdout)) == 1


def test_credentials_and_keys_through_the_cli(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    r = cli(tmp_path, "init", "-r", repo, "--recovery-key", "--json")
    rk = json.loads(r.stdout)["recovery_key"]
    assert cli(tmp_path, "snapshots", "-r", repo, E2EBACKUP_PASSWORD="wrong").returncode == 1
    r = cli(tmp_path, "snapshots", "-r", repo, E2EBACKUP_PASSWORD="", E2EBACKUP_RECOVERY_KEY=rk)
    assert r.returncode == 0, r.stderr
    assert cli(tmp_path, "snapshots", "-r", str(tmp_path / "nothing")).returncode == 1
    assert cli(tmp_path, "snapshots").returncode == 2  # no repository given
    (tmp_path / "new").write_text("second")
    r = cli(tmp_path, "key", "add", "-r", repo, "--new-password-file", str(tmp_path / "new"))
    assert r.returncode == 0, r.stderr
    rows = json.loads(cli(tmp_path, "key", "list", "-r", repo, "--json").stdout)
    assert sorted(row["kind"] for row in rows) == ["password", "password", "recovery-key"]
    assert cli(tmp_path, "key", "check", "-r", repo, E2EBACKUP_PASSWORD="second").returncode == 0


def _stored_packs(repo: str) -> int:
    return sum(1 for p in Path(repo, "data").glob("*/*") if not p.name.startswith("."))


def test_kill_9_during_backup_at_random_points(tmp_path: Path) -> None:
    src = tmp_path / "data"
    make_tree(src, small_files=400, big=[24 << 20, 16 << 20])
    repo = init(tmp_path)
    assert cli(tmp_path, "backup", "-r", repo, str(src / "many")).returncode == 0
    rng = random.Random(1234)
    for i in range(20):
        (src / f"changing-{i}.bin").write_bytes(os.urandom(1 << 20))
        proc = subprocess.Popen(
            [sys.executable, "-m", "e2ebackup", "backup", "-r", repo, str(src), "-q"],
            env=env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if i % 5 == 4:
            # Some kills land after the run stored a pack, however slow the machine is, so
            # the re-run below always has stored-but-unindexed packs to adopt.
            before = _stored_packs(repo)
            deadline = time.monotonic() + 120
            while _stored_packs(repo) == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the backup stored no pack in 120 s"
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.2))
        else:
            time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The dead process's lock is recovered; earlier snapshots stay intact.
        r = cli(tmp_path, "verify", "-r", repo, "--json")
        assert r.returncode == 0, (i, r.stdout, r.stderr)
    r = cli(tmp_path, "backup", "-r", repo, str(src), "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)["stats"]
    # Packs stored by killed runs were recovered and reused, not uploaded again.
    total = sum(f.stat().st_size for f in src.rglob("*") if f.is_file() and not f.is_symlink())
    assert stats["bytes_added"] < total
    r = cli(tmp_path, "verify", "-r", repo, "--read-data")
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert snapshot_of(tmp_path / "out" / "data") == snapshot_of(src)
    first = json.loads(cli(tmp_path, "snapshots", "-r", repo, "--json").stdout)[0]
    r = cli(tmp_path, "restore", "-r", repo, first["id"], "--target", str(tmp_path / "first"))
    assert r.returncode == 0, r.stderr
    assert snapshot_of(tmp_path / "first" / "many") == snapshot_of(src / "many")


def test_rotate_into_a_new_repository(tmp_path: Path) -> None:
    src = tmp_path / "data"
    make_tree(src, small_files=5)
    repo = init(tmp_path)
    assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    new = str(tmp_path / "rotated")
    r = cli(tmp_path, "rotate", "-r", repo, "--to", new, "--new-recovery-key", "--json")
    assert r.returncode == 0, r.stderr
    rk = json.loads(r.stdout)["recovery_key"]
    r = cli(
        tmp_path,
        "restore",
        "-r",
        new,
        "latest",
        "--target",
        str(tmp_path / "out"),
        E2EBACKUP_PASSWORD="",
        E2EBACKUP_RECOVERY_KEY=rk,
    )
    assert r.returncode == 0, r.stderr
    assert snapshot_of(tmp_path / "out" / "data") == snapshot_of(src)
    assert cli(tmp_path, "rotate", "-r", repo).returncode == 2  # --to is required


def test_restore_include_keeps_the_path_in_the_snapshot(tmp_path: Path) -> None:
    """`--include Pictures/2026` lands in target/Pictures/2026 (as restic does), the folders
    leading to it with the snapshot's times; parts sharing a parent, or a name, sit side by side."""
    src = tmp_path / "home"
    for year in ("2025", "2026"):
        (src / "Pictures" / year).mkdir(parents=True)
        (src / "Pictures" / year / "beach.jpg").write_bytes(year.encode() * 1000)
    (src / "Documents" / "2026").mkdir(parents=True)
    (src / "Documents" / "2026" / "tax.pdf").write_bytes(b"tax")
    os.utime(src / "Pictures", (1_600_000_000, 1_600_000_000))
    repo = init(tmp_path)
    assert cli(tmp_path, "backup", "-r", repo, str(src)).returncode == 0
    out = tmp_path / "out"
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(out),
            "--include", "home/Pictures/2026")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "home", "home/Pictures", "home/Pictures/2026", "home/Pictures/2026/beach.jpg",
    ]  # fmt: skip
    assert (out / "home/Pictures/2026/beach.jpg").read_bytes() == b"2026" * 1000
    assert (out / "home" / "Pictures").stat().st_mtime == 1_600_000_000
    both = tmp_path / "both"
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(both),
            "--include", "home/Pictures/2026", "--include", "/home/Pictures/2025/",
            "--include", "home/Documents/2026")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (both / "home/Pictures/2025/beach.jpg").read_bytes() == b"2025" * 1000
    assert (both / "home/Pictures/2026/beach.jpg").read_bytes() == b"2026" * 1000
    assert (both / "home/Documents/2026/tax.pdf").read_bytes() == b"tax"
    # The folders leading to a part count against --max-files: 3 of them + the file.
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "few"),
            "--include", "home/Pictures/2026/beach.jpg", "--max-files", "3")  # fmt: skip
    assert r.returncode != 0
    assert "more than --max-files 3" in r.stderr
    assert not (tmp_path / "few" / "home").exists()
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "few"),
            "--include", "home/Pictures/2026/beach.jpg", "--max-files", "4")  # fmt: skip
    assert r.returncode == 0, r.stderr
    # A file in the way of a leading folder is left alone, and nothing lands through it.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "home").write_bytes(b"mine")
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(blocked),
            "--include", "home/Pictures/2026")  # fmt: skip
    assert r.returncode == 3
    assert (blocked / "home").read_bytes() == b"mine"
