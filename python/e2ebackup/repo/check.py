"""verify: the repository's structure, and with ``read_data`` every byte of every pack.

Problems are collected, not raised one by one, so a damaged repository gets one full report.
Folder listings are fetched a level of the tree at a time, and packs are read and checked a
few at once (the storage's concurrency, at least two): a remote store's latency and a local
disk's reads overlap with decryption. Memory: about one pack per thread and one waiting.

The reading of the packs is :func:`check_pack` per pack, from the storage and the keys alone:
:mod:`e2ebackup.dask` runs the same function on the workers of a cluster (``read_packs``).
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Iterable, Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from e2ebackup import _core
from e2ebackup._parallel import ordered_map
from e2ebackup.errors import (
    E2EBackupError,
    InvalidArgument,
    InvalidTag,
    ObjectNotFound,
    RepositoryCorrupted,
    TreeTooDeep,
)
from e2ebackup.repo.labels import KIND_DATA, RepoKeys
from e2ebackup.repo.names import pack_name
from e2ebackup.repo.pack import BlobLocation, parse_pack_header, read_pack_header
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import MAX_DEPTH, Entry
from e2ebackup.storage.base import Storage

__all__ = [
    "Expected",
    "PackCheck",
    "PackReader",
    "Progress",
    "VerifyReport",
    "check_pack",
    "expected_blobs",
    "parse_subset",
    "verify",
]

#: Where the index puts the blobs of one pack: blob id -> (kind, offset, length).
Expected = dict[bytes, tuple[int, int, int]]


@dataclass
class VerifyReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshots: int = 0
    trees: int = 0
    packs: int = 0
    headers: int = 0  # pack headers authenticated and compared with the index
    blobs_read: int = 0
    bytes_read: int = 0
    # The totals, known before each stage starts (a progress display's ETA).
    headers_to_check: int = 0
    packs_to_read: int = 0
    bytes_to_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class PackCheck:
    """What reading one pack found: its size, the blobs that opened, and the damage (one line
    each, no content, no key). ``found`` is False for a pack that was not read: missing from
    the storage (the structure check reported it), or not read at all (the reason in
    ``errors``); it is not counted among the packs read."""

    found: bool = True
    size: int = 0
    blobs: int = 0
    errors: list[str] = field(default_factory=list)
    #: The plaintext length of each data blob that opened: a file's blobs must add up to the
    #: size its snapshot gives, which the restore checks too.
    lengths: dict[bytes, int] = field(default_factory=dict)


Progress = Callable[[VerifyReport, str], None]
#: Reads and checks the packs it is given; yields ``(pack id, PackCheck)`` for every one of
#: them, in any order.
PackReader = Callable[[list[str]], Iterable[tuple[str, PackCheck]]]


def verify(
    repo: Repository,
    *,
    read_data: bool = False,
    progress: Progress | None = None,
    threads: int | None = None,
    subset: str | None = None,
    read_packs: PackReader | None = None,
) -> VerifyReport:
    """Checks the structure; with ``read_data`` also reads and opens every blob of every pack,
    or of a ``subset`` of the packs (:func:`parse_subset`: ``"n/t"`` or ``"x%"``), so a large
    cloud repository can be read through over several runs.

    ``progress(report, pack_id)`` is called after each pack header is checked (of
    ``report.headers_to_check``), then after each pack is read (``report.packs_to_read``
    packs, ``report.bytes_to_read`` bytes, set before the first is read).

    ``read_packs`` reads the packs instead of this process's threads (:mod:`e2ebackup.dask`:
    the workers of a cluster, each running :func:`check_pack`); the report is the same."""
    chosen = parse_subset(subset) if subset else None
    report = VerifyReport()
    threads = threads or repo.storage.read_concurrency
    with (
        repo.read_lock(),
        ThreadPoolExecutor(threads, thread_name_prefix="e2ebackup-verify") as pool,
    ):
        roots = _structure(repo, report, pool, progress)
        if (read_data or chosen) and not report.errors:
            packs = sorted(repo.index.pack_sizes)
            if chosen is not None:
                packs = chosen(packs)
            report.packs_to_read = len(packs)
            report.bytes_to_read = sum(repo.index.pack_sizes[p] for p in packs)
            if read_packs is None:
                read_packs = _reader(repo, pool, threads)
            lengths = _read_data(packs, report, progress, read_packs)
            _check_file_sizes(repo, roots, lengths, report, pool)
    return report


def _structure(
    repo: Repository, report: VerifyReport, pool: ThreadPoolExecutor, progress: Progress | None
) -> list[tuple[str, str]]:
    """The structure checks; returns the snapshots' root trees (tree id, where)."""
    slots, _ = repo.key_slots()
    if slots.damaged:
        report.errors.append(f"{slots.damaged} key slot(s) are damaged")
    try:
        head = repo.head(refresh=True)
        index = repo.index
        drops = repo.drop_view()
    except (RepositoryCorrupted, ObjectNotFound) as e:
        report.errors.append(str(e))
        return []
    # Version 4: a damaged, missing or conflicting drop (docs/FORMAT.md, Writers that cannot
    # read) is damage, though listings go on without it.
    report.errors += drops.problems
    stored = {o.name.split("/", 1)[1] for o in repo.storage.list("snapshots/")}
    # Version 3: forgotten snapshots stay stored until a prune past the grace period.
    forgotten = {name.split("/", 1)[1] for name in head.dropped if name.startswith("snapshots/")}
    for sid in sorted(stored - set(head.snapshots)):
        report.warnings.append(
            f"snapshot {sid[:8]} is not in the repository's head: forgotten, deleted by a prune "
            "once the grace period is over"
            if sid in forgotten
            else f"snapshot {sid[:8]} is not in the repository's head: left by an interrupted "
            "backup, or replayed; it is ignored (forget --prune removes it)"
        )
    for sid in head.snapshots:
        if sid not in stored:
            report.errors.append(f"snapshot {sid[:8]} was deleted from the storage")
    sizes = {o.name.rsplit("/", 1)[-1]: o.size for o in repo.storage.list("data/")}
    for pack_id, size in index.pack_sizes.items():
        if pack_id not in sizes and pack_id in index.condemned:
            continue  # version 3: deleted after its grace period, listed until the next prune
        if pack_id not in sizes:
            report.errors.append(f"pack {pack_id[:16]} is missing from the storage")
        elif sizes[pack_id] != size:
            report.errors.append(
                f"pack {pack_id[:16]} has {sizes[pack_id]} bytes, the index says {size}"
            )
    for pack_id in sizes.keys() - index.pack_sizes.keys():
        report.warnings.append(
            f"pack {pack_id[:16]} is not in the index (the next backup adopts it, if a backup "
            "still running has not indexed it by then)"
            if repo.many_writers
            else f"pack {pack_id[:16]} is not in the index (prune removes it)"
        )
    present = [p for p, size in index.pack_sizes.items() if sizes.get(p) == size]
    report.headers_to_check = len(present)
    _check_headers(repo, sorted(present), report, pool, progress)
    roots: list[tuple[str, str]] = []
    for sid in head.snapshots:
        if sid not in stored:
            continue
        try:
            snap = repo.load_snapshot(sid)
        except RepositoryCorrupted as e:
            report.errors.append(str(e))
            continue
        report.snapshots += 1
        roots.append((str(snap["tree"]), f"snapshot {sid[:8]}"))
    for drop in drops.live:
        report.snapshots += 1
        roots.append((str(drop.snapshot["tree"]), f"snapshot {drop.snapshot_id[:8]}"))
    _walk(repo, roots, report, pool, gone=index.condemned.keys() - sizes.keys())
    return roots


