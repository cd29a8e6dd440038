"""Version-3 heads: many writers commit at once, readers merge the top heads.

docs/FORMAT.md, "Many writers (version 3)", is the normative text. In short: every head names
the heads it merges (``parents``, each by seq and SHA-256); the live snapshots and indexes are
the merge of the heads with the highest seq; removals are tombstones, so a merge never brings
back what one writer dropped and never loses what another added. A device keeps the set of
heads it accepted and refuses a storage that hides one of them (a fork), shows an older top
(a rollback), or no longer holds the heads that would show either (unverifiable).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from e2ebackup.errors import (
    HistoryForked,
    HistoryNotTrusted,
    HistoryUnverifiable,
    RepositoryCorrupted,
    RolledBack,
)
from e2ebackup.repo.heads import KEEP_HEADS, MAX_PARENTS, Head, History, TrustedHead

#: A writer that listed the heads longer ago than this lists them again before committing:
#: what it would write could be that stale (FORMAT.md, Many writers, step 2).
MAX_COMMIT_AGE = 3600.0

#: How many merge heads a writer writes after its own, when others committed on top of an
#: older state meanwhile (step 3), before it leaves the rest to the next commit.
MERGE_ATTEMPTS = 8


def merge(heads: Sequence[Head]) -> Head:
    """The merge of ``heads`` (stored heads): a view at their highest seq, with ``members``."""
    if not heads:
        raise RepositoryCorrupted("the repository has no head object")
    ordered = sorted(heads, key=lambda h: str(h.digest))
    dropped: dict[str, float] = {}
    for head in ordered:
        for name, when in head.dropped.items():
            dropped[name] = max(when, dropped.get(name, when))
    snapshots = _first_seen((h.snapshots for h in ordered), "snapshots/", dropped)
    indexes = _first_seen((h.indexes for h in ordered), "", dropped)
    top = max(ordered, key=lambda h: h.seq)
    return Head(
        top.seq,
        snapshots,
        indexes,
        name=ordered[0].name if len(ordered) == 1 else None,
        digest=",".join(str(h.digest) for h in ordered),
        dropped=dropped,
        members=list(ordered),
    )


def _first_seen(lists: Iterable[list[str]], prefix: str, dropped: dict[str, float]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for names in lists:
        for name in names:
            if name not in seen and prefix + name not in dropped:
                seen.add(name)
                out.append(name)
    return out


@dataclass(frozen=True)
class Changes:
    """What a commit adds and drops; ``clear_tombstones`` are left out of the new head (prune's,
    once their objects are deleted)."""

    add_snapshots: Sequence[str] = ()
    remove_snapshots: Sequence[str] = ()
    add_indexes: Sequence[str] = ()
    remove_indexes: Sequence[str] = ()
    clear_tombstones: Sequence[str] = ()
    #: Version 4: drops whose snapshot is forgotten (their names, ``drops/<id>``).
    remove_drops: Sequence[str] = ()
    #: Version 4: drops' packs a prune condemned (their names, ``data/<2>/<id>``).
    condemn: Sequence[str] = ()


def next_head(view: Head, changes: Changes = Changes(), *, now: float | None = None) -> Head:
    """The head a writer commits on top of ``view`` (a merge): one seq higher, naming the
    merged heads as parents, with the changes applied and a tombstone per removal."""
    now = time.time() if now is None else now
    c = changes
    members = view.stored_heads
    if len(members) > MAX_PARENTS:
        raise RepositoryCorrupted(
            f"{len(members)} heads are to be merged; a head names at most {MAX_PARENTS}"
        )
    dropped = {n: t for n, t in view.dropped.items() if n not in set(c.clear_tombstones)}
    gone_snaps, gone_indexes = set(c.remove_snapshots), set(c.remove_indexes)
    for sid in gone_snaps:
        dropped[f"snapshots/{sid}"] = now
    for name in (*gone_indexes, *c.remove_drops, *c.condemn):
        dropped[name] = now
    snapshots = [s for s in view.snapshots if s not in gone_snaps]
    snapshots += [s for s in c.add_snapshots if s not in snapshots]
    indexes = [i for i in view.indexes if i not in gone_indexes]
    indexes += [i for i in c.add_indexes if i not in indexes]
    return Head(
        view.seq + 1,
        snapshots,
        indexes,
        parents=sorted(((h.seq, str(h.digest)) for h in members), key=lambda p: p[1]),
        time=now,
        dropped=dropped,
    )


def head_value(head: Head) -> dict[str, object]:
    """A version-3 head's JSON."""
    return {
        "seq": head.seq,
        "time": head.time,
        "parents": [[seq, digest] for seq, digest in head.parents],
        "snapshots": head.snapshots,
        "indexes": head.indexes,
        "dropped": [[name, when] for name, when in sorted(head.dropped.items())],
    }


