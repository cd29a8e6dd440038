"""A backup on a Dask cluster: the files read, chunked, sealed and uploaded by the workers, the
snapshot made by this process (``pip install 'e2ebackup[dask]'``, docs/SCALE.md).

- **The coordinator** (this process) opens the repository, takes the lock every backup takes,
  adopts the packs of backups that died (:meth:`~e2ebackup.repo.repository.Repository.
  recover_orphan_packs`, which also adopts those of killed workers), and walks the paths as
  :class:`~e2ebackup.repo.backup.Archiver` walks them (the same excludes, ``one_file_system``,
  SQLite side files, special files): it only calls ``stat``. A file unchanged since the parent
  snapshot (same size, mtime, ctime and inode) keeps its chunks without being read; the others
  are cut into work units of about ``unit_bytes`` (a file larger than that is a unit alone).
  Once the workers named every file's chunks, it stores the folder listings, adds the
  workers' packs to the index and writes the index, the snapshot and the head through the
  single-process backup's commit.
- **The workers** open the repository's storage themselves (:class:`~e2ebackup.dask.verify.
  StorageSpec`; S3 credentials from their own environment), read their unit's files with
  :meth:`Archiver.read_file <e2ebackup.repo.backup.Archiver.read_file>` (the same chunker, blob
  ids, compression choice, sealing, SQLite copy and :class:`~e2ebackup.repo.pack.PackWriter`),
  leave out the chunks the repository holds (a sorted array of the index's blob ids, sent
  once a run to every worker) or that the task stored already, and upload sealed packs
  straight to the storage. A task returns per file its chunk ids and size (or the error that
  kept it from being read), and the blob entries of the packs it wrote: no plaintext, no key.
- **What the scheduler sees:** task names (``e2ebackup-backup-<unit>-<random run id>-<random>``)
  and the names and sizes of scattered objects: the keys a worker needs (blob, blob id,
  chunker, pack header; never the data key, the config or metadata key or the password) with
  the storage's location and the array of known blob ids, and the units (file paths and
  sizes). All are sent by the client straight to the workers (:mod:`e2ebackup.dask.runner`);
  results are fetched from the workers directly.
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
from typing import Any

import distributed

from e2ebackup import errors
from e2ebackup.dask.runner import Hidden, auto_unit_bytes, run_units, split_by_bytes
from e2ebackup.dask.sources import URLSource, is_url, url_parent
from e2ebackup.dask.verify import StorageSpec
from e2ebackup.errors import E2EBackupError, InvalidArgument, RepositoryCorrupted, StorageError
from e2ebackup.repo.backup import (
    Archiver,
    BackupStats,
    Progress,
    backup_lock,
    parent_snapshot,
)
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import Entry
from e2ebackup.storage import LocalStorage, S3Storage, Storage

__all__ = ["DEFAULT_BACKUP_UNIT_BYTES", "KnownBlobs", "backup", "storage_spec"]

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


@dataclass(frozen=True)
class _Unit:
    """One task's files: (path, size from the listing) each."""

    files: tuple[tuple[str, int], ...]


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


#: A stored pack as a task reports it: id, size, (blob id, kind, offset, length) each.
PackEntries = tuple[str, int, list[tuple[bytes, int, int, int]]]


@dataclass
class _Done:
    """What a task returns: per file its chunk ids and size, or why it was not read; the packs
    it wrote; its part of the statistics."""

    files: list[tuple[list[str], int] | _FileError]
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
    files: list[tuple[list[str], int] | _FileError] = []
    opener = held.source.opener() if held.source is not None else None  # a URL backup's
    try:
        for path, size in unit.files:
            try:
                files.append(archiver.read_file(path, size, opener=opener))
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


def _file_error(e: Exception) -> _FileError:
    if isinstance(e, OSError) and e.errno is not None:
        return _FileError(
            type(e).__name__, e.strerror or errnos.errorcode.get(e.errno, ""), e.errno
        )
    return _FileError(type(e).__name__, str(e))


def _same_size_together(sizes: list[int], target: int) -> list[list[int]]:
    """The files' numbers in groups, in the order of each group's first file: a file of at
    least ``SAME_SIZE_BYTES`` joins the group of an earlier file of the same size (up to
    ``target`` bytes a group), so that copies of one photo or clip in two folders land in one
    work unit, whose task stores their chunks once; the rest are groups of one."""
    groups: list[list[int]] = []
    open_group: dict[int, tuple[list[int], int]] = {}
    for i, size in enumerate(sizes):
        if size >= SAME_SIZE_BYTES:
            held = open_group.get(size)
            if held is not None and held[1] + size <= target:
                held[0].append(i)
                open_group[size] = (held[0], held[1] + size)
                continue
            open_group[size] = ([i], size)
            groups.append(open_group[size][0])
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
        known = KnownBlobs.of([b for b, _ in self.repo.index.items() if b in self.repo.index])
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
        groups = _same_size_together(sizes, target)
        cut = [
            [i for group in part for i in group]
            for part in split_by_bytes(
                groups, lambda g: sum(sizes[i] for i in g), target=target, most=MAX_UNIT_FILES
            )
        ]
        units = [_Unit(tuple((self._files[i][0], sizes[i]) for i in part)) for part in cut]
        members = {id(unit): part for unit, part in zip(units, cut, strict=True)}
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
            for i, outcome in zip(members[id(unit)], result.files, strict=True):
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
            if self.progress is not None:
                self.progress(self.stats, unit.files[-1][0])
        return failed


def backup(
    repo: Repository,
    paths: Sequence[str | os.PathLike[str]],
    *,
    client: distributed.Client,
    unit_bytes: int | None = None,
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
    enough for four tasks per worker thread; a larger file is a task alone); ``threads``: the
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
        if source is not None:
            parent = url_parent(repo, source.paths)
        else:
            parent = parent_snapshot(repo, path_strings)
        coordinator = _Coordinator(
            repo,
            client=client,
            spec=spec,
            unit_bytes=unit_bytes,
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
