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
from e2ebackup.repo.tree import Entry, check_depth

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
        # Depth first with a stack of its own (no recursion limit), listings nested too deep
        # refused: each folder's matches are put together once its folders' are known.
        stack: list[tuple[str, str, int]] = [(tree_id, origin, 1)]
        listings: dict[str, list[Entry]] = {}
        while stack:
            tid, where, depth = stack[-1]
            key = f"{tid}:{where}"
            if key in cache:
                stack.pop()
            elif key not in listings:
                check_depth(depth, where)
                listings[key] = repo.read_tree(tid)
                stack += [
                    (e["subtree"], f"{where}/{e['name']}", depth + 1)
                    for e in listings[key]
                    if e.get("type") == "dir"
                ]
            else:
                stack.pop()
                found: list[tuple[str, Entry]] = []
                for e in listings.pop(key):
                    name = str(e["name"])
                    if matcher.excluded(f"{where}/{name}", name):
                        found.append((name, e))
                    if e.get("type") == "dir":
                        below = cache[f"{e['subtree']}:{where}/{name}"]
                        found += [(f"{name}/{rel}", sub) for rel, sub in below]
                cache[key] = found
        return cache[f"{tree_id}:{origin}"]

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
