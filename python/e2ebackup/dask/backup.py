"""A backup on a Dask cluster: the files read, chunked, sealed and uploaded by the workers, the
snapshot made by this process (``pip install 'e2ebackup[dask]'``, docs/SCALE.md).

- **The coordinator** (this process) opens the repository, takes the lock every backup takes,
  adopts the packs of backups that died (:meth:`~e2ebackup.repo.repository.Repository.
  recover_orphan_packs`, which also adopts those of killed workers), and walks the paths as
  :class:`~e2ebackup.repo.backup.Archiver` walks them (the same excludes, ``one_file_system``,
  SQLite side files, special files): it only calls ``stat``. A file unchanged since the parent
  snapshot (same size, mtime, ctime and inode) keeps its chunks without being read; the others
  are cut into work units of about ``unit_bytes``. A file of at least two ``piece_bytes`` (64
  MiB) is cut into **pieces** at fixed offsets (0, 64 MiB, 128 MiB...), each read by whichever
  task gets it, so a 4 GiB video keeps every worker busy; the coordinator joins the pieces'
  chunk ids in order. The offsets depend on the file alone, not on the cluster, so another run
  on another cluster cuts the same chunks.
  Once the workers named every file's chunks, it stores the folder listings, adds the
  workers' packs to the index and writes the index, the snapshot and the head through the
  single-process backup's commit.
- **The workers** open the repository's storage themselves (:class:`~e2ebackup.dask.verify.
  StorageSpec`; S3 credentials from their own environment), read their unit's files with
  :meth:`Archiver.read_file <e2ebackup.repo.backup.Archiver.read_file>` (the same chunker, blob
  ids, compression choice, sealing, SQLite copy and :class:`~e2ebackup.repo.pack.PackWriter`)
  and pieces with :meth:`Archiver.read_range <e2ebackup.repo.backup.Archiver.read_range>` (the
  chunker starts afresh at the piece and cuts at its end: a few chunks around each cut differ
  from a single-process backup's, the rest are the same; a piece of a live SQLite database
  is not read: the task of the first piece captures the whole database, once),
  leave out the chunks the repository holds (a sorted array of the index's blob ids, sent
  once a run to every worker) or that the task stored already, and upload sealed packs
  straight to the storage. A task returns per file or piece its chunk ids and size (or the
  error that kept it from being read), and the blob entries of the packs it wrote: no
  plaintext, no key. A piece that could not be read fails its whole file (reported once).
- **What the scheduler sees:** task names (``e2ebackup-backup-<unit>-<random run id>-<random>``)
  and the names and sizes of scattered objects: the keys a worker needs (blob, blob id,
  chunker, pack header; never the data key, the config or metadata key or the password) with
  the storage's location and the array of known blob ids, and the units (file paths, sizes
  and pieces' offsets). All are sent by the client straight to the workers
  (:mod:`e2ebackup.dask.runner`); results are fetched from the workers directly.
- **A worker that dies** has its task run again by Dask (``retries``), which reads and uploads
  the unit again. The packs the dead attempt uploaded are in no index: the next backup adopts
  them (``recover_orphan_packs``), or ``forget --prune`` deletes them. Two units that both
  meet a new chunk both store it; the index keeps both copies and reads the first.
"""

from __future__ import annotations

import bisect
import errno as errnos
import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import distributed

from e2ebackup import errors
from e2ebackup.dask.runner import Hidden, auto_unit_bytes, run_units, split_by_bytes
from e2ebackup.dask.sources import URLSource, is_url
from e2ebackup.dask.verify import StorageSpec
from e2ebackup.errors import E2EBackupError, InvalidArgument, RepositoryCorrupted, StorageError
from e2ebackup.repo.backup import (
    Archiver,
    BackupStats,
    Progress,
    backup_lock,
    newest_snapshot_of,
    parent_snapshot,
)
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import Entry
from e2ebackup.storage import LocalStorage, S3Storage, Storage

__all__ = [
    "DEFAULT_BACKUP_UNIT_BYTES",
    "DEFAULT_PIECE_BYTES",
    "KnownBlobs",
    "backup",
    "storage_spec",
]

