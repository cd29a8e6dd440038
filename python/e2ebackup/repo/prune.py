"""forget and prune: drop snapshots, then the data only they used.

Order is what makes prune safe against a crash at any point: new packs (live blobs copied out
of partly-used packs) and one new index are stored first; then one new head switches to them;
only then are the old index objects, the unused packs and the forgotten snapshots deleted. A
crash before the switch leaves extra objects (removed by the next prune); after it, only
garbage is left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from e2ebackup.repo.index import Index
from e2ebackup.repo.names import check_id, pack_name
from e2ebackup.repo.pack import BlobLocation, PackWriter
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.retention import Retention, group_key, select

# A pack whose unreferenced blobs are at most this share of it is kept as it is (restic's
# --max-unused, per pack): repacking reads and writes the whole pack to free that share.
REPACK_UNUSED = 0.2


@dataclass
class PruneStats:
    snapshots_kept: int = 0
    snapshots_removed: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0  # net: packs deleted, less the repacked copies of their live blobs
    bytes_repacked: int = 0  # written again (a download and an upload on a cloud store)
    bytes_unused_kept: int = 0  # unreferenced blobs left in packs not worth rewriting yet


def _used_blobs(repo: Repository, snapshots: list[str]) -> set[bytes]:
    used: set[bytes] = set()
    stack = [str(repo.load_snapshot(sid)["tree"]) for sid in snapshots]
    while stack:
        tid = bytes.fromhex(stack.pop())
        if tid in used:
            continue
        used.add(tid)
        for e in repo.read_tree(tid):
            if e.get("type") == "dir":
                stack.append(e["subtree"])
            used.update(bytes.fromhex(c) for c in e.get("content", []))
    return used


def forget(
    repo: Repository,
    *,
    keep_last: int = 0,
    policy: Retention | None = None,
    prune: bool = False,
    lock_wait: float = 0.0,
    group_by: Sequence[str] = ("host", "paths"),
    repack_unused: float = REPACK_UNUSED,
) -> PruneStats:
    """Forgets the snapshots the retention ``policy`` (or just ``keep_last``) does not keep,
    applied to each group of snapshots (by default: same host, same paths) apart, and with
    ``prune`` removes the data nothing references any more: packs with nothing live are
    deleted, packs more than ``repack_unused`` unreferenced are rewritten with their live blobs
    only, and the others are kept as they are until they cross that line."""
    policy = policy or Retention(keep_last=keep_last)
    stats = PruneStats()
    with repo.lock(exclusive=True, wait=lock_wait):
        groups: dict[tuple[object, ...], list[tuple[str, float]]] = {}
        order: list[str] = []
        for sid, snap in repo.snapshots():
            groups.setdefault(group_key(snap, group_by), []).append((sid, float(snap["time"])))
            order.append(sid)
        keep = set().union(*(select(group, policy) for group in groups.values()))
        drop = [sid for sid in order if sid not in keep]
        stats.snapshots_kept = len(keep)
        if drop:
            repo.commit(remove_snapshots=drop)
            for sid in drop:
                repo.storage.delete(f"snapshots/{check_id(sid, 'snapshot')}")
            stats.snapshots_removed = len(drop)
        if prune:
            _prune(repo, stats, repack_unused)
    return stats


def _prune(repo: Repository, stats: PruneStats, repack_unused: float) -> None:
    head = repo.head(refresh=True)
    index = repo.index
    used = _used_blobs(repo, head.snapshots)
    by_pack: dict[str, list[tuple[bytes, int, int, int]]] = {}
    for blob_id, loc in index.items():
        by_pack.setdefault(loc.pack, []).append((blob_id, loc.kind, loc.offset, loc.length))
    new_index = Index()
    doomed: list[str] = []

    def stored(pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]) -> None:
        new_index.add_pack(pack_id, size, entries)

    writer = PackWriter(repo.storage, repo.keys, stored)
    try:
        for pack_id, blobs in by_pack.items():
            live = [b for b in blobs if b[0] in used]
            unused = sum(b[3] for b in blobs if b[0] not in used)
            size = index.pack_sizes[pack_id]
            if live and unused <= repack_unused * size:
                # Mostly live: rewriting it (a download and an upload on a cloud store) would
                # cost more than the space it frees. Its unused blobs stay until it is worth it.
                new_index.add_pack(pack_id, size, [(b[0], index.get(b[0])) for b in blobs])
                stats.bytes_unused_kept += unused
                continue
            doomed.append(pack_id)
            stats.blobs_removed += len(blobs) - len(live)
            if live:
                stats.packs_repacked += 1
                raw = repo.storage.read(pack_name(pack_id), length=size)
                for blob_id, kind, offset, length in live:
                    # Sealed blobs are bound to their id, not their pack: copied as they are.
                    writer.add(kind, blob_id, raw[offset : offset + length])
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    stats.bytes_repacked = writer.bytes_uploaded
    new_name = new_index.save_new(repo.storage, repo.keys) if (new_index.has_new()) else None
    old_indexes = list(head.indexes)
    repo.commit(remove_indexes=old_indexes, add_indexes=[new_name] if new_name else [])
    # From here on everything deleted is garbage.
    for name in old_indexes:
        repo.storage.delete(name)
    for pack_id in doomed:
        stats.bytes_freed += index.pack_sizes.get(pack_id, 0)
        repo.storage.delete(pack_name(pack_id))
        stats.packs_deleted += 1
    live_snaps = set(head.snapshots)
    for info in repo.storage.list("snapshots/"):
        if info.name.split("/", 1)[1] not in live_snaps:
            repo.storage.delete(info.name)
    live_indexes = set(repo.head().indexes)
    for info in repo.storage.list("index/"):
        if info.name not in live_indexes:
            repo.storage.delete(info.name)
    indexed = set(new_index.pack_sizes)
    for info in repo.storage.list("data/"):
        if info.name.rsplit("/", 1)[-1] not in indexed:
            stats.bytes_freed += info.size
            repo.storage.delete(info.name)
            stats.packs_deleted += 1
    stats.bytes_freed -= stats.bytes_repacked
    repo.reload_index()
