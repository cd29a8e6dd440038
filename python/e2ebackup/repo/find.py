"""find: which snapshots hold a file, by name or path pattern (the patterns of ``backup
--exclude``: a name glob like ``IMG_2024*.jpg``, or a path glob like ``Pictures/**/beach*``).

Snapshots share most of their folders (a folder that did not change has the same listing id),
so the matches under each folder listing are worked out once and reused by every snapshot that
has it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from e2ebackup.repo.backup import root_name
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.tree import Entry

__all__ = ["Found", "find"]


@dataclass(frozen=True)
class Found:
    snapshot: str
    time: float
    path: str  # as in the snapshot: the backed-up folder's name first
    type: str
    size: int
    mtime_ns: int


def find(
    repo: Repository, patterns: Sequence[str], where: SnapshotFilter | None = None
) -> Iterator[Found]:
    """Every entry matching any of ``patterns`` in every snapshot ``where`` admits, oldest
    snapshot first. Name patterns match a name anywhere; path patterns match the entry's
    absolute path when it was backed up, so ``2024/*.jpg`` (a path end) and
    ``/home/ann/photos/2024/*.jpg`` both find ``photos/2024/beach.jpg``."""
    matcher = Excludes(patterns)
    cache: dict[str, list[tuple[str, Entry]]] = {}

    def matches(tree_id: str, origin: str) -> list[tuple[str, Entry]]:
        # Relative to the folder; the origin (its absolute path at backup time) only serves
        # absolute patterns, so listings are shared between snapshots of the same paths.
        key = f"{tree_id}:{origin}"
        if key not in cache:
            found: list[tuple[str, Entry]] = []
            for e in repo.read_tree(tree_id):
                name = str(e["name"])
                if matcher.excluded(f"{origin}/{name}", name):
                    found.append((name, e))
                if e.get("type") == "dir":
                    found += [
                        (f"{name}/{rel}", sub)
                        for rel, sub in matches(e["subtree"], f"{origin}/{name}")
                    ]
            cache[key] = found
        return cache[key]

    with repo.read_lock():  # a prune running meanwhile waits, or is waited for
        yield from _search(repo, matcher, matches, where)


def _search(
    repo: Repository,
    matcher: Excludes,
    matches: Callable[[str, str], list[tuple[str, Entry]]],
    where: SnapshotFilter | None,
) -> Iterator[Found]:
    for sid, snap in repo.snapshots():
        if where is not None and not where.admits(snap):
            continue
        origins = {root_name(p): p for p in snap.get("paths", [])}
        for e in repo.read_tree(str(snap["tree"])):
            name = str(e["name"])
            origin = origins.get(name, "/" + name)
            hits = [(name, e)] if matcher.excluded(origin, name) else []
            if e.get("type") == "dir":
                hits += [(f"{name}/{rel}", sub) for rel, sub in matches(e["subtree"], origin)]
            for path, entry in hits:
                yield Found(
                    sid,
                    float(snap["time"]),
                    path,
                    str(entry.get("type")),
                    int(entry.get("size", 0)),
                    int(entry.get("mtime_ns", 0)),
                )