#: The most bytes of files one task reads; fewer when that would leave fewer than
#: ``UNITS_PER_THREAD`` units per worker thread, but never fewer than ``LEAST_UNIT_BYTES``
#: (each task ends with a partly filled pack).
DEFAULT_BACKUP_UNIT_BYTES = 256 << 20
LEAST_UNIT_BYTES = 32 << 20
UNITS_PER_THREAD = 4
MAX_UNIT_FILES = 10_000
#: Files at least this large go to the work unit of an earlier file of the same size (likely
#: a copy: stored once, where two units would each store it).
SAME_SIZE_BYTES = 1 << 20
#: A file of at least two pieces of this many bytes is read in pieces, each by the task that
#: gets it. A constant, not a share of the cluster: the offsets of the cuts (and so the chunks
#: around them) are the same whatever the cluster, so a run on another cluster stores nothing
#: new for an unchanged file. Large enough that the chunks cut otherwise than in one process
#: (about three a cut, 3 MiB of the default 1 MiB chunks: stored again when a file is backed
#: up by one process and then on Dask) are a few percent of a piece, and that a piece is a
#: good share of a task's 32 to 256 MiB; a multiple of the read block (8 MiB), though the
#: chunker, fed a stream, cuts alike whatever the blocks.
DEFAULT_PIECE_BYTES = 64 << 20
#: Smaller pieces would hold a chunk or two each: most would differ from a single process's.
LEAST_PIECE_BYTES = 1 << 20

ID_SIZE = 32


class KnownBlobs:
    """The blob ids a repository holds, as one sorted ``bytes`` of 32-byte ids searched by
    bisection: 32 bytes a blob, sent once to every worker (the index itself is about 150 bytes
    a blob and a Python dict)."""

    __slots__ = ("_ids",)

    def __init__(self, ids: bytes) -> None:
        if len(ids) % ID_SIZE:
            raise InvalidArgument("blob ids are 32 bytes each")
        self._ids = ids

    @classmethod
    def of(cls, blobs: Sequence[bytes]) -> KnownBlobs:
        return cls(b"".join(sorted(blobs)))

    def __len__(self) -> int:
        return len(self._ids) // ID_SIZE

    def __getitem__(self, i: int) -> bytes:
        return self._ids[i * ID_SIZE : (i + 1) * ID_SIZE]

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes) or len(blob_id) != ID_SIZE:
            return False
        i = bisect.bisect_left(self, blob_id)
        return i < len(self) and self[i] == blob_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (KnownBlobs, (self._ids,))


def storage_spec(storage: Storage) -> StorageSpec:
    """How a worker opens ``storage`` (a local folder, or S3 at its endpoint) when the backup
    is not told: the wrappers (retries, limits) are the worker's own."""
    inner = storage
    while not isinstance(inner, LocalStorage | S3Storage) and hasattr(inner, "inner"):
        inner = inner.inner
    if isinstance(inner, LocalStorage):
        return StorageSpec(inner.root)
    if isinstance(inner, S3Storage):
        return StorageSpec(f"s3://{inner.bucket}/{inner.prefix}", s3_endpoint=inner.endpoint_url)
    raise InvalidArgument(
        f"say how the workers reach {storage.location} (storage=StorageSpec(...))"
    )


class _WorkerKeys(Hidden):
    """What a task needs and nothing more: the keys that chunk, name, seal and pack (the
    config and metadata keys are left out, and the data key never leaves the coordinator),
    the chunker's sizes, where the storage is and the ids the repository holds; for a backup
    of URLs, the source (its storage options may hold credentials)."""

    __slots__ = ("_chunker", "_keys", "_known", "_source", "_spec")

    def __init__(
        self,
        keys: RepoKeys,
        chunker: dict[str, int],
        spec: StorageSpec,
        known: KnownBlobs,
        source: URLSource | None = None,
    ) -> None:
        self._keys = keys.only("blob", "blob_id", "chunker", "pack")
        self._chunker = dict(chunker)
        self._spec = spec
        self._known = known
        self._source = source

    def __reduce__(self) -> tuple[Any, ...]:
        return (_WorkerKeys, (self._keys, self._chunker, self._spec, self._known, self._source))

    @property
    def keys(self) -> RepoKeys:
        return self._keys

    @property
    def chunker(self) -> dict[str, int]:
        return self._chunker

    @property
    def spec(self) -> StorageSpec:
        return self._spec

    @property
    def known(self) -> KnownBlobs:
        return self._known

    @property
    def source(self) -> URLSource | None:
        return self._source


#: What a task reads: (path, the listing's size, offset, length) of a piece of a file, or
#: (path, size, 0, None) for a whole file.
_Piece = tuple[str, int, int, int | None]


