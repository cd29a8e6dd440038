"""Restore's budget: what a snapshot holds, counted before anything is written.

A listing may name another listing any number of times (a repository from someone else can make
40 KB of listings name 2**40 files), so totals are worked out once per listing and reused
wherever it is named: counting is linear in the listings stored, not in what they expand to.
The budget is ``max_size`` / ``max_files`` when given (for a repository from an untrusted
source) and in any case the target's free space and free inodes: a serious restore of one's own
1 TB backup needs no option, and nothing is started that cannot fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from e2ebackup.errors import RestoreLimitExceeded
from e2ebackup.repo.tree import Entry

__all__ = ["Budget", "Listing", "listing_of", "totals"]


@dataclass
class Listing:
    """What one listing holds directly: its files' bytes, its entries, its folders' listings."""

    size: int
    entries: int
    children: list[str]


@dataclass
class Budget:
    """What a restore into ``target`` may write: ``max_size`` bytes and ``max_files`` entries
    (None: no limit), and no more than the target's file system has free (``target`` None:
    not a file system of this machine, an object store: the limits only)."""

    target: str | None
    max_size: int | None = None
    max_files: int | None = None

    def entries(self) -> int | None:
        """The most entries a restore may write, None if no limit is known."""
        _, free_inodes = self._free()
        known = [b for b in (self.max_files, free_inodes) if b is not None]
        return min(known) if known else None

    def check(self, size: int, entries: int) -> None:
        """Raises RestoreLimitExceeded if ``size`` bytes or ``entries`` entries do not fit."""
        free_bytes, free_inodes = self._free()
        if self.max_size is not None and size > self.max_size:
            raise RestoreLimitExceeded(
                f"the snapshot holds {size:,} bytes to restore, more than --max-size "
                f"{self.max_size:,}"
            )
        if self.max_files is not None and entries > self.max_files:
            raise RestoreLimitExceeded(
                f"the snapshot holds {entries:,} files, folders and links to restore, more than "
                f"--max-files {self.max_files:,}"
            )
        if free_bytes is not None and size > free_bytes:
            raise RestoreLimitExceeded(
                f"the snapshot holds {size:,} bytes to restore; the target's file system has "
                f"{free_bytes:,} free"
            )
        if free_inodes is not None and entries > free_inodes:
            raise RestoreLimitExceeded(
                f"the snapshot holds {entries:,} files, folders and links to restore; the "
                f"target's file system has {free_inodes:,} free inodes"
            )

    def _free(self) -> tuple[int | None, int | None]:
        return (None, None) if self.target is None else free_space(self.target)


def listing_of(entries: list[Entry]) -> Listing:
    return Listing(
        sum(int(e.get("size", 0)) for e in entries if e.get("type") == "file"),
        len(entries),
        [str(e["subtree"]) for e in entries if e.get("type") == "dir"],
    )


def totals(listings: dict[str, Listing]) -> dict[str, tuple[int, int, int]]:
    """Bytes, entries and height (listings below it) of every listing, all of it below
    counted (a listing named twice, twice), each computed once, without recursion."""
    done: dict[str, tuple[int, int, int]] = {}
    for top in listings:
        stack = [(top, False)]
        while stack:
            tree_id, children_done = stack.pop()
            if tree_id in done:
                continue
            own = listings[tree_id]
            if not children_done:
                stack.append((tree_id, True))
                stack.extend((c, False) for c in own.children if c not in done)
                continue
            below = [done[c] for c in own.children]
            done[tree_id] = (
                own.size + sum(t[0] for t in below),
                own.entries + sum(t[1] for t in below),
                1 + max((t[2] for t in below), default=-1),
            )
    return done


def free_space(path: str) -> tuple[int, int | None]:
    """Free bytes and free inodes (None: the file system has no fixed number) where ``path``
    is or would be created."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize, (st.f_favail if st.f_files else None)
