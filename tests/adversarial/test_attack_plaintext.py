"""Attack: plaintext that the user never asked to have written. Whoever later reads the disk (a
stolen laptop, a shared machine, a backup of /tmp) or another program started by e2ebackup
must find no copy of what is being backed up and no secret.

* A live SQLite database used to be copied to the system's temporary folder for the backup and
  left there by ``kill -9``, which defeats docs/WHATSAPP.md's "decrypt into /dev/shm" advice.
* The rclone child process used to inherit ``E2EBACKUP_PASSWORD`` (and the recovery key and
  vault token variables), which any program it runs, crash report or ``/proc/PID/environ``
  reader could then see.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ebackup.keys import RecoveryKey
from e2ebackup.repo.sqlite import SCRATCH_PREFIX, capture
from e2ebackup.storage.rclone import rclone_binary
from repo_helpers import PASSWORD, cli, env, new_repo

pytest_plugins = ["servers.cloud"]

MARKER = b"PLAINTEXT-MARKER-7c1e"
MIB = 1 << 20


@pytest.fixture
def live_database(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB WAL-mode database (the -wal and -shm files exist: a connection holds it open,
    as the chat app would) whose every row carries MARKER."""
    db = tmp_path / "chats" / "msgstore.db"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("pragma journal_mode=wal")
    con.execute("create table messages (body blob)")
    row = MARKER + os.urandom(16 << 10)
    con.executemany("insert into messages values (?)", [(row,)] * (3 << 10))
    con.commit()
    con.execute("insert into messages values (?)", (MARKER,))  # in the WAL only
    con.commit()
    try:
        yield db
    finally:
        con.close()


def files_with_marker(root: Path) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                if MARKER in f.read():
                    found.append(str(p))
    return found


def opened_by(pid: int) -> set[str]:
    """What the process has open, by path (as /proc shows it)."""
    out: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