@dataclass(frozen=True)
class _Unit:
    """One task's files and pieces of files."""

    files: tuple[_Piece, ...]


@dataclass(frozen=True)
class _FileError:
    """Why a worker could not read a file: an ``OSError``'s errno and text, or the name and
    text of an e2ebackup error."""

    kind: str
    message: str
    errno: int | None = None

    def exception(self, path: str) -> Exception:
        if self.errno is not None:
            return OSError(self.errno, self.message, path)  # PermissionError for EACCES...
        cls = getattr(errors, self.kind, None)
        if isinstance(cls, type) and issubclass(cls, E2EBackupError):
            try:
                return cls(self.message)
            except TypeError:  # one whose constructor takes other arguments
                pass
        return E2EBackupError(self.message)


@dataclass(frozen=True)
class _Captured:
    """The first piece of a file that is an SQLite database: the chunk ids and size of the
    consistent image of the whole database (``Archiver.read_file``)."""

    content: list[str]
    size: int


@dataclass(frozen=True)
class _InFirstPiece:
    """A later piece of an SQLite database: nothing read, the first piece's task captures it
    whole."""


#: How a task read a file (its chunk ids and size) or a piece (chunk ids and bytes read), or
#: why it could not.
_Outcome = tuple[list[str], int] | _Captured | _InFirstPiece | _FileError

#: A stored pack as a task reports it: id, size, (blob id, kind, offset, length) each.
PackEntries = tuple[str, int, list[tuple[bytes, int, int, int]]]


@dataclass
class _Done:
    """What a task returns: per file or piece of its unit what was read, or why it was not;
    the packs it wrote; its part of the statistics."""

    files: list[_Outcome]
    packs: list[PackEntries]
    bytes_read: int = 0
    blobs_added: int = 0
    bytes_added: int = 0
    sqlite_captured: int = 0


@dataclass
class _TaskIndex:
    """A task's view of the index: the repository's ids, and the packs the task stored."""

    known: KnownBlobs
    packs: list[PackEntries] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self.known

    def add_pack(self, pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]) -> None:
        blobs = [(b, loc.kind, loc.offset, loc.length) for b, loc in entries]
        with self._lock:  # called from the pack writer's upload threads
            self.packs.append((pack_id, size, blobs))


@functools.lru_cache(maxsize=8)
def _storage(spec: StorageSpec) -> Storage:
    """One storage a worker process and location: an S3 client's connections are reused from
    one task to the next."""
    return spec.open()


def _back_up_unit(held: _WorkerKeys, unit: _Unit, threads: int | None) -> _Done:
    """A task: every file of the unit read, chunked and its new chunks sealed into packs
    uploaded to the storage. A storage error is raised (Dask runs the task again)."""
    storage = _storage(held.spec)
    # Only what Archiver uses: the storage, the keys and the chunker's sizes.
    repo = Repository(storage, held.keys, {"chunker": held.chunker}, b"")
    index = _TaskIndex(held.known)
    archiver = Archiver(repo, threads=threads, index=index)
    files: list[_Outcome] = []
    opener = held.source.opener() if held.source is not None else None  # a URL backup's
    try:
        for piece in unit.files:
            try:
                files.append(_read_piece(archiver, piece, opener))
            except (OSError, E2EBackupError) as e:
                if isinstance(e, StorageError | RepositoryCorrupted):
                    raise
                files.append(_file_error(e))
        archiver.finish()
    except BaseException:
        archiver.writer.abort()
        raise
    stats = archiver.stats
    return _Done(
        files,
        index.packs,
        bytes_read=stats.bytes_read,
        blobs_added=stats.blobs_added,
        bytes_added=stats.bytes_added,
        sqlite_captured=stats.sqlite_captured,
    )


def _read_piece(
    archiver: Archiver, piece: _Piece, opener: Callable[[str], BinaryIO] | None
) -> _Outcome:
    path, size, offset, length = piece
    if length is None:
        return archiver.read_file(path, size, opener=opener)
    # A piece ends at the listing's size, whatever the file grew to since: the joined chunks
    # are the listed bytes. A file that shrank gives shorter pieces, and the file's size is
    # what its pieces read: the snapshot says what was stored, and restores it.
    read = archiver.read_range(path, offset, length, opener=opener)
    if read is not None:
        return read
    if offset:
        return _InFirstPiece()
    # The database read whole, as one process reads it: one consistent image, not pieces of
    # a file that may be written to meanwhile.
    return _Captured(*archiver.read_file(path, size))


