"""What a reader makes of the drops (docs/FORMAT.md, "Writers that cannot read (version 4)"):
every drop opened and checked, the writers' chains, and this device's trust in each writer's
newest drop. Damage is collected, not raised: one writer's damaged drop does not hide the
others' snapshots. A writer's chain shown older than this device saw is refused, as for heads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Set as AbstractSet
from dataclasses import dataclass, field

from e2ebackup._parallel import ordered_map
from e2ebackup.errors import (
    HistoryForked,
    ObjectNotFound,
    ObjectTooLarge,
    RepositoryCorrupted,
    RolledBack,
)
from e2ebackup.repo.drops import Drop, is_drop_name, open_drop
from e2ebackup.repo.heads import state_dir, write_state_file
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.storage.base import Storage

__all__ = ["DropView", "check_writer_trust", "load_drops", "write_writer_trust"]

_TRUST_FILE = "writers.json"
_HEX = re.compile(r"^[0-9a-f]+\Z")


@dataclass
class DropView:
    """The drops of a repository as this reader accepted them."""

    #: Every drop that opened (forgotten ones too: later drops may reuse their blobs), with
    #: its packs indexed, by (writer, seq).
    drops: list[Drop] = field(default_factory=list)
    #: The drops whose snapshot is live: not forgotten, not refused.
    live: list[Drop] = field(default_factory=list)
    #: Damaged, missing or conflicting drops: listings warn, verify fails.
    problems: list[str] = field(default_factory=list)
    #: The keys of each drop's packs.
    pack_keys: dict[str, RepoKeys] = field(default_factory=dict)

    def snapshot(self, sid: str) -> Drop | None:
        if len(self._by_sid) != len(self.live):  # built once the view is filled
            self._by_sid = {d.snapshot_id: d for d in self.live}
        return self._by_sid.get(sid)

    _by_sid: dict[str, Drop] = field(default_factory=dict, repr=False)


def load_drops(
    storage: Storage,
    repo_id: bytes,
    data_key: bytes,
    *,
    threads: int,
    pruned: AbstractSet[str] = frozenset(),
) -> tuple[list[Drop], list[str]]:
    """Every ``drops/`` object opened and checked, and the problems found (FORMAT.md: reader
    steps 1 to 4 per drop, then the chains; a drop named in ``pruned``, the heads'
    tombstones, may be gone without breaking its writer's chain)."""
    names = sorted(i.name for i in storage.list("drops/"))
    problems = [f"{n} is not a drop name; ignored" for n in names if not is_drop_name(n)]
    names = [n for n in names if is_drop_name(n)]

    def one(name: str) -> Drop | str | None:
        try:
            return open_drop(name, storage.read(name), repo_id=repo_id, data_key=data_key)
        except ObjectNotFound:
            return None  # deleted since it was listed
        except (RepositoryCorrupted, ObjectTooLarge) as e:
            return str(e)  # one drop's damage; other storage errors may pass: raised

    drops: list[Drop] = []
    for result in ordered_map(one, names, threads=threads):
        if isinstance(result, Drop):
            drops.append(result)
        elif result is not None:
            problems.append(result)
    drops.sort(key=lambda d: (d.writer, d.seq, d.name))
    return drops, problems + _chain_problems(drops, pruned)


def _chain_problems(drops: Iterable[Drop], pruned: AbstractSet[str]) -> list[str]:
    """A writer's drops form a chain through ``prev``, each naming the drop one seq below: a
    drop deleted from the middle, two drops with one seq, or two naming one ``prev`` (a fork:
    the writer's state copied, or its token used elsewhere) is reported."""
    problems = []
    by_name = {d.name: d for d in drops}
    seen: dict[tuple[str, int], str] = {}
    children: dict[tuple[str, str], str] = {}
    for d in drops:
        key = (d.writer, d.seq)
        if key in seen:
            problems.append(
                f"writer {d.writer[:8]} has two drops with seq {d.seq} ({seen[key][6:14]} and "
                f"{d.name[6:14]}): a fork (its state was copied, or its token used elsewhere)"
            )
        seen[key] = d.name
        if d.prev is None:
            continue
        if d.prev in children:
            problems.append(
                f"writer {d.writer[:8]} has two drops after {d.prev[0][6:14]} "
                f"({children[d.prev][6:14]} and {d.name[6:14]}): a fork (its token used "
                "elsewhere?)"
            )
        children[d.prev] = d.name
        below = by_name.get(d.prev[0])
        if below is None and d.prev[0] in pruned:
            continue  # forgotten, then deleted by a prune
        if (
            below is None
            or below.digest != d.prev[1]
            or below.writer != d.writer
            or below.seq != d.seq - 1
        ):
            problems.append(
                f"writer {d.writer[:8]}'s drop seq {d.seq - 1} is missing (its drop seq "
                f"{d.seq} names {d.prev[0][6:14]}, which the storage does not hold as its "
                f"drop seq {d.seq - 1}): deleted?"
            )
    return problems


def _tops(drops: Iterable[Drop]) -> dict[str, tuple[int, str, str]]:
    tops: dict[str, tuple[int, str, str]] = {}
    for d in drops:
        if d.writer not in tops or (d.seq, d.digest) > tops[d.writer][::2]:
            tops[d.writer] = (d.seq, d.name, d.digest)
    return tops


def _read_trust(repo_id: bytes) -> dict[str, tuple[int, str, str]]:
    try:
        value = json.loads((state_dir(repo_id) / _TRUST_FILE).read_text("utf-8"))
        return {
            str(w): (int(t[0]), str(t[1]), str(t[2]))
            for w, t in value.items()
            if isinstance(w, str) and _HEX.match(w) and is_drop_name(str(t[1]))
        }
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}


