"""Restore: stream a snapshot (all of it, a subtree or one file) into a target folder.

Each file is written to a temporary name beside its destination and renamed only once all of
its blobs authenticated and its size matched, so a failed or interrupted restore never leaves
a file that looks complete; everything is flushed to disk before the restore reports success.
Existing files are never replaced unless ``overwrite`` is set.

The walk is a plan of steps in order (make a folder, start a file, write a run of blobs, finish
a file, finish a folder). Adjacent blobs of one pack are fetched with one ranged read, also
across files (a folder of small files backed up together is a few reads, not one per file).
Reading and opening blobs runs ahead of writing in a few threads (the storage's concurrency:
2 on a local disk, 4 on S3), by at most ``LOOKAHEAD`` sealed bytes a thread: reads,
decryption and writes overlap, and a remote store's latency hides behind several reads at
once, while memory stays bounded whatever the size of the snapshot. Writes happen in order,
in the calling thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from e2ebackup.errors import E2EBackupError, InvalidArgument, InvalidTag
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.objects import KIND_DATA, KIND_TREE, RepositoryCorrupted, pack_name
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.tree import Entry, decode_tree

# Adjacent blobs of one pack are fetched with one ranged read of at most this size.
COALESCE = 8 << 20
# Sealed bytes a thread reads or opens ahead of the writer (one read each in flight); with the
# run being written, this bounds what restore holds in memory: about 2 x 8 MiB x threads.
LOOKAHEAD = 8 << 20
# Steps queued ahead of the writer (folders and empty files cost no bytes but still count).
MAX_STEPS_AHEAD = 4096
# Folder listings (tree blobs) kept from the first walk, which sizes the restore, for the
# second, which restores it: a remote store is not asked twice for each folder.
TREE_CACHE = 16 << 20


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    bytes_total: int = 0
    excluded: int = 0
    skipped_existing: list[str] = field(default_factory=list)


Progress = Callable[[RestoreStats, str], None]


class RestoreConflict(E2EBackupError):
    """Files in the target exist and overwriting was not asked for."""


def _check_includes(paths: list[str]) -> None:
    """Parts restored side by side must not land on one name or hold one another."""
    clean = [p.strip("/") for p in paths]
    names = [p.rpartition("/")[2] for p in clean]
    if len(set(names)) != len(names):
        raise InvalidArgument("two --include paths have the same name; restore them apart")
    for a in clean:
        for b in clean:
            if a != b and b.startswith(a + "/"):
                raise InvalidArgument(f"--include {b!r} is inside --include {a!r}")


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
        entries = repo.read_tree(match["subtree"])
    return root


@dataclass
class _Dir:
    entry: Entry
    path: str
    done: bool  # False: make the folder; True: its children are restored, set its metadata


@dataclass
class _FileStart:
    entry: Entry
    path: str


@dataclass
class _Read:
    """Adjacent blobs of one pack, fetched with one ranged read and opened off the writer."""

    pack: str
    start: int
    end: int
    blobs: list[tuple[bytes, BlobLocation]]
    future: Future[list[bytes]] | None = None

    def extend(self, run: _Run) -> bool:
        """Takes ``run`` into this read if it continues it (same pack, next byte, small enough)."""
        if self.future is not None or run.pack != self.pack or run.start != self.end:
            return False
        if run.end - self.start > COALESCE:
            return False
        run.read, run.first = self, len(self.blobs)
        self.blobs += run.blobs
        self.end = run.end
        return True


@dataclass
class _Run:
    """Adjacent blobs of one pack that belong to one file, in the file's order; written from
    the read that fetched them (``read.blobs[first : first + len(blobs)]``)."""

    pack: str
    start: int
    end: int
    blobs: list[tuple[bytes, BlobLocation]]
    read: _Read | None = None
    first: int = 0


@dataclass
class _FileEnd:
    entry: Entry
    path: str


@dataclass
class _Link:
    entry: Entry
    path: str


_Step = _Dir | _FileStart | _Run | _FileEnd | _Link


class Restorer:
    def __init__(
        self,
        repo: Repository,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        threads: int | None = None,
        excludes: Excludes | None = None,
    ) -> None:
        self.repo = repo
        self.excludes = excludes or Excludes()
        self.overwrite = overwrite
        self.progress = progress
        self.threads = threads or repo.storage.read_concurrency
        self.stats = RestoreStats()
        # The file being written: (stream, temporary name, bytes so far).
        self._open_file: tuple[IO[bytes], str, int] | None = None
        self._trees: dict[str, bytes] = {}
        self._trees_size = 0

    # -- folders --------------------------------------------------------------------------------

    def _read_tree(self, tree_id: str) -> bytes:
        return self.repo.read_blob(KIND_TREE, bytes.fromhex(tree_id))

    def _tree(self, tree_id: str) -> list[Entry]:
        raw = self._trees.pop(tree_id, None)
        if raw is None:
            raw = self._read_tree(tree_id)
        else:
            self._trees_size -= len(raw)
        return decode_tree(raw)

    def _excluded(self, entry: Entry, rel: str) -> bool:
        """Whether ``--exclude`` leaves out the entry at ``rel`` (its path in the snapshot)."""
        return bool(self.excludes) and self.excludes.excluded("/" + rel, entry["name"])

    def _measure(self, entries: list[Entry], base: str, pool: ThreadPoolExecutor) -> int:
        """The bytes to restore, walking the folders level by level with the listings of one
        level fetched at once; keeps the listings (up to TREE_CACHE) for the restore."""
        total = 0
        folders: list[tuple[str, str]] = []  # (listing id, path in the snapshot)

        def visit(children: list[Entry], parent: str) -> None:
            # Files are summed at once; only folders go on to the next level.
            nonlocal total
            for c in children:
                rel = f"{parent}/{c['name']}" if parent else c["name"]
                if self._excluded(c, rel):
                    continue
                if c.get("type") == "file":
                    total += int(c.get("size", 0))
                elif c.get("type") == "dir":
                    folders.append((str(c["subtree"]), rel))

        visit(entries, base)
        while folders:
            level, folders = folders, []
            ids = [tree_id for tree_id, _ in level]
            for (tree_id, rel), raw in zip(level, pool.map(self._read_tree, ids), strict=True):
                if self._trees_size + len(raw) <= TREE_CACHE and tree_id not in self._trees:
                    self._trees[tree_id] = raw
                    self._trees_size += len(raw)
                visit(decode_tree(raw), rel)
        return total

    # -- the plan -------------------------------------------------------------------------------

    def _skip_existing(self, path: str) -> bool:
        if os.path.lexists(path) and not self.overwrite:
            self.stats.skipped_existing.append(path)
            return True
        return False

    def _plan(self, entries: list[Entry], folder: str, base: str) -> Iterator[_Step]:
        for entry in entries:
            path = os.path.join(folder, entry["name"])
            rel = f"{base}/{entry['name']}" if base else entry["name"]
            if self._excluded(entry, rel):
                self.stats.excluded += 1
                continue
            kind = entry.get("type")
            if kind == "file":
                if not self._skip_existing(path):
                    yield _FileStart(entry, path)
                    yield from self._runs(entry.get("content", []))
                    yield _FileEnd(entry, path)
            elif kind == "dir":
                in_the_way = os.path.islink(path) or (
                    os.path.lexists(path) and not os.path.isdir(path)
                )
                if in_the_way and not self.overwrite:
                    self.stats.skipped_existing.append(path)
                    continue
                yield _Dir(entry, path, done=False)
                yield from self._plan(self._tree(entry["subtree"]), path, rel)
                yield _Dir(entry, path, done=True)
            elif kind == "symlink":
                if not self._skip_existing(path):
                    yield _Link(entry, path)
            else:
                raise RepositoryCorrupted(f"unknown entry type {kind!r} in the snapshot")

    def _runs(self, ids: list[str]) -> Iterator[_Run]:
        """The file's blobs as runs of adjacent blobs of one pack (one read each)."""
        run: _Run | None = None
        for hex_id in ids:
            blob_id = bytes.fromhex(hex_id)
            loc = self.repo.index.get(blob_id)
            if loc.kind != KIND_DATA:
                raise RepositoryCorrupted(f"blob {hex_id[:16]} is not a data blob")
            end = loc.offset + loc.length
            if run is not None and (
                loc.pack != run.pack or loc.offset != run.end or end - run.start > COALESCE
            ):
                yield run
                run = None
            if run is None:
                run = _Run(loc.pack, loc.offset, end, [])
            run.end = end
            run.blobs.append((blob_id, loc))
        if run is not None:
            yield run

    # -- reading ahead (worker threads) ---------------------------------------------------------

    def _fetch(self, run: _Read) -> list[bytes]:
        raw = self.repo.storage.read(
            pack_name(run.pack), offset=run.start, length=run.end - run.start
        )
        if len(raw) != run.end - run.start:
            raise RepositoryCorrupted(f"pack {run.pack[:16]} is shorter than the index says")
        view = memoryview(raw)
        return [
            self._open(blob_id, view[loc.offset - run.start : loc.offset - run.start + loc.length])
            for blob_id, loc in run.blobs
        ]

    def _open(self, blob_id: bytes, sealed: memoryview) -> bytes:
        try:
            return self.repo.codec.open(KIND_DATA, blob_id, sealed)
        except InvalidTag:
            raise RepositoryCorrupted(
                f"blob {blob_id.hex()[:16]} is damaged or was swapped"
            ) from None

    # -- writing (the calling thread, in order) -------------------------------------------------

    def _do(self, step: _Step) -> None:
        if isinstance(step, _Run):
            assert step.read is not None
            assert step.read.future is not None
            assert self._open_file is not None
            f, tmp, size = self._open_file
            opened = step.read.future.result()
            for blob in opened[step.first : step.first + len(step.blobs)]:
                f.write(blob)
                size += len(blob)
                self.stats.bytes += len(blob)
            self._open_file = (f, tmp, size)
            self._report(tmp)
        elif isinstance(step, _FileStart):
            fd, tmp = tempfile.mkstemp(
                prefix=f".{step.entry['name'][:100]}.",
                suffix=".e2ebackup-tmp",
                dir=os.path.dirname(step.path),
            )
            self._open_file = (os.fdopen(fd, "wb"), tmp, 0)
        elif isinstance(step, _FileEnd):
            self._finish_file(step.entry, step.path)
        elif isinstance(step, _Link):
            self._symlink(step.entry, step.path)
        elif not step.done:
            if os.path.lexists(step.path) and (
                os.path.islink(step.path) or not os.path.isdir(step.path)
            ):
                os.unlink(step.path)  # the plan skipped it unless overwriting
            os.makedirs(step.path, exist_ok=True)
        else:
            os.chmod(step.path, step.entry.get("mode", 0o755))
            self._chown(step.path, step.entry)
            os.utime(step.path, ns=(step.entry.get("mtime_ns", 0),) * 2)
            self.stats.dirs += 1

    def _finish_file(self, entry: Entry, path: str) -> None:
        assert self._open_file is not None
        f, tmp, size = self._open_file
        f.close()
        self._open_file = None
        try:
            if size != entry.get("size", size):
                raise RepositoryCorrupted(
                    f"{path}: restored {size} bytes, the snapshot says {entry.get('size')}"
                )
            os.chmod(tmp, entry.get("mode", 0o644))
            self._chown(tmp, entry)
            os.utime(tmp, ns=(entry.get("mtime_ns", 0), entry.get("mtime_ns", 0)))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.stats.files += 1

    def _discard_open_file(self) -> None:
        if self._open_file is not None:
            f, tmp, _ = self._open_file
            self._open_file = None
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @staticmethod
    def _chown(path: str, entry: Entry) -> None:
        if os.geteuid() == 0 and "uid" in entry:
            with contextlib.suppress(OSError):
                os.chown(path, entry["uid"], entry.get("gid", -1), follow_symlinks=False)

    def _symlink(self, entry: Entry, path: str) -> None:
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(entry.get("target", ""), path)
        self._chown(path, entry)
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(path, ns=(entry.get("mtime_ns", 0),) * 2, follow_symlinks=False)
        self.stats.symlinks += 1

    def _report(self, path: str) -> None:
        if self.progress is not None:
            self.progress(self.stats, path)

    def _pipeline(self, steps: Iterator[_Step], pool: ThreadPoolExecutor) -> None:
        ahead: deque[_Step] = deque()
        in_flight = 0
        window = LOOKAHEAD * self.threads

        def submit(read: _Read) -> None:
            if read.future is None:
                read.future = pool.submit(self._fetch, read)

        def write_next() -> int:
            step = ahead.popleft()
            if isinstance(step, _Run):
                assert step.read is not None
                submit(step.read)  # the writer needs it now, even if it could grow
                self._do(step)
                return step.end - step.start
            self._do(step)
            return 0

        growing: _Read | None = None
        try:
            for step in steps:
                if isinstance(step, _Run):
                    if growing is None or not growing.extend(step):
                        if growing is not None:
                            submit(growing)
                        growing = _Read(step.pack, step.start, step.end, list(step.blobs))
                        step.read = growing
                    in_flight += step.end - step.start
                ahead.append(step)
                while ahead and (in_flight > window or len(ahead) > MAX_STEPS_AHEAD):
                    in_flight -= write_next()
            while ahead:
                in_flight -= write_next()
        except BaseException:
            for pending in ahead:
                if isinstance(pending, _Run) and pending.read and pending.read.future:
                    pending.read.future.cancel()
            self._discard_open_file()
            raise

    def run(
        self,
        snapshot: dict[str, object],
        target: str,
        subpath: str | Sequence[str] | None = None,
    ) -> RestoreStats:
        """Restores all of ``snapshot``, or the files or folders at ``subpath`` (one path or
        several), each into ``target`` under its own name."""
        root = self.repo.read_tree(str(snapshot["tree"]))
        # Each part with where it sits in the snapshot: excludes match whole snapshot paths.
        parts = [(root, "")]
        if subpath:
            paths = [subpath] if isinstance(subpath, str) else list(subpath)
            _check_includes(paths)
            parts = [(_select(self.repo, root, p), p.strip("/").rpartition("/")[0]) for p in paths]
        with ThreadPoolExecutor(self.threads, thread_name_prefix="e2ebackup-restore") as pool:
            self.stats.bytes_total = sum(self._measure(e, base, pool) for e, base in parts)
            os.makedirs(target, exist_ok=True)
            steps = itertools.chain.from_iterable(self._plan(e, target, base) for e, base in parts)
            self._pipeline(steps, pool)
        # One flush of everything at the end instead of an fsync per file (which made restoring
        # many small files several times slower): a file is renamed into place only once all
        # of it authenticated; this makes the whole restore durable before it reports success.
        os.sync()
        self._report("")
        return self.stats


def restore(
    repo: Repository,
    snapshot_ref: str,
    target: str,
    *,
    subpath: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    where: SnapshotFilter | None = None,
    exclude: Sequence[str] = (),
) -> RestoreStats:
    """Restores a snapshot (id, unique prefix or ``latest``, the newest that ``where``
    admits) into ``target``: all of it, or the files or folders at ``subpath``, less what the
    ``exclude`` patterns match (as backup's, against paths in the snapshot: ``*.mp4``,
    ``Media/Video``, ``/chats/Media``)."""
    excludes = Excludes(exclude)
    with repo.read_lock():
        _, snapshot = repo.find_snapshot(snapshot_ref, where)
        restorer = Restorer(repo, overwrite=overwrite, progress=progress, excludes=excludes)
        return restorer.run(snapshot, target, subpath)
