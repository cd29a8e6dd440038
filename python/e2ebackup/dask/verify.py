"""``verify --read-data`` of a repository on a Dask cluster: every pack read and every blob
authenticated by the workers, the report the same as the single-process verify's
(``pip install 'e2ebackup[dask]'``, docs/SCALE.md).

- **The coordinator** (this process) opens the repository with the credential, takes the
  shared lock, loads the index and runs the structure checks that need the whole of it
  (key slots, heads, snapshots, every folder listing, every pack's size and authenticated
  header: :func:`e2ebackup.repo.check.verify`). Then it cuts the packs into work units of
  about ``unit_bytes`` and hands them to the cluster.
- **The workers** open the storage themselves (the same location and options; S3 credentials
  from their own environment), read each pack of their unit whole (one large read a pack,
  a few packs at once), authenticate its header and every blob with
  :func:`e2ebackup.repo.check.check_pack`, the function the single-process verify runs, and
  return per pack its size, the blobs that opened and the damage found (one line each: no
  content, no key).
- **What the scheduler sees:** task names (``e2ebackup-verify-<unit>-<random run id>-<random>``),
  the location and storage options (never a credential: S3 keys stay in each machine's
  environment), and the names and sizes of two kinds of scattered objects: the keys (only those
  reading needs: the pack-header key and the blob keys; never the data key, the metadata key
  or the password) and the units (pack ids with the index's view of their blobs). Both are
  sent by the client straight to the workers (:mod:`e2ebackup.dask.runner`), and results are
  fetched from the workers directly: the scheduler never holds a key, a blob id or a result.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import distributed

from e2ebackup._parallel import ordered_map
from e2ebackup.dask.runner import Hidden, auto_unit_bytes, run_units, split_by_bytes
from e2ebackup.errors import E2EBackupError
from e2ebackup.keys import Password, RecoveryKey
from e2ebackup.recipients import Identity
from e2ebackup.repo.check import (
    Expected,
    PackCheck,
    PackReader,
    Progress,
    VerifyReport,
    check_pack,
    expected_blobs,
    verify,
)
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import Storage, open_storage

__all__ = ["DEFAULT_UNIT_BYTES", "StorageSpec", "verify_repository"]

#: The most bytes of packs one task reads; fewer when that would leave fewer than
#: ``UNITS_PER_THREAD`` units per worker thread.
DEFAULT_UNIT_BYTES = 512 << 20
UNITS_PER_THREAD = 4
MAX_UNIT_PACKS = 1000


@dataclass(frozen=True)
class StorageSpec:
    """Where the repository is, as every worker opens it (:func:`e2ebackup.storage.
    open_storage`'s arguments). No credential: S3 keys come from each machine's environment
    (``AWS_ACCESS_KEY_ID``..., a profile, an instance role), rclone's from its config file.
    ``limit_download`` (bytes a second) applies to each worker process on its own."""

    location: str
    s3_endpoint: str | None = None
    rclone_config: str | None = None
    limit_download: float | None = None

    def open(self) -> Storage:
        return open_storage(
            self.location,
            s3_endpoint=self.s3_endpoint,
            rclone_config=self.rclone_config,
            limit_download=self.limit_download,
        )


@functools.lru_cache(maxsize=8)
def _storage(spec: StorageSpec) -> Storage:
    """One storage a worker process and location: an S3 client's connections are reused from
    one task to the next."""
    return spec.open()


class _PackKeys(Hidden):
    """The keys reading packs needs (pack header, blob, blob id; the repository id), as they
    travel from the client to the workers; the others (config, metadata, chunker, the data
    key) never leave the coordinator. Version 4: the same keys of each writer's drop whose
    packs are read, by pack (a drop's packs are under its own keys)."""

    __slots__ = ("_drops", "_keys")

    def __init__(self, keys: RepoKeys, drops: dict[str, RepoKeys] | None = None) -> None:
        self._keys = keys.only("blob", "blob_id", "pack")
        self._drops = {p: k.only("blob", "blob_id", "pack") for p, k in (drops or {}).items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_PackKeys, (self._keys, self._drops))

    @property
    def keys(self) -> RepoKeys:
        return self._keys

    def for_pack(self, pack_id: str) -> RepoKeys:
        return self._drops.get(pack_id, self._keys)


@dataclass(frozen=True)
class _Unit:
    """One task's packs: (pack id, size, where the index puts its blobs) each."""

    packs: tuple[tuple[str, int, Expected], ...]


def _check_unit(
    keys: _PackKeys, unit: _Unit, spec: StorageSpec, threads: int | None
) -> list[tuple[str, PackCheck]]:
    """A task: every pack of the unit, ``threads`` at once (the storage's read concurrency by
    default), checked as the single-process verify checks it. A storage error is raised (Dask
    retries the task)."""
    storage = _storage(spec)
    codecs: dict[int, Any] = {}  # one codec per key set (the repository's, each drop's)

    def one(pack: tuple[str, int, Expected]) -> tuple[str, PackCheck]:
        pack_id, size, expected = pack
        repo_keys = keys.for_pack(pack_id)
        codec = codecs.get(id(repo_keys)) or codecs.setdefault(id(repo_keys), repo_keys.codec())
        return pack_id, check_pack(storage, repo_keys, pack_id, size, expected, codec=codec)

    width = threads or storage.read_concurrency
    return list(ordered_map(one, unit.packs, threads=min(width, len(unit.packs))))


def _cluster_reader(
    client: distributed.Client,
    repo: Repository,
    spec: StorageSpec,
    *,
    unit_bytes: int | None,
    threads: int | None,
    retries: int,
) -> PackReader:
    """What :func:`e2ebackup.repo.check.verify` calls with the packs to read: they are cut
    into units of about ``unit_bytes``, one task each; per pack, what the worker found."""

    def read(packs: list[str]) -> Iterator[tuple[str, PackCheck]]:
        sizes = repo.index.pack_sizes
        expected = expected_blobs(repo)
        listed = [(p, sizes[p], expected.get(p, {})) for p in packs]
        target = unit_bytes or auto_unit_bytes(
            client,
            sum(sizes[p] for p in packs),
            most=DEFAULT_UNIT_BYTES,
            least=1,
            per_thread=UNITS_PER_THREAD,
        )
        cut = split_by_bytes(listed, lambda p: p[1], target=target, most=MAX_UNIT_PACKS)
        done = run_units(
            client,
            _PackKeys(repo.keys, {p: repo.keys_for(p) for p in packs if repo.is_drop_pack(p)}),
            _check_unit,
            [_Unit(tuple(packs)) for packs in cut],
            name="verify",
            args=(spec, threads),
            retries=retries,
            scatter_units=True,
        )
        for unit, result in done:
            if isinstance(result, list):
                yield from result
            elif isinstance(result, E2EBackupError):
                raise result  # a storage error after its retries: the single process raises it
            else:  # the engine's (KilledWorker; the keys lost in the last round): named
                reason = type(result).__name__
                for pack_id, _, _ in unit.packs:
                    text = f"pack {pack_id[:16]} was not read: its task failed ({reason})"
                    yield pack_id, PackCheck(found=False, errors=[text])

    return read


def verify_repository(
    location: str | os.PathLike[str],
    *,
    client: distributed.Client,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    identity: Identity | None = None,
    read_data: bool = True,
    subset: str | None = None,
    s3_endpoint: str | None = None,
    rclone_config: str | os.PathLike[str] | None = None,
    limit_download: float | None = None,
    no_lock: bool = False,
    expect_head: str | None = None,
    progress: Progress | None = None,
    unit_bytes: int | None = None,
    threads: int | None = None,
    retries: int = 3,
) -> VerifyReport:
    """Verifies the repository at ``location`` (a folder every worker sees at the same path,
    ``s3://bucket/prefix`` or ``rclone:remote:path``) with its packs read by the workers of
    ``client``'s cluster; returns the :class:`~e2ebackup.repo.check.VerifyReport` the
    single-process :func:`e2ebackup.repo.check.verify` gives for the same repository (the same
    counts, the same damage, in the same order).

    ``password``, ``recovery_key`` or ``identity`` (a repository made with recipients) opens
    it, on this process only. ``read_data`` (default)
    reads every pack, ``subset`` a part of them (``"n/t"`` or ``"x%"``, as
    ``--read-data-subset``); as in the single process, the packs are read only when the
    structure checks found nothing wrong. ``s3_endpoint``, ``rclone_config`` and
    ``limit_download`` (bytes a second, each worker's) are the storage options, for this
    process and the workers alike. ``no_lock``, ``expect_head``: as the command line's
    ``--no-lock`` and ``--expect-head``. ``progress``: as :func:`~e2ebackup.repo.check.verify`'s,
    called as the units come back.

    ``unit_bytes``: the bytes of packs one task reads (default: up to 512 MiB, and small
    enough for four tasks per worker thread); ``threads``: the packs a task reads at once
    (default: the storage's read concurrency); ``retries``: how often Dask runs a failed task
    again. A storage error that outlasts the retries is raised, as the single process raises
    it; a task the engine lost (``KilledWorker``) is an error line for each of its packs.

    Dask's default worker environment (``MALLOC_TRIM_THRESHOLD_=65536``) makes the workers
    read several times slower; docs/SCALE.md says how to start them without it.
    """
    spec = StorageSpec(
        os.fspath(location),
        s3_endpoint,
        None if rclone_config is None else os.fspath(rclone_config),
        limit_download,
    )
    if isinstance(recovery_key, str):
        recovery_key = RecoveryKey.parse(recovery_key)
    repo = Repository.open(
        spec.open(), password=password, recovery_key=recovery_key, identity=identity
    )
    repo.no_lock = no_lock
    repo.expect_head = expect_head
    reader = _cluster_reader(
        client, repo, spec, unit_bytes=unit_bytes, threads=threads, retries=retries
    )
    return verify(repo, read_data=read_data, progress=progress, subset=subset, read_packs=reader)
