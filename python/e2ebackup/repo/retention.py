"""Which snapshots ``forget`` keeps: restic's policies, which users of backup tools know.

``keep_last=N`` keeps the N newest snapshots. ``keep_hourly``, ``keep_daily``, ``keep_weekly``,
``keep_monthly`` and ``keep_yearly`` keep, for each of the N most recent hours (days, ISO
weeks, months, years) that have snapshots, the newest snapshot of that period; periods without
a snapshot do not count. ``keep_within`` keeps every snapshot younger than that many seconds
(counted back from the newest snapshot, so a repository left alone is not emptied). A snapshot
is kept when any policy keeps it. Periods are in the local time zone, as the user sees dates.

Policies apply to each group of snapshots apart: by default, snapshots of the same paths from
the same host (``group_by=("host", "paths")``, restic's default), so an hourly backup of a chat
database does not push a daily backup of photos out of ``--keep-last``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from e2ebackup.errors import InvalidArgument

__all__ = ["GROUP_FIELDS", "Retention", "group_key", "parse_duration", "select"]

GROUP_FIELDS = ("host", "paths", "tags")

_Period = Callable[[datetime.datetime], tuple[int, ...]]

_PERIODS: dict[str, _Period] = {
    "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "keep_daily": lambda t: (t.year, t.month, t.day),
    "keep_weekly": lambda t: tuple(t.isocalendar())[:2],
    "keep_monthly": lambda t: (t.year, t.month),
    "keep_yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class Retention:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: float = 0.0  # seconds

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise InvalidArgument(f"--{f.name.replace('_', '-')} must not be negative")
        if not any(getattr(self, f.name) for f in fields(self)):
            raise InvalidArgument(
                "give a policy (--keep-last, --keep-daily, --keep-weekly, --keep-monthly, "
                "--keep-yearly, --keep-hourly or --keep-within): without one, forget would "
                "remove every snapshot"
            )


def select(snapshots: Sequence[tuple[str, float]], policy: Retention) -> set[str]:
    """The ids to keep among ``(id, time)`` pairs (time in seconds since the epoch)."""
    newest_first = sorted(snapshots, key=lambda s: s[1], reverse=True)
    keep = {sid for sid, _ in newest_first[: policy.keep_last]}
    if policy.keep_within and newest_first:
        since = newest_first[0][1] - policy.keep_within
        keep |= {sid for sid, t in newest_first if t >= since}
    for name, period in _PERIODS.items():
        left = getattr(policy, name)
        last: tuple[int, ...] | None = None
        for sid, t in newest_first:
            if not left:
                break
            key = period(datetime.datetime.fromtimestamp(t).astimezone())
            if key != last:
                keep.add(sid)
                last = key
                left -= 1
    return keep


def group_key(snapshot: dict[str, Any], group_by: Sequence[str]) -> tuple[object, ...]:
    """The group a snapshot belongs to, for ``group_by`` fields among GROUP_FIELDS."""
    key: list[object] = []
    for name in group_by:
        if name == "host":
            key.append(snapshot.get("hostname", ""))
        elif name == "paths":
            key.append(tuple(sorted(snapshot.get("paths", []))))
        elif name == "tags":
            key.append(tuple(sorted(snapshot.get("tags", []))))
        else:
            raise InvalidArgument(f"cannot group by {name!r}: use {', '.join(GROUP_FIELDS)}")
    return tuple(key)


_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> float:
    """``1y6m``, ``30d``, ``12h``, ``2w``: seconds (a month is 30 days, a year 365)."""
    parts = re.findall(r"(\d+)([hdwmy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f"a duration is like 30d, 2w, 6m, 1y or 1y6m, not {text!r}")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))
