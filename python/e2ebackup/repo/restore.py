"""Restore: stream a snapshot (all of it, a subtree or one file) into a target folder.

Each file is written to a temporary name beside its destination and renamed only once all of
its blobs authenticated and its size matched, so a failed or interrupted restore never leaves
a file that looks complete; everything is flushed to disk before the restore reports success.
Existing files are never replaced unless ``overwrite`` is set.

A snapshot is not trusted more than a tar archive from a stranger (whoever holds the keys wrote
it: a repository received from someone else, or a compromised device sharing it). The writing
side (:mod:`e2ebackup.repo.extract`) never follows a symlink, leaves existing folders as they
were and clears setuid bits; this side checks, before anything is written, that the snapshot
fits the budget (``max_size`` / ``max_files`` if given, and in any case the target's free
space: :class:`RestoreLimitExceeded`), measuring each listing once however often it is named,
and refuses data blobs larger than the chunker makes and listings nested deeper than
:data:`~e2ebackup.repo.tree.MAX_DEPTH`.

The walk is a plan of steps in order (make a folder, start a file, write a run of blobs, finish
a file, finish a folder). Adjacent blobs of one pack are fetched with one ranged read, also
across files (a folder of small files backed up together is a few reads, not one per file), and
a blob named again within a read's range (a file of zeros: one chunk, repeated) is fetched and
opened once. Reading and opening blobs runs ahead of writing in a few threads (the storage's
concurrency: 2 on a local disk, 4 on S3), by at most ``LOOKAHEAD`` sealed bytes a thread and
``2 x threads`` reads; each read opens at most ``READ_PLAINTEXT`` bytes ahead (the writer opens
the rest itself, one blob at a time), so memory is bounded by constants, not by what the stored
bytes expand to. The calling thread hands the opened blobs over in order to the writer
(:class:`~e2ebackup.repo.extract.Extractor`), whose threads write the files, at most its
``WRITE_AHEAD`` bytes behind.

For several writers at once (:mod:`e2ebackup.dask.restore`), :meth:`Restorer.run_delegated`
does what :meth:`Restorer.run` does except writing files: it checks the budget, makes the
folders and symlinks, and hands the files over as :class:`FileJob` (a path, the entry, and
where its blobs are: the index stays here), setting the folders' metadata once every file is
written; each writer runs :meth:`Restorer.write_files`, the same reading and writing as
:meth:`Restorer.run`.

For a target that is not a folder (objects in a bucket: :mod:`e2ebackup.dask.restore_s3`),
:meth:`Restorer.plan_files` does the same walk without a file system (the budget checked,
nothing made) and hands out only the files, counting the folders and symlinks it passes; each
writer runs :meth:`Restorer.write_to`, the same reading with the opened blobs going to a
:class:`FileSink` instead of an :class:`~e2ebackup.repo.extract.Extractor`.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn, Protocol

from e2ebackup._parallel import ordered_map
from e2ebackup.errors import (
    InvalidArgument,
    InvalidTag,
    RepositoryCorrupted,
    RestoreConflict as RestoreConflict,
    RestoreLimitExceeded,
)
from e2ebackup.repo.budget import Budget, Listing, listing_of, totals
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.extract import Extractor, RestoreStats
from e2ebackup.repo.labels import KIND_DATA, KIND_TREE
from e2ebackup.repo.names import pack_name
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.tree import Entry, check_depth, decode_checked_tree, decode_tree

__all__ = [
    "FileJob",
    "FileSink",
    "RestoreConflict",
    "RestoreLimitExceeded",
    "RestoreStats",
    "Restorer",
    "Walked",
    "restore",
]

# Adjacent blobs of one pack are fetched with one ranged read of at most this size and this
# many blobs (a read of many small files is handed to a reader as soon as it is complete, so
# reading runs ahead of the writer instead of waiting for the writer to need it).
COALESCE = 8 << 20
READ_BLOBS = 512
# Sealed bytes a thread reads or opens ahead of the writer (one read each in flight); with the
# run being written, this bounds what restore holds in memory: about 2 x 8 MiB x threads.
LOOKAHEAD = 8 << 20
# Plaintext a worker opens ahead for one read; past it the writer opens the read's blobs as it
# writes them (stored bytes that expand 1000:1 cannot make restore hold 1000 x the read-ahead).
READ_PLAINTEXT = 8 << 20
# Steps queued ahead of the writer (folders and empty files cost no bytes but still count).
MAX_STEPS_AHEAD = 8192
# Folder listings (tree blobs) kept from the first walk, which sizes the restore, for the
# second, which restores it: a remote store is not asked twice for each folder.
TREE_CACHE = 16 << 20


Progress = Callable[[RestoreStats, str], None]


def _check_includes(paths: list[str]) -> None:
    """Parts restored side by side must not be one path or hold one another."""
    clean = ["/".join(x for x in p.split("/") if x) for p in paths]
    if len(set(clean)) != len(clean):
        raise InvalidArgument("the same --include path is given twice")
    for a in clean:
        for b in clean:
            if a != b and b.startswith(a + "/"):
                raise InvalidArgument(f"--include {b!r} is inside --include {a!r}")


@dataclass
class _Part:
    """What one ``--include`` restores: ``entries`` (in the folder ``base`` of the snapshot),
    inside the snapshot's folders ``ancestors`` (the path to ``base``, kept as restic does:
    ``Pictures/2026`` lands in ``target/Pictures/2026``)."""

    entries: list[Entry]
    base: str
    ancestors: list[Entry]


def _select(repo: Repository, root: list[Entry], subpath: str | None) -> _Part:
    """The entries to restore: the whole root, or the one entry at ``subpath`` with the
    folders that lead to it."""
    parts = [p for p in (subpath or "").split("/") if p]
    if not parts:
        return _Part(root, "", [])
    entries = root
    ancestors: list[Entry] = []
    for i, part in enumerate(parts):
        match = next((e for e in entries if e["name"] == part), None)
        if match is None:
            raise InvalidArgument(f"{subpath!r} is not in the snapshot")
        if i == len(parts) - 1:
            return _Part([match], "/".join(parts[:-1]), ancestors)
        if match.get("type") != "dir":
            raise InvalidArgument(f"{'/'.join(parts[: i + 1])!r} is not a directory")
        ancestors.append(match)
        entries = repo.read_tree(match["subtree"])
    raise AssertionError("unreachable: the loop returns at the last part")


def _depth(base: str) -> int:
    """How many listings below the root tree the entries of the folder ``base`` are."""
    return len(base.split("/")) if base else 0


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
    """Blobs of one pack in one byte range, fetched with one ranged read and opened off the
    writer (``opened[i]`` None: past READ_PLAINTEXT, the writer opens it from ``raw``)."""

    pack: str
    start: int
    end: int
    blobs: list[tuple[bytes, BlobLocation]]
    future: Future[tuple[list[bytes | None], bytes | None]] | None = None
    runs_left: int = 1  # runs not yet written; the read is released when none are

    def extend(self, run: _Run) -> bool:
        """Takes ``run`` into this read if it continues it (same pack, next byte, small enough)
        or lies within it (a file that repeats a file before it)."""
        if self.future is not None or run.pack != self.pack:
            return False
        if len(self.blobs) + len(run.blobs) > READ_BLOBS:
            return False
        within = self.start <= run.start and run.end <= self.end
        if not within and (run.start != self.end or run.end - self.start > COALESCE):
            return False
        run.read, run.first = self, len(self.blobs)
        self.blobs += run.blobs
        self.end = max(self.end, run.end)
        self.runs_left += 1
        return True


@dataclass
class _Run:
    """Blobs of one pack that belong to one file, in the file's order, within one byte range;
    written from the read that fetched them (``read.blobs[first : first + len(blobs)]``)."""

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

#: Blobs of one pack read with one ranged read: pack id, start, end, and (blob id, offset,
#: length) each, in the file's order.
RunSpec = tuple[str, int, int, tuple[tuple[bytes, int, int], ...]]


@dataclass(frozen=True)
class FileJob:
    """One file for another writer (:meth:`Restorer.write_files`): its path below the target
    ("/" between names), its entry (without its blob list) and its blobs' places, in runs;
    ``order`` is its place in the walk. No content and no key."""

    path: str
    entry: Entry
    runs: tuple[RunSpec, ...]
    order: int

    @property
    def first_pack(self) -> str:
        """The pack of its first blob ("" for an empty file)."""
        return self.runs[0][0] if self.runs else ""


class FileSink(Protocol):
    """Where :meth:`Restorer.write_to` puts files, in order: :meth:`start_file`, its blobs
    (each authenticated, in the file's order) to :meth:`write`, :meth:`finish_file`; then
    :meth:`finish` once all are handed over, or :meth:`discard` after an error (nothing that
    was not finished may look complete). An :class:`~e2ebackup.repo.extract.Extractor` is one.
    """

    @property
    def writing(self) -> str | None:
        """The file being written (None: none, or the sink leaves this one out)."""
        ...

    def start_file(self, entry: Entry, path: str) -> None: ...

    def write(self, blob: bytes) -> None: ...

    def finish_file(self, entry: Entry) -> None: ...

    def finish(self) -> None: ...

    def discard(self) -> None: ...


@dataclass
class Walked:
    """What :meth:`Restorer.plan_files` passed over without handing it out: folders (those
    with no file handed out below them also in ``empty_dirs``) and symlinks."""

    dirs: int = 0
    empty_dirs: int = 0
    symlinks: int = 0


#: What :meth:`Restorer.run_delegated` calls to have the files written: it takes every file
#: from the iterator (which makes their folders as it goes) and adds what the writers did
#: (files, bytes, files left as they were) to the statistics it is given.
WriteFiles = Callable[[Iterator[FileJob], RestoreStats], None]


class Restorer:
    def __init__(
        self,
        repo: Repository,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        threads: int | None = None,
        excludes: Excludes | None = None,
        max_size: int | None = None,
        max_files: int | None = None,
        keep_special_bits: bool = False,
        same_owner: bool = True,
    ) -> None:
        self.repo = repo
        self.excludes = excludes or Excludes()
        self.overwrite = overwrite
        self.progress = progress
        self.threads = threads or repo.storage.read_concurrency
        self.budget = Budget("", max_size, max_files)  # its target is set by run()
        self.keep_special_bits = keep_special_bits
        self.same_owner = same_owner
        self.max_chunk = int(repo.config["chunker"]["max"])
        self.stats = RestoreStats()
        self._out: Extractor | None = None
        self._sink: FileSink | None = None  # write_to's; else the files go to _out
        self._last: tuple[bytes, bytes] | None = None  # the blob the writer opened last
        self._trees: dict[str, bytes] = {}
        self._trees_size = 0
        self._entries_left = 0  # the budget the plan may still produce (as measured)

    # -- folders --------------------------------------------------------------------------------

    def _read_tree(self, tree_id: str) -> bytes:
        return self.repo.read_blob(KIND_TREE, bytes.fromhex(tree_id))

    def _tree(self, tree_id: str) -> list[Entry]:
        raw = self._trees.get(tree_id)  # kept: a listing named many times is read once
        if raw is None:
            return decode_tree(self._read_tree(tree_id))
        return decode_checked_tree(raw)  # checked when kept: parsing it is enough

    def _keep(self, tree_id: str, raw: bytes) -> None:
        """Keeps a listing ``decode_tree`` accepted, within TREE_CACHE."""
        if self._trees_size + len(raw) <= TREE_CACHE and tree_id not in self._trees:
            self._trees[tree_id] = raw
            self._trees_size += len(raw)

    def _excluded(self, entry: Entry, rel: str) -> bool:
        """Whether ``--exclude`` leaves out the entry at ``rel`` (its path in the snapshot)."""
        return bool(self.excludes) and self.excludes.excluded("/" + rel, entry["name"])

    # -- measuring: the budget is checked before anything is written ----------------------------

    def _measure(
        self, parts: list[tuple[list[Entry], str]], pool: ThreadPoolExecutor, extra_entries: int
    ) -> int:
        """The bytes to restore; raises RestoreLimitExceeded over the budget."""
        if self.excludes:
            size, entries = self._measure_paths(parts, pool)
        else:
            size, entries = self._measure_shared(parts, pool)
        self.budget.check(size, entries + extra_entries)
        self._entries_left = entries
        return size

    def _fetch_listings(self, ids: list[str], pool: ThreadPoolExecutor) -> Iterator[list[Entry]]:
        for tree_id, raw in zip(
            ids, ordered_map(self._read_tree, ids, threads=self.threads, pool=pool), strict=True
        ):
            entries = decode_tree(raw)
            self._keep(tree_id, raw)
            yield entries

    def _measure_shared(
        self, parts: list[tuple[list[Entry], str]], pool: ThreadPoolExecutor
    ) -> tuple[int, int]:
        """Bytes and entries, each listing read once and its total reused wherever it is named
        (so a listing naming another a million times is counted in one step, not walked).
        Listings are fetched a level at a time, the level's reads at once."""
        listings: dict[str, Listing] = {}
        level = [t for entries, _ in parts for t in listing_of(entries).children]
        depth = min((_depth(base) for _, base in parts), default=0) + 1
        while level:
            check_depth(depth)
            new = [t for t in dict.fromkeys(level) if t not in listings]
            for tree_id, found in zip(new, self._fetch_listings(new, pool), strict=True):
                listings[tree_id] = listing_of(found)
            level = [c for t in new for c in listings[t].children]
            depth += 1
        below = totals(listings)
        size = count = 0
        for part, base in parts:
            own = listing_of(part)
            size += own.size + sum(below[c][0] for c in own.children)
            count += own.entries + sum(below[c][1] for c in own.children)
            height = max((below[c][2] for c in own.children), default=-1)
            check_depth(_depth(base) + 1 + height)
        return size, count

    def _measure_paths(
        self, parts: list[tuple[list[Entry], str]], pool: ThreadPoolExecutor
    ) -> tuple[int, int]:
        """Bytes and entries with excludes, which depend on each entry's path: every folder is
        walked, level by level, and the walk stops as soon as it passes the budget."""
        size = count = 0
        folders: list[tuple[str, str]] = []  # (listing id, path in the snapshot)
        limit = self.budget.entries()

        def visit(children: list[Entry], parent: str) -> None:
            nonlocal size, count
            for c in children:
                rel = f"{parent}/{c['name']}" if parent else c["name"]
                if self._excluded(c, rel):
                    continue
                count += 1
                if c.get("type") == "file":
                    size += int(c.get("size", 0))
                elif c.get("type") == "dir":
                    folders.append((str(c["subtree"]), rel))
            if limit is not None and count > limit:
                self.budget.check(size, count)

        for entries, base in parts:
            visit(entries, base)
        while folders:
            level, folders = folders, []
            check_depth(max(_depth(rel) for _, rel in level))
            ids = [tree_id for tree_id, _ in level]
            for (_, rel), entries in zip(level, self._fetch_listings(ids, pool), strict=True):
                visit(entries, rel)
        return size, count

    # -- the plan -------------------------------------------------------------------------------

    def _skip_existing(self, path: str) -> bool:
        if os.path.lexists(path) and not self.overwrite:
            self.stats.skipped_existing.append(path)
            return True
        return False

    def _plan_parts(self, parts: list[_Part], target: str, fresh: bool) -> Iterator[_Step]:
        """The steps of every part, inside the folders that lead to it (``fresh``: the target
        was made by this restore). Parts are taken in the order of their paths, so parts in the
        same folders follow one another inside them: each such folder is entered and left once
        (entered again for a later part, it would get that part's folders after its metadata
        was set, and the time of that moment instead of the snapshot's)."""
        opened: list[tuple[_Dir, bool]] = []  # the folders open now, and whether each is fresh
        for part in sorted(parts, key=lambda p: [a["name"] for a in p.ancestors]):
            names = [a["name"] for a in part.ancestors]
            shared = 0
            while (
                shared < min(len(opened), len(names))
                and opened[shared][0].entry["name"] == names[shared]
            ):
                shared += 1
            for done, _ in reversed(opened[shared:]):
                yield _Dir(done.entry, done.path, done=True)
            del opened[shared:]
            folder, here_fresh = (opened[-1][0].path, opened[-1][1]) if opened else (target, fresh)
            reached = True
            for ancestor in part.ancestors[shared:]:
                folder = os.path.join(folder, ancestor["name"])
                here_fresh = here_fresh or not os.path.lexists(folder)
                in_the_way = not here_fresh and (
                    os.path.islink(folder) or not os.path.isdir(folder)
                )
                if in_the_way and not self.overwrite:  # nothing of this part is written
                    self.stats.skipped_existing.append(folder)
                    reached = False
                    break
                step = _Dir(ancestor, folder, done=False)
                opened.append((step, here_fresh))
                yield step
            if reached:
                yield from self._plan(part.entries, folder, part.base, here_fresh)
        for done, _ in reversed(opened):
            yield _Dir(done.entry, done.path, done=True)

    def _plan(self, entries: list[Entry], folder: str, base: str, fresh: bool) -> Iterator[_Step]:
        """The steps, folder by folder, depth first (an explicit stack: no recursion limit).

        What is already in the target is looked at only in folders that existed when the plan
        reached them (not ``fresh``): nothing can be in the way in a folder made by this
        restore, and if something appears there meanwhile the writer still never follows or
        replaces it (it checks again, as it writes)."""
        stack: list[tuple[Iterator[Entry], str, str, _Dir | None, bool]] = [
            (iter(entries), folder, base, None, fresh)
        ]
        while stack:
            children, folder, base, opened, fresh = stack[-1]
            entry = next(children, None)
            if entry is None:
                stack.pop()
                if opened is not None:
                    yield _Dir(opened.entry, opened.path, done=True)
                continue
            path = os.path.join(folder, entry["name"])
            rel = f"{base}/{entry['name']}" if base else entry["name"]
            if self._excluded(entry, rel):
                self.stats.excluded += 1
                continue
            self._entries_left -= 1
            if self._entries_left < 0:  # the measure and the plan disagree: never write more
                raise RestoreLimitExceeded("the snapshot holds more entries than it measured")
            kind = entry.get("type")
            if kind == "file":
                if fresh or not self._skip_existing(path):
                    yield _FileStart(entry, path)
                    yield from self._runs(entry.get("content", []))
                    yield _FileEnd(entry, path)
            elif kind == "dir":
                new = fresh or not os.path.lexists(path)
                in_the_way = not new and (os.path.islink(path) or not os.path.isdir(path))
                if in_the_way and not self.overwrite:
                    self.stats.skipped_existing.append(path)
                    continue
                check_depth(_depth(rel), rel)
                step = _Dir(entry, path, done=False)
                yield step
                stack.append((iter(self._tree(entry["subtree"])), path, rel, step, new))
            else:
                if fresh or not self._skip_existing(path):
                    yield _Link(entry, path)

    def _runs(self, ids: list[str]) -> Iterator[_Run]:
        """The file's blobs as runs of one pack's byte range (one read each); a blob that lies
        within the run so far (a chunk the file repeats) joins it without widening it."""
        run: _Run | None = None
        for hex_id in ids:
            blob_id = bytes.fromhex(hex_id)
            loc = self.repo.index.locate(blob_id)
            if loc.kind != KIND_DATA:
                raise RepositoryCorrupted(f"blob {hex_id[:16]} is not a data blob")
            end = loc.offset + loc.length
            if run is not None and loc.pack == run.pack:
                if run.start <= loc.offset and end <= run.end:
                    run.blobs.append((blob_id, loc))
                    continue
                if loc.offset == run.end and end - run.start <= COALESCE:
                    run.end = end
                    run.blobs.append((blob_id, loc))
                    continue
            if run is not None:
                yield run
            run = _Run(loc.pack, loc.offset, end, [(blob_id, loc)])
        if run is not None:
            yield run

    # -- reading ahead (worker threads) ---------------------------------------------------------

    def _fetch(self, read: _Read) -> tuple[list[bytes | None], bytes | None]:
        """Reads the range and opens its blobs, each distinct one once, up to READ_PLAINTEXT;
        returns them (None past it) and, if any is left, the sealed bytes for the writer. The
        blobs are opened in one call, without the GIL (a Python loop per blob here made the
        readers wait for the GIL more than they worked)."""
        raw = self.repo.storage.read(
            pack_name(read.pack), offset=read.start, length=read.end - read.start
        )
        if len(raw) != read.end - read.start:
            raise RepositoryCorrupted(f"pack {read.pack[:16]} is shorter than the index says")
        ids = [blob_id for blob_id, _ in read.blobs]
        spans = [(loc.offset - read.start, loc.length) for _, loc in read.blobs]
        try:
            out = self.repo.codec_for(read.pack).open_many(
                KIND_DATA, ids, spans, raw, limit=READ_PLAINTEXT
            )
        except InvalidTag:
            for blob_id, loc in read.blobs:  # which one: for the message
                self._open(read.pack, blob_id, self._sealed(raw, read, loc))
            raise RepositoryCorrupted(f"a blob of pack {read.pack[:16]} is damaged") from None
        for (blob_id, _), blob in zip(read.blobs, out, strict=True):
            if blob is not None and len(blob) > self.max_chunk:
                self._too_large(blob_id, blob)
        return out, (raw if None in out else None)

    @staticmethod
    def _sealed(raw: bytes, read: _Read, loc: BlobLocation) -> memoryview:
        return memoryview(raw)[loc.offset - read.start : loc.offset - read.start + loc.length]

    def _open(self, pack_id: str, blob_id: bytes, sealed: memoryview) -> bytes:
        try:
            blob = self.repo.codec_for(pack_id).open(KIND_DATA, blob_id, sealed)
        except InvalidTag:
            raise RepositoryCorrupted(
                f"blob {blob_id.hex()[:16]} is damaged or was swapped"
            ) from None
        if len(blob) > self.max_chunk:
            self._too_large(blob_id, blob)
        return blob

    def _too_large(self, blob_id: bytes, blob: bytes) -> NoReturn:
        raise RepositoryCorrupted(
            f"blob {blob_id.hex()[:16]} holds {len(blob):,} bytes, more than the chunker's "
            f"maximum {self.max_chunk:,}: not a chunk any backup stores"
        )

    # -- writing (handed over by the calling thread, in order) ---------------------------------

    def _files_out(self) -> FileSink:
        out = self._sink if self._sink is not None else self._out
        assert out is not None
        return out

    def _do(self, step: _Step) -> None:
        if isinstance(step, _Run):
            self._write_run(step, self._files_out())
            return
        if isinstance(step, _FileStart):
            self._files_out().start_file(step.entry, step.path)
            return
        if isinstance(step, _FileEnd):
            self._files_out().finish_file(step.entry)
            return
        out = self._out
        assert out is not None
        if isinstance(step, _Link):
            out.symlink(step.entry, step.path)
        elif not step.done:
            out.enter(step.entry, step.path)
        else:
            out.leave(step.entry)

    def _write_run(self, step: _Run, out: FileSink) -> None:
        read = step.read
        assert read is not None
        assert read.future is not None
        opened, raw = read.future.result()
        read.runs_left -= 1
        writing = out.writing
        if writing is None:
            return  # a file in a folder that was in the way
        for i in range(step.first, step.first + len(step.blobs)):
            blob = opened[i]
            if blob is None:  # past what the worker opened: one at a time, here
                assert raw is not None
                blob_id, loc = read.blobs[i]
                if self._last is None or self._last[0] != blob_id:  # a repeat is opened once
                    sealed = self._sealed(raw, read, loc)
                    self._last = (blob_id, self._open(read.pack, blob_id, sealed))
                blob = self._last[1]
            out.write(blob)
        self._report(writing)

    def _report(self, path: str) -> None:
        if self.progress is not None:
            self.progress(self.stats, path)

    def _pipeline(self, steps: Iterator[_Step], pool: ThreadPoolExecutor) -> None:
        ahead: deque[_Step] = deque()
        unsubmitted: deque[_Read] = deque()  # complete reads waiting for a turn, in order
        in_flight = 0
        outstanding = 0  # reads submitted and not yet written
        window = LOOKAHEAD * self.threads
        max_reads = 2 * self.threads

        def submit(read: _Read) -> None:
            nonlocal outstanding
            if read.future is None:
                read.future = pool.submit(self._fetch, read)
                outstanding += 1

        def submit_ready() -> None:
            while unsubmitted and outstanding < max_reads:
                submit(unsubmitted.popleft())

        def write_next() -> int:
            nonlocal outstanding
            step = ahead.popleft()
            if isinstance(step, _Run):
                assert step.read is not None
                submit(step.read)  # the writer needs it now, even if it could grow
                self._do(step)
                if step.read.runs_left == 0:
                    outstanding -= 1
                    submit_ready()
                return step.end - step.start
            self._do(step)
            return 0

        growing: _Read | None = None
        try:
            for step in steps:
                if isinstance(step, _Run):
                    if growing is None or not growing.extend(step):
                        if growing is not None and growing.future is None:
                            unsubmitted.append(growing)
                            submit_ready()
                        growing = _Read(step.pack, step.start, step.end, list(step.blobs))
                        step.read = growing
                    in_flight += step.end - step.start
                ahead.append(step)
                while ahead and (in_flight > window or len(ahead) > MAX_STEPS_AHEAD):
                    in_flight -= write_next()
            while ahead:
                in_flight -= write_next()
            self._files_out().finish()  # every file written and placed, folders' metadata set
        except BaseException:
            for pending in ahead:
                if isinstance(pending, _Run) and pending.read and pending.read.future:
                    pending.read.future.cancel()
            self._files_out().discard()
            raise

    def run(
        self,
        snapshot: dict[str, object],
        target: str,
        subpath: str | Sequence[str] | None = None,
    ) -> RestoreStats:
        """Restores all of ``snapshot``, or the files or folders at ``subpath`` (one path or
        several), each at its path in the snapshot under ``target`` (``Pictures/2026`` into
        ``target/Pictures/2026``, its parent folders with the snapshot's metadata)."""
        # A writer's snapshot holds blobs up to its own chunker's max (FORMAT.md, version 4).
        self.max_chunk = self.repo.chunker_max(str(snapshot.get("id")))
        with ThreadPoolExecutor(self.threads, thread_name_prefix="e2ebackup-restore") as pool:
            steps = self._prepare(snapshot, target, subpath, pool)
            self._out = self._extractor(target)
            try:
                self._pipeline(steps, pool)
            finally:
                self._out.close()
        # A file is linked into place only once all of it authenticated; this makes the whole
        # restore durable before it reports success.
        self._out.make_durable()
        self._report("")
        return self.stats

    def _prepare(
        self,
        snapshot: dict[str, object],
        target: str | None,
        subpath: str | Sequence[str] | None,
        pool: ThreadPoolExecutor,
    ) -> Iterator[_Step]:
        """Checks the budget (before anything is written), makes the target and returns the
        plan's steps (``target`` None: no folder, nothing made, paths relative, nothing in
        the way)."""
        self.budget.target = target
        root = self.repo.read_tree(str(snapshot["tree"]))
        # Each part with where it sits in the snapshot: excludes match whole snapshot paths.
        selected = [_Part(root, "", [])]
        if subpath:
            paths = [subpath] if isinstance(subpath, str) else list(subpath)
            _check_includes(paths)
            selected = [_select(self.repo, root, p) for p in paths]
        parts = [(part.entries, part.base) for part in selected]
        # The parent folders of the parts count against --max-files too, once each.
        extra = len(
            {
                tuple(a["name"] for a in part.ancestors[: depth + 1])
                for part in selected
                for depth in range(len(part.ancestors))
            }
        )
        self.stats.bytes_total = self._measure(parts, pool, extra_entries=extra)
        if target is None:
            return self._plan_parts(selected, "", True)
        fresh = not os.path.lexists(target)
        os.makedirs(target, exist_ok=True)
        return self._plan_parts(selected, target, fresh)

    def _extractor(self, target: str, *, folder_metadata: bool = True) -> Extractor:
        return Extractor(
            target,
            self.stats,
            overwrite=self.overwrite,
            keep_special_bits=self.keep_special_bits,
            same_owner=self.same_owner,
            folder_metadata=folder_metadata,
        )

    # -- several writers ------------------------------------------------------------------------

    def run_delegated(
        self,
        snapshot: dict[str, object],
        target: str,
        subpath: str | Sequence[str] | None,
        write_files: WriteFiles,
    ) -> RestoreStats:
        """:meth:`run`, with the files written by ``write_files`` (other processes, each
        running :meth:`write_files`): the budget is checked first, then the plan is walked
        as ``write_files`` takes the files, the folders made and the symlinks written here,
        the files that are in the way left out as :meth:`run` leaves them out (a file is
        handed over once its folder exists); once ``write_files`` returned, the folders get
        their metadata (and lose the temporary files of writers that were killed) and all is
        made durable."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="e2ebackup-restore") as pool:
            steps = self._prepare(snapshot, target, subpath, pool)
        out = self._out = self._extractor(target, folder_metadata=False)
        keep: set[str] = set()  # files of the snapshot named as a writer's temporary files
        walked = False

        def files() -> Generator[FileJob]:
            nonlocal walked
            order = 0
            started: tuple[_FileStart, list[_Run]] | None = None
            for step in steps:
                if isinstance(step, _FileStart):
                    started = None if out.in_skipped_folder else (step, [])
                elif isinstance(step, _Run):
                    if started is not None:
                        started[1].append(step)
                elif isinstance(step, _FileEnd):
                    if started is not None:
                        job = _job(target, *started, order=order)
                        order += 1
                        if job.path.endswith(".e2ebackup-tmp"):
                            keep.add(job.path)
                        yield job
                    started = None
                else:
                    self._do(step)
            out.finish()
            walked = True

        jobs = files()
        try:
            write_files(jobs, self.stats)
            if not walked:
                raise InvalidArgument("write_files returned before it took every file")
        except BaseException:
            jobs.close()
            out.discard()
            raise
        finally:
            out.close()
        out.set_folders(out.folders_left, keep=keep)
        out.make_durable()
        self._report("")
        return self.stats

    def write_files(self, target: str, jobs: Sequence[FileJob]) -> RestoreStats:
        """Writes the files of ``jobs`` into ``target``, whose folders exist, as :meth:`run`
        writes them (folders' metadata is left to :meth:`run_delegated`), and makes them
        durable; returns what was written.

        A file already at its path is left as it is. It counts as written when it is the one
        this restore would write (a regular file with the entry's size, modification time and
        mode, and owner when owners are restored): the coordinator hands over only files
        that were not there when it planned, and a writer gives a file its name only once it
        is complete with its metadata, so such a file was put there by an earlier attempt at
        the same work, whose worker died after placing it; anything else is reported as
        :meth:`run` reports it (``skipped_existing``). With ``overwrite`` it is replaced."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="e2ebackup-restore") as pool:
            self._out = self._extractor(target, folder_metadata=False)
            try:
                self._pipeline(self._plan_jobs(jobs, target), pool)
            finally:
                self._out.close()
        self._out.make_durable()
        return self.stats

    def plan_files(
        self,
        snapshot: dict[str, object],
        subpath: str | Sequence[str] | None,
        walked: Walked,
    ) -> Iterator[FileJob]:
        """The files of ``snapshot`` (or of ``subpath``, less the excludes) for writers into a
        target that is not a folder of this machine (objects in a bucket): the budget
        (``max_size``, ``max_files``; no free space to measure) is checked now, before the
        first file is handed out; nothing is made and nothing is in the way (paths are
        relative, "/" between names). The folders and symlinks passed over are counted in
        ``walked``; ``stats.excluded`` counts what the excludes left out."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="e2ebackup-restore") as pool:
            steps = self._prepare(snapshot, None, subpath, pool)

        def files() -> Generator[FileJob]:
            below: list[int] = []  # files handed out below each open folder
            started: tuple[_FileStart, list[_Run]] | None = None
            order = 0
            for step in steps:
                if isinstance(step, _FileStart):
                    started = (step, [])
                elif isinstance(step, _Run):
                    assert started is not None
                    started[1].append(step)
                elif isinstance(step, _FileEnd):
                    assert started is not None
                    yield _job("", *started, order=order)
                    order += 1
                    started = None
                    if below:
                        below[-1] += 1
                elif isinstance(step, _Link):
                    walked.symlinks += 1
                elif not step.done:
                    walked.dirs += 1
                    below.append(0)
                else:
                    inside = below.pop()
                    if inside == 0:
                        walked.empty_dirs += 1
                    elif below:
                        below[-1] += inside

        return files()

    def write_to(
        self, sink: Callable[[RestoreStats], FileSink], jobs: Sequence[FileJob]
    ) -> RestoreStats:
        """Reads and authenticates the blobs of ``jobs`` as :meth:`write_files` does and hands
        them to the sink that ``sink`` makes (given the statistics it adds what it wrote to),
        file after file; returns the statistics. A path with an empty, ``.`` or ``..`` name is
        refused."""
        self._sink = sink(self.stats)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="e2ebackup-restore") as pool:
            self._pipeline(self._plan_flat(jobs), pool)
        return self.stats

    @staticmethod
    def _plan_flat(jobs: Sequence[FileJob]) -> Iterator[_Step]:
        for job in jobs:
            if any(part in ("", ".", "..") for part in job.path.split("/")):
                raise InvalidArgument(f"{job.path!r} is not a relative path")
            yield _FileStart(job.entry, job.path)
            for pack, start, end, blobs in job.runs:
                located = [(b, BlobLocation(KIND_DATA, pack, o, n)) for b, o, n in blobs]
                yield _Run(pack, start, end, located)
            yield _FileEnd(job.entry, job.path)

    def _plan_jobs(self, jobs: Sequence[FileJob], target: str) -> Iterator[_Step]:
        """The steps that write ``jobs``, entering and leaving their folders on the way."""
        opened: list[_Dir] = []
        for job in jobs:
            *folders, name = job.path.split("/")
            if any(part in ("", ".", "..") for part in (*folders, name)):
                raise InvalidArgument(f"{job.path!r} is not a path below the target")
            same = 0
            while same < min(len(opened), len(folders)):
                if opened[same].entry["name"] != folders[same]:
                    break
                same += 1
            while len(opened) > same:
                done = opened.pop()
                yield _Dir(done.entry, done.path, done=True)
            for folder in folders[same:]:
                parent = opened[-1].path if opened else target
                step = _Dir({"name": folder, "type": "dir"}, os.path.join(parent, folder), False)
                opened.append(step)
                yield step
            path = os.path.join(target, *job.path.split("/"))
            if not self.overwrite and os.path.lexists(path):
                if self._placed_before(path, job.entry):
                    self.stats.files += 1
                    self.stats.bytes += int(job.entry.get("size", 0))
                else:
                    self.stats.skipped_existing.append(path)
                continue
            yield _FileStart(job.entry, path)
            for pack, start, end, blobs in job.runs:
                located = [(b, BlobLocation(KIND_DATA, pack, o, n)) for b, o, n in blobs]
                yield _Run(pack, start, end, located)
            yield _FileEnd(job.entry, path)
        while opened:
            done = opened.pop()
            yield _Dir(done.entry, done.path, done=True)

    def _placed_before(self, path: str, entry: Entry) -> bool:
        """Whether the file at ``path`` is the one this restore writes for ``entry``."""
        st = os.lstat(path)
        assert self._out is not None
        mode = entry.get("mode", 0o644) & self._out.mode_mask
        same = (
            stat.S_ISREG(st.st_mode)
            and st.st_size == int(entry.get("size", 0))
            and st.st_mtime_ns == entry.get("mtime_ns", 0)
            and stat.S_IMODE(st.st_mode) == mode
        )
        if same and self._out.same_owner and "uid" in entry:
            same = st.st_uid == entry["uid"] and st.st_gid == entry.get("gid", st.st_gid)
        return same


def _job(target: str, start: _FileStart, runs: list[_Run], *, order: int) -> FileJob:
    rel = (os.path.relpath(start.path, target) if target else start.path).replace(os.sep, "/")
    entry = {k: v for k, v in start.entry.items() if k != "content"}
    specs = tuple(
        (r.pack, r.start, r.end, tuple((b, loc.offset, loc.length) for b, loc in r.blobs))
        for r in runs
    )
    return FileJob(rel, entry, specs, order)  # type: ignore[arg-type]


def restore(
    repo: Repository,
    snapshot_ref: str,
    target: str | os.PathLike[str],
    *,
    subpath: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    where: SnapshotFilter | None = None,
    exclude: Sequence[str] = (),
    max_size: int | None = None,
    max_files: int | None = None,
    keep_special_bits: bool = False,
    same_owner: bool = True,
) -> RestoreStats:
    """Restores a snapshot (id, unique prefix or ``latest``, the newest that ``where``
    admits) into ``target``: all of it, or the files or folders at ``subpath``, less what the
    ``exclude`` patterns match (as backup's, against paths in the snapshot: ``*.mp4``,
    ``Media/Video``, ``/chats/Media``). ``max_size`` (bytes) and ``max_files`` (files, folders
    and links) bound what a snapshot from an untrusted source may make restore write; the
    target's free space always does. Setuid, setgid and sticky bits are cleared unless
    ``keep_special_bits``; owners are restored when running as root unless not ``same_owner``.
    """
    excludes = Excludes(exclude)
    with repo.read_lock():
        _, snapshot = repo.find_snapshot(snapshot_ref, where)
        restorer = Restorer(
            repo,
            overwrite=overwrite,
            progress=progress,
            excludes=excludes,
            max_size=max_size,
            max_files=max_files,
            keep_special_bits=keep_special_bits,
            same_owner=same_owner,
        )
        return restorer.run(snapshot, os.fspath(target), subpath)
