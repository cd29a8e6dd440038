"""diff: what changed between two snapshots, as restic shows it.

``+`` added, ``-`` removed, ``M`` content changed, ``T`` type changed (a file became a folder),
``U`` only metadata changed (mode, mtime, owner). Folders whose listing id is the same in both
snapshots are identical and not opened, so comparing two daily snapshots of a large tree reads
only the folders that changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import Entry, check_depth

__all__ = ["Change", "diff"]

_METADATA = ("mode", "mtime_ns", "uid", "gid")


@dataclass(frozen=True)
class Change:
    kind: str  # "+", "-", "M", "T" or "U"
    path: str
    type: str
    size: int  # the size in the newer snapshot (the older one for "-")


def diff(repo: Repository, old_ref: str, new_ref: str) -> Iterator[Change]:
    """The changes from snapshot ``old_ref`` to ``new_ref`` (ids, prefixes or ``latest``), in
    path order."""
    with repo.read_lock():  # a prune running meanwhile waits, or is waited for
        _, old = repo.find_snapshot(old_ref)
        _, new = repo.find_snapshot(new_ref)
        yield from _compare(repo, str(old["tree"]), str(new["tree"]), "", 0)


def _listing(repo: Repository, tree_id: str) -> dict[str, Entry]:
    return {e["name"]: e for e in repo.read_tree(tree_id)}


def _compare(
    repo: Repository, old_tree: str, new_tree: str, base: str, depth: int
) -> Iterator[Change]:
    if old_tree == new_tree:
        return
    check_depth(depth, base)  # refused, not a RecursionError
    old, new = _listing(repo, old_tree), _listing(repo, new_tree)
    for name in sorted(old.keys() | new.keys()):
        path = f"{base}/{name}" if base else name
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            entry = b if a is None else a
            assert entry is not None
            yield from _all(repo, "+" if a is None else "-", entry, path, depth)
        elif a.get("type") != b.get("type"):
            yield _change("T", path, b)
        elif b.get("type") == "dir":
            if any(a.get(k) != b.get(k) for k in _METADATA):
                yield _change("U", path, b)
            yield from _compare(repo, a["subtree"], b["subtree"], path, depth + 1)
        elif a.get("content") != b.get("content") or a.get("target") != b.get("target"):
            yield _change("M", path, b)
        elif any(a.get(k) != b.get(k) for k in _METADATA):
            yield _change("U", path, b)


def _all(repo: Repository, kind: str, entry: Entry, path: str, depth: int) -> Iterator[Change]:
    """An added or removed entry (in a listing ``depth`` below the root), and everything
    under it."""
    yield _change(kind, path, entry)
    if entry.get("type") == "dir":
        check_depth(depth + 1, path)
        for name, child in sorted(_listing(repo, entry["subtree"]).items()):
            yield from _all(repo, kind, child, f"{path}/{name}", depth + 1)


def _change(kind: str, path: str, entry: Entry) -> Change:
    return Change(kind, path, str(entry.get("type")), int(entry.get("size", 0)))
