"""Backups through the cloud backends, as a user runs them: ``-r s3://...`` against a real S3
server and ``-r rclone:remote:path`` against a real WebDAV server, both on 127.0.0.1; and an S3
server killed in the middle of a backup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from repo_helpers import make_tree, snapshot_of

if TYPE_CHECKING:
    from servers.cloud import S3Server

# The server fixtures; their module is imported through pytest, so its asserts are rewritten.
pytest_plugins = ["servers.cloud"]
ACCESS_KEY = "e2ebackup-test-access"  # the keys cloud_servers starts its servers with


def secret_key() -> str:
    from servers import cloud as cloud_servers

    assert cloud_servers.ACCESS_KEY == ACCESS_KEY
    return cloud_servers.SECRET_KEY


def e2eb(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("E2EBACKUP_", "AWS_"))}
    environ.update(
        E2EBACKUP_PASSWORD="cloud pw",
        E2EBACKUP_STATE_DIR=str(tmp / "state"),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=secret_key(),
        AWS_DEFAULT_REGION="us-east-1",
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args], capture_output=True, text=True,
        env=environ, stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip


def round_trip(tmp: Path, repo: str, *extra: str, **env: str) -> None:
    src = tmp / "photos"
    make_tree(src, small_files=200, big=[12 << 20])
    for args in (
        ("init", "-r", repo, *extra),
        ("backup", "-r", repo, str(src), *extra),
        ("backup", "-r", repo, str(src), *extra),
        ("restore", "-r", repo, "latest", "--target", str(tmp / "out"), *extra),
        ("verify", "-r", repo, "--read-data", *extra),
    ):
        r = e2eb(tmp, *args, **env)
        assert r.returncode == 0, (args, r.stderr)
    assert snapshot_of(tmp / "out" / "photos") == snapshot_of(src)
    snaps = json.loads(e2eb(tmp, "snapshots", "-r", repo, "--json", *extra, **env).stdout)
    assert len(snaps) == 2
    assert snaps[1]["stats"]["bytes_added"] < 10_000  # the second backup stored nothing new


def test_backup_restore_verify_through_s3(tmp_path: Path, s3_server: S3Server) -> None:
    repo = f"s3://e2ebackup/repo-{uuid.uuid4().hex[:8]}"
    round_trip(tmp_path, repo, "--s3-endpoint", s3_server.endpoint)


def test_backup_restore_verify_through_rclone(tmp_path: Path, rclone_config: Path) -> None:
    repo = f"rclone:dav:repo-{uuid.uuid4().hex[:8]}"
    round_trip(tmp_path, repo, RCLONE_CONFIG=str(rclone_config))


def test_s3_server_killed_mid_backup_then_restarted(tmp_path: Path) -> None:
    from servers.cloud import start_s3_server

    s3 = start_s3_server(tmp_path / "s3")
    try:
        s3.create_bucket("e2ebackup")
        repo, endpoint = "s3://e2ebackup/killed", ("--s3-endpoint", s3.endpoint)
        assert e2eb(tmp_path, "init", "-r", repo, *endpoint).returncode == 0
        src = tmp_path / "src"
        make_tree(src, small_files=50, big=[48 << 20, 48 << 20])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("E2EBACKUP_", "AWS_"))}
        env.update(E2EBACKUP_PASSWORD="cloud pw", E2EBACKUP_STATE_DIR=str(tmp_path / "state"),
                   AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret_key())  # fmt: skip
        backup = subprocess.Popen(
            [sys.executable, "-m", "e2ebackup", "backup", "-r", repo, *endpoint, str(src), "-q"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # Kill the server once some packs are stored, then bring it back on the same port.
        deadline = time.monotonic() + 60
        data = tmp_path / "s3" / "data" / "e2ebackup" / "killed" / "data"
        while time.monotonic() < deadline and not any(data.rglob("*")):
            time.sleep(0.05)
        s3.server.kill()
        time.sleep(1.0)
        s3.server.start()
        backup.communicate(timeout=300)
        # Whether the retries bridged the outage or the run gave up, the next run completes.
        r = e2eb(tmp_path, "backup", "-r", repo, *endpoint, str(src), "--json")
        assert r.returncode == 0, r.stderr
        total = sum(f.stat().st_size for f in src.rglob("*") if f.is_file() and not f.is_symlink())
        # What was stored before the outage is reused, not uploaded again.
        assert json.loads(r.stdout)["stats"]["bytes_added"] < total
        r = e2eb(tmp_path, "verify", "-r", repo, *endpoint, "--read-data")
        assert r.returncode == 0, r.stderr
        r = e2eb(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"),
                 *endpoint)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert snapshot_of(tmp_path / "out" / "src") == snapshot_of(src)
    finally:
        s3.server.stop()


def test_wrong_credentials_and_missing_bucket_are_clear(
    tmp_path: Path, s3_server: S3Server
) -> None:
    endpoint = ("--s3-endpoint", s3_server.endpoint)
    r = e2eb(tmp_path, "init", "-r", "s3://no-such-bucket/x", *endpoint)
    assert r.returncode == 1
    assert "bucket" in r.stderr.lower()
    r = e2eb(tmp_path, "init", "-r", "s3://e2ebackup/creds", *endpoint,
             AWS_SECRET_ACCESS_KEY="definitely-wrong-secret-key")  # fmt: skip
    assert r.returncode == 1
    assert "definitely-wrong-secret-key" not in r.stderr
    assert secret_key() not in r.stderr


def test_restore_from_a_distant_store_reads_few_ranges_at_once(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restore from a store 50 ms away: adjacent blobs are fetched with one ranged read even
    across files (300 small files are a few reads, not 300), and reads overlap, as they do in
    verify --read-data."""
    from e2ebackup.keys import RecoveryKey
    from e2ebackup.repo.backup import backup
    from e2ebackup.repo.check import verify
    from e2ebackup.repo.repository import Repository
    from e2ebackup.repo.restore import restore
    from e2ebackup.storage import open_storage
    from servers.fault_proxy import FaultProxy

    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key())
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    src = tmp_path / "photos"
    make_tree(src, small_files=300, big=[40 << 20])
    url, key = f"s3://e2ebackup/distant-{uuid.uuid4().hex[:8]}", RecoveryKey.generate()
    backup(Repository.init(open_storage(url, s3_endpoint=s3_server.endpoint), recovery_key=key),
           [str(src)])  # fmt: skip
    with FaultProxy(s3_server.endpoint, latency=0.05) as proxy:
        repo = Repository.open(open_storage(url, s3_endpoint=proxy.url), recovery_key=key)
        before = len(proxy.log)
        stats = restore(repo, "latest", str(tmp_path / "out"))
        reads = [r for r in proxy.log[before:] if r.method == "GET" and "/data/" in r.target]
        assert proxy.max_in_flight["GET"] > 1
        # verify --read-data reads whole packs, also a few at once.
        proxy.max_in_flight.clear()
        report = verify(repo, read_data=True)
        assert report.ok, report.errors
        assert report.packs == len(repo.index.pack_sizes) > 1
        assert proxy.max_in_flight["GET"] > 1
    assert snapshot_of(tmp_path / "out" / "photos") == snapshot_of(src)
    assert stats.files > 300
    # One read per folder listing (6), and runs of up to 8 MiB for the data: the 300 small
    # files share a pack and a read or two; the 40 MiB file is 5 to 12, by where its chunks
    # and packs end (13 reads seen). One read per file would be over 300.
    assert len(reads) <= 30, [r.target for r in reads]
