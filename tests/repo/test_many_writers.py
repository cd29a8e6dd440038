"""Many writers, one repository, no global lock (format version 3, FORMAT.md "Many writers").

Each test stages a race exactly: writer A lists the heads, then writer B commits (once or
more) before A writes its head, the moment two processes would collide. Then the same with
real processes: two CLI backups started together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.errors import HistoryForked, HistoryUnverifiable, RepositoryCorrupted
from e2ebackup.repo import heads as heads_module
from e2ebackup.repo.backup import backup
from e2ebackup.repo.codec import open_json, seal_json
from e2ebackup.repo.heads import Head
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.restore import restore
from e2ebackup.storage import LocalStorage
from repo_helpers import FAST, snapshot_of

PASSWORD = "pw"


class Device:
    """One writer: its own state folder (what it trusts) and its own files."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.state = tmp / f"state-{name}"
        self.src = tmp / f"src-{name}"
        self.src.mkdir()
        self.count = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        old = os.environ.get("E2EBACKUP_STATE_DIR")
        os.environ["E2EBACKUP_STATE_DIR"] = str(self.state)
        try:
            yield
        finally:
            if old is None:
                del os.environ["E2EBACKUP_STATE_DIR"]
            else:
                os.environ["E2EBACKUP_STATE_DIR"] = old

    def open(self, repo: Path) -> Repository:
        with self.active():
            return Repository.open(LocalStorage(repo, create=False), password=PASSWORD)

    def backup(self, repo: Path, *, opened: Repository | None = None) -> str:
        self.count += 1
        (self.src / f"file-{self.count}.txt").write_text(f"{self.src.name} {self.count}\n" * 99)
        with self.active():
            sid, _ = backup(opened or self.open(repo), [str(self.src)])
        return sid

    def snapshots(self, repo: Path) -> list[str]:
        with self.active():
            return sorted(sid for sid, _ in self.open(repo).snapshots())


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("e2ebackup.repo.repository.VERSION", 3)
    path = tmp_path / "repo"
    Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST)
    return path


def race(opened: Repository, before_write: Callable[[], object], *, times: int = 1) -> None:
    """Makes ``opened``'s next head writes wait: ``before_write`` runs after it listed and
    merged the heads and before it stores its head, as another process would."""
    original = opened._write_head
    calls = {"n": 0}

    def write_late(head: Head) -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            before_write()
        original(head)

    opened._write_head = write_late  # type: ignore[method-assign]


def head_seqs(repo: Path) -> list[int]:
    return sorted(int(p.name.split("-")[0], 16) for p in (repo / "heads").iterdir())


def test_new_repositories_are_version_3(repo: Path, tmp_path: Path) -> None:
    assert Device(tmp_path, "a").open(repo).version == 3


def test_two_writers_committing_at_once_are_both_listed(repo: Path, tmp_path: Path) -> None:
    a, b, c = Device(tmp_path, "a"), Device(tmp_path, "b"), Device(tmp_path, "c")
    first = a.backup(repo)
    opened = a.open(repo)
    late: list[str] = []
    race(opened, lambda: late.append(b.backup(repo)))
    mine = a.backup(repo, opened=opened)
    assert head_seqs(repo).count(2) == 2, "two heads with seq 2: both kept, none replaced"
    everything = sorted([first, mine, *late])
    for device in (a, b, c):
        assert device.snapshots(repo) == everything
    # The next commit merges both heads into one with two parents.
    last = c.backup(repo)
    top = c.open(repo).head()
    assert top.seq == 3
    assert len(top.members) == 1
    assert len(top.members[0].parents) == 2
    assert a.snapshots(repo) == sorted([*everything, last])


def test_a_head_written_below_the_top_is_merged_by_its_writer(repo: Path, tmp_path: Path) -> None:
    """A lists seq 1; B commits seq 2 and 3; A's head lands at seq 2, below the top, where
    readers do not look: A sees that no top head reaches it and merges it in (seq 4)."""
    a, b, c = Device(tmp_path, "a"), Device(tmp_path, "b"), Device(tmp_path, "c")
    a.backup(repo)
    opened = a.open(repo)
    race(opened, lambda: [b.backup(repo), b.backup(repo)])
    mine = a.backup(repo, opened=opened)
    assert max(head_seqs(repo)) == 4
    assert mine in c.snapshots(repo)
    assert len(c.snapshots(repo)) == 4


class Killed(Exception):
    pass


def test_a_writer_killed_before_merging_loses_nothing_it_showed(repo: Path, tmp_path: Path) -> None:
    """A dies right after storing its head below the top (before its merge): its backup did
    not finish, so other devices do not list it yet; A itself trusted that head, still lists
    it, and its next commit merges it for everyone."""
    a, b, c = Device(tmp_path, "a"), Device(tmp_path, "b"), Device(tmp_path, "c")
    a.backup(repo)
    opened = a.open(repo)
    race(opened, lambda: [b.backup(repo), b.backup(repo)])
    inner = opened._write_head

    def killed(head: Head) -> None:
        inner(head)
        raise Killed

    opened._write_head = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        a.backup(repo, opened=opened)
    assert len(c.snapshots(repo)) == 3, "A's unfinished backup is not listed elsewhere"
    assert len(a.snapshots(repo)) == 4, "what A trusted does not vanish from A"
    a.backup(repo)
    assert len(c.snapshots(repo)) == 5
    assert c.snapshots(repo) == a.snapshots(repo)


