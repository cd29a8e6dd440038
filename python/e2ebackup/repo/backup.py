"""Backup: walk the paths, cut files into content-defined chunks, store the new ones, build
the trees, write the snapshot.

Unchanged files (same size, mtime, ctime and inode as in the parent snapshot) are not even
read. Changed files are re-chunked, and only chunks the repository does not hold are
encrypted and uploaded: an append to a large database costs about the appended bytes.
Memory is bounded: one read block, one batch of chunks being sealed and a few packs in flight,
whatever the tree size (plus the index, about 165 bytes a stored blob).
"""

from __future__ import annotations

import getpass
import io
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Protocol, cast

from e2ebackup import _core
from e2ebackup.errors import E2EBackupError, InvalidArgument, RepositoryCorrupted, TreeTooDeep
from e2ebackup.repo.exclude import CACHEDIR_TAG, Excludes
from e2ebackup.repo.labels import KIND_DATA, KIND_TREE
from e2ebackup.repo.lock import Lock
from e2ebackup.repo.pack import BlobLocation, PackWriter
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.sqlite import SQLITE_MAGIC, capture, is_sqlite
from e2ebackup.repo.tree import MAX_DEPTH, Entry, encode_tree
from e2ebackup.streams import readinto

READ_BLOCK = 8 << 20
# Chunks are sealed in batches of about this many bytes, across all cores.
SEAL_BATCH = 32 << 20


@dataclass
class BackupStats:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    bytes_read: int = 0
    bytes_unmodified: int = 0
    bytes_total: int = 0
    blobs_added: int = 0
    bytes_added: int = 0
    errors: int = 0
    skipped_special: int = 0
    sqlite_captured: int = 0
    sqlite_sidecars_skipped: int = 0
    packs_recovered: int = 0
    excluded: int = 0


Progress = Callable[[BackupStats, str], None]


class BlobSet(Protocol):
    """What an :class:`Archiver` deduplicates against and adds its packs to: the repository's
    :class:`~e2ebackup.repo.index.Index`, or (a Dask worker's) a filter of the ids it holds."""

    def __contains__(self, blob_id: object) -> bool: ...

    def add_pack(
        self, pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]
    ) -> None: ...


