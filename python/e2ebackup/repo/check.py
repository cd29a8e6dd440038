"""verify: the repository's structure, and with ``read_data`` every byte of every pack.

Problems are collected, not raised one by one, so a damaged repository gets one full report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from e2ebackup.errors import E2EBackupError, InvalidTag, ObjectNotFound
from e2ebackup.repo.objects import KIND_TREE, RepositoryCorrupted, pack_name
from e2ebackup.repo.pack import parse_pack_header
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import decode_tree


@dataclass
class VerifyReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshots: int = 0
    trees: int = 0
    packs: int = 0
    blobs_read: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


Progress = Callable[[VerifyReport, str], None]


def verify(
    repo: Repository, *, read_data: bool = False, progress: Progress | None = None
) -> VerifyReport:
    report = VerifyReport()
    with repo.lock(exclusive=False):
        _structure(repo, report)
        if read_data and not report.errors:
            _read_data(repo, report, progress)
    return report


def _structure(repo: Repository, report: VerifyReport) -> None:
    slots, _ = repo.key_slots()
    if slots.damaged:
        report.errors.append(f"{slots.damaged} key slot(s) are damaged")
    try:
        head = repo.head(refresh=True)
        index = repo.index
    except (RepositoryCorrupted, ObjectNotFound) as e:
        report.errors.append(str(e))
        return
    stored = {o.name.split("/", 1)[1] for o in repo.storage.list("snapshots/")}
    for sid in sorted(stored - set(head.snapshots)):
        report.warnings.append(
            f"snapshot {sid[:8]} is not in the repository's head: left by an interrupted backup, "
            "or replayed; it is ignored (forget --prune removes it)"
        )
    for sid in head.snapshots:
        if sid not in stored:
            report.errors.append(f"snapshot {sid[:8]} was deleted from the storage")
    sizes = {o.name.rsplit("/", 1)[-1]: o.size for o in repo.storage.list("data/")}
    for pack_id, size in index.pack_sizes.items():
        if pack_id not in sizes:
            report.errors.append(f"pack {pack_id[:16]} is missing from the storage")
        elif sizes[pack_id] != size:
            report.errors.append(
                f"pack {pack_id[:16]} has {sizes[pack_id]} bytes, the index says {size}"
            )
    for pack_id in sizes.keys() - index.pack_sizes.keys():
        report.warnings.append(f"pack {pack_id[:16]} is not in the index (prune removes it)")
    seen_trees: set[str] = set()
    for sid in head.snapshots:
        if sid not in stored:
            continue
        try:
            snap = repo.load_snapshot(sid)
        except RepositoryCorrupted as e:
            report.errors.append(str(e))
            continue
        report.snapshots += 1
        _walk(repo, str(snap["tree"]), seen_trees, report, f"snapshot {sid[:8]}")


def _walk(repo: Repository, tree_id: str, seen: set[str], report: VerifyReport, where: str) -> None:
    stack = [(tree_id, where)]
    while stack:
        tid, path = stack.pop()
        if tid in seen:
            continue
        seen.add(tid)
        try:
            entries = decode_tree(repo.read_blob(KIND_TREE, bytes.fromhex(tid)))
        except (RepositoryCorrupted, E2EBackupError) as e:
            report.errors.append(f"{path}: {e}")
            continue
        report.trees += 1
        for entry in entries:
            child = f"{path}/{entry['name']}"
            if entry.get("type") == "dir":
                stack.append((entry["subtree"], child))
            for cid in entry.get("content", []):
                if bytes.fromhex(cid) not in repo.index:
                    report.errors.append(f"{child}: data blob {cid[:16]} is missing")


def _read_data(repo: Repository, report: VerifyReport, progress: Progress | None) -> None:
    index = repo.index
    expected: dict[str, dict[bytes, tuple[int, int, int]]] = {}
    for blob_id, loc in index.items():
        expected.setdefault(loc.pack, {})[blob_id] = (loc.kind, loc.offset, loc.length)
    for pack_id in sorted(index.pack_sizes):
        try:
            raw = repo.storage.read(pack_name(pack_id))
        except ObjectNotFound:
            continue  # already reported
        report.packs += 1
        report.bytes_read += len(raw)
        try:
            entries = parse_pack_header(repo.keys, pack_id, raw, len(raw))
        except RepositoryCorrupted as e:
            report.errors.append(str(e))
            continue
        for blob_id, loc in entries:
            want = expected.get(pack_id, {}).get(blob_id)
            if want is not None and want != (loc.kind, loc.offset, loc.length):
                report.errors.append(
                    f"pack {pack_id[:16]}: blob {blob_id.hex()[:16]} is not where the index says"
                )
            try:
                repo.codec.open(loc.kind, blob_id, raw[loc.offset : loc.offset + loc.length])
                report.blobs_read += 1
            except InvalidTag:
                report.errors.append(f"pack {pack_id[:16]}: blob {blob_id.hex()[:16]} is damaged")
        if progress is not None:
            progress(report, pack_id)
