"""Backing up with a writer token: a writer that cannot read (docs/FORMAT.md, "Writers that
cannot read (version 4)").

Each backup is one drop, under a fresh session key sealed to the repository's writer
recipient. The writer keeps, between backups, only what FORMAT.md allows: its token, the name
and hash of its last drop, the ids of the blobs it stored by pack (to deduplicate against
itself), and the folder listings of its last backup only (to skip unchanged files; a file
deleted before that backup is named nowhere on the device). None of it opens a drop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import InvalidArgument, NotARepository, ObjectNotFound, RepositoryCorrupted
from e2ebackup.paths import atomic_output
from e2ebackup.repo.backup import Archiver, BackupStats, Progress, root_name
from e2ebackup.repo.codec import MAGIC, parse_config_header
from e2ebackup.repo.drops import MAX_SEQ, WriterToken, drop_keys, is_drop_name, seal_drop
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.heads import state_dir
from e2ebackup.repo.index import Index, parse_pack
from e2ebackup.repo.names import is_id, new_id, pack_name
from e2ebackup.repo.pack import BlobLocation
from e2ebackup.repo.repository import DEFAULT_CHUNKER, Repository
from e2ebackup.repo.tree import Entry, decode_tree, encode_tree
from e2ebackup.storage.base import Storage

__all__ = ["Listings", "WriterState", "backup_as_writer"]

#: The first format version whose repositories take drops.
DROPS_VERSION = 4

_Packs = dict[str, tuple[int, list[tuple[bytes, BlobLocation]]]]


@dataclass
class WriterState:
    """What a writer keeps between backups (in its state folder, mode 0600)."""

    seq: int = 0
    prev: tuple[str, str] | None = None
    #: The packs this writer stored, each with its size and blobs: what it deduplicates against.
    packs: _Packs = field(default_factory=dict)
    #: A drop being stored (name, SHA-256, its packs): settled by the next backup, which looks
    #: whether it reached the storage.
    pending: tuple[str, str, _Packs] | None = None
    #: ``packs`` as the state file lists them, kept so that saving does not convert them again.
    _docs: dict[str, Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def path(token: WriterToken) -> Path:
        return state_dir(token.repo_id) / "writers" / f"{token.writer_id.hex()}.json"

    @classmethod
    def load(cls, token: WriterToken) -> WriterState:
        try:
            raw = cls.path(token).read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            value = json.loads(raw)
            prev = value["prev"]
            pending = value.get("pending")
            state = cls(
                int(value["seq"]),
                (str(prev[0]), str(prev[1])) if prev else None,
                _packs_from(value["packs"]),
                (str(pending[0]), str(pending[1]), _packs_from(pending[2])) if pending else None,
                {str(p["id"]): p for p in value["packs"]},
            )
        except (ValueError, KeyError, TypeError, IndexError):
            raise InvalidArgument(
                f"the writer state {cls.path(token)} is damaged; move it away to start this "
                "writer afresh (its next drop then starts a new chain, which readers report)"
            ) from None
        if (
            not 0 <= state.seq < MAX_SEQ
            or (state.prev is not None and not is_drop_name(state.prev[0]))
            or (state.pending is not None and not is_drop_name(state.pending[0]))
        ):
            raise InvalidArgument(f"the writer state {cls.path(token)} is damaged")
        return state

    def save(self, token: WriterToken) -> None:
        path = self.path(token)
        path.parent.mkdir(parents=True, exist_ok=True)
        pending = self.pending[2] if self.pending else {}
        missing = {p: e for p, e in (*self.packs.items(), *pending.items()) if p not in self._docs}
        self._docs.update(_packs_json(missing))
        value = {
            "seq": self.seq,
            "prev": list(self.prev) if self.prev else None,
            "packs": [self._docs[p] for p in self.packs],
            "pending": (
                [self.pending[0], self.pending[1], [self._docs[p] for p in pending]]
                if self.pending
                else None
            ),
        }
        with atomic_output(path) as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(json.dumps(value, separators=(",", ":")).encode())

    def settle(self, storage: Storage) -> None:
        """A drop the last backup was storing when it stopped: kept if the storage has it."""
        if self.pending is None:
            return
        name, digest, packs = self.pending
        try:
            stored = storage.read(name)
        except ObjectNotFound:
            stored = None
        if stored is not None and hashlib.sha256(stored).hexdigest() == digest:
            self.seq += 1
            self.prev = (name, digest)
            self.packs.update(packs)
        self.pending = None


def _packs_json(packs: _Packs) -> list[tuple[str, dict[str, Any]]]:
    """Each pack's id and its entry as an index object (and a drop) lists it."""
    return [
        (
            pack_id,
            {
                "id": pack_id,
                "size": size,
                "blobs": [[loc.kind, bid.hex(), loc.offset, loc.length] for bid, loc in entries],
            },
        )
        for pack_id, (size, entries) in packs.items()
    ]


