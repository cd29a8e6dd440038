"""A restore on a Dask cluster into an S3 prefix, each file of the snapshot one plaintext object
(``pip install 'e2ebackup[dask,s3]'``, docs/SCALE.md, "Restoring into an S3 prefix").

**What this gives away.** The repository is end-to-end encrypted: its bucket holds only sealed
packs, and whoever runs the bucket learns sizes and times, never contents or names. This
restore writes the snapshot's files *decrypted* into a bucket: names, contents, sizes and
modification times become readable by the bucket's operator, by anyone its policy or a leaked
credential lets read it, and by whatever copies it (replication, backups of the bucket). It is
therefore never done from an ambiguous argument: :func:`restore_to_s3` needs
``plaintext_to_cloud=True`` (the command line: ``--plaintext-to-s3``) and refuses otherwise.

- **The coordinator** (this process) takes the shared lock, walks the snapshot as every restore
  does (:meth:`Restorer.plan_files <e2ebackup.repo.restore.Restorer.plan_files>`: the budget
  ``max_size`` / ``max_files`` checked before the first object is written; no free space to
  measure) and hands out its regular files, cut into units as :func:`e2ebackup.dask.restore`
  cuts them, with the same keys (:class:`~e2ebackup.dask.restore.BlobKeys`, scattered straight
  to the workers). A path that cannot be a key (not valid UTF-8, a control character, longer
  than S3 takes: :func:`~e2ebackup.storage.s3.check_key_path`) is left out and listed in
  ``names_not_kept``.
- **The workers** open the repository's storage and the target bucket themselves, with the
  credentials of their own environment (``AWS_ACCESS_KEY_ID``, a profile, an instance role:
  none goes through the scheduler or this process), read and authenticate the blobs as the
  plain restore does (:meth:`Restorer.write_to <e2ebackup.repo.restore.Restorer.write_to>`)
  and stream each file into one object ``prefix/<path in the snapshot>``
  (:meth:`S3Storage.upload <e2ebackup.storage.s3.S3Storage.upload>`): a file up to
  ``multipart_threshold`` in one ``PutObject`` once all of it authenticated, a larger one as a
  multipart upload completed only after its last part authenticated and aborted on any error.
  Memory: about ``part_size x concurrency`` a worker process, never a whole large file.
- **Never an object that looks complete and is not:** an object appears only once every blob
  of its file authenticated and its size matched. A damaged blob raises
  :class:`~e2ebackup.errors.RepositoryCorrupted` and the file's object never appears. A worker
  killed mid-file leaves at most an incomplete multipart upload (invisible, but its parts are
  billed): :meth:`S3Storage.cleanup_incomplete <e2ebackup.storage.s3.S3Storage.
  cleanup_incomplete>` on the bucket and prefix, or a lifecycle rule aborting incomplete
  uploads, removes it. Dask runs the unit again (``retries``).
- **Existing objects** are left as they are and listed in ``skipped_existing`` (as the folder
  restore leaves existing files), unless ``overwrite``: a ``HeadObject`` before each upload,
  and ``If-None-Match: *`` on its last request where the server honours it (elsewhere an
  object written by someone else between the two may be replaced: a race this accepts). An
  object that is the one this restore writes (same size, ``mtime`` and ``mode`` metadata: an
  earlier attempt at the same unit placed it) counts as written.
- **What is kept, what is not:** each object carries the file's modification time and
  permission bits as user metadata (``x-amz-meta-mtime``: seconds since the epoch with nine
  decimals; ``x-amz-meta-mode``: four octal digits, as rclone reads them). Not kept: owners and
  groups, setuid/setgid/sticky bits (files that had them: ``special_bits_not_kept``), symlinks
  (``symlinks_not_kept``), folders (a file's key carries its path; a folder with no file in it
  has no object: ``empty_dirs_not_kept``), folders' metadata, hard links (each path its own
  object). What the scheduler sees is what it sees for :func:`e2ebackup.dask.restore`, with the
  bucket and prefix in place of the target folder.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import distributed

from e2ebackup.dask.backup import storage_spec
from e2ebackup.dask.restore import BlobKeys, RestoreUnit, WorkerRepository, write_on_cluster
from e2ebackup.dask.verify import StorageSpec
from e2ebackup.errors import InvalidArgument, ObjectExists, RepositoryCorrupted
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.restore import FileJob, FileSink, Progress, Restorer, RestoreStats, Walked
from e2ebackup.repo.tree import Entry
from e2ebackup.storage import Storage
from e2ebackup.storage.s3 import MIN_PART_SIZE, S3Storage, StreamUpload, check_key_path

__all__ = ["S3RestoreStats", "S3Target", "restore_to_s3"]

MIB = 1 << 20


@dataclass(frozen=True)
class S3Target:
    """Where the objects go: ``s3://bucket/prefix`` at ``endpoint_url`` (None: each worker's
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS), and how they are uploaded
    (``part_size`` bytes a part, at least 5 MiB; files larger than ``multipart_threshold`` in
    parts; ``concurrency`` parts or objects at once a worker process). No credential: each
    worker's environment gives it."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    part_size: int = 8 * MIB
    multipart_threshold: int = 8 * MIB
    concurrency: int = 4

    @classmethod
    def from_url(cls, url: str, **options: object) -> S3Target:
        """``s3://bucket/prefix`` (as ``-r`` names a repository in a bucket)."""
        if not url.startswith("s3://"):
            raise InvalidArgument(f"{url!r} is not an S3 location: use s3://bucket/prefix")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        return cls(bucket, prefix, **options)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise InvalidArgument(f"invalid bucket name {self.bucket!r}")
        prefix = self.prefix.strip("/")
        if prefix:
            check_key_path(prefix)
        object.__setattr__(self, "prefix", prefix)
        if self.part_size < MIN_PART_SIZE or self.multipart_threshold < 0 or self.concurrency < 1:
            raise InvalidArgument(
                f"part_size at least {MIN_PART_SIZE} bytes, multipart_threshold not negative, "
                "concurrency at least 1"
            )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, path: str) -> str:
        """The key of the file at ``path`` (relative, "/" between names) below the prefix."""
        return f"{self.prefix}/{path}" if self.prefix else path

    def open(self) -> S3Storage:
        return S3Storage(
            self.bucket,
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            part_size=self.part_size,
            multipart_threshold=self.multipart_threshold,
            concurrency=self.concurrency,
        )