def _check_file_sizes(
    repo: Repository,
    roots: list[tuple[str, str]],
    lengths: dict[bytes, int],
    report: VerifyReport,
    pool: ThreadPoolExecutor,
) -> None:
    """Every file whose blobs were all read: their plaintext adds up to its size (a restore
    refuses the file otherwise). e2ebackup before 2026-12-03 kept the listed size of a file
    that grew or shrank while it was read; such a snapshot is reported here, not at restore."""

    def on_file(path: str, entry: Entry) -> None:
        total = 0
        for cid in entry.get("content", []):
            n = lengths.get(bytes.fromhex(cid))
            if n is None:
                return  # a blob not read (a subset): not checked
            total += n
        if total != entry.get("size", 0):
            report.errors.append(
                f"{path}: its chunks hold {total:,} bytes, the snapshot says "
                f"{entry.get('size', 0):,} (it changed while it was backed up; a restore "
                "refuses this file)"
            )

    # The listings were read and checked by the structure walk: its counts are not kept.
    _walk(repo, roots, VerifyReport(), pool, on_file=on_file)


def expected_blobs(repo: Repository) -> dict[str, Expected]:
    """Where the index puts each blob: pack id -> blob id -> (kind, offset, length)."""
    expected: dict[str, Expected] = {}
    for blob_id, loc in repo.index.items():
        expected.setdefault(loc.pack, {})[blob_id] = (loc.kind, loc.offset, loc.length)
    return expected