def _packs_from(value: Any) -> _Packs:
    packs: _Packs = {}
    for pack in value:
        pack_id, size, entries = parse_pack(pack, condemned=False)
        packs[pack_id] = (size, entries)
    return packs


class Listings:
    """The folder listings of a writer's last backup, kept on the writer's device (FORMAT.md:
    the only file metadata a writer may keep), so that its next backup of the same paths skips
    unchanged files as any backup does. Only the last backup's: a file deleted before that
    backup is named nowhere on the device. ``file_list=False`` keeps none."""

    def __init__(self, paths: list[str], root: str | None, trees: dict[str, str]) -> None:
        self.paths, self.root, self.trees = paths, root, trees

    @staticmethod
    def path(token: WriterToken) -> Path:
        return state_dir(token.repo_id) / "writers" / f"{token.writer_id.hex()}.listings.json"

    @classmethod
    def load(cls, token: WriterToken) -> Listings:
        """The last backup's listings; none if there are none or they do not parse (the files
        are then read again: nothing is lost)."""
        try:
            value = json.loads(cls.path(token).read_bytes())
            paths, root, trees = value["paths"], value["root"], value["trees"]
            if not (
                isinstance(paths, list)
                and all(isinstance(p, str) for p in paths)
                and is_id(root)
                and isinstance(trees, dict)
                and all(is_id(k) and isinstance(v, str) for k, v in trees.items())
            ):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            return cls([], None, {})
        return cls(paths, root, trees)

    def save(self, token: WriterToken) -> None:
        value = {"paths": self.paths, "root": self.root, "trees": self.trees}
        with atomic_output(self.path(token)) as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(json.dumps(value, separators=(",", ":")).encode())

    @classmethod
    def forget(cls, token: WriterToken) -> None:
        with contextlib.suppress(FileNotFoundError):
            cls.path(token).unlink()


class _Session(Repository):
    """The repository as a writer sees it: a session's keys, no head, nothing to read but
    the writer's own listings of its last backup."""

    def __init__(self, storage: Storage, keys: Any, known: Index, listings: Listings) -> None:
        super().__init__(storage, keys, {"version": DROPS_VERSION, "chunker": DEFAULT_CHUNKER}, b"")
        self._index = known
        self._listings = listings

    def read_tree(self, tree_id: str | bytes) -> list[Entry]:
        tid = tree_id.hex() if isinstance(tree_id, bytes) else tree_id
        text = self._listings.trees.get(tid)
        if text is None:
            raise RepositoryCorrupted(f"listing {tid[:16]} is not in this writer's last backup")
        return decode_tree(text.encode())


class _DropArchiver(Archiver):
    """An Archiver whose commit is a drop."""

    def __init__(
        self, session: _Session, token: WriterToken, state: WriterState, sk: bytes, **kw: Any
    ) -> None:
        super().__init__(session, **kw)
        self._token = token
        self._state = state
        self._sk = sk
        self.stored: _Packs = {}
        self.drop_name = ""
        self.root = ""
        #: The listings of this backup, by id (JSON text): the next backup's parent.
        self.trees: dict[str, str] = {}

    def _add_tree(self, entries: list[Entry]) -> str:
        tree_id = super()._add_tree(entries)
        self.trees[tree_id] = encode_tree(entries).decode()
        return tree_id

    def _stored(self, pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]) -> None:
        super()._stored(pack_id, size, entries)
        self.stored[pack_id] = (size, entries)

    def _commit(
        self,
        tree: str,
        paths: list[str],
        start: float,
        parent: tuple[str, dict[str, Any]] | None,
        tags: list[str] | None,
    ) -> str:
        sid = new_id()
        now = time.time()
        self.root = tree
        snapshot = dict(self.snapshot_record(tree, paths, start, tags, now), id=sid)
        state = self._state
        docs = _packs_json(self.stored)  # converted once: for the drop and the state file
        state._docs.update(docs)
        value = {
            "writer": self._token.writer_id.hex(),
            "seq": state.seq + 1,
            "prev": list(state.prev) if state.prev else None,
            "time": now,
            "snapshot": snapshot,
            "packs": [doc for _, doc in docs],
            "chunker": self.repo.config["chunker"],
        }
        name = f"drops/{new_id()}"
        stored = seal_drop(name, self._token, self._sk, value)
        digest = hashlib.sha256(stored).hexdigest()
        # Recorded before it is stored: a crash in between is settled by the next backup,
        # which would otherwise reuse this seq (a fork that readers report).
        state.pending = (name, digest, self.stored)
        state.save(self._token)
        self.repo.storage.put_bytes(name, stored)
        state.pending = None
        state.seq += 1
        state.prev = (name, digest)
        state.packs.update(self.stored)
        state.save(self._token)
        self.drop_name = name
        self._report("")
        return sid