@dataclass
class S3RestoreStats(RestoreStats):
    """:class:`~e2ebackup.repo.restore.RestoreStats` of a restore into objects (``dirs`` and
    ``symlinks`` stay 0: none is made), with what objects cannot keep: ``dirs_not_kept``
    folders walked (no object each: their files' keys carry their paths), of which
    ``empty_dirs_not_kept`` had no file restored below them (gone for good),
    ``symlinks_not_kept``, ``special_bits_not_kept`` files whose setuid, setgid or sticky bit is
    not in their ``mode`` metadata, and ``names_not_kept``: the paths that cannot be keys,
    left out. Owners are never kept (not counted: every file has one)."""

    dirs_not_kept: int = 0
    empty_dirs_not_kept: int = 0
    symlinks_not_kept: int = 0
    special_bits_not_kept: int = 0
    names_not_kept: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Options:
    target: S3Target
    overwrite: bool
    threads: int | None


def object_metadata(entry: Entry) -> dict[str, str]:
    """The ``x-amz-meta-*`` an object of ``entry`` carries: ``mtime`` (seconds, nine decimals)
    and ``mode`` (permission bits, four octal digits)."""
    ns = int(entry.get("mtime_ns", 0))
    seconds, frac = divmod(abs(ns), 1_000_000_000)
    sign = "-" if ns < 0 else ""
    mode = int(entry.get("mode", 0o644)) & 0o777
    return {"mtime": f"{sign}{seconds}.{frac:09d}", "mode": f"{mode:04o}"}


@functools.lru_cache(maxsize=8)
def _repo_storage(spec: StorageSpec) -> Storage:
    return spec.open()


@functools.lru_cache(maxsize=8)
def _target_storage(target: S3Target) -> S3Storage:
    """One client a worker process and target: connections and part buffers shared by the
    tasks (the buffers bound the memory of all of them together)."""
    return target.open()


_Outcome = Literal["written", "there", "exists"]


@dataclass
class _Pending:
    future: Future[_Outcome]
    path: str
    size: int
    upload: StreamUpload | None  # a multipart upload being completed