def test_kill_9_during_a_sqlite_capture_leaves_no_plaintext(
    tmp_path: Path, live_database: Path
) -> None:
    """The backup is killed with SIGKILL while it captures the live database: the system's
    temporary folder (TMPDIR) stays empty, and no file outside the database's own holds its
    rows."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    new_repo(tmp_path / "repo")
    command = ["backup", "-r", str(tmp_path / "repo"), str(live_database.parent)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2ebackup", *command],
        env=env(tmp_path, E2EBACKUP_PASSWORD=PASSWORD, TMPDIR=str(tmpdir)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = False
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            # Kill as soon as the capture is under way: SQLite has the database's shared-memory
            # file open, or something appeared in TMPDIR.
            if os.listdir(tmpdir) or any(
                p.endswith("msgstore.db-shm") for p in opened_by(proc.pid)
            ):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(60)
    assert killed, "the backup ended before the capture could be caught"

    assert os.listdir(tmpdir) == [], "plaintext left in the temporary folder"
    assert files_with_marker(tmp_path / "repo") == []
    for name in os.listdir(live_database.parent):
        if not name.startswith("msgstore.db"):
            # Only a scratch file that the kill caught between creating and unlinking it, empty.
            assert name.startswith(SCRATCH_PREFIX)
            assert (live_database.parent / name).stat().st_size == 0


def test_a_completed_backup_writes_nothing_to_tmpdir(tmp_path: Path, live_database: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    new_repo(tmp_path / "repo")
    done = cli(
        tmp_path,
        "backup",
        "-r",
        str(tmp_path / "repo"),
        str(live_database.parent),
        E2EBACKUP_PASSWORD=PASSWORD,
        TMPDIR=str(tmpdir),
    )
    assert done.returncode == 0, done.stderr
    assert os.listdir(tmpdir) == []
    assert sorted(os.listdir(live_database.parent)) == [
        "msgstore.db",
        "msgstore.db-shm",
        "msgstore.db-wal",
    ]


def test_a_large_database_goes_to_an_unlinked_scratch_file(live_database: Path) -> None:
    """Past the in-memory limit, the image is in a file of the database's own folder that has
    no name while it holds any page: nothing there to find, whatever ends the process."""
    folder = live_database.parent
    before = sorted(os.listdir(folder))
    with capture(str(live_database), in_memory=1 * MIB) as (image, size):
        assert sorted(os.listdir(folder)) == before
        assert not isinstance(image, io.BytesIO)
        data = image.read()
    assert len(data) == size > 40 * MIB
    assert sorted(os.listdir(folder)) == before
    copy = folder.parent / "copy.db"
    copy.write_bytes(data)
    con = sqlite3.connect(copy)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    assert con.execute("select count(*) from messages").fetchone() == ((3 << 10) + 1,)
    con.close()


# ---------------------------------------------------------------- the rclone child's environment

RECOVERY_KEY = RecoveryKey.generate()
SECRETS = {
    "E2EBACKUP_PASSWORD": PASSWORD,
    "E2EBACKUP_RECOVERY_KEY": RECOVERY_KEY.reveal(),
    "E2EBACKUP_VAULT_TOKEN": "vault-registration-token-secret",
    "E2EBACKUP_WHATSAPP_KEY": "0" * 64,
}


def test_rclone_does_not_inherit_e2ebackup_secrets(tmp_path: Path, rclone_config: Path) -> None:
    """A real rclone runs for every storage operation; an ``E2EBACKUP_RCLONE`` wrapper writes
    down the environment it is started with (exactly what rclone gets: it then ``exec``s it),
    while the command line works on a repository on an rclone remote."""
    dump = tmp_path / "environ"
    wrapper = tmp_path / "rclone-wrapper"
    wrapper.write_text(f'#!/bin/sh\nenv >> "$ENV_DUMP"\nexec {rclone_binary()} "$@"\n')
    wrapper.chmod(0o700)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("hello")
    repo = new_repo(tmp_path / "repo")  # opened below through rclone's local remote
    repo.add_recovery_key(RECOVERY_KEY)
    location = f"rclone:local:{tmp_path / 'repo'}"
    extra = dict(
        SECRETS,
        E2EBACKUP_RCLONE=str(wrapper),
        ENV_DUMP=str(dump),
        RCLONE_CONFIG=str(rclone_config),
    )
    for args in (["backup", "-r", location, str(source)], ["verify", "-r", location]):
        done = subprocess.run(
            [sys.executable, "-m", "e2ebackup", *args],
            env=env(tmp_path, **extra),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    seen = dump.read_text()
    assert "RCLONE_CONFIG=" in seen  # the wrapper ran, with rclone's own settings
    for name, value in SECRETS.items():
        assert name not in seen
        assert value not in seen
    assert "E2EBACKUP_" not in seen


@pytest.mark.parametrize("overwrite", [True, False])
def test_kill_9_while_writing_an_output_file_leaves_nothing(
    tmp_path: Path, overwrite: bool
) -> None:
    """decrypt, whatsapp decrypt and sealed rewrites write through one atomic output: a process
    killed midway must leave no partial file (plaintext or not) under any name, only what was
    there before."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "existing").write_bytes(b"kept")
    script = (
        "import os, signal, sys\n"
        "from e2ebackup.paths import atomic_output\n"
        "with atomic_output(sys.argv[1], overwrite=sys.argv[2] == '1') as f:\n"
        f"    f.write({MARKER!r} * 100_000)\n"
        "    f.flush()\n"
        "    os.fsync(f.fileno())\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for name in ("existing", "new") if overwrite else ("new",):
        target = str(tmp_path / "out" / name)
        done = subprocess.run(
            [sys.executable, "-c", script, target, "1" if overwrite else "0"], check=False
        )
        assert done.returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path / "out")) == ["existing"]
    assert (tmp_path / "out" / "existing").read_bytes() == b"kept"