def _compare_header(
    pack_id: str,
    entries: list[tuple[bytes, BlobLocation]],
    expected: Expected,
) -> list[str]:
    """A pack's authenticated header against the index: every blob the index places in this
    pack must be there, at the same place."""
    # A pack may hold a blob twice (e2ebackup's prune before 2026-12-03 copied a blob that two
    # packs held from both): the index names one of the places, any of them is right.
    found: dict[bytes, set[tuple[int, int, int]]] = {}
    for blob_id, loc in entries:
        found.setdefault(blob_id, set()).add((loc.kind, loc.offset, loc.length))
    return [
        f"pack {pack_id[:16]}: blob {blob_id.hex()[:16]} is not where the index says"
        for blob_id, want in sorted(expected.items())
        if want not in found.get(blob_id, set())
    ]


def _check_headers(
    repo: Repository,
    packs: list[str],
    report: VerifyReport,
    pool: ThreadPoolExecutor,
    progress: Progress | None,
) -> None:
    """Reads each pack's header (one small read from the end of the pack), authenticates it
    and compares it with the index (docs/FORMAT.md, Packs): a damaged header is reported even
    without ``read_data``. Restores never read headers, but rebuilding an index does."""
    expected = expected_blobs(repo)
    sizes = repo.index.pack_sizes

    def header(pack_id: str) -> list[tuple[bytes, BlobLocation]] | E2EBackupError:
        try:
            keys = repo.keys_for(pack_id)
            return read_pack_header(repo.storage, keys, pack_id, sizes[pack_id])
        except E2EBackupError as e:  # RepositoryCorrupted, StorageError
            return e

    threads = repo.storage.read_concurrency
    for pack_id, entries in zip(
        packs, ordered_map(header, packs, threads=threads, pool=pool), strict=True
    ):
        if isinstance(entries, E2EBackupError):
            report.errors.append(str(entries))
        else:
            report.headers += 1
            report.errors += _compare_header(pack_id, entries, expected.get(pack_id, {}))
        if progress is not None:
            progress(report, pack_id)


def _walk(
    repo: Repository,
    roots: list[tuple[str, str]],
    report: VerifyReport,
    pool: ThreadPoolExecutor,
    gone: AbstractSet[str] = frozenset(),
    on_file: Callable[[str, Entry], None] | None = None,
) -> None:
    """Every folder listing reachable from ``roots`` (tree id, where) is read and every blob it
    names is in the index, in a pack not ``gone`` (condemned and deleted, version 3); the
    listings of one level are fetched at once. ``on_file(path, entry)`` is called for each
    file's entry."""

    def listing(tree_id: str) -> list[Entry] | E2EBackupError:
        try:
            return repo.read_tree(tree_id)
        except E2EBackupError as e:  # RepositoryCorrupted among them
            return e

    seen: set[str] = set()
    level = roots
    depth = 0
    while level:
        level = [(tid, path) for tid, path in dict(level).items() if tid not in seen]
        if depth > MAX_DEPTH and level:
            report.errors.append(str(TreeTooDeep(level[0][1], MAX_DEPTH)))
            return
        depth += 1
        seen.update(tid for tid, _ in level)
        next_level: list[tuple[str, str]] = []
        for (_, path), entries in zip(
            level, pool.map(listing, [tid for tid, _ in level]), strict=True
        ):
            if isinstance(entries, E2EBackupError):
                report.errors.append(f"{path}: {entries}")
                continue
            report.trees += 1
            for entry in entries:
                child = f"{path}/{entry['name']}"
                if entry.get("type") == "dir":
                    next_level.append((entry["subtree"], child))
                elif on_file is not None and entry.get("type") == "file":
                    on_file(child, entry)
                for cid in entry.get("content", []):
                    loc = repo.index.find(bytes.fromhex(cid))
                    if loc is None or loc.pack in gone:
                        report.errors.append(f"{child}: data blob {cid[:16]} is missing")
        level = next_level