def check_repository(storage: Storage, token: WriterToken) -> None:
    """The one thing a writer reads: the config's fixed header, to check the token is this
    repository's and the repository takes drops."""
    try:
        blob = storage.read("config")
    except ObjectNotFound:
        raise NotARepository(f"no e2ebackup repository at {storage.location}") from None
    repo_id = parse_config_header(blob)
    if repo_id != token.repo_id:
        raise InvalidArgument(
            f"this writer token is for repository {token.repo_id.hex()}, not {repo_id.hex()}"
        )
    version = blob[len(MAGIC)]
    if version < DROPS_VERSION:
        raise InvalidArgument(
            f"this repository is format version {version}; writers need version "
            f"{DROPS_VERSION} (a repository made by e2ebackup 0.4 or later)"
        )


def backup_as_writer(
    storage: Storage,
    token: WriterToken,
    paths: Sequence[str | os.PathLike[str]],
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
    tags: list[str] | None = None,
    exclude: Sequence[str] = (),
    exclude_caches: bool = False,
    one_file_system: bool = False,
    file_list: bool = True,
) -> tuple[str, BackupStats, str]:
    """Backs up ``paths`` as the writer ``token`` names; returns the snapshot id, the
    statistics and the drop's object name. The writer can read none of it afterwards.

    With ``file_list`` (the default) the device keeps the folder listings of this backup
    (names, sizes, times, blob ids: what a backup needs to skip unchanged files next time) and
    nothing of earlier ones; without it, it keeps none and the next backup reads every file."""
    path_strings = [os.fspath(p) for p in paths]
    names = [root_name(os.path.abspath(p)) for p in path_strings]
    if len(set(names)) != len(names):
        raise InvalidArgument("two of the paths have the same name; back them up separately")
    check_repository(storage, token)
    state = WriterState.load(token)
    state.settle(storage)
    # Reuse only blobs whose pack the storage still shows (prune or the storage may have
    # removed it: then the blob is stored again).
    present = {info.name: info.size for info in storage.list("data/")}
    # Nor a pack a prune condemned (deleted after the grace period, maybe before this drop
    # is stored): the prune marks it with condemned/<pack id>, since a writer reads no head.
    condemned = {i.name.split("/", 1)[1] for i in storage.list("condemned/")}
    known = Index()
    for pack_id, (size, entries) in state.packs.items():
        if present.get(pack_name(pack_id)) == size and pack_id not in condemned:
            known.add_pack(pack_id, size, entries, new=False)
    absolute = [os.path.abspath(p) for p in path_strings]
    listings = Listings.load(token) if file_list else Listings([], None, {})
    parent = None
    if listings.root is not None and sorted(listings.paths) == sorted(absolute):
        parent = ("", {"tree": listings.root})
    session_key = _core.generate_key()
    keys = drop_keys(token.repo_id, token.auth, session_key)
    session = _Session(storage, keys, known, listings)
    archiver = _DropArchiver(
        session,
        token,
        state,
        session_key,
        threads=threads,
        progress=progress,
        on_error=on_error,
        excludes=Excludes(exclude, exclude_caches=exclude_caches),
        one_file_system=one_file_system,
    )
    try:
        sid = archiver.run(path_strings, parent=parent, tags=tags)
        with contextlib.suppress(OSError):  # the backup is stored: this only saves time
            if file_list:
                Listings(absolute, archiver.root, archiver.trees).save(token)
            else:
                Listings.forget(token)
    finally:
        # The session's keys go with the session (FORMAT.md: forward secrecy). Python cannot
        # overwrite bytes; the codec's copy is in Rust and zeroized when it is dropped.
        archiver._sk = b""
        session.keys = drop_keys(token.repo_id, token.auth, bytes(32))
        session._codec = None
        del session_key
    return sid, archiver.stats, archiver.drop_name