@dataclass
class Ancestry:
    """What following ``parents`` down from some heads found."""

    digests: set[str] = field(default_factory=set)
    #: A parent was named at a seq of which no head is stored (deleted after KEEP_HEADS).
    gap: bool = False


def ancestry(history: History, heads: Sequence[Head], down_to: int) -> Ancestry:
    """``heads`` and every head reached from them through ``parents``, down to seq
    ``down_to``: a parent named by a reached head counts as reached even when it is no longer
    stored (the naming head is sealed, and its writer merged it), but the walk goes on only
    through stored heads. Each head is read at most once (History caches)."""
    found = Ancestry({str(h.digest) for h in heads})
    stack = list(heads)
    while stack:
        head = stack.pop()
        for seq, digest in head.parents:
            if seq < down_to or digest in found.digests:
                continue
            names = history.by_seq.get(seq, [])
            parent = next((p for p in map(history.read, sorted(names)) if p.digest == digest), None)
            found.digests.add(digest)
            if parent is None:
                found.gap = found.gap or not names
                continue
            stack.append(parent)
    return found


def top_heads(history: History) -> list[Head]:
    if not history.by_seq:
        raise RepositoryCorrupted("the repository has no head object")
    return [history.read(name) for name in sorted(history.by_seq[max(history.by_seq)])]


def accepted_heads(history: History, trusted: TrustedHead | None) -> list[Head]:
    """The heads a device merges: the top heads, and the heads it trusted that no top head
    reaches yet (committed while others committed on top of an older state). Raises
    RolledBack, HistoryForked or HistoryUnverifiable as FORMAT.md says."""
    tops = top_heads(history)
    if trusted is None:
        return tops
    if tops[0].seq < trusted.seq:
        raise RolledBack(
            f"the repository was rolled back: its newest head is seq {tops[0].seq}, this "
            f"device trusted seq {trusted.seq}. {history.accept_hint}"
        )
    if not trusted.heads and (trusted.name is None or trusted.digest is None):
        return tops  # only a seq is known (state from before format 2): the check above
    wanted = list(trusted.heads) or [(str(trusted.name), str(trusted.digest))]
    lowest = min(_seq_of(name) for name, _ in wanted)
    found = ancestry(history, tops, lowest)
    extra: list[Head] = []
    for name, digest in wanted:
        if digest in found.digests:
            continue
        if name in history.sizes:
            head = history.read(name)
            if head.digest == digest:
                extra.append(head)
                continue
        if found.gap:
            raise HistoryUnverifiable(
                f"this device last trusted head seq {_seq_of(name)} {digest[:16]}; the storage "
                f"no longer holds the heads between it and seq {tops[0].seq} (the repository "
                f"keeps the last {KEEP_HEADS}), so whether the history extends what this "
                f"device saw cannot be checked. {history.accept_hint}"
            )
        raise HistoryForked(
            f"the storage hides head seq {_seq_of(name)} {digest[:16]}, which this device "
            f"trusted: no stored head descends from it, and it is not stored. What this "
            f"device saw may be hidden. {history.accept_hint}"
        )
    return tops + extra


def check_pin(history: History, heads: Sequence[Head], pin: str) -> None:
    """Raises unless a head whose SHA-256 starts with ``pin`` is among ``heads`` or reached
    from them."""
    if not any(d.startswith(pin) for d in ancestry(history, heads, 0).digests):
        raise HistoryNotTrusted(
            f"the storage does not show the expected head {pin}: none of its top heads is it or "
            f"descends from it (rolled back, another branch, or older than the last "
            f"{KEEP_HEADS} heads kept). {history.accept_hint}"
        )


def _seq_of(name: str) -> int:
    return int(name.split("/", 1)[1].split("-", 1)[0], 16)