def check_pack(
    storage: Storage,
    keys: RepoKeys,
    pack_id: str,
    size: int,
    expected: Expected,
    *,
    codec: _core.BlobCodec | None = None,
) -> PackCheck:
    """Reads one pack whole (``size`` bytes, as the index says), authenticates its header,
    compares it with ``expected`` and opens every blob the header lists. Needs the pack-header
    key and the blob keys of ``keys`` only. Raises what the storage raises, but for a missing
    pack (``found`` False: the structure check reports it)."""
    try:
        raw = storage.read(pack_name(pack_id), length=size)
    except ObjectNotFound:
        return PackCheck(found=False)
    result = PackCheck(size=len(raw))
    try:
        entries = parse_pack_header(keys, pack_id, raw, len(raw))
    except RepositoryCorrupted as e:
        result.errors.append(str(e))
        return result
    codec = codec or keys.codec()
    view = memoryview(raw)
    result.errors += _compare_header(pack_id, entries, expected)
    for blob_id, loc in entries:
        try:
            blob = codec.open(loc.kind, blob_id, view[loc.offset : loc.offset + loc.length])
            result.blobs += 1
            if loc.kind == KIND_DATA:
                result.lengths[blob_id] = len(blob)
        except InvalidTag:
            result.errors.append(f"pack {pack_id[:16]}: blob {blob_id.hex()[:16]} is damaged")
    return result


def _reader(repo: Repository, pool: ThreadPoolExecutor, threads: int) -> PackReader:
    """This process's threads, a few packs at once, in order."""
    expected = expected_blobs(repo)
    sizes = repo.index.pack_sizes

    def check(pack_id: str) -> tuple[str, PackCheck]:
        found = expected.get(pack_id, {})
        keys, codec = repo.keys_for(pack_id), repo.codec_for(pack_id)
        return pack_id, check_pack(repo.storage, keys, pack_id, sizes[pack_id], found, codec=codec)

    return lambda packs: ordered_map(check, packs, threads=threads, pool=pool)


def _read_data(
    packs: list[str], report: VerifyReport, progress: Progress | None, read_packs: PackReader
) -> dict[bytes, int]:
    """Counts each pack as its result comes; the damage is listed in the order of ``packs``,
    however the packs were read. Returns the plaintext length of every data blob read."""
    results: dict[str, PackCheck] = {}
    lengths: dict[bytes, int] = {}
    for pack_id, result in read_packs(packs):
        lengths.update(result.lengths)
        result.lengths = {}  # held once, in ``lengths``
        results[pack_id] = result
        if not result.found:
            continue
        report.packs += 1
        report.bytes_read += result.size
        report.blobs_read += result.blobs
        if progress is not None:
            progress(report, pack_id)
    for pack_id in packs:
        if pack_id in results:
            report.errors += results[pack_id].errors
    missing = [p for p in packs if p not in results]
    if missing:  # a reader that lost some (a bug): never a silent pass
        report.errors.append(f"{len(missing)} pack(s) were not read, {missing[0][:16]} first")
    return lengths


def parse_subset(spec: str) -> Callable[[list[str]], list[str]]:
    """``"n/t"``: the n-th of t disjoint parts of the packs (by pack id; the t parts together
    are every pack, so t runs with n = 1..t read everything once). ``"x%"``: x percent of the
    packs (at least one), picked at random each time."""
    part = re.fullmatch(r"(\d+)/(\d+)", spec)
    if part:
        n, t = int(part[1]), int(part[2])
        if not 1 <= n <= t:
            raise InvalidArgument(f"--read-data-subset {spec}: n/t needs 1 <= n <= t")
        return lambda packs: [p for p in packs if int(p[:8], 16) % t == n - 1]
    share = re.fullmatch(r"(\d+(?:\.\d+)?)%", spec)
    if share and 0 < float(share[1]) <= 100:
        fraction = float(share[1]) / 100

        def sample(packs: list[str]) -> list[str]:
            count = min(len(packs), max(1, math.ceil(len(packs) * fraction)))
            return sorted(secrets.SystemRandom().sample(packs, count)) if packs else []

        return sample
    raise InvalidArgument(f"--read-data-subset is n/t (like 1/5) or a percentage, not {spec!r}")