def test_forget_beside_a_backup_neither_resurrects_nor_loses(repo: Path, tmp_path: Path) -> None:
    """B forgets A's first snapshot while A, which listed before the forget, adds one: the
    merge keeps A's new snapshot and does not bring the forgotten one back (tombstone)."""
    a, b = Device(tmp_path, "a"), Device(tmp_path, "b")
    old = a.backup(repo)
    keep = a.backup(repo)
    opened = a.open(repo)

    def forget_old() -> None:
        with b.active():
            b.open(repo).commit(remove_snapshots=[old])

    race(opened, forget_old)
    new = a.backup(repo, opened=opened)
    assert b.snapshots(repo) == sorted([keep, new])
    assert f"snapshots/{old}" in b.open(repo).head().dropped


def test_a_hidden_top_head_is_a_fork(repo: Path, tmp_path: Path) -> None:
    """Two heads at the top, both trusted by C; the storage then hides one of them."""
    a, b, c = Device(tmp_path, "a"), Device(tmp_path, "b"), Device(tmp_path, "c")
    a.backup(repo)
    opened = a.open(repo)
    race(opened, lambda: b.backup(repo))
    a.backup(repo, opened=opened)
    assert len(c.snapshots(repo)) == 3
    top = [p for p in (repo / "heads").iterdir() if p.name.startswith(f"{2:016x}-")]
    hidden = top[0].read_bytes()
    top[0].unlink()
    with pytest.raises(HistoryForked, match="hides head seq 2"):
        c.snapshots(repo)
    top[0].write_bytes(hidden)
    assert len(c.snapshots(repo)) == 3