def _joined(outcomes: Sequence[_Outcome]) -> tuple[list[str], int] | _FileError:
    """A file's content and size from its pieces' outcomes, in order; or the error of its
    first piece that failed (one error for the file however many pieces failed)."""
    first = outcomes[0]
    if isinstance(first, _Captured):  # the database is whole in it: the others read nothing
        return first.content, first.size
    read: list[tuple[list[str], int]] = []
    for outcome in outcomes:  # the first piece that failed fails the file
        if isinstance(outcome, _FileError):
            return outcome
        if isinstance(outcome, _Captured | _InFirstPiece):
            # The first piece read a file, a later one found a database: replaced meanwhile.
            return _FileError(
                "E2EBackupError", "it was replaced while it was read; the next backup reads it"
            )
        read.append(outcome)
    # Pieces past the end of a file that shrank read nothing (an empty chunk each): left out.
    content = [i for ids, n in read if n for i in ids] or read[0][0]
    return content, sum(n for _, n in read)


def _pieces(size: int, piece_bytes: int) -> list[tuple[int, int | None]]:
    """The (offset, length) of a file's pieces, or [(0, None)] for a file read whole: one
    smaller than two pieces (the last piece is shorter, or whole)."""
    if size < 2 * piece_bytes:
        return [(0, None)]
    return [(at, min(piece_bytes, size - at)) for at in range(0, size, piece_bytes)]


def _file_error(e: Exception) -> _FileError:
    if isinstance(e, OSError) and e.errno is not None:
        return _FileError(
            type(e).__name__, e.strerror or errnos.errorcode.get(e.errno, ""), e.errno
        )
    return _FileError(type(e).__name__, str(e))


def _same_size_together(
    keys: Sequence[tuple[int, int]], costs: Sequence[int], target: int
) -> list[list[int]]:
    """The numbers of the files and pieces in groups, in the order of each group's first: one
    of a file of at least ``SAME_SIZE_BYTES`` joins the group of an earlier one of the same
    key (its file's size and its offset), up to ``target`` bytes (``costs``) a group, so that
    copies of one photo or clip in two folders, or the same piece of two copies of a video
    (the short last one too), land in one work unit, whose task stores their chunks once; the
    rest are groups of one."""
    groups: list[list[int]] = []
    open_group: dict[tuple[int, int], tuple[list[int], int]] = {}
    for i, (key, cost) in enumerate(zip(keys, costs, strict=True)):
        if key[0] >= SAME_SIZE_BYTES:
            held = open_group.get(key)
            if held is not None and held[1] + cost <= target:
                held[0].append(i)
                open_group[key] = (held[0], held[1] + cost)
                continue
            open_group[key] = ([i], cost)
            groups.append(open_group[key][0])
        else:
            groups.append([i])
    return groups


_PENDING = "pending:"  # a listing not stored yet: never a tree id (those are hex)


