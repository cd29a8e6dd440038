"""An open repository: its keys, its head (the live snapshots and indexes), its index."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2ebackup import _core
from e2ebackup._parallel import ordered_map
from e2ebackup.errors import InvalidArgument, InvalidTag, ObjectNotFound
from e2ebackup.keys import KdfParams, RecoveryKey
from e2ebackup.keyslots import KeySlots
from e2ebackup.repo.index import Index
from e2ebackup.repo.lock import Lock
from e2ebackup.repo.objects import (
    KIND_TREE,
    REPO_ID_SIZE,
    NotARepository,
    RepoKeys,
    RepositoryCorrupted,
    decode_config,
    encode_config,
    key_object_name,
    load_key_slots,
    new_id,
    pack_name,
    parse_config_header,
    read_json,
    write_json,
)
from e2ebackup.repo.pack import read_pack_header
from e2ebackup.repo.tree import Entry, decode_tree
from e2ebackup.storage.base import Storage

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

_HEAD = re.compile(r"^heads/([0-9a-f]{16})-[0-9a-f]{64}$")
DEFAULT_CHUNKER = {"min": 512 << 10, "avg": 1 << 20, "max": 8 << 20}


@dataclass
class Head:
    seq: int
    snapshots: list[str]
    indexes: list[str]
    name: str | None = None


def _state_dir(repo_id: bytes) -> Path:
    base = os.environ.get("E2EBACKUP_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "e2ebackup"
    )
    return Path(base) / repo_id.hex()


@dataclass(frozen=True)
class SnapshotFilter:
    """Which snapshots ``latest`` and listings consider: from ``host``, of exactly ``paths``
    (as given to backup, made absolute), carrying every tag in ``tags``; empty means any."""

    host: str | None = None
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def admits(self, snapshot: dict[str, Any]) -> bool:
        if self.host is not None and snapshot.get("hostname") != self.host:
            return False
        wanted = sorted(os.path.abspath(p) for p in self.paths)
        if wanted and sorted(snapshot.get("paths", [])) != wanted:
            return False
        return set(self.tags) <= set(snapshot.get("tags", []))

    def describe(self) -> str:
        parts = [f"from host {self.host}"] if self.host is not None else []
        if self.paths:
            parts.append(f"of {', '.join(self.paths)}")
        if self.tags:
            parts.append(f"tagged {', '.join(self.tags)}")
        return " ".join(parts)


class Repository:
    def __init__(
        self, storage: Storage, keys: RepoKeys, config: dict[str, Any], data_key: bytes
    ) -> None:
        self.storage = storage
        self.keys = keys
        self.config = config
        self._data_key = data_key
        self._index: Index | None = None
        self._head: Head | None = None
        self._codec: _core.BlobCodec | None = None

    def __repr__(self) -> str:
        return f"Repository({self.storage.location!r}, id={self.id})"

    @property
    def id(self) -> str:
        return self.keys.repo_id.hex()

    # -- creation and opening

    @classmethod
    def init(
        cls,
        storage: Storage,
        *,
        password: str | bytes | None = None,
        recovery_key: RecoveryKey | None = None,
        kdf: KdfParams | None = None,
        chunker: dict[str, int] | None = None,
        vault: VaultClient | None = None,
    ) -> Repository:
        """A new repository. With ``vault``, the password is registered with that key vault
        (a guess limit, no offline guessing) instead of getting a password slot."""
        if password is None and recovery_key is None:
            raise InvalidArgument("a repository needs a password or a recovery key")
        if vault is not None and password is None:
            raise InvalidArgument("a key vault needs a password")
        if storage.exists("config"):
            raise InvalidArgument(f"there is already a repository at {storage.location}")
        data_key = _core.generate_key()
        repo_id = _core.generate_key()[:REPO_ID_SIZE]
        keys = RepoKeys.from_data_key(data_key, repo_id)
        sizes = dict(chunker or DEFAULT_CHUNKER)
        # Checks the sizes now, before anything is stored.
        _core.Chunker(
            keys.chunker, min_size=sizes["min"], avg_size=sizes["avg"], max_size=sizes["max"]
        )
        config: dict[str, Any] = {"version": 1, "chunker": sizes}
        repo = cls(storage, keys, config, data_key)
        # Keys first, config last: a repository is only there once it can be opened.
        if vault is not None and password is not None:
            vault_slot = vault.register(password, data_key)
            repo._store_slot(lambda s: s.add_vault(data_key, vault_slot))
        elif password is not None:
            repo.add_password(password, kdf=kdf)
        if recovery_key is not None:
            repo.add_recovery_key(recovery_key)
        repo._write_head(Head(0, [], []))
        storage.put_bytes("config", encode_config(keys, config))
        return repo

    @classmethod
    def open(
        cls,
        storage: Storage,
        *,
        password: str | bytes | None = None,
        recovery_key: RecoveryKey | None = None,
    ) -> Repository:
        try:
            blob = storage.read("config")
        except ObjectNotFound:
            raise NotARepository(f"no e2ebackup repository at {storage.location}") from None
        repo_id = parse_config_header(blob)
        slots, _ = load_key_slots(storage, repo_id)
        if not slots.slots and not slots.damaged:
            raise RepositoryCorrupted("the repository has no key slots")
        if recovery_key is not None:
            data_key = slots.unlock(recovery_key=recovery_key)
        elif password is not None and slots.vault_slots():
            # The password is held by a key vault: one online attempt, nothing to guess offline.
            from e2ebackup.vault.client import unlock_slot

            secret = password
            data_key = slots.unlock_vault(lambda vault: unlock_slot(vault, secret))
        else:
            data_key = slots.unlock(password=password)
        keys = RepoKeys.from_data_key(data_key, repo_id)
        config = decode_config(keys, blob)
        sizes = config.get("chunker")
        try:
            if config.get("version") != 1 or not isinstance(sizes, dict):
                raise TypeError
            _core.Chunker(
                keys.chunker, min_size=sizes["min"], avg_size=sizes["avg"], max_size=sizes["max"]
            )
        except (TypeError, KeyError, ValueError, OverflowError):
            raise RepositoryCorrupted(
                "the repository config has an unknown version or bad chunker sizes"
            ) from None
        return cls(storage, keys, config, data_key)

    # -- key slots

    def key_slots(self) -> tuple[KeySlots, list[str]]:
        return load_key_slots(self.storage, self.keys.repo_id)

    def _store_slot(self, build: Any) -> str:
        one = KeySlots(self.keys.repo_id)
        build(one)
        slot_id = new_id()
        self.storage.put_bytes(key_object_name(slot_id), one.encode())
        return slot_id

    def add_password(
        self, password: str | bytes, *, kdf: KdfParams | None = None, label: str = ""
    ) -> str:
        slots, _ = self.key_slots()
        if slots.vault_slots():
            raise InvalidArgument(
                "this repository's password is held by a key vault: a password slot next to it "
                "would allow offline guessing again"
            )
        return self._add_password_slot(password, kdf=kdf, label=label)

    def _add_password_slot(
        self, password: str | bytes, *, kdf: KdfParams | None = None, label: str = ""
    ) -> str:
        return self._store_slot(
            lambda s: s.add_password(self._data_key, password, kdf=kdf, label=label)
        )

    def add_recovery_key(self, recovery_key: RecoveryKey, *, label: str = "") -> str:
        return self._store_slot(
            lambda s: s.add_recovery_key(self._data_key, recovery_key, label=label)
        )

    def remove_key(self, index: int) -> None:
        slots, names = self.key_slots()
        if not 0 <= index < len(slots.slots):
            raise InvalidArgument(f"no key slot {index}; there are {len(slots.slots)}")
        if len(slots.slots) + len(slots.unknown) <= 1:
            raise InvalidArgument("refusing to remove the last key: the repository would be lost")
        self.storage.delete(names[index])

    def change_password(
        self, old: str | bytes, new: str | bytes, *, kdf: KdfParams | None = None
    ) -> None:
        """Adds a slot for the new password, then removes the old password's slot: there is no
        moment without a working key. A password held by a key vault is registered anew, and
        the old vault record deleted afterwards."""
        slots, names = self.key_slots()
        if slots.vault_slots():
            self._change_vault_password(slots, names, old, new)
            return
        for i, slot in enumerate(slots.slots):
            one = KeySlots(self.keys.repo_id, [slot])
            try:
                one.unlock(password=old)
            except Exception:  # noqa: S112 - only the slot that opens matters
                continue
            self._add_password_slot(new, kdf=kdf or slot.kdf, label=slot.label)
            self.storage.delete(names[i])
            return
        slots.unlock(password=old)  # raises the precise error

    def _change_vault_password(
        self, slots: KeySlots, names: list[str], old: str | bytes, new: str | bytes
    ) -> None:
        from e2ebackup.vault.client import client_for

        for slot, name in zip(slots.slots, names, strict=True):
            if slot.vault is None:
                continue
            with client_for(slot.vault) as client:
                client.unlock(slot.vault, old)  # the old password must be right
                fresh = client.register(new, self._data_key)
                one = KeySlots(self.keys.repo_id)
                one.add_vault(self._data_key, fresh, label=slot.label)
                self.storage.put_bytes(key_object_name(new_id()), one.encode())
                self.storage.delete(name)
                client.delete(slot.vault, old)

    # -- head

    def _write_head(self, head: Head) -> None:
        name = f"heads/{head.seq:016x}-{new_id()}"
        write_json(
            self.storage,
            self.keys,
            name,
            {"seq": head.seq, "snapshots": head.snapshots, "indexes": head.indexes},
        )
        head.name = name
        self._remember_seq(head.seq)
        self._head = head

    def _remember_seq(self, seq: int) -> None:
        try:
            d = _state_dir(self.keys.repo_id)
            d.mkdir(parents=True, exist_ok=True)
            (d / "head").write_text(str(seq))
        except OSError:
            pass  # no state directory: rollback checks are then limited to this run

    def head(self, *, refresh: bool = False) -> Head:
        """The newest head. Raises if the storage holds an older head than this device saw
        (a rollback)."""
        if self._head is not None and not refresh:
            return self._head
        names = sorted(
            (o.name for o in self.storage.list("heads/") if _HEAD.match(o.name)), reverse=True
        )
        if not names:
            raise RepositoryCorrupted("the repository has no head object")
        newest = names[0]
        value = read_json(self.storage, self.keys, newest)
        seq = int(value["seq"])
        if seq != int(_HEAD.match(newest).group(1), 16):  # type: ignore[union-attr]
            raise RepositoryCorrupted(f"{newest} does not match its sequence number")
        try:
            seen = int((_state_dir(self.keys.repo_id) / "head").read_text())
        except (OSError, ValueError):
            seen = -1
        if seq < seen:
            raise RepositoryCorrupted(
                f"the repository was rolled back: its newest head is {seq}, this device saw {seen}"
            )
        self._remember_seq(seq)
        self._head = Head(seq, list(value["snapshots"]), list(value["indexes"]), newest)
        return self._head

    def commit(
        self,
        *,
        add_snapshots: Sequence[str] = (),
        remove_snapshots: Sequence[str] = (),
        add_indexes: Sequence[str] = (),
        remove_indexes: Sequence[str] = (),
    ) -> Head:
        """Writes the next head; then deletes the older ones."""
        old = self.head(refresh=True)
        head = Head(
            old.seq + 1,
            [s for s in old.snapshots if s not in remove_snapshots] + list(add_snapshots),
            [i for i in old.indexes if i not in remove_indexes] + list(add_indexes),
        )
        self._write_head(head)
        for info in self.storage.list("heads/"):
            m = _HEAD.match(info.name)
            if m and int(m.group(1), 16) < head.seq:
                self.storage.delete(info.name)
        return head

    # -- index and locks

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index.load(self.storage, self.keys, self.head().indexes)
        return self._index

    def reload_index(self) -> None:
        """Forgets the loaded index; the next use reads the head's index objects again."""
        self._index = None

    def recover_orphan_packs(self) -> int:
        """Adds packs that a crashed backup stored but never indexed (their headers are
        authenticated), so the next backup reuses them. Returns how many."""
        index = self.index
        found = 0
        for info in self.storage.list("data/"):
            pack_id = info.name.rsplit("/", 1)[-1]
            if pack_id in index.pack_sizes:
                continue
            try:
                entries = read_pack_header(self.storage, self.keys, pack_id, info.size)
            except RepositoryCorrupted:
                continue  # not a pack of ours; verify reports it
            index.add_pack(pack_id, info.size, entries)
            found += 1
        return found

    #: Read without taking a shared lock (``--no-lock``): for storage this device may only
    #: read. Safe as long as no prune runs meanwhile.
    no_lock = False

    def lock(self, *, exclusive: bool, wait: float = 0.0) -> Lock:
        return Lock(self.storage, self.keys, exclusive=exclusive, wait=wait)

    def read_lock(self) -> AbstractContextManager[object]:
        """The shared lock readers take (restore, verify, listings), or none with ``no_lock``."""
        return nullcontext() if self.no_lock else self.lock(exclusive=False)

    # -- snapshots

    def snapshots(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every live snapshot (listed in the head), oldest first."""
        sids = self.head().snapshots
        loaded = ordered_map(self.load_snapshot, sids, threads=self.storage.read_concurrency)
        items = list(zip(sids, loaded, strict=True))
        items.sort(key=lambda kv: kv[1]["time"])
        return iter(items)

    def load_snapshot(self, sid: str) -> dict[str, Any]:
        try:
            value = read_json(self.storage, self.keys, f"snapshots/{sid}")
        except ObjectNotFound:
            raise RepositoryCorrupted(
                f"snapshot {sid[:8]} is listed but missing (deleted?)"
            ) from None
        if not isinstance(value, dict) or value.get("id") != sid:
            raise RepositoryCorrupted(f"snapshot {sid[:8]} is malformed or was swapped")
        return value

    def find_snapshot(
        self, ref: str, where: SnapshotFilter | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A snapshot by id, unique id prefix, or ``latest`` (the newest of those ``where``
        admits: of a host, of some paths, with some tags). An id loads only that snapshot, so
        a damaged or deleted other snapshot does not stand in the way of restoring it."""
        ids = self.head().snapshots
        if not ids:
            raise InvalidArgument("the repository has no snapshots yet")
        if ref == "latest":
            chosen = [kv for kv in self.snapshots() if where is None or where.admits(kv[1])]
            if not chosen:
                raise InvalidArgument(f"no snapshot {where.describe() if where else ''}".strip())
            return chosen[-1]
        matches = [sid for sid in ids if sid.startswith(ref.lower())]
        if len(matches) != 1:
            raise InvalidArgument(
                f"no snapshot {ref!r}" if not matches else f"snapshot prefix {ref!r} is ambiguous"
            )
        return matches[0], self.load_snapshot(matches[0])

    def write_snapshot(self, value: dict[str, Any]) -> str:
        sid = new_id()
        value = dict(value, id=sid)
        write_json(self.storage, self.keys, f"snapshots/{sid}", value)
        return sid

    # -- blobs

    def read_blob(self, kind: int, blob_id: bytes) -> bytes:
        loc = self.index.get(blob_id)
        if loc.kind != kind:
            raise RepositoryCorrupted(f"blob {blob_id.hex()[:16]} has the wrong type")
        sealed = self.storage.read(pack_name(loc.pack), offset=loc.offset, length=loc.length)
        try:
            return self.codec.open(kind, blob_id, sealed)
        except InvalidTag:
            raise RepositoryCorrupted(
                f"blob {blob_id.hex()[:16]} in pack {loc.pack[:16]} is damaged"
            ) from None

    def read_tree(self, tree_id: str | bytes) -> list[Entry]:
        """A folder listing (tree blob) by its id, hex or raw."""
        raw_id = bytes.fromhex(tree_id) if isinstance(tree_id, str) else tree_id
        return decode_tree(self.read_blob(KIND_TREE, raw_id))

    @property
    def codec(self) -> _core.BlobCodec:
        if self._codec is None:
            self._codec = self.keys.codec()
        return self._codec