class Archiver:
    def __init__(
        self,
        repo: Repository,
        *,
        threads: int | None = None,
        progress: Progress | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
        excludes: Excludes | None = None,
        one_file_system: bool = False,
        dry_run: bool = False,
        index: BlobSet | None = None,
    ) -> None:
        self.repo = repo
        self.dry_run = dry_run
        self.excludes = excludes or Excludes()
        self.one_file_system = one_file_system
        self._device: int | None = None  # of the path given that is being walked
        self._depth = 0  # folder listings above the one being made (the root's is 0)
        self.codec = repo.codec
        chunker = repo.config["chunker"]
        self.chunker = _core.Chunker(
            repo.keys.chunker,
            min_size=chunker["min"],
            avg_size=chunker["avg"],
            max_size=chunker["max"],
        )
        self.index: BlobSet = repo.index if index is None else index
        self.threads = threads
        self.progress = progress
        self.on_error = on_error
        self.stats = BackupStats()
        self._queued: set[bytes] = set()
        self._batch: list[bytes] = []
        self._batch_ids: list[bytes] = []
        self._batch_compress: list[bool] = []
        self._batch_bytes = 0
        self.writer: PackWriter | _Discard = (
            _Discard() if dry_run else PackWriter(repo.storage, repo.keys, self._stored)
        )
        # One read buffer for the whole run: zero-filling 8 MiB per file dominated small files.
        self._block = bytearray(READ_BLOCK)
        self._view = memoryview(self._block)

    def _stored(self, pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]) -> None:
        self.index.add_pack(pack_id, size, entries)

    # -- blobs

    def _want(self, blob_id: bytes) -> bool:
        return blob_id not in self.index and blob_id not in self._queued

    def _add_chunks(self, chunks: list[bytes], compress: bool = True) -> list[str]:
        """Names the chunks (ids in parallel) and queues the ones the repository lacks.
        ``compress=False`` for the chunks of a file that is already compressed."""
        ids = (
            self.codec.ids(chunks, threads=self.threads)
            if len(chunks) > 1
            else [self.codec.id(chunks[0])]
        )
        for chunk, blob_id in zip(chunks, ids, strict=True):
            if self._want(blob_id):
                self._queued.add(blob_id)
                self._batch.append(chunk)
                self._batch_ids.append(blob_id)
                self._batch_compress.append(compress)
                self._batch_bytes += len(chunk)
        if self._batch_bytes >= SEAL_BATCH or len(self._batch) >= 4096:
            self._seal_batch()
        return [i.hex() for i in ids]

    def _seal_batch(self) -> None:
        if not self._batch:
            return
        sealed = self.codec.seal_many(
            KIND_DATA,
            self._batch,
            ids=self._batch_ids,
            compress=self._batch_compress,
            threads=self.threads,
        )
        self._batch = []
        self._batch_ids = []
        self._batch_compress = []
        self._batch_bytes = 0
        for blob_id, blob in sealed:
            self.writer.add(KIND_DATA, blob_id, blob)
            self.stats.blobs_added += 1
            self.stats.bytes_added += len(blob)

    def store_tree(self, entries: list[Entry]) -> str:
        """Stores a folder listing (as needed) and returns its id. A subclass may defer it
        (the Dask coordinator stores listings once the workers named their files' chunks)."""
        return self._add_tree(entries)

    def _add_tree(self, entries: list[Entry]) -> str:
        data = encode_tree(entries)
        blob_id = self.codec.id(data)
        if self._want(blob_id):
            self._queued.add(blob_id)
            ((_, blob),) = self.codec.seal_many(KIND_TREE, [data], threads=1)
            self.writer.add(KIND_TREE, blob_id, blob)
            self.stats.blobs_added += 1
            self.stats.bytes_added += len(blob)
        return blob_id.hex()

    # -- files

    def _chunks_of(self, path: str, *, divert_sqlite: bool) -> list[str] | None:
        """The ids of the file's chunks, stored as needed. With ``divert_sqlite``, returns None
        for an SQLite database, seen in the first block already read (no second open)."""
        with open(path, "rb") as f:
            return self._chunks_from(f, path, divert_sqlite=divert_sqlite)

    def _chunks_from(
        self, f: BinaryIO, label: str, *, divert_sqlite: bool, compress: bool | None = None
    ) -> list[str] | None:
        """:meth:`_chunks_of` for an open stream (a file, or a pipe). ``compress`` None: decided
        on the stream's first bytes; given: a piece of a file, decided on the file's."""
        ids: list[str] = []
        self.chunker.reset()
        carry = bytearray()
        block, view = self._block, self._view
        decide = compress is None
        compress = True if compress is None else compress
        first = True
        while n := readinto(f, block):
            data = view[:n]
            if first:
                if divert_sqlite and data[: len(SQLITE_MAGIC)] == SQLITE_MAGIC:
                    return None
                # Decided once per file: only the first chunk carries JPEG/MP4/ZIP magic.
                if decide:
                    compress = not _core.looks_compressed(data[:64])
                first = False
            chunks = []
            prev = 0
            for cut in self.chunker.feed(data):
                if carry:
                    carry += data[prev:cut]
                    chunks.append(bytes(carry))
                    carry.clear()
                else:
                    chunks.append(bytes(data[prev:cut]))  # the one copy out of the block
                prev = cut
            carry += data[prev:]
            if chunks:
                ids.extend(self._add_chunks(chunks, compress))
            self.stats.bytes_read += n
            self._report(label)
        if carry or not ids:
            ids.extend(self._add_chunks([bytes(carry)], compress))
        return ids

    def _file(self, path: str, st: os.stat_result, entry: Entry, old: Entry | None) -> None:
        entry["size"] = st.st_size
        self.stats.bytes_total += st.st_size
        if (
            old is not None
            and old.get("type") == "file"
            and old.get("size") == st.st_size
            and old.get("mtime_ns") == st.st_mtime_ns
            and old.get("ctime_ns") == st.st_ctime_ns
            and old.get("ino") == st.st_ino
            and all(bytes.fromhex(c) in self.index for c in old.get("content", []))
        ):
            entry["content"] = list(old.get("content", []))
            self.stats.files_unmodified += 1
            self.stats.bytes_unmodified += st.st_size
            self._report(path)
            return
        self.store_file(path, entry, old)
        if old is None:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1

    def store_file(self, path: str, entry: Entry, old: Entry | None) -> None:
        """Sets the entry's ``content`` (and ``size``) of a new or changed file (``old``: its
        entry in the parent snapshot, if any), its chunks stored as needed. A subclass may
        defer it (the Dask coordinator)."""
        entry["content"], entry["size"] = self.read_file(path, entry["size"])

    def read_file(
        self, path: str, size: int, *, opener: Callable[[str], BinaryIO] | None = None
    ) -> tuple[list[str], int]:
        """The ids of the file's chunks (stored as needed) and its size: that of what was read
        (a file that grew or shrank since ``size`` was listed is stored as read, so the
        snapshot's size and chunks agree), or that of the consistent copy read of a live SQLite
        database.

        ``opener`` opens ``path`` for reading where it is not a local file (a URL source's
        file, e2ebackup.dask.sources): its bytes are read as they are, an SQLite database too
        (its consistent capture needs a local path)."""
        before = self.stats.bytes_read
        if opener is not None:
            with opener(path) as f:
                content = self._chunks_from(f, path, divert_sqlite=False)
        else:
            content = self._chunks_of(path, divert_sqlite=True)
        if content is not None:
            return content, self.stats.bytes_read - before
        # A live database is read through SQLite, as of one transaction; the image stays in
        # memory or in an unlinked scratch file beside the database (repo/sqlite.py).
        with capture(path) as (image, size):
            captured = self._chunks_from(image, path, divert_sqlite=False)
        self.stats.sqlite_captured += 1
        assert captured is not None  # the copy is read without diverting
        return captured, size

    def read_range(
        self,
        path: str,
        offset: int,
        length: int,
        *,
        opener: Callable[[str], BinaryIO] | None = None,
    ) -> tuple[list[str], int] | None:
        """The ids of the chunks of the file's ``length`` bytes from ``offset`` (fewer where it
        ends sooner), stored as needed, and the bytes read: a piece of a large file that several
        processes read apart (the Dask backup), joined by the caller in order. The chunker
        starts afresh at ``offset`` and cuts at the piece's end, so the chunks differ from the
        whole file's only around the cut (the content-defined cuts fall in step again after
        the first one of the piece). Whether the chunks are compressed is decided on the
        file's first bytes, as :meth:`read_file` decides it, so every piece of a file is stored
        alike. None for an SQLite database (its magic at the file's start), whose bytes are
        not read: it is read whole and consistent by :meth:`read_file`, once. ``opener``: as
        :meth:`read_file`'s (its files must seek; an SQLite database is read as bytes)."""
        if offset < 0 or length < 0:
            raise InvalidArgument("a piece of a file starts and ends within it")
        with opener(path) if opener is not None else open(path, "rb") as f:
            head = f.read(64)
            if opener is None and head[: len(SQLITE_MAGIC)] == SQLITE_MAGIC:
                return None
            f.seek(offset)
            before = self.stats.bytes_read
            content = self._chunks_from(
                cast(BinaryIO, _Bounded(f, length)),
                path,
                divert_sqlite=False,
                compress=not _core.looks_compressed(head),
            )
        assert content is not None  # not diverted
        return content, self.stats.bytes_read - before

    def _entry(self, path: str, name: str, old: Entry | None) -> Entry | None:
        st = os.lstat(path)
        entry: Entry = {
            "name": name,
            "mode": stat.S_IMODE(st.st_mode),
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino,
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
        if stat.S_ISREG(st.st_mode):
            entry["type"] = "file"
            self._file(path, st, entry, old)
        elif stat.S_ISDIR(st.st_mode):
            if self._depth >= MAX_DEPTH:  # left out: no reader accepts a deeper snapshot
                self._error(path, TreeTooDeep("", MAX_DEPTH))
                return None
            entry["type"] = "dir"
            old_tree = old.get("subtree") if old and old.get("type") == "dir" else None
            if self.one_file_system and st.st_dev != self._device:
                # Another file system mounted here: the mount point is kept, empty, as restic's -x.
                self.stats.excluded += 1
                entry["subtree"] = self.store_tree([])
            else:
                entry["subtree"] = self._dir(path, old_tree)
        elif stat.S_ISLNK(st.st_mode):
            entry["type"] = "symlink"
            entry["target"] = os.readlink(path)
        else:
            self.stats.skipped_special += 1
            return None
        return entry

    def old_entries(self, tree_id: str | None) -> dict[str, Entry]:
        """The entries of the parent's listing ``tree_id`` by name (none for a damaged one)."""
        if tree_id is None:
            return {}
        try:
            return {e["name"]: e for e in self.repo.read_tree(tree_id)}
        except RepositoryCorrupted:
            return {}  # a damaged parent only costs re-reading; verify reports it

    def _dir(self, path: str, old_tree: str | None) -> str:
        self.stats.dirs += 1
        self._depth += 1
        try:
            return self._dir_entries(path, old_tree)
        finally:
            self._depth -= 1

    def _dir_entries(self, path: str, old_tree: str | None) -> str:
        old = self.old_entries(old_tree)
        entries: list[Entry] = []
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            self._error(path, e)
            names = []
        present = set(names)
        if self.excludes.is_cache_dir(path):
            self.stats.excluded += len(names) - 1
            names = [CACHEDIR_TAG]
        for name in names:
            child = os.path.join(path, name)
            if self.excludes.excluded(child, name):
                self.stats.excluded += 1
                continue
            if _sqlite_sidecar(path, name, present):
                # The database beside it is captured whole and consistent; a journal or WAL
                # from another moment would corrupt it on restore.
                self.stats.sqlite_sidecars_skipped += 1
                continue
            try:
                entry = self._entry(child, name, old.get(name))
            except (OSError, E2EBackupError) as e:
                if isinstance(e, RepositoryCorrupted):
                    raise
                self._error(child, e)
                continue
            if entry is not None:
                entries.append(entry)
        return self.store_tree(entries)

    def _error(self, path: str, e: Exception) -> None:
        self.stats.errors += 1
        if self.on_error is not None:
            self.on_error(path, e)

    def _report(self, path: str) -> None:
        if self.progress is not None:
            self.progress(self.stats, path)

    def report_error(self, path: str, e: Exception) -> None:
        """Counts an entry left out and tells ``on_error`` (for a walk of :meth:`run_walk`)."""
        self._error(path, e)

    def report_progress(self, path: str) -> None:
        """Tells ``progress`` (for a walk of :meth:`run_walk`)."""
        self._report(path)

    # -- the whole run

    def run(
        self,
        paths: list[str],
        *,
        parent: tuple[str, dict[str, Any]] | None = None,
        tags: list[str] | None = None,
    ) -> str:
        if not paths:
            raise InvalidArgument("nothing to back up: give at least one path")
        absolute = [os.path.abspath(p) for p in paths]
        names = [root_name(p) for p in absolute]
        if len(set(names)) != len(names):
            raise InvalidArgument("two of the paths have the same name; back them up separately")
        for p in absolute:
            if not os.path.lexists(p):
                raise FileNotFoundError(2, "No such file or directory", p)

        def walk(old_root: dict[str, Entry]) -> list[Entry]:
            root: list[Entry] = []
            for path, name in zip(absolute, names, strict=True):
                self._device = os.lstat(path).st_dev
                entry = self._entry(path, name, old_root.get(name))
                if entry is not None:
                    root.append(entry)
            return root

        return self.run_walk(walk, absolute, parent=parent, tags=tags)

    def run_walk(
        self,
        walk: Callable[[dict[str, Entry]], list[Entry]],
        paths: list[str],
        *,
        parent: tuple[str, dict[str, Any]] | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """:meth:`run` with the root listing made by ``walk`` (given the parent's root entries
        by name; :meth:`run`'s walks the local paths, e2ebackup.dask.sources's a URL listing):
        the listings stored, the snapshot of ``paths`` committed."""
        old_root = self.old_entries(parent[1]["tree"] if parent else None)
        start = time.time()
        # The walk takes three frames a level; MAX_DEPTH levels need more than the default
        # 1000 frames (Python-to-Python calls use no C stack since 3.11).
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 3 * MAX_DEPTH + 500))
        try:
            tree = self.complete(self.store_tree(walk(old_root)))
        except BaseException:
            self.writer.abort()
            raise
        finally:
            sys.setrecursionlimit(limit)
        if self.dry_run:
            return ""
        return self._commit(tree, paths, start, parent, tags)

    def run_stream(self, source: BinaryIO, filename: str, *, tags: list[str] | None = None) -> str:
        """Backs up what ``source`` yields as one file named ``filename`` (a database dump
        piped in): a snapshot of the path ``/filename``, as restic's ``--stdin``."""
        _check_stream_name(filename)
        start = time.time()
        try:
            content = self._chunks_from(source, filename, divert_sqlite=False)
            assert content is not None  # not diverted
            now = time.time_ns()
            entry: Entry = {
                "name": filename,
                "type": "file",
                "mode": 0o600,
                "mtime_ns": now,
                "ctime_ns": now,
                "uid": os.getuid(),
                "gid": os.getgid(),
                "size": self.stats.bytes_read,
                "content": content,
            }
            self.stats.files_new += 1
            self.stats.bytes_total += self.stats.bytes_read
            tree = self.complete(self.store_tree([entry]))
        except BaseException:
            self.writer.abort()
            raise
        return self._commit(tree, ["/" + filename], start, None, tags)

    def complete(self, tree: str) -> str:
        """Stores what is still queued and waits for the uploads; returns the root folder
        listing's id ``tree`` (a subclass that deferred the listings stores them first)."""
        self.finish()
        return tree

    def finish(self) -> None:
        """Seals the chunks still queued and waits for every pack's upload."""
        self._seal_batch()
        self.writer.finish()

    def snapshot_record(
        self, tree: str, paths: list[str], start: float, tags: list[str] | None, now: float
    ) -> dict[str, Any]:
        """The snapshot object of this run (FORMAT.md, Trees and snapshots), without ``id``;
        ``parent`` None."""
        return {
            "time": now,
            "started": start,
            "hostname": socket.gethostname(),
            "username": _username(),
            "paths": paths,
            "tree": tree,
            "parent": None,
            "tags": tags or [],
            "stats": asdict(self.stats),
        }

    def _commit(
        self,
        tree: str,
        paths: list[str],
        start: float,
        parent: tuple[str, dict[str, Any]] | None,
        tags: list[str] | None,
    ) -> str:
        index_name = self.repo.index.save_new(self.repo.storage, self.repo.keys)
        snapshot = self.snapshot_record(tree, paths, start, tags, time.time())
        snapshot["parent"] = parent[0] if parent else None
        sid = self.repo.write_snapshot(snapshot)
        self.repo.commit(add_snapshots=[sid], add_indexes=[index_name] if index_name else [])
        self._report("")
        return sid


