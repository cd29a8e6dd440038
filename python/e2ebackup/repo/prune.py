"""forget and prune: drop snapshots, then the data only they used.

Order is what makes prune safe against a crash at any point: new packs (live blobs copied out
of partly-used packs) and one new index are stored first; then one new head switches to them;
only then are the old index objects, the unused packs and the forgotten snapshots deleted. A
crash before the switch leaves extra objects (removed by the next prune); after it, only
garbage is left behind.

In a version-3 repository backups run beside a prune, so prune is two-phase (docs/FORMAT.md,
Many writers, Two-phase prune): it takes a prune lock, not the exclusive one; packs nothing
uses are *condemned* in the new index, not deleted, and deleted by a later prune once the grace
period has passed (a backup that loaded its index before may still reuse their blobs: a prune
finding such a blob used makes its pack live again); forgotten snapshots and replaced index
objects are deleted once their tombstones are that old. Packs no index lists are left alone
(they may be a running backup's; the next backup adopts them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.index import Index
from e2ebackup.repo.names import check_id, pack_name
from e2ebackup.repo.pack import BlobLocation, PackWriter
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.retention import Retention, group_key, select

# A pack whose unreferenced blobs are at most this share of it is kept as it is (restic's
# --max-unused, per pack): repacking reads and writes the whole pack to free that share.
REPACK_UNUSED = 0.2

#: Version 3: how long a condemned pack, a forgotten snapshot or a replaced index object is
#: kept before a prune deletes it. Longer than any backup that runs beside a prune.
DEFAULT_GRACE = 86400.0

#: Version 3: a tombstone whose object is deleted is left out of the next head once it is this
#: old (docs/FORMAT.md, Many writers: one day, far beyond the one hour a commit may be stale).
TOMBSTONE_KEEP = 86400.0


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
    # Version 3 (two-phase prune): packs marked for deletion by this prune, condemned packs
    # made live again (a backup beside an earlier prune reused their blobs), and condemned
    # packs waiting for the grace period (with their bytes).
    packs_condemned: int = 0
    packs_revived: int = 0
    packs_kept_condemned: int = 0
    bytes_condemned: int = 0


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
    grace: float = DEFAULT_GRACE,
) -> PruneStats:
    """Forgets the snapshots the retention ``policy`` (or just ``keep_last``) does not keep,
    applied to each group of snapshots (by default: same host, same paths) apart, and with
    ``prune`` removes the data nothing references any more: packs with nothing live are
    deleted, packs more than ``repack_unused`` unreferenced are rewritten with their live blobs
    only, and the others are kept as they are until they cross that line.

    In a version-3 repository (many writers) what is no longer used is first condemned and
    deleted only ``grace`` seconds later, by this prune or a later one (0: at once, safe only
    while no backup runs); forgotten snapshots likewise."""
    if not grace >= 0:
        raise InvalidArgument(f"the grace period is a number of seconds >= 0, not {grace!r}")
    policy = policy or Retention(keep_last=keep_last)
    stats = PruneStats()
    two_phase = repo.version >= 3
    with repo.lock(exclusive=not two_phase, prune=two_phase, wait=lock_wait):
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
            if not two_phase:  # version 3: tombstones; prune deletes the objects after grace
                for sid in drop:
                    repo.storage.delete(f"snapshots/{check_id(sid, 'snapshot')}")
            stats.snapshots_removed = len(drop)
        if prune and two_phase:
            _prune_two_phase(repo, stats, repack_unused, grace)
        elif prune:
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


def _prune_two_phase(
    repo: Repository, stats: PruneStats, repack_unused: float, grace: float
) -> None:
    """Version 3, under the prune lock: the five steps of docs/FORMAT.md, Two-phase prune."""
    head = repo.head(refresh=True)
    repo.reload_index()
    index = repo.index  # the index objects of ``head``: the ones this prune replaces
    read = list(index.names)
    stored_packs = {i.name.rsplit("/", 1)[-1] for i in repo.storage.list("data/")}
    # 1. The blobs the live snapshots use (version 4: the drops' too).
    used = _used_blobs(repo, repo.snapshot_ids())
    now = time.time()
    new_index = Index()
    held: set[bytes] = set()  # used blobs a pack revived in this prune holds
    copied: set[bytes] = set()  # blobs copied into new packs by this prune
    due: list[str] = []  # condemned packs to delete once the new index is committed
    # Version 4: drops' packs are listed by their drops, not by the index: one is condemned
    # by a tombstone of its name, made live again by clearing it (FORMAT.md, Writers that
    # cannot read). It is kept whole while any of its blobs is used (never repacked).
    condemned_drop_packs: list[str] = []
    revived_drop_packs: list[str] = []
    marked_drop_packs: list[str] = []  # condemned, waiting: their writers' marks

    def stored(pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]) -> None:
        new_index.add_pack(pack_id, size, entries)

    def condemn(
        pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]], t: float
    ) -> None:
        # Listed condemned even when deleted below: a backup that loads the index meanwhile
        # then neither adopts it as an unindexed pack nor reuses its blobs. A later prune
        # drops the listing once the pack is gone.
        new_index.add_pack(pack_id, size, entries, condemned=t)
        if now - t >= grace:
            due.append(pack_id)
        else:
            stats.packs_kept_condemned += 1
            stats.bytes_condemned += size

    writer = PackWriter(repo.storage, repo.keys, stored)
    try:
        for pack_id, entries in index.pack_entries().items():
            size = index.pack_sizes[pack_id]
            if repo.is_drop_pack(pack_id):
                name = pack_name(pack_id)
                when = head.dropped.get(name)
                if any(b in used for b, _ in entries):
                    if when is not None:
                        revived_drop_packs.append(name)
                        stats.packs_revived += 1
                    continue
                if when is None:
                    condemned_drop_packs.append(name)
                    stats.packs_condemned += 1
                    when = now
                if now - when >= grace:
                    due.append(pack_id)
                else:
                    marked_drop_packs.append(pack_id)
                    stats.packs_kept_condemned += 1
                    stats.bytes_condemned += size
                continue
            when = index.condemned.get(pack_id)
            if when is not None:
                # 3. Condemned: live again when it holds a used blob no live pack holds (a
                # backup beside the prune that condemned it reused it); else left condemned.
                wanted = {b for b, _ in entries if b in used and b not in index} - held
                if wanted:
                    held |= wanted
                    new_index.add_pack(pack_id, size, entries)
                    stats.packs_revived += 1
                elif pack_id in stored_packs:
                    condemn(pack_id, size, entries, when)
                # else: deleted by an earlier prune; no longer listed.
                continue
            # 2. Live: condemned when it holds no used blob, or when it is repacked.
            live = [(b, loc) for b, loc in entries if b in used]
            unused = sum(loc.length for b, loc in entries if b not in used)
            if live and unused <= repack_unused * size:
                new_index.add_pack(pack_id, size, entries)
                stats.bytes_unused_kept += unused
                continue
            stats.blobs_removed += len(entries) - len(live)
            if live:
                stats.packs_repacked += 1
                raw = repo.storage.read(pack_name(pack_id), length=size)
                for blob_id, loc in live:
                    # A blob two packs hold (stored by two writers, or adopted after a crash)
                    # is copied once: a pack that holds a blob twice is waste.
                    if blob_id in copied:
                        continue
                    copied.add(blob_id)
                    # Sealed blobs are bound to their id, not their pack: copied as they are.
                    writer.add(loc.kind, blob_id, raw[loc.offset : loc.offset + loc.length])
            stats.packs_condemned += 1
            condemn(pack_id, size, entries, now)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    stats.bytes_repacked = writer.bytes_uploaded
    # 4. One index for every pack read, as decided, and the new packs, replacing those read.
    # Tombstones of objects deleted earlier and old enough are left out now.
    present = _stored_names(repo)
    # A drop's tombstone stays (its writer's chain names it); a drop's pack's stays while a
    # stored drop names the pack (its absence is then no damage).
    named = {pack_name(p) for d in repo.drop_view().drops for p, _, _ in d.packs}
    clear = [
        n
        for n, t in head.dropped.items()
        if n not in present
        and now - t >= TOMBSTONE_KEEP
        and not n.startswith("drops/")
        and n not in named
    ]
    new_name = new_index.save_new(repo.storage, repo.keys) if new_index.has_new() else None
    committed = repo.commit(
        remove_indexes=read,
        add_indexes=[new_name] if new_name else [],
        clear_tombstones=clear + revived_drop_packs,
        condemn=condemned_drop_packs,
    )
    # Writers cannot read the heads: an empty ``condemned/<pack id>`` tells them not to reuse
    # a condemned drop pack (its tombstone tells readers). Made again if a crash lost it.
    marks = {i.name for i in repo.storage.list("condemned/")} if marked_drop_packs else set()
    for pack_id in marked_drop_packs:
        if f"condemned/{pack_id}" not in marks:
            repo.storage.put_bytes(f"condemned/{pack_id}", b"")
    for name in revived_drop_packs:
        repo.storage.delete(f"condemned/{name.rsplit('/', 1)[1]}")
    # 5. From here on, what is deleted is past its grace period.
    for pack_id in due:
        repo.storage.delete(pack_name(pack_id))
        if repo.is_drop_pack(pack_id):
            repo.storage.delete(f"condemned/{pack_id}")
        stats.packs_deleted += 1
        stats.bytes_freed += index.pack_sizes[pack_id]
    _delete_spent_drops(repo, committed.dropped, stored_packs - set(due), grace)
    stats.bytes_freed -= stats.bytes_repacked
    now = time.time()
    listed = set(committed.indexes) | {f"snapshots/{sid}" for sid in committed.snapshots}
    deleted = []
    for name, when in committed.dropped.items():
        # A dropped name is never listed (FORMAT.md); checked again, as it decides a delete.
        if name in present and name not in listed and now - when >= grace:
            repo.storage.delete(name)
            deleted.append(name)
    old = [n for n in deleted if now - committed.dropped[n] >= TOMBSTONE_KEEP]
    if old:
        repo.commit(clear_tombstones=old)
    repo.reload_index()


def _delete_spent_drops(
    repo: Repository, dropped: dict[str, float], stored: set[str], grace: float
) -> None:
    """Deletes each drop forgotten at least ``grace`` ago none of whose packs is ``stored``
    (ids) any more: nothing of it can serve a restore or the writer's later drops. Its
    tombstone stays (the writer's next drop names it as ``prev``)."""
    now = time.time()
    for drop in repo.drop_view().drops:
        when = dropped.get(drop.name)
        if when is None or now - when < grace:
            continue
        if all(p not in stored for p, _, _ in drop.packs):
            repo.storage.delete(drop.name)


def _stored_names(repo: Repository) -> set[str]:
    """The ``snapshots/`` and ``index/`` objects the storage holds."""
    return {i.name for prefix in ("snapshots/", "index/") for i in repo.storage.list(prefix)}
