"""forget's retention policies (restic's semantics): the newest snapshot of each of the last N
periods that have one, in local time; keep-last; keep-within from the newest snapshot."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.prune import forget
from e2ebackup.repo.retention import Retention, parse_duration, select
from repo_helpers import cli, make_tree, new_repo

DAY = 86400.0


@pytest.fixture
def tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local time zone for one test (restored after it)."""

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    use("UTC")
    yield
    monkeypatch.undo()
    time.tzset()


def at(text: str) -> float:
    """Seconds since the epoch of a local ``YYYY-MM-DD HH:MM``."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").astimezone().timestamp()


def snaps(*times: str) -> list[tuple[str, float]]:
    return [(t, at(t)) for t in times]


def test_keep_last(tz: None) -> None:
    s = snaps("2026-01-01 10:00", "2026-01-02 10:00", "2026-01-03 10:00")
    assert select(s, Retention(keep_last=2)) == {"2026-01-02 10:00", "2026-01-03 10:00"}
    assert select(s, Retention(keep_last=5)) == {t for t, _ in s}


def test_keep_daily_takes_the_newest_of_each_day(tz: None) -> None:
    s = snaps(*(f"2026-03-{d:02d} {h:02d}:00" for d in range(1, 11) for h in (0, 6, 12, 18)))
    assert select(s, Retention(keep_daily=3)) == {
        "2026-03-10 18:00",
        "2026-03-09 18:00",
        "2026-03-08 18:00",
    }


def test_periods_without_a_snapshot_do_not_count(tz: None) -> None:
    s = snaps("2026-05-01 09:00", "2026-05-05 09:00", "2026-05-09 09:00", "2026-05-09 08:00")
    assert select(s, Retention(keep_daily=2)) == {"2026-05-09 09:00", "2026-05-05 09:00"}


def test_weekly_monthly_yearly_and_their_union(tz: None) -> None:
    # One snapshot a day at noon for two years.
    start = at("2025-01-01 12:00")
    s = [(str(i), start + i * DAY) for i in range(730)]
    names = {sid: datetime.datetime.fromtimestamp(t).date() for sid, t in s}
    weekly = select(s, Retention(keep_weekly=4))
    # Sundays end ISO weeks: the newest of each of the last 4 weeks (the last one partial).
    assert sorted(names[k].isoformat() for k in weekly) == [
        "2026-12-13", "2026-12-20", "2026-12-27", "2026-12-31",
    ]  # fmt: skip
    monthly = select(s, Retention(keep_monthly=3))
    assert sorted(names[k].isoformat() for k in monthly) == [
        "2026-10-31", "2026-11-30", "2026-12-31",
    ]  # fmt: skip
    yearly = select(s, Retention(keep_yearly=5))
    assert sorted(names[k].isoformat() for k in yearly) == ["2025-12-31", "2026-12-31"]
    both = select(s, Retention(keep_last=2, keep_monthly=3, keep_yearly=5))
    assert both == monthly | yearly | {"728", "729"}


def test_keep_hourly(tz: None) -> None:
    s = snaps("2026-02-01 10:05", "2026-02-01 10:55", "2026-02-01 11:10", "2026-02-01 13:00")
    assert select(s, Retention(keep_hourly=2)) == {"2026-02-01 13:00", "2026-02-01 11:10"}


def test_keep_within_counts_back_from_the_newest(tz: None) -> None:
    s = snaps("2020-01-01 00:00", "2020-01-20 00:00", "2020-01-25 00:00", "2020-01-31 00:00")
    # Years old, but nothing is dropped for the time the repository sat unused.
    assert select(s, Retention(keep_within=parse_duration("7d"))) == {
        "2020-01-25 00:00",
        "2020-01-31 00:00",
    }


def test_days_are_local_days(tz: None, monkeypatch: pytest.MonkeyPatch) -> None:
    utc = snaps("2026-06-01 10:00", "2026-06-01 20:00")  # two snapshots, one UTC day
    assert len(select(utc, Retention(keep_daily=5))) == 1
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9: 20:00 UTC is the next day there
    time.tzset()
    assert len(select(utc, Retention(keep_daily=5))) == 2


def test_policies_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="without one, forget would remove every"):
        Retention()
    with pytest.raises(InvalidArgument, match="--keep-daily must not be negative"):
        Retention(keep_daily=-1, keep_last=3)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * DAY), ("2w", 14 * DAY), ("12h", 43200.0), ("1y6m", 545 * DAY)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "3x", "1d 2h", "-1d", "1.5d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument, match="a duration is like"):
        parse_duration(text)


def test_forget_with_a_policy_then_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "src"
    make_tree(src, small_files=5)
    repo = new_repo(tmp_path / "repo")
    ids = []
    for i in range(4):
        (src / f"new-{i}.bin").write_bytes(bytes([i]) * 100_000)
        ids.append(backup(repo, [str(src)])[0])
    # keep-daily 1 keeps the newest of the newest day; keep-last 2 also keeps the one before.
    stats = forget(repo, policy=Retention(keep_daily=1, keep_last=2), prune=True, grace=0)
    assert (stats.snapshots_kept, stats.snapshots_removed) == (2, 2)
    assert [sid for sid, _ in repo.snapshots()] == ids[2:]
    # Only the old snapshots' folder listings go: every file they had is in the newer ones.
    assert 0 < stats.bytes_freed < 100_000
    assert verify(repo, read_data=True).ok


def test_forget_command_line(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    src = tmp_path / "src"
    make_tree(src, small_files=3)
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    for _ in range(3):
        assert cli(tmp_path, "backup", "-r", repo, str(src), "-q").returncode == 0
    # No policy: refused before anything is opened or asked.
    refused = cli(tmp_path, "forget", "-r", str(tmp_path / "nowhere"))
    assert refused.returncode == 2
    assert "give a policy" in refused.stderr
    bad = cli(tmp_path, "forget", "-r", repo, "--keep-within", "10 days")
    assert bad.returncode == 2
    assert "a duration is like" in bad.stderr
    done = cli(tmp_path, "forget", "-r", repo, "--keep-daily", "1", "--keep-within", "1y", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["snapshots_kept"] == 3  # all within a year of the newest
    bad = cli(
        tmp_path, "forget", "-r", str(tmp_path / "nowhere"), "--keep-last", "1", "--group-by", "x"
    )
    assert bad.returncode == 2
    assert "cannot group by 'x'" in bad.stderr
    done = cli(
        tmp_path, "forget", "-r", repo, "--keep-daily", "1", "--prune", "--json", "--group-by", ""
    )
    assert json.loads(done.stdout)["snapshots_removed"] == 2
    listed = json.loads(cli(tmp_path, "snapshots", "-r", repo, "--json").stdout)
    assert len(listed) == 1


def test_policies_apply_to_each_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An hourly chat-database backup must not push the daily photo backup out of keep-last:
    by default each host and set of paths is a group of its own, as in restic."""
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    photos, chats = tmp_path / "photos", tmp_path / "chats"
    make_tree(photos, small_files=2)
    chats.mkdir()
    (chats / "msgstore.db").write_bytes(b"chat" * 1000)
    repo = new_repo(tmp_path / "repo")
    photo_id, _ = backup(repo, [str(photos)])
    chat_ids = [backup(repo, [str(chats)])[0] for _ in range(3)]
    tagged, _ = backup(repo, [str(chats)], tags=["before-upgrade"])
    stats = forget(repo, policy=Retention(keep_last=1))
    assert {sid for sid, _ in repo.snapshots()} == {photo_id, tagged}
    assert stats.snapshots_removed == 3
    # Grouped by tags too, the tagged one is a group of its own: the newest untagged stays.
    more = backup(repo, [str(chats)])[0]
    forget(repo, policy=Retention(keep_last=1), group_by=("host", "paths", "tags"))
    assert {sid for sid, _ in repo.snapshots()} == {photo_id, tagged, more}
    # One group for everything: only the newest snapshot of all stays.
    forget(repo, policy=Retention(keep_last=1), group_by=())
    assert [sid for sid, _ in repo.snapshots()] == [more]
    assert chat_ids[0] not in {sid for sid, _ in repo.snapshots()}
    with pytest.raises(InvalidArgument, match="cannot group by 'colour'"):
        forget(repo, policy=Retention(keep_last=1), group_by=("colour",))