_SIDECARS = ("-journal", "-wal", "-shm")


class _Bounded(io.RawIOBase):
    """At most ``left`` bytes of ``f`` from where it stands (:meth:`Archiver.read_range`):
    ``readinto`` fills no more than what is left, then reports the end."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        super().__init__()
        self._f = f
        self._left = left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        with memoryview(buffer) as whole, whole[: self._left] as view:
            n = readinto(self._f, view)
        self._left -= n
        return n


class _Discard:
    """A pack writer for ``dry_run``: blobs are sealed (so their stored size is known) and
    dropped; nothing reaches the storage."""

    bytes_uploaded = 0

    def add(self, kind: int, blob_id: bytes, sealed: bytes) -> None:
        pass

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def root_name(path: str) -> str:
    """The name of a backed-up path's entry in the snapshot's root listing."""
    return os.path.basename(path.rstrip(os.sep)) or "root"


def _check_stream_name(filename: str) -> None:
    if not filename or "/" in filename or filename in (".", "..") or "\0" in filename:
        raise InvalidArgument(f"{filename!r} cannot be a file name")


def _sqlite_sidecar(folder: str, name: str, present: set[str]) -> bool:
    """Whether ``name`` is the rollback journal, WAL or shared-memory file of an SQLite
    database in the same folder."""
    for suffix in _SIDECARS:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            return base in present and is_sqlite(os.path.join(folder, base))
    return False


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def backup_lock(repo: Repository, *, wait: float = 0.0) -> Lock:
    """The lock every backup holds while it runs (this module's and the Dask one's)."""
    # Version 3: backups run beside each other (FORMAT.md, Many writers).
    return repo.lock(exclusive=not repo.many_writers, wait=wait)


def parent_snapshot(repo: Repository, paths: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """The snapshot a backup of ``paths`` compares with: the newest of the same paths (made
    absolute) from this host."""
    return newest_snapshot_of(repo, [os.path.abspath(p) for p in paths])


def newest_snapshot_of(repo: Repository, paths: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """The newest snapshot from this host of exactly ``paths`` (as the snapshot records them:
    absolute local paths, or URLs), or None."""
    wanted = sorted(paths)
    parent = None
    for sid, snap in repo.snapshots():
        if sorted(snap.get("paths", [])) == wanted and snap.get("hostname") == socket.gethostname():
            parent = (sid, snap)
    return parent


def backup(
    repo: Repository,
    paths: Sequence[str | os.PathLike[str]],
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
    tags: list[str] | None = None,
    lock_wait: float = 0.0,
    exclude: Sequence[str] = (),
    exclude_caches: bool = False,
    one_file_system: bool = False,
    dry_run: bool = False,
) -> tuple[str, BackupStats]:
    """Backs up ``paths`` into ``repo`` under an exclusive lock; returns the snapshot id and
    the statistics. The parent is the newest snapshot of the same paths from this host.
    ``exclude`` patterns and ``exclude_caches`` leave things out (:mod:`.exclude`), and
    ``one_file_system`` the contents of other file systems mounted inside the paths; the paths
    given are always backed up. ``dry_run`` reads, chunks and seals everything as a backup
    would and stores nothing: the statistics say what a backup would add, the id is ""."""
    path_strings = [os.fspath(p) for p in paths]  # pathlib.Path and other os.PathLike too
    excludes = Excludes(exclude, exclude_caches=exclude_caches)
    with backup_lock(repo, wait=lock_wait):
        repo.head(refresh=True)
        recovered = 0 if dry_run else repo.recover_orphan_packs()
        parent = parent_snapshot(repo, path_strings)
        archiver = Archiver(
            repo,
            threads=threads,
            progress=progress,
            on_error=on_error,
            excludes=excludes,
            one_file_system=one_file_system,
            dry_run=dry_run,
        )
        archiver.stats.packs_recovered = recovered
        sid = archiver.run(path_strings, parent=parent, tags=tags)
        return sid, archiver.stats


def backup_stream(
    repo: Repository,
    source: BinaryIO,
    filename: str,
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    tags: list[str] | None = None,
    lock_wait: float = 0.0,
) -> tuple[str, BackupStats]:
    """Backs up a stream (``sys.stdin.buffer``, a socket, a decompressor...) as the one file
    ``filename`` of a new snapshot; returns its id and the statistics. Chunks already stored
    (an unchanged part of yesterday's dump) are not stored again."""
    _check_stream_name(filename)
    with backup_lock(repo, wait=lock_wait):
        repo.head(refresh=True)
        recovered = repo.recover_orphan_packs()
        archiver = Archiver(repo, threads=threads, progress=progress)
        archiver.stats.packs_recovered = recovered
        sid = archiver.run_stream(source, filename, tags=tags)
        return sid, archiver.stats


def scan_size(
    paths: list[str], excludes: Excludes | None = None, *, one_file_system: bool = False
) -> tuple[int, int]:
    """Files and bytes under ``paths`` (regular files, no symlinks followed, ``excludes`` and,
    with ``one_file_system``, other file systems left out): the progress bar's total, computed
    while the backup runs."""
    excludes = excludes or Excludes()
    files = size = 0
    stack: list[tuple[str, int | None]] = [(os.path.abspath(p), None) for p in paths]
    while stack:
        path, device = stack.pop()
        try:
            st = os.lstat(path)
        except OSError:
            continue
        device = st.st_dev if device is None else device
        if stat.S_ISDIR(st.st_mode):
            if one_file_system and st.st_dev != device:
                continue
            try:
                names = os.listdir(path)
            except OSError:
                continue
            if excludes.is_cache_dir(path):
                names = [CACHEDIR_TAG]
            stack.extend(
                (os.path.join(path, n), device)
                for n in names
                if not excludes.excluded(os.path.join(path, n), n)
            )
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    return files, size
