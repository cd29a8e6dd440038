"""Writers that cannot read, through the command line as a user runs it: an identity holder
makes the repository and issues a token; a separate device (its own state folder, no
password in its environment) backs up with the token alone and cannot read anything back."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from repo_helpers import cli, make_tree, snapshot_of


def _writer(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A run on the writer's device: its own state folder, and no password or key at all."""
    return cli(tmp, *args, E2EBACKUP_STATE_DIR=str(tmp / "writer-state"), E2EBACKUP_PASSWORD="")


def test_identity_repository_writer_backs_up_reads_nothing_owner_restores(
    tmp_path: Path,
) -> None:
    src = tmp_path / "phone"
    make_tree(src, small_files=15, big=[3 << 20])
    repo = str(tmp_path / "repo")
    identity = str(tmp_path / "owner.key")
    r = cli(tmp_path, "keygen", "--identity", "-o", identity)
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.strip()
    # No password option given and recipients named: no password is asked or stored.
    r = cli(tmp_path, "init", "-r", repo, "--recipient", recipient, E2EBACKUP_PASSWORD="")
    assert r.returncode == 0, r.stderr
    token = str(tmp_path / "phone.token")
    r = cli(tmp_path, "writer", "-r", repo, "-i", identity, "-o", token, "--json")
    assert r.returncode == 0, r.stderr
    issued = json.loads(r.stdout)
    assert "token" not in issued
    assert issued["token_file"] == token
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600

    first = _writer(tmp_path, "backup", "-r", repo, "--writer-token", token, str(src), "--json")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["head"] is None
    assert made["drop"].startswith("drops/")
    again = _writer(tmp_path, "backup", "-r", repo, "--writer-token", token, str(src), "--json")
    assert json.loads(again.stdout)["stats"]["blobs_added"] == 0

    # The writer's device opens nothing: no credential it has is one.
    for args in (
        ("snapshots", "-r", repo),
        ("snapshots", "-r", repo, "-i", token),
        ("restore", "-r", repo, "latest", "--target", str(tmp_path / "stolen")),
    ):
        r = _writer(tmp_path, *args)
        assert r.returncode != 0
    assert not (tmp_path / "stolen").exists()

    # The identity holder lists both snapshots and restores the newest byte-identical.
    r = cli(tmp_path, "snapshots", "-r", repo, "-i", identity, "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert {s["id"] for s in listed} == {made["snapshot"], json.loads(again.stdout)["snapshot"]}
    r = cli(
        tmp_path, "restore", "-r", repo, "-i", identity, "latest", "--target", str(tmp_path / "out")
    )
    assert r.returncode == 0, r.stderr
    assert snapshot_of(tmp_path / "out" / "phone") == snapshot_of(src)
    r = cli(tmp_path, "verify", "-r", repo, "-i", identity, "--read-data")
    assert r.returncode == 0, r.stdout + r.stderr


def test_writer_options_are_checked_before_anything_is_stored(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=3)
    repo, other = str(tmp_path / "repo"), str(tmp_path / "other")
    for where in (repo, other):
        assert cli(tmp_path, "init", "-r", where).returncode == 0
    token = str(tmp_path / "t")
    assert cli(tmp_path, "writer", "-r", repo, "-o", token).returncode == 0
    assert cli(tmp_path, "writer", "-r", repo, "-o", token).returncode != 0  # never replaced
    before = sorted(p.name for p in (tmp_path / "other").rglob("*"))
    r = _writer(tmp_path, "backup", "-r", other, "--writer-token", token, str(src))
    assert r.returncode == 2
    assert "for repository" in r.stderr
    assert sorted(p.name for p in (tmp_path / "other").rglob("*")) == before
    for bad in (("--dry-run",), ("--dask", "local")):
        r = _writer(tmp_path, "backup", "-r", repo, "--writer-token", token, str(src), *bad)
        assert r.returncode == 2, r.stderr
    # A stream backup of a writer is refused, the token given either way (not a prompt for a
    # password the device does not have).
    r = _writer(tmp_path, "backup", "-r", repo, "--writer-token", token, "--stdin")
    assert r.returncode == 2, r.stderr
    assert "writer token" in r.stderr
    r = cli(
        tmp_path,
        "backup",
        "-r",
        repo,
        "--stdin",
        E2EBACKUP_WRITER_TOKEN_FILE=token,
        E2EBACKUP_STATE_DIR=str(tmp_path / "writer-state"),
        E2EBACKUP_PASSWORD="",
    )
    assert r.returncode == 2, r.stderr
    assert "writer token" in r.stderr
    (tmp_path / "garbage").write_text("E2EBACKUP-WRITER-1qqqq\n")
    r = _writer(
        tmp_path, "backup", "-r", repo, "--writer-token", str(tmp_path / "garbage"), str(src)
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "repo").glob("drops/*"))