def test_rollback_and_unverifiable_history(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, c = Device(tmp_path, "a"), Device(tmp_path, "c")
    a.backup(repo)
    c.snapshots(repo)  # C trusts seq 1
    monkeypatch.setattr(heads_module, "KEEP_HEADS", 2)
    for _ in range(4):
        a.backup(repo)
    assert min(head_seqs(repo)) >= 3
    with pytest.raises(HistoryUnverifiable):
        c.snapshots(repo)
    # A trusted seq 5; the storage shows only heads up to seq 4: a rollback.
    for p in (repo / "heads").iterdir():
        if p.name.startswith(f"{5:016x}-"):
            p.unlink()
    with pytest.raises(RepositoryCorrupted, match="rolled back"):
        a.snapshots(repo)


def test_restores_after_concurrent_commits_are_byte_identical(repo: Path, tmp_path: Path) -> None:
    a, b = Device(tmp_path, "a"), Device(tmp_path, "b")
    (a.src / "big.bin").write_bytes(os.urandom(3 << 20))
    (b.src / "big.bin").write_bytes((a.src / "big.bin").read_bytes())  # shared chunks
    opened = a.open(repo)
    race(opened, lambda: b.backup(repo))
    a.backup(repo, opened=opened)
    with a.active():
        r = a.open(repo)
        by_host_path = {tuple(s["paths"]): sid for sid, s in r.snapshots()}
        for device in (a, b):
            target = tmp_path / f"restored-{device.src.name}"
            restore(r, by_host_path[(str(device.src),)], str(target))
            assert snapshot_of(target / device.src.name) == snapshot_of(device.src)


def _cli_backup(repo: Path, src: Path, state: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_STATE_DIR=str(state))
    return subprocess.Popen(
        [sys.executable, "-m", "e2ebackup", "backup", "-r", str(repo), str(src), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("writers", [2, 4])
def test_two_cli_backups_at_the_same_moment(repo: Path, tmp_path: Path, writers: int) -> None:
    """The issue's test: independent CLI backups of different trees into one repository at
    once (two, then four), several rounds: every snapshot listed, verify --read-data passes,
    and every writer's newest snapshot restores byte-identical."""
    devices = [Device(tmp_path, f"w{n}") for n in range(writers)]
    for device in devices:
        for i in range(40):
            (device.src / f"f{i}.bin").write_bytes(os.urandom(20_000 + i))
    rounds = 3
    for n in range(rounds):
        if n:  # something new to store each round
            for d in devices:
                (d.src / f"extra{n}.bin").write_bytes(os.urandom(999))
        procs = [_cli_backup(repo, d.src, d.state) for d in devices]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
    listed = devices[0].snapshots(repo)
    assert len(listed) == writers * rounds
    assert all(d.snapshots(repo) == listed for d in devices)
    env = dict(os.environ, E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_STATE_DIR=str(devices[0].state))
    check = subprocess.run(
        [sys.executable, "-m", "e2ebackup", "verify", "-r", str(repo), "--read-data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for d in devices:
        with d.active():
            target = tmp_path / f"restored-{d.src.name}"
            restore(d.open(repo), "latest", str(target), where=SnapshotFilter(paths=(str(d.src),)))
        assert snapshot_of(target / d.src.name) == snapshot_of(d.src)


def test_heads_over_the_limits_are_refused(repo: Path, tmp_path: Path) -> None:
    """A head that breaks a MUST of version 3, sealed with the real key (as a buggy writer
    would make it), is refused, not half-used."""
    keys = Device(tmp_path, "a").open(repo).keys
    base: dict[str, Any] = {
        "seq": 1,
        "time": 1.0,
        "parents": [[0, "00" * 32]],
        "snapshots": [],
        "indexes": [],
        "dropped": [],
    }
    bad = [
        {**base, "parent": "00" * 32},
        {**base, "parents": [[1, "00" * 32]]},
        {**base, "parents": [[0, "00" * 32], [0, "00" * 32]]},
        {**base, "parents": []},
        {**base, "snapshots": ["11" * 32], "dropped": [["snapshots/" + "11" * 32, 1.0]]},
        {**base, "snapshots": ["11" * 32, "11" * 32]},
        {**base, "dropped": [["config", 1.0]]},
        {**base, "parents": [[0, f"{i:064x}"] for i in range(65)]},
        {**base, "time": True},
        {**base, "seq": 2},
    ]
    name = f"heads/{1:016x}-{'ab' * 32}"
    heads_module.parse_head(name, base, seal_json(keys, name, base), version=3)
    for value in bad:
        stored = seal_json(keys, name, value)
        with pytest.raises(RepositoryCorrupted):
            heads_module.parse_head(name, open_json(keys, name, stored), stored, version=3)


def test_a_writer_killed_at_a_random_moment_beside_another(repo: Path, tmp_path: Path) -> None:
    """Two CLI backups at once, one killed (SIGKILL) at a random moment: the other's snapshot
    is listed, verify --read-data passes, and the next backup of the killed tree completes
    (adopting what the dead one stored) and restores byte-identical."""
    import random
    import time

    a, b = Device(tmp_path, "a"), Device(tmp_path, "b")
    for device in (a, b):
        for i in range(30):
            (device.src / f"f{i}.bin").write_bytes(os.urandom(60_000 + i))
    rng = random.Random()
    for _ in range(3):
        victim, survivor = _cli_backup(repo, a.src, a.state), _cli_backup(repo, b.src, b.state)
        time.sleep(rng.uniform(0.0, 1.5))
        victim.kill()
        victim.communicate(timeout=60)
        _, err = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, err
    env = dict(os.environ, E2EBACKUP_PASSWORD=PASSWORD, E2EBACKUP_STATE_DIR=str(b.state))
    check = subprocess.run(
        [sys.executable, "-m", "e2ebackup", "verify", "-r", str(repo), "--read-data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    sid = a.backup(repo)
    with a.active():
        target = tmp_path / "restored"
        restore(a.open(repo), sid, str(target))
    assert snapshot_of(target / a.src.name) == snapshot_of(a.src)
    assert len(b.snapshots(repo)) >= 4


def test_a_trusted_seq_without_heads_is_checked_by_seq(repo: Path, tmp_path: Path) -> None:
    """A state folder holding only a seq (as e2ebackup before format 2 left it) is checked by
    seq: an older top is a rollback, a newer one is trusted with its heads from then on."""
    a = Device(tmp_path, "a")
    a.backup(repo)
    repo_id = a.open(repo).keys.repo_id.hex()
    folder = a.state / repo_id
    (folder / "trusted-head").unlink()
    (folder / "head").write_text("5")
    with pytest.raises(RepositoryCorrupted, match="rolled back"):
        a.snapshots(repo)
    (folder / "head").write_text("1")
    assert len(a.snapshots(repo)) == 1
    assert '"heads"' in (folder / "trusted-head").read_text()


def test_trusted_heads_deleted_after_a_merge_named_them_are_accepted(
    repo: Path, tmp_path: Path
) -> None:
    """C trusts two top heads; a later head merges both and the two are then deleted (the
    storage may, or the keep rule): the sealed head that names them vouches for them."""
    a, b, c = Device(tmp_path, "a"), Device(tmp_path, "b"), Device(tmp_path, "c")
    a.backup(repo)
    opened = a.open(repo)
    race(opened, lambda: b.backup(repo))
    a.backup(repo, opened=opened)
    assert len(c.snapshots(repo)) == 3  # C trusts both heads with seq 2
    a.backup(repo)  # seq 3 names both
    for p in (repo / "heads").iterdir():
        if p.name.startswith(f"{2:016x}-"):
            p.unlink()
    assert len(c.snapshots(repo)) == 4
