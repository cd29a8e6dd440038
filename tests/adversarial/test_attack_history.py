"""The storage provider rewrites history: it shows a device an older state (rollback), a
branch another device wrote on an older state (fork), two heads with one seq, an old head again
(replay), or an old state to a new device that pinned the head it expects. Each must be refused
with a typed error that says how to accept a new state on purpose; nothing is lost.

Devices are state folders (E2EBACKUP_STATE_DIR): what each device trusted is kept there. A
"view" is a copy of the storage folder as the provider keeps it to show it later."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.errors import E2EBackupError, ObjectNotFound, RepositoryCorrupted
from e2ebackup.repo import heads as heads_module
from e2ebackup.repo.backup import backup
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage
from repo_helpers import FAST, cli

PASSWORD = "pw"  # what repo_helpers.cli gives the command line


@pytest.fixture(autouse=True, params=[2, 3], ids=["v2", "v3"])
def version(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every attack against both head formats: version 2 (one chain, one writer) and version 3
    (many writers, merged top heads), which new repositories get."""
    monkeypatch.setattr("e2ebackup.repo.repository.VERSION", request.param)
    return int(request.param)


class Device:
    """One device: its own state folder, and what it backs up."""

    def __init__(self, tmp: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.state = tmp / f"state-{name}"
        self.src = tmp / f"src-{name}"
        self.src.mkdir()
        self.monkeypatch = monkeypatch
        self.count = 0

    def use(self) -> None:
        self.monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(self.state))

    def open(self, repo: Path) -> Repository:
        self.use()
        return Repository.open(LocalStorage(repo, create=False), password=PASSWORD)

    def backup(self, repo: Path) -> str:
        self.count += 1
        (self.src / f"file-{self.count}.txt").write_text(f"version {self.count}\n" * 50)
        sid, _ = backup(self.open(repo), [str(self.src)])
        return sid

    def snapshots(self, repo: Path) -> list[str]:
        return [sid for sid, _ in self.open(repo).snapshots()]


def new_repo(path: Path, device: Device) -> None:
    device.use()
    Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST)


def save_view(repo: Path, view: Path) -> Path:
    shutil.copytree(repo, view)
    return view


def show(repo: Path, view: Path) -> None:
    """The provider shows ``view`` from now on."""
    shutil.rmtree(repo)
    shutil.copytree(view, repo)


def head_names(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "heads").iterdir())


def newest_head_hash(repo: Path) -> str:
    return hashlib.sha256((repo / "heads" / head_names(repo)[-1]).read_bytes()).hexdigest()


def refused(kind: str, action: Callable[[], Any]) -> RepositoryCorrupted:
    """``action`` raises the history error ``kind`` (a RepositoryCorrupted), whose message says
    how to accept a new state on purpose."""
    with pytest.raises(RepositoryCorrupted) as caught:
        action()
    assert type(caught.value).__name__ == kind, f"{type(caught.value).__name__}: {caught.value}"
    assert "e2ebackup trust" in str(caught.value)
    return caught.value