def check_writer_trust(
    repo_id: bytes, drops: list[Drop], pruned: AbstractSet[str] = frozenset()
) -> None:
    """Raises RolledBack or HistoryForked when a writer's drops are older than, or do not
    reach, the newest drop of that writer this device accepted (FORMAT.md, Chains). A trusted
    drop named in ``pruned`` (the heads' tombstones) was forgotten, and may be deleted."""
    hint = "If this is expected (the repository was restored on purpose), run `e2ebackup trust`."
    by_name = {d.name: d for d in drops}
    tops = _tops(drops)
    for writer, (seq, name, digest) in _read_trust(repo_id).items():
        held = by_name.get(name)
        if (held is not None and held.digest == digest) or name in pruned:
            continue  # still stored (newer drops not descending from it: a reported fork)
        top = tops.get(writer)
        if top is None or top[0] < seq:
            raise RolledBack(
                f"writer {writer[:8]}'s drops were rolled back: this device saw its drop seq "
                f"{seq}, the storage shows {top[0] if top else 'none'}. {hint}"
            )
        if not _reaches(by_name, by_name[top[1]], seq, (name, digest)):
            raise HistoryForked(
                f"the storage hides writer {writer[:8]}'s drop seq {seq}, which this device "
                f"saw: its newer drops do not descend from it. {hint}"
            )


def _reaches(by_name: dict[str, Drop], top: Drop, seq: int, trusted: tuple[str, str]) -> bool:
    """Whether the chain down from ``top`` meets the drop ``trusted`` (name, SHA-256) at
    ``seq``: that drop itself, or its successor naming it (it may be gone since)."""
    at = top
    while at.seq > seq + 1:
        below = by_name.get(at.prev[0]) if at.prev else None
        if below is None or below.digest != at.prev[1]:  # type: ignore[index]
            return False
        at = below
    if at.seq == seq + 1:
        return at.prev == trusted
    return (at.name, at.digest) == trusted


def write_writer_trust(repo_id: bytes, drops: list[Drop], *, replace: bool = False) -> None:
    """Records each writer's newest drop as trusted, with (``replace``: instead of) what was
    trusted before; atomically. Without a writable state folder the checks are limited to
    this run."""
    tops = _tops(drops)
    old = _read_trust(repo_id)
    merged = tops if replace else {**old, **tops}
    if merged == old:
        return
    body = json.dumps({w: list(t) for w, t in sorted(merged.items())})
    write_state_file(repo_id, _TRUST_FILE, body)