class _ObjectSink:
    """The :class:`~e2ebackup.repo.restore.FileSink` of one task: each file one object. A
    small file is kept whole and put by a thread of its own once complete (checked for an
    existing object there first); a large one is checked at its start and streamed as a
    multipart upload, completed by a thread once its last blob came. At most
    ``part_size x concurrency`` bytes of small files wait for their threads."""

    def __init__(self, storage: S3Storage, options: _Options, stats: RestoreStats) -> None:
        self._s = storage
        self._target = options.target
        self._overwrite = options.overwrite
        self._stats = stats
        self._limit = options.target.part_size * options.target.concurrency
        self._pool = ThreadPoolExecutor(
            options.target.concurrency, thread_name_prefix="e2ebackup-s3-objects"
        )
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        # The file being written: its path, declared size, bytes so far, and either its
        # blobs (small) or its upload (large); None: no file, or one left as it is.
        self._path: str | None = None
        self._declared = 0
        self._got = 0
        self._blobs: list[bytes] | None = None
        self._upload: StreamUpload | None = None

    @property
    def writing(self) -> str | None:
        return self._path

    def _there_before(self, key: str, entry: Entry) -> _Outcome | None:
        """None if nothing is at ``key``; else whether it is this restore's object."""
        head = self._s.head_path(key)
        if head is None:
            return None
        size, meta = head
        same = size == int(entry.get("size", 0)) and all(
            meta.get(k) == v for k, v in object_metadata(entry).items()
        )
        return "there" if same else "exists"

    def start_file(self, entry: Entry, path: str) -> None:
        key = self._target.key(path)
        declared = int(entry.get("size", 0))
        self._path, self._declared, self._got = path, declared, 0
        if declared <= self._s.multipart_threshold:
            self._blobs, self._upload = [], None
            return
        self._blobs = None
        if not self._overwrite:
            found = self._there_before(key, entry)
            if found is not None:
                self._path = None
                self._count(found, path, declared)
                return
        self._upload = self._s.upload(
            key, size=declared, metadata=object_metadata(entry), overwrite=self._overwrite
        )

    def write(self, blob: bytes) -> None:
        if self._path is None:
            return
        if self._got + len(blob) > self._declared:
            raise RepositoryCorrupted(
                f"{self._path}: its chunks are longer than the {self._declared:,} bytes the "
                "snapshot says"
            )
        self._got += len(blob)
        if self._blobs is not None:
            self._blobs.append(blob)
        else:
            assert self._upload is not None
            self._upload.write(blob)

    def finish_file(self, entry: Entry) -> None:
        path = self._path
        if path is None:
            return
        if self._got != self._declared:
            raise RepositoryCorrupted(
                f"{path}: restored {self._got} bytes, the snapshot says {self._declared}"
            )
        self._path = None
        blobs, self._blobs = self._blobs, None
        upload, self._upload = self._upload, None
        if blobs is not None:
            self._settle(self._limit - self._declared)
            future = self._pool.submit(self._put_small, self._target.key(path), entry, blobs)
            self._pending.append(_Pending(future, path, self._declared, None))
            self._pending_bytes += self._declared
        else:
            assert upload is not None
            try:
                future = self._pool.submit(self._complete, upload)
            except BaseException:
                upload.abort()
                raise
            self._pending.append(_Pending(future, path, self._declared, upload))
        self._settle(self._limit)

    def _put_small(self, key: str, entry: Entry, blobs: list[bytes]) -> _Outcome:
        if not self._overwrite:
            found = self._there_before(key, entry)
            if found is not None:
                return found
        size = int(entry.get("size", 0))
        upload = self._s.upload(
            key, size=size, metadata=object_metadata(entry), overwrite=self._overwrite
        )
        for blob in blobs:
            upload.write(blob)
        return self._complete(upload)

    @staticmethod
    def _complete(upload: StreamUpload) -> _Outcome:
        try:
            upload.complete()  # aborts the upload itself on a failure
        except ObjectExists:  # appeared since it was looked for (If-None-Match)
            return "exists"
        return "written"

    def _count(self, outcome: _Outcome, path: str, size: int) -> None:
        if outcome == "exists":
            self._stats.skipped_existing.append(f"{self._target.url.rstrip('/')}/{path}")
            return
        self._stats.files += 1
        self._stats.bytes += size

    def _settle(self, max_bytes: int) -> None:
        """Counts the finished objects, in order, waiting for the oldest while more than
        ``max_bytes`` of small files wait; re-raises a failure."""
        while self._pending:
            first = self._pending[0]
            if not first.future.done() and self._pending_bytes <= max_bytes:
                return
            self._pending.popleft()
            if first.upload is None:
                self._pending_bytes -= first.size
            self._count(first.future.result(), first.path, first.size)

    def finish(self) -> None:
        try:
            self._settle(-1)
        finally:
            self._pool.shutdown(wait=True)

    def discard(self) -> None:
        """After an error: no object of an unfinished file appears (uploads aborted)."""
        upload, self._upload = self._upload, None
        self._path, self._blobs = None, None
        pending = list(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        for p in pending:
            if p.future.cancel() and p.upload is not None:
                p.upload.abort()
        if upload is not None:
            upload.abort()
        self._pool.shutdown(wait=True)  # the ones running finish or abort themselves


def _upload_unit(held: BlobKeys, unit: RestoreUnit, options: _Options) -> RestoreStats:
    """A task: the unit's files read, authenticated and each written as one object. A storage
    error or a damaged blob is raised (Dask runs the task again, then the coordinator raises
    it)."""
    repo = WorkerRepository(_repo_storage(held.spec), held)
    restorer = Restorer(repo, overwrite=options.overwrite, threads=options.threads)
    storage = _target_storage(options.target)

    def sink(stats: RestoreStats) -> FileSink:
        return _ObjectSink(storage, options, stats)

    return restorer.write_to(sink, unit.jobs)


def restore_to_s3(
    repo: Repository,
    snapshot_ref: str,
    target: S3Target | str,
    *,
    client: distributed.Client,
    plaintext_to_cloud: bool = False,
    endpoint_url: str | None = None,
    subpath: str | Sequence[str] | None = None,
    overwrite: bool = False,
    max_size: int | None = None,
    max_files: int | None = None,
    unit_bytes: int | None = None,
    progress: Progress | None = None,
    where: SnapshotFilter | None = None,
    exclude: Sequence[str] = (),
    storage: StorageSpec | None = None,
    threads: int | None = None,
    retries: int = 3,
) -> S3RestoreStats:
    """Restores a snapshot of ``repo`` into ``target`` (an :class:`S3Target`, or
    ``s3://bucket/prefix`` at ``endpoint_url``) as **plaintext** objects, one per regular
    file, at ``prefix/<its path in the snapshot>``, read, authenticated and uploaded by the
    workers of ``client``'s cluster.

    **Refused unless ``plaintext_to_cloud`` is True**: the objects are the decrypted files, so
    whoever can read the bucket (its operator, its policy's readers, a leaked key, its
    replicas) reads their names, contents, sizes and times; the end-to-end encryption of the
    repository does not extend to them.

    ``subpath``, ``exclude``, ``where``, ``max_size``, ``max_files`` (bytes and entries the
    snapshot may hold, checked before anything is written) and ``progress`` as for
    :func:`e2ebackup.dask.restore`; ``storage``, ``unit_bytes``, ``threads`` and ``retries``
    too. Existing objects are not replaced (listed in ``skipped_existing``) unless
    ``overwrite``. The workers take the target bucket's credentials from their own
    environment, as they do the repository's. Kept as object metadata: modification time and
    permission bits; not kept: owners, special bits, symlinks, folders (those with no file:
    gone), counted in the returned :class:`S3RestoreStats`. An error that outlasts the retries
    is raised (a damaged blob as :class:`~e2ebackup.errors.RepositoryCorrupted`); the objects
    written until then are complete, those of the other files absent (an interrupted multipart
    upload at most: :meth:`S3Storage.cleanup_incomplete
    <e2ebackup.storage.s3.S3Storage.cleanup_incomplete>` or the bucket's lifecycle removes it).
    """
    if plaintext_to_cloud is not True:
        raise InvalidArgument(
            "restoring into S3 writes the files decrypted: whoever can read the bucket reads "
            "them (end-to-end encryption ends there); say so with plaintext_to_cloud=True "
            "(--plaintext-to-s3)"
        )
    if isinstance(target, str):
        target = S3Target.from_url(target, endpoint_url=endpoint_url)
    elif endpoint_url is not None:
        raise InvalidArgument("endpoint_url goes into the S3Target")
    spec = storage or storage_spec(repo.storage)
    options = _Options(target, overwrite, threads)
    stats = S3RestoreStats()

    def kept(jobs: Iterator[FileJob]) -> Iterator[FileJob]:
        for job in jobs:
            try:
                check_key_path(target.key(job.path))
            except InvalidArgument:
                stats.names_not_kept.append(job.path)
                continue
            if int(job.entry.get("mode", 0)) & 0o7000:
                stats.special_bits_not_kept += 1
            yield job

    def on_unit(unit: RestoreUnit) -> None:
        if progress is not None:
            progress(stats, target.key(unit.jobs[-1].path))

    with repo.read_lock():
        sid, snapshot = repo.find_snapshot(snapshot_ref, where)
        restorer = Restorer(
            repo, excludes=Excludes(exclude), max_size=max_size, max_files=max_files
        )
        walked = Walked()
        jobs = restorer.plan_files(snapshot, subpath, walked)  # the budget is checked here
        stats.bytes_total = restorer.stats.bytes_total
        write_on_cluster(
            client,
            repo,
            sid,
            spec,
            kept(jobs),
            stats,
            _upload_unit,
            name="restore-s3",
            options=options,
            unit_bytes=unit_bytes,
            retries=retries,
            on_unit=on_unit,
        )
    stats.excluded = restorer.stats.excluded
    stats.dirs_not_kept = walked.dirs
    stats.empty_dirs_not_kept = walked.empty_dirs
    stats.symlinks_not_kept = walked.symlinks
    if progress is not None:
        progress(stats, "")
    return stats