class _Coordinator(Archiver):
    """The single-process walk, with two things put off: reading new and changed files (the
    cluster reads them) and so storing the folder listings (stored, children first, once every
    file's chunks are known)."""

    def __init__(
        self,
        repo: Repository,
        *,
        client: distributed.Client,
        spec: StorageSpec,
        unit_bytes: int | None,
        piece_bytes: int,
        threads: int | None,
        retries: int,
        source: URLSource | None = None,
        **options: Any,
    ) -> None:
        super().__init__(repo, **options)
        self.source = source
        self.client = client
        self.spec = spec
        self.unit_bytes = unit_bytes
        self.piece_bytes = piece_bytes
        self.task_threads = threads
        self.retries = retries
        # The files to read: path, entry, and whether it is new (not in the parent snapshot).
        self._files: list[tuple[str, Entry, bool]] = []
        self._listings: list[list[Entry]] = []  # in the order they were made: children first

    def store_file(self, path: str, entry: Entry, old: Entry | None) -> None:
        entry["content"] = []  # until a worker read it
        self._files.append((path, entry, old is None))

    def store_tree(self, entries: list[Entry]) -> str:
        self._listings.append(entries)
        return f"{_PENDING}{len(self._listings) - 1}"

    def complete(self, tree: str) -> str:
        failed = self._read_on_cluster()
        stored: list[str] = []
        for entries in self._listings:
            kept = [e for e in entries if id(e) not in failed]
            for e in kept:
                sub = e.get("subtree", "")
                if sub.startswith(_PENDING):
                    e["subtree"] = stored[int(sub[len(_PENDING) :])]
            stored.append(super().store_tree(kept))
        root = stored[int(tree[len(_PENDING) :])]
        return super().complete(root)

    def _read_on_cluster(self) -> set[int]:
        """Every new or changed file read by the workers; their packs added to the index.
        Returns the ``id()`` of the entries of files that could not be read (reported)."""
        failed: set[int] = set()
        if not self._files:
            return failed
        known = KnownBlobs.of(self.repo.index.live_ids())
        held = _WorkerKeys(
            self.repo.keys, self.repo.config["chunker"], self.spec, known, self.source
        )
        sizes = [entry.get("size", 0) for _, entry, _ in self._files]
        target = self.unit_bytes or auto_unit_bytes(
            self.client,
            sum(sizes),
            most=DEFAULT_BACKUP_UNIT_BYTES,
            least=LEAST_UNIT_BYTES,
            per_thread=UNITS_PER_THREAD,
        )
        # Every file's pieces (or the file whole), in walk order: (file number, offset, length).
        pieces = [
            (i, at, length)
            for i, size in enumerate(sizes)
            for at, length in _pieces(size, self.piece_bytes)
        ]
        costs = [sizes[i] if length is None else length for i, _, length in pieces]
        groups = _same_size_together([(sizes[i], at) for i, at, _ in pieces], costs, target)
        cut = [
            [p for group in part for p in group]
            for part in split_by_bytes(
                groups, lambda g: sum(costs[p] for p in g), target=target, most=MAX_UNIT_FILES
            )
        ]
        units = [
            _Unit(tuple((self._files[i][0], sizes[i], at, n) for i, at, n in in_part))
            for in_part in ([pieces[p] for p in part] for part in cut)
        ]
        members = {id(unit): part for unit, part in zip(units, cut, strict=True)}
        # The outcomes of the pieces of each file read in pieces, filled in as the tasks finish
        # (in any order, from any task), and how many are still to come: the file is joined,
        # or failed and reported once, when its last piece is in.
        waiting: dict[int, list[_Outcome | None]] = {}
        for i, _, length in pieces:
            if length is not None:
                waiting.setdefault(i, []).append(None)
        missing = {i: len(parts) for i, parts in waiting.items()}
        done = run_units(
            self.client,
            held,
            _back_up_unit,
            units,
            name="backup",
            args=(self.task_threads,),
            retries=self.retries,
            scatter_units=True,
        )
        for unit, result in done:
            if not isinstance(result, _Done):
                if isinstance(result, E2EBackupError):
                    raise result  # a storage error after its retries, as the single process's
                raise StorageError(
                    f"a backup task failed on the cluster ({type(result).__name__}); the "
                    "packs it stored are adopted by the next backup"
                ) from result
            for pack_id, size, blobs in result.packs:
                entries = [(b, BlobLocation(k, pack_id, o, n)) for b, k, o, n in blobs]
                self.repo.index.add_pack(pack_id, size, entries, new=True)
            self.stats.bytes_read += result.bytes_read
            self.stats.blobs_added += result.blobs_added
            self.stats.bytes_added += result.bytes_added
            self.stats.sqlite_captured += result.sqlite_captured
            for p, outcome in zip(members[id(unit)], result.files, strict=True):
                i, at, length = pieces[p]
                if length is None:
                    # What read_file returned (or its error): no piece's outcome.
                    assert not isinstance(outcome, _Captured | _InFirstPiece)
                    self._settle(i, outcome, failed)
                    continue
                waiting[i][at // self.piece_bytes] = outcome
                missing[i] -= 1
                if not missing[i]:
                    parts = waiting.pop(i)
                    self._settle(i, _joined([part for part in parts if part is not None]), failed)
            if self.progress is not None:
                self.progress(self.stats, unit.files[-1][0])
        return failed

    def _settle(
        self, i: int, outcome: tuple[list[str], int] | _FileError, failed: set[int]
    ) -> None:
        """The ``i``-th file's content and size set, or its error reported and its entry
        added to ``failed``."""
        path, entry, new = self._files[i]
        if isinstance(outcome, _FileError):
            failed.add(id(entry))
            if new:
                self.stats.files_new -= 1
            else:
                self.stats.files_changed -= 1
            self._error(path, outcome.exception(path))
        else:
            entry["content"], entry["size"] = outcome


def backup(
    repo: Repository,
    paths: Sequence[str | os.PathLike[str]],
    *,
    client: distributed.Client,
    unit_bytes: int | None = None,
    piece_bytes: int = DEFAULT_PIECE_BYTES,
    tags: list[str] | None = None,
    exclude: Sequence[str] = (),
    exclude_caches: bool = False,
    one_file_system: bool = False,
    progress: Progress | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
    storage: StorageSpec | None = None,
    threads: int | None = 1,
    retries: int = 3,
    lock_wait: float = 0.0,
    source_options: Mapping[str, Any] | None = None,
) -> tuple[str, BackupStats]:
    """Backs up ``paths`` into ``repo`` with the files read, chunked, sealed and uploaded by
    the workers of ``client``'s cluster; returns the snapshot id and the statistics, as
    :func:`e2ebackup.repo.backup.backup` (the same snapshot, parent, excludes, statistics and
    ``on_error`` reports, under the same lock).

    The paths must be the same on every worker and this process (a shared file system, or
    the cluster's machines all mounting the data at the same place). ``storage`` says where
    the workers find the repository (default: the folder, or the S3 bucket, prefix and
    endpoint ``repo`` was opened at; S3 credentials come from each worker's environment).

    ``unit_bytes``: the bytes of files one task reads (default: up to 256 MiB, and small
    enough for four tasks per worker thread; a larger file or piece is a task alone);
    ``piece_bytes``: a file of at least twice this size (default 64 MiB, at least 1 MiB) is
    read in pieces of this size (the last one shorter), which go to the work units as files
    do, so several tasks read it; keep it from one run to the next (with another size the
    chunks around the cuts differ, about three a cut, and are stored again); ``threads``: the
    threads a task chunks and seals with (default 1: the cluster's worker threads are the
    parallelism; None: all the worker machine's cores);
    ``retries``: how often Dask runs a task again whose worker died. A storage error that
    outlasts the retries is raised; the packs stored until then are adopted by the next
    backup.

    ``paths`` may instead all be fsspec URLs (``s3://bucket/media``, ``webdav://photos``,
    ``file:///data``; :mod:`e2ebackup.dask.sources`): this process lists them, the workers
    read the files through fsspec with ``source_options`` (the storage options, which go to
    the workers with the keys, never through the scheduler) or, without them, with the fsspec
    configuration of their own environment. Names, sizes and modification times are kept; a
    file of the same size and modification time as in the parent keeps its chunks unread.
    ``one_file_system`` does not apply, ``exclude_caches`` is refused; the snapshot's paths
    are the URLs without credentials, query or fragment.
    """
    if piece_bytes < LEAST_PIECE_BYTES:
        raise InvalidArgument(f"pieces of files are at least {LEAST_PIECE_BYTES:,} bytes")
    path_strings = [os.fspath(p) for p in paths]
    excludes = Excludes(exclude, exclude_caches=exclude_caches)
    spec = storage or storage_spec(repo.storage)
    source = None
    if any(is_url(p) for p in path_strings):
        source = URLSource(path_strings, source_options)
    elif source_options is not None:
        raise InvalidArgument("source_options are for URLs (s3://..., webdav://...)")
    with backup_lock(repo, wait=lock_wait):
        repo.head(refresh=True)
        recovered = repo.recover_orphan_packs()
        if source is not None:  # URLs are recorded as given (public_url), not made absolute
            parent = newest_snapshot_of(repo, source.paths)
        else:
            parent = parent_snapshot(repo, path_strings)
        coordinator = _Coordinator(
            repo,
            client=client,
            spec=spec,
            unit_bytes=unit_bytes,
            piece_bytes=piece_bytes,
            threads=threads,
            retries=retries,
            progress=progress,
            on_error=on_error,
            excludes=excludes,
            one_file_system=one_file_system,
            source=source,
        )
        coordinator.stats.packs_recovered = recovered
        if source is not None:
            walk = source.walk(coordinator, excludes)
            sid = coordinator.run_walk(walk, source.paths, parent=parent, tags=tags)
        else:
            sid = coordinator.run(path_strings, parent=parent, tags=tags)
        return sid, coordinator.stats
