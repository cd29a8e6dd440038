"""A restore on a Dask cluster into a folder every worker sees at the same path (a shared file
system): the packs read, the blobs authenticated and the files written by the workers
(``pip install 'e2ebackup[dask]'``, docs/SCALE.md).

- **The coordinator** (this process) opens the repository, takes the shared lock every
  restore takes, and runs :meth:`Restorer.run_delegated <e2ebackup.repo.restore.Restorer.
  run_delegated>`: the single-process restore up to writing files. It checks the whole budget
  (the target's free space and inodes, ``max_size``, ``max_files``) before anything is written,
  makes the folders and the symlinks, leaves out what is in the way as the single process
  does, and looks up in the index where each file's blobs are. The files are taken in windows
  (``WINDOW_UNITS_PER_THREAD`` units a worker thread, at most ``MAX_WINDOW_FILES`` files: what
  the coordinator holds at once), sorted by the pack of their first blob (files that share
  packs stay together: one ranged read serves several) and cut into work units of about
  ``unit_bytes``, one window after the other. Once every unit is written it sets the folders'
  metadata, children first (no worker touches a folder's mode or times, so none makes a
  read-only folder before the others wrote into it), and makes the whole durable.
- **The workers** open the repository's storage themselves (:class:`~e2ebackup.dask.verify.
  StorageSpec`; S3 credentials from their own environment) and run :meth:`Restorer.write_files
  <e2ebackup.repo.restore.Restorer.write_files>`: the single process's ranged reads, blob
  authentication and :class:`~e2ebackup.repo.extract.Extractor` (folders opened with
  O_NOFOLLOW, files without a name until complete, setuid bits cleared, never replacing a file
  without ``overwrite``), then a sync of the target's file system. A task returns its counts
  and the files it found in the way.
- **What the scheduler sees:** task names (``e2ebackup-restore-<unit>-<random run id>-
  <random>``), the target's path and the restore's options, and the names and sizes of
  scattered objects: the keys that open blobs (never the data, config or metadata key, nor
  the pack-header key or the password) with the storage's location, and the units (paths,
  entries, pack ids and byte ranges). Both are sent by the client straight to the workers
  (:mod:`e2ebackup.dask.runner`); results are fetched from the workers directly. Nothing
  carries plaintext.
- **A worker that dies** has its task run again by Dask (``retries``). The files the dead
  attempt was writing had no name yet (or, where the file system cannot make unnamed files,
  a hidden temporary name the coordinator removes at the end); those it had placed are
  complete, with their metadata, and the new attempt counts them as written
  (:meth:`~e2ebackup.repo.restore.Restorer.write_files` says why that is safe).
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import distributed

from e2ebackup.dask.backup import storage_spec
from e2ebackup.dask.runner import Hidden, auto_unit_bytes, run_units, split_by_bytes
from e2ebackup.dask.verify import StorageSpec
from e2ebackup.errors import E2EBackupError, InvalidArgument
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.restore import FileJob, Progress, Restorer, RestoreStats
from e2ebackup.storage import Storage

__all__ = [
    "DEFAULT_RESTORE_UNIT_BYTES",
    "BlobKeys",
    "RestoreUnit",
    "WorkerRepository",
    "file_units",
    "file_windows",
    "restore",
    "write_on_cluster",
]

#: The most bytes of files one task writes; fewer when that would leave fewer than
#: ``UNITS_PER_THREAD`` units per worker thread, never fewer than ``LEAST_UNIT_BYTES``.
DEFAULT_RESTORE_UNIT_BYTES = 256 << 20
LEAST_UNIT_BYTES = 8 << 20
UNITS_PER_THREAD = 4
MAX_UNIT_FILES = 10_000
#: What a file costs beyond its bytes when units are cut (making it, its metadata, its name).
FILE_COST = 4096
#: The files taken from the walk at once, sorted and cut into units: about this many units
#: per worker thread, and at most this many files (about 1 KiB each on the coordinator).
WINDOW_UNITS_PER_THREAD = 16
MAX_WINDOW_FILES = 200_000


class BlobKeys(Hidden):
    """What a task needs to open blobs: the blob and blob-id keys and the repository id (the
    others, the pack-header key included, never leave the coordinator), the same keys of each
    writer's drop whose packs the tasks read (version 4: a drop's packs are under its own
    keys), the snapshot's largest chunk, and where the storage is."""

    __slots__ = ("_drops", "_keys", "_max_chunk", "_spec")

    def __init__(
        self,
        keys: RepoKeys,
        max_chunk: int,
        spec: StorageSpec,
        drops: dict[str, RepoKeys] | None = None,
    ) -> None:
        self._keys = keys.only("blob", "blob_id")
        self._max_chunk = max_chunk
        self._spec = spec
        narrowed: dict[int, RepoKeys] = {}  # one object a drop: one codec a drop on the worker
        self._drops = {
            p: narrowed.setdefault(id(k), k.only("blob", "blob_id"))
            for p, k in (drops or {}).items()
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (BlobKeys, (self._keys, self._max_chunk, self._spec, self._drops))

    @classmethod
    def of(
        cls, repo: Repository, snapshot_id: str, spec: StorageSpec, jobs: Sequence[FileJob]
    ) -> BlobKeys:
        """The keys the ``jobs`` of a snapshot need: the repository's, and those of the drops
        whose packs they read (no other drop's)."""
        packs = {run[0] for job in jobs for run in job.runs}
        drops = {p: repo.keys_for(p) for p in packs if repo.is_drop_pack(p)}
        return cls(repo.keys, repo.chunker_max(snapshot_id), spec, drops)

    @property
    def keys(self) -> RepoKeys:
        return self._keys

    @property
    def max_chunk(self) -> int:
        return self._max_chunk

    @property
    def spec(self) -> StorageSpec:
        return self._spec

    def for_pack(self, pack_id: str) -> RepoKeys:
        return self._drops.get(pack_id, self._keys)


class WorkerRepository(Repository):
    """What a task's :class:`~e2ebackup.repo.restore.Restorer` reads through: the storage and
    the keys of :class:`BlobKeys` (a drop's pack opened with the drop's keys), nothing else."""

    def __init__(self, storage: Storage, held: BlobKeys) -> None:
        super().__init__(storage, held.keys, {"chunker": {"max": held.max_chunk}}, b"")
        self.held = held

    def keys_for(self, pack_id: str) -> RepoKeys:
        return self.held.for_pack(pack_id)

    def is_drop_pack(self, pack_id: str) -> bool:
        return self.held.for_pack(pack_id) is not self.keys


def write_on_cluster(
    client: distributed.Client,
    repo: Repository,
    snapshot_id: str,
    spec: StorageSpec,
    jobs: Iterator[FileJob],
    stats: RestoreStats,
    task: Callable[[BlobKeys, RestoreUnit, Any], RestoreStats],
    *,
    name: str,
    options: Any,
    unit_bytes: int | None,
    retries: int,
    on_unit: Callable[[RestoreUnit], None] | None = None,
) -> None:
    """Every file of ``jobs`` written by ``task(keys, unit, options)`` on the cluster, in
    windows and units (:func:`file_windows`, :func:`file_units`), with the keys of each
    window's packs; the tasks' counts added to ``stats``, ``on_unit`` called as units finish.
    An error that outlasted the retries is raised, as the single process raises it."""
    threads = max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
    size = unit_bytes or auto_unit_bytes(
        client,
        stats.bytes_total,  # measured before anything was written
        most=DEFAULT_RESTORE_UNIT_BYTES,
        least=LEAST_UNIT_BYTES,
        per_thread=UNITS_PER_THREAD,
    )
    for window in file_windows(jobs, WINDOW_UNITS_PER_THREAD * threads * size):
        held = BlobKeys.of(repo, snapshot_id, spec, window)
        done = run_units(
            client,
            held,
            task,
            file_units(window, size),
            name=name,
            args=(options,),
            retries=retries,
            scatter_units=True,
        )
        for unit, result in done:
            if isinstance(result, E2EBackupError | OSError):
                raise result
            if not isinstance(result, RestoreStats):
                raise E2EBackupError(
                    f"a restore task failed on the cluster ({type(result).__name__}); the "
                    "files it did not write are not in the target"
                ) from result
            stats.files += result.files
            stats.bytes += result.bytes
            stats.skipped_existing += result.skipped_existing
            if on_unit is not None:
                on_unit(unit)


@dataclass(frozen=True)
class _Options:
    """The target and how to write into it, as each task receives them."""

    target: str
    overwrite: bool
    keep_special_bits: bool
    same_owner: bool
    threads: int | None


@dataclass(frozen=True)
class RestoreUnit:
    """One task's files, in the order they are written."""

    jobs: tuple[FileJob, ...]


@functools.lru_cache(maxsize=8)
def _storage(spec: StorageSpec) -> Storage:
    """One storage a worker process and location: an S3 client's connections are reused from
    one task to the next."""
    return spec.open()


def _write_unit(held: BlobKeys, unit: RestoreUnit, options: _Options) -> RestoreStats:
    """A task: the unit's files read, authenticated and written as the single process writes
    them. A storage error or a damaged blob is raised (Dask runs the task again, then the
    coordinator raises it)."""
    if not os.path.isdir(options.target):
        raise InvalidArgument(
            f"{options.target} is not a folder on the worker {socket.gethostname()}: the "
            "target must be on a file system every worker shares"
        )
    restorer = Restorer(
        WorkerRepository(_storage(held.spec), held),
        overwrite=options.overwrite,
        threads=options.threads,
        keep_special_bits=options.keep_special_bits,
        same_owner=options.same_owner,
    )
    return restorer.write_files(options.target, unit.jobs)


def _cost(job: FileJob) -> int:
    return int(job.entry.get("size", 0)) + FILE_COST


def file_windows(jobs: Iterator[FileJob], window_bytes: int) -> Iterator[list[FileJob]]:
    """The files in runs of about ``window_bytes`` and at most ``MAX_WINDOW_FILES``."""
    while True:
        window: list[FileJob] = []
        size = 0
        for job in itertools.islice(jobs, MAX_WINDOW_FILES):
            window.append(job)
            size += _cost(job)
            if size >= window_bytes:
                break
        if not window:
            return
        yield window


def file_units(window: list[FileJob], unit_bytes: int) -> list[RestoreUnit]:
    """The files cut into units of about equal bytes, files sharing packs together."""
    ordered = sorted(window, key=lambda j: (j.first_pack, j.order))
    cut = split_by_bytes(ordered, _cost, target=unit_bytes, most=MAX_UNIT_FILES)
    return [RestoreUnit(tuple(part)) for part in cut]


def restore(
    repo: Repository,
    snapshot_ref: str,
    target: str | os.PathLike[str],
    *,
    client: distributed.Client,
    subpath: str | Sequence[str] | None = None,
    overwrite: bool = False,
    max_size: int | None = None,
    max_files: int | None = None,
    unit_bytes: int | None = None,
    progress: Progress | None = None,
    where: SnapshotFilter | None = None,
    exclude: Sequence[str] = (),
    keep_special_bits: bool = False,
    same_owner: bool = True,
    storage: StorageSpec | None = None,
    threads: int | None = None,
    retries: int = 3,
) -> RestoreStats:
    """Restores a snapshot of ``repo`` into ``target`` with the files read and written by the
    workers of ``client``'s cluster; the same tree, the same checks and the same statistics
    as :func:`e2ebackup.repo.restore.restore` with the same arguments (``subpath``,
    ``overwrite``, ``max_size``, ``max_files``, ``where``, ``exclude``,
    ``keep_special_bits``, ``same_owner``; ``progress`` is called as units finish).

    ``target`` must be the same folder on every worker and this process (a shared file
    system). ``storage`` says where the workers find the repository (default: the folder,
    or the S3 bucket, prefix and endpoint ``repo`` was opened at; S3 credentials come from
    each worker's environment).

    ``unit_bytes``: the bytes of files one task writes (default: up to 256 MiB, and small
    enough for four tasks per worker thread); ``threads``: the reads a task runs at once
    (default: the storage's read concurrency); ``retries``: how often Dask runs a task again
    whose worker died or that failed. An error that outlasts the retries is raised (a damaged
    blob as :class:`~e2ebackup.errors.RepositoryCorrupted`, as the single process raises it);
    the files written until then are complete, the others absent.
    """
    spec = storage or storage_spec(repo.storage)
    # Every worker writes at this path: relative to this process's folder it means nothing.
    where_to = os.path.abspath(os.fspath(target))
    excludes = Excludes(exclude)
    options = _Options(where_to, overwrite, keep_special_bits, same_owner, threads)

    def write_files(jobs: Iterator[FileJob], stats: RestoreStats) -> None:
        def on_unit(unit: RestoreUnit) -> None:
            if progress is not None:
                progress(stats, os.path.join(where_to, unit.jobs[-1].path))

        write_on_cluster(
            client,
            repo,
            sid,
            spec,
            jobs,
            stats,
            _write_unit,
            name="restore",
            options=options,
            unit_bytes=unit_bytes,
            retries=retries,
            on_unit=on_unit,
        )

    with repo.read_lock():
        sid, snapshot = repo.find_snapshot(snapshot_ref, where)
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
        return restorer.run_delegated(snapshot, where_to, subpath, write_files)