def test_rollback_to_an_older_state_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Device(tmp_path, "a", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    s1 = a.backup(repo)
    old = save_view(repo, tmp_path / "view-seq1")
    s2 = a.backup(repo)
    real = save_view(repo, tmp_path / "view-real")
    show(repo, old)
    refused("RolledBack", lambda: a.snapshots(repo))
    refused("RolledBack", lambda: a.backup(repo))
    # Nothing lost: the real state, shown again, is accepted.
    show(repo, real)
    assert a.snapshots(repo) == [s1, s2]


def test_fork_written_on_an_older_state_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's scenario: B is shown seq 1 and writes its seq 2; A, which wrote the real
    seq 2, is shown B's branch. Today A accepts it and its newest snapshot vanishes."""
    a, b = Device(tmp_path, "a", monkeypatch), Device(tmp_path, "b", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    s1 = a.backup(repo)
    old = save_view(repo, tmp_path / "view-seq1")
    s2 = a.backup(repo)
    real = save_view(repo, tmp_path / "view-real")
    show(repo, old)
    b.backup(repo)  # B trusts the view it is shown: it has never seen this repository
    refused("HistoryForked", lambda: a.snapshots(repo))
    refused("HistoryForked", lambda: a.backup(repo))
    # B's branch runs ahead of A's seq: still not an extension of what A trusted.
    b.backup(repo)
    refused("HistoryForked", lambda: a.snapshots(repo))
    # A's own history, shown again, is accepted: nothing was lost.
    show(repo, real)
    assert a.snapshots(repo) == [s1, s2]


def test_two_heads_with_one_seq_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """Both branches at once, to a device that trusts nothing yet and to one that trusts one
    of them: in version 2, neither may pick one silently; in version 3 they are two writers
    that committed at once, and every device lists both snapshots."""
    a, b = Device(tmp_path, "a", monkeypatch), Device(tmp_path, "b", monkeypatch)
    c = Device(tmp_path, "c", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    old = save_view(repo, tmp_path / "view-seq1")
    a.backup(repo)
    a_heads = set(head_names(repo))
    branch = save_view(old, tmp_path / "branch")
    b.backup(branch)
    for name in set(head_names(branch)) - a_heads:
        shutil.copy(branch / "heads" / name, repo / "heads" / name)
    for snap in (branch / "snapshots").iterdir():
        shutil.copy(snap, repo / "snapshots" / snap.name)
    newest = [n for n in head_names(repo) if n.startswith(f"{2:016x}-")]
    assert len(newest) == 2
    if version >= 3:
        for device in (a, b, c):
            assert len(device.snapshots(repo)) == 3, "two of A's, one of B's: none lost"
        return
    refused("HistoryForked", lambda: c.snapshots(repo))
    refused("HistoryForked", lambda: a.snapshots(repo))
    refused("HistoryForked", lambda: b.snapshots(repo))
    # A goes on from its own branch on purpose; that writes seq 3 on top of it, for everyone.
    a_head = hashlib.sha256((repo / "heads" / max(a_heads)).read_bytes()).hexdigest()
    r = cli(tmp_path, "trust", "-r", str(repo), E2EBACKUP_STATE_DIR=str(a.state))
    assert r.returncode == 1
    assert a_head in r.stderr, "the refusal names the heads to choose from"
    r = cli(
        tmp_path,
        "trust",
        "-r",
        str(repo),
        "--head",
        a_head[:16],
        "--yes",
        E2EBACKUP_STATE_DIR=str(a.state),
    )
    assert r.returncode == 0, r.stderr
    assert len(a.snapshots(repo)) == 2
    assert len(c.snapshots(repo)) == 2
    refused("HistoryForked", lambda: b.snapshots(repo))


def test_replayed_heads_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old head under a newer name does not open (its name is in its context); an old head
    put back after the newer ones were removed is a rollback."""
    a = Device(tmp_path, "a", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    seq1 = {n: (repo / "heads" / n).read_bytes() for n in head_names(repo)}
    a.backup(repo)
    a.backup(repo)
    renamed = repo / "heads" / f"{9:016x}-{'ab' * 32}"
    renamed.write_bytes(seq1[max(seq1)])
    with pytest.raises(RepositoryCorrupted, match="authenticate"):
        a.snapshots(repo)
    renamed.unlink()
    for p in (repo / "heads").iterdir():
        p.unlink()
    for name, data in seq1.items():
        (repo / "heads" / name).write_bytes(data)
    refused("RolledBack", lambda: a.snapshots(repo))


def test_new_device_with_a_pinned_head_refuses_an_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new device has no history of its own: the user pins the head another device shows
    (`snapshots` prints it). Shown an older state, or a fork, the new device refuses it."""
    a = Device(tmp_path, "a", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    old = save_view(repo, tmp_path / "view-seq1")
    a.backup(repo)
    real = save_view(repo, tmp_path / "view-real")
    listing = cli(tmp_path, "snapshots", "-r", str(repo), E2EBACKUP_STATE_DIR=str(a.state))
    assert listing.returncode == 0, listing.stderr
    pin = newest_head_hash(repo)
    assert pin in listing.stdout, "snapshots shows the head a user can note"

    new_device = str(tmp_path / "state-new")
    show(repo, old)
    r = cli(
        tmp_path, "snapshots", "-r", str(repo), "--expect-head", pin, E2EBACKUP_STATE_DIR=new_device
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "expect" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli(
        tmp_path,
        "restore",
        "-r",
        str(repo),
        "latest",
        "--target",
        str(tmp_path / "out"),
        E2EBACKUP_EXPECT_HEAD=pin,
        E2EBACKUP_STATE_DIR=new_device,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()
    # The real state matches the pin; from then on the device trusts what it saw.
    show(repo, real)
    r = cli(
        tmp_path,
        "snapshots",
        "-r",
        str(repo),
        "--expect-head",
        pin[:16],
        "--json",
        E2EBACKUP_STATE_DIR=new_device,
    )
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2
    show(repo, old)
    r = cli(tmp_path, "snapshots", "-r", str(repo), E2EBACKUP_STATE_DIR=new_device)
    assert r.returncode == 1
    assert "rolled back" in r.stderr


def test_a_pin_keeps_working_after_its_head_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pin kept in a script (E2EBACKUP_EXPECT_HEAD) is checked once against the chain; the
    device then follows the chain from its trusted head, also past KEEP_HEADS commits."""
    monkeypatch.setattr(heads_module, "KEEP_HEADS", 2)
    a, c = Device(tmp_path, "a", monkeypatch), Device(tmp_path, "c", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    pin = newest_head_hash(repo)[:16]

    def listed() -> int:
        opened = c.open(repo)
        opened.expect_head = pin
        return len(list(opened.snapshots()))

    assert listed() == 1
    for n in range(3):
        a.backup(repo)
        assert listed() == n + 2  # c runs along (a cron job), with the same pin
    assert f"{1:016x}-" not in " ".join(head_names(repo)), "the pinned head is gone"
    assert listed() == 4
    # A device that never checked the pin cannot find it any more: refused, not trusted.
    d = Device(tmp_path, "d", monkeypatch)
    opened = d.open(repo)
    opened.expect_head = pin
    with pytest.raises(RepositoryCorrupted, match="expected head"):
        opened.head()


def test_a_new_state_is_accepted_only_on_purpose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a refusal the user can accept the state shown (say, the storage really was
    restored from an older copy): `trust` shows the head it would trust and needs --yes."""
    a = Device(tmp_path, "a", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    s1 = a.backup(repo)
    old = save_view(repo, tmp_path / "view-seq1")
    a.backup(repo)
    show(repo, old)
    device = str(a.state)
    r = cli(tmp_path, "snapshots", "-r", str(repo), E2EBACKUP_STATE_DIR=device)
    assert r.returncode == 1
    assert "e2ebackup trust" in r.stderr
    shown = newest_head_hash(repo)
    r = cli(tmp_path, "trust", "-r", str(repo), E2EBACKUP_STATE_DIR=device)
    assert shown in r.stdout
    assert (
        cli(tmp_path, "snapshots", "-r", str(repo), E2EBACKUP_STATE_DIR=device).returncode == 1
    ), "needs --yes"
    r = cli(
        tmp_path, "trust", "-r", str(repo), "--head", "00" * 32, "--yes", E2EBACKUP_STATE_DIR=device
    )
    assert r.returncode != 0, "--head names another head: nothing is trusted"
    r = cli(
        tmp_path,
        "trust",
        "-r",
        str(repo),
        "--head",
        shown[:20],
        "--yes",
        E2EBACKUP_STATE_DIR=device,
    )
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path, "snapshots", "-r", str(repo), "--json", E2EBACKUP_STATE_DIR=device)
    assert r.returncode == 0, r.stderr
    assert [s["id"] for s in json.loads(r.stdout)] == [s1]
    # And backups go on from there.
    assert a.backup(repo) in a.snapshots(repo)


def test_device_away_longer_than_the_kept_heads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heads older than the last KEEP_HEADS are deleted: a device that last saw one of those
    cannot check the chain and says so, instead of trusting whatever it is shown."""
    monkeypatch.setattr(heads_module, "KEEP_HEADS", 3)
    a, b = Device(tmp_path, "a", monkeypatch), Device(tmp_path, "b", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    b.snapshots(repo)  # b trusts seq 1
    for _ in range(4):
        a.backup(repo)
    assert len(head_names(repo)) == 3
    refused("HistoryUnverifiable", lambda: b.snapshots(repo))
    # b accepts it on purpose (Repository.trust), then follows along as usual.
    b.open(repo).trust()
    a.backup(repo)
    assert len(b.snapshots(repo)) == 6


class FailingDeletes(LocalStorage):
    """A crash after the new head is written, before old heads are deleted."""

    def delete(self, name: str) -> None:
        if name.startswith("heads/"):
            raise ObjectNotFound("simulated crash")
        super().delete(name)


def test_crash_between_writing_a_head_and_deleting_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heads_module, "KEEP_HEADS", 2)
    a = Device(tmp_path, "a", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    a.use()
    crashing = Repository.open(FailingDeletes(repo, create=False), password=PASSWORD)
    for n in range(3):
        (a.src / f"crash-{n}").write_text("x")
        with contextlib.suppress(E2EBackupError):
            backup(crashing, [str(a.src)])
    assert len(head_names(repo)) == 5, "every head written, none deleted"
    assert len(a.snapshots(repo)) == 4
    a.backup(repo)
    assert len(head_names(repo)) == 2, "the next commit deletes them all"
    assert len(a.snapshots(repo)) == 5


def test_listed_but_missing_snapshot_does_not_hide_the_others(tmp_path: Path) -> None:
    """The provider deletes the newest snapshot object: listings report it missing and go on,
    `latest` is the newest snapshot that is still there (with a warning), the rest restore."""
    repo = tmp_path / "repo"
    assert cli(tmp_path, "init", "-r", str(repo)).returncode == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    assert cli(tmp_path, "backup", "-r", str(repo), str(src)).returncode == 0
    (src / "a.txt").write_text("second\n")
    assert cli(tmp_path, "backup", "-r", str(repo), str(src)).returncode == 0
    r = cli(tmp_path, "snapshots", "-r", str(repo), "--json")
    first, second = (s["id"] for s in json.loads(r.stdout))
    (repo / "snapshots" / second).unlink()

    r = cli(tmp_path, "snapshots", "-r", str(repo), "--json")
    assert r.returncode == 0, r.stderr
    assert [s["id"] for s in json.loads(r.stdout)] == [first]
    assert second[:8] in r.stderr
    assert "missing" in r.stderr
    r = cli(tmp_path, "restore", "-r", str(repo), "latest", "--target", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "missing" in r.stderr
    assert (tmp_path / "out" / "src" / "a.txt").read_text() == "first\n"
    r = cli(tmp_path, "restore", "-r", str(repo), second[:8], "--target", str(tmp_path / "x"))
    assert r.returncode == 1
    assert "missing" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_oversized_head_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A huge object under heads/ (a memory bomb) is refused from its listed size."""
    monkeypatch.setattr(heads_module, "MAX_HEAD_SIZE", 4096, raising=False)
    a = Device(tmp_path, "a", monkeypatch)
    repo = tmp_path / "repo"
    new_repo(repo, a)
    a.backup(repo)
    (repo / "heads" / f"{7:016x}-{'ef' * 32}").write_bytes(bytes(5000))
    with pytest.raises(RepositoryCorrupted, match="too large"):
        a.snapshots(repo)
