"""Restore: stream a snapshot (all of it, a subtree or one file) into a target folder.

Each file is written to a temporary name beside its destination and renamed only once all of
its blobs authenticated and its size matched, so a failed or interrupted restore never leaves
a file that looks complete; everything is flushed to disk before the restore reports success.
Existing files are never replaced unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from e2ebackup.errors import E2EBackupError, InvalidArgument
from e2ebackup.repo.objects import KIND_DATA, KIND_TREE, RepositoryCorrupted, pack_name
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import Entry, decode_tree

# Adjacent blobs of one pack are fetched with one ranged read of at most this size.
COALESCE = 32 << 20


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    bytes_total: int = 0
    skipped_existing: list[str] = field(default_factory=list)


Progress = Callable[[RestoreStats, str], None]


class RestoreConflict(E2EBackupError):
    """Files in the target exist and overwriting was not asked for."""


def _tree(repo: Repository, tree_id: str) -> list[Entry]:
    return decode_tree(repo.read_blob(KIND_TREE, bytes.fromhex(tree_id)))


def _select(repo: Repository, root: list[Entry], subpath: str | None) -> list[Entry]:
    """The entries to restore: the whole root, or the one entry at ``subpath``."""
    if not subpath:
        return root
    parts = [p for p in subpath.strip("/").split("/") if p]
    entries = root
    for i, part in enumerate(parts):
        match = next((e for e in entries if e["name"] == part), None)
        if match is None:
            raise InvalidArgument(f"{subpath!r} is not in the snapshot")
        if i == len(parts) - 1:
            return [match]
        if match.get("type") != "dir":
            raise InvalidArgument(f"{'/'.join(parts[: i + 1])!r} is not a directory")
        entries = _tree(repo, match["subtree"])
    return root


class Restorer:
    def __init__(
        self, repo: Repository, *, overwrite: bool = False, progress: Progress | None = None
    ) -> None:
        self.repo = repo
        self.overwrite = overwrite
        self.progress = progress
        self.stats = RestoreStats()

    def _blobs(self, ids: list[str]) -> list[bytes]:
        """Reads and opens the data blobs ``ids``, coalescing adjacent ones of one pack."""
        index = self.repo.index
        locs = [index.get(bytes.fromhex(i)) for i in ids]
        out: list[bytes] = []
        i = 0
        while i < len(locs):
            j = i + 1
            while (
                j < len(locs)
                and locs[j].pack == locs[i].pack
                and locs[j].offset == locs[j - 1].offset + locs[j - 1].length
                and locs[j].offset + locs[j].length - locs[i].offset <= COALESCE
            ):
                j += 1
            start = locs[i].offset
            end = locs[j - 1].offset + locs[j - 1].length
            raw = self.repo.storage.read(pack_name(locs[i].pack), offset=start, length=end - start)
            for k in range(i, j):
                loc = locs[k]
                if loc.kind != KIND_DATA:
                    raise RepositoryCorrupted(f"blob {ids[k][:16]} is not a data blob")
                sealed = raw[loc.offset - start : loc.offset - start + loc.length]
                out.append(self._open(bytes.fromhex(ids[k]), sealed))
            i = j
        return out

    def _open(self, blob_id: bytes, sealed: bytes) -> bytes:
        from e2ebackup.errors import InvalidTag

        try:
            return self.repo.codec.open(KIND_DATA, blob_id, sealed)
        except InvalidTag:
            raise RepositoryCorrupted(
                f"blob {blob_id.hex()[:16]} is damaged or was swapped"
            ) from None

    def _exists(self, path: str) -> bool:
        if os.path.lexists(path) and not self.overwrite:
            self.stats.skipped_existing.append(path)
            return True
        return False

    def _file(self, entry: Entry, path: str) -> None:
        if self._exists(path):
            return
        folder = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{entry['name'][:100]}.", suffix=".e2ebackup-tmp", dir=folder
        )
        try:
            size = 0
            with os.fdopen(fd, "wb") as f:
                content = entry.get("content", [])
                for start in range(0, len(content), 16):
                    for blob in self._blobs(content[start : start + 16]):
                        f.write(blob)
                        size += len(blob)
                        self.stats.bytes += len(blob)
                    self._report(path)
                if size != entry.get("size", size):
                    raise RepositoryCorrupted(
                        f"{path}: restored {size} bytes, the snapshot says {entry.get('size')}"
                    )
                f.flush()
            os.chmod(tmp, entry.get("mode", 0o644))
            self._chown(tmp, entry)
            os.utime(tmp, ns=(entry.get("mtime_ns", 0), entry.get("mtime_ns", 0)))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.stats.files += 1

    @staticmethod
    def _chown(path: str, entry: Entry) -> None:
        if os.geteuid() == 0 and "uid" in entry:
            with contextlib.suppress(OSError):
                os.chown(path, entry["uid"], entry.get("gid", -1), follow_symlinks=False)

    def _symlink(self, entry: Entry, path: str) -> None:
        if self._exists(path):
            return
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(entry.get("target", ""), path)
        self._chown(path, entry)
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(path, ns=(entry.get("mtime_ns", 0),) * 2, follow_symlinks=False)
        self.stats.symlinks += 1

    def _dir(self, entry: Entry, path: str) -> None:
        if (os.path.lexists(path) and not os.path.isdir(path)) or os.path.islink(path):
            if not self.overwrite:
                self.stats.skipped_existing.append(path)
                return
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        for child in _tree(self.repo, entry["subtree"]):
            self._entry(child, os.path.join(path, child["name"]))
        os.chmod(path, entry.get("mode", 0o755))
        self._chown(path, entry)
        os.utime(path, ns=(entry.get("mtime_ns", 0),) * 2)
        self.stats.dirs += 1

    def _entry(self, entry: Entry, path: str) -> None:
        kind = entry.get("type")
        if kind == "file":
            self._file(entry, path)
        elif kind == "dir":
            self._dir(entry, path)
        elif kind == "symlink":
            self._symlink(entry, path)
        else:
            raise RepositoryCorrupted(f"unknown entry type {kind!r} in the snapshot")

    def _report(self, path: str) -> None:
        if self.progress is not None:
            self.progress(self.stats, path)

    def run(
        self, snapshot: dict[str, object], target: str, subpath: str | None = None
    ) -> RestoreStats:
        root = _tree(self.repo, str(snapshot["tree"]))
        selected = _select(self.repo, root, subpath)
        self.stats.bytes_total = _total(self.repo, selected)
        os.makedirs(target, exist_ok=True)
        for entry in selected:
            self._entry(entry, os.path.join(target, entry["name"]))
        # One flush of everything at the end instead of an fsync per file (which made restoring
        # many small files several times slower): a file is renamed into place only once all
        # of it authenticated; this makes the whole restore durable before it reports success.
        os.sync()
        self._report("")
        return self.stats


def _total(repo: Repository, entries: list[Entry]) -> int:
    total = 0
    for e in entries:
        if e.get("type") == "file":
            total += int(e.get("size", 0))
        elif e.get("type") == "dir":
            total += _total(repo, _tree(repo, e["subtree"]))
    return total


def restore(
    repo: Repository,
    snapshot_ref: str,
    target: str,
    *,
    subpath: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RestoreStats:
    """Restores a snapshot (id, unique prefix or ``latest``) into ``target``."""
    with repo.lock(exclusive=False):
        _, snapshot = repo.find_snapshot(snapshot_ref)
        return Restorer(repo, overwrite=overwrite, progress=progress).run(snapshot, target, subpath)
