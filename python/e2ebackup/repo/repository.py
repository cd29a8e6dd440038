"""An open repository: its keys, its head (the live snapshots and indexes), its index."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e2ebackup import _core
from e2ebackup._parallel import ordered_map
from e2ebackup.errors import (
    HistoryForked,
    InvalidArgument,
    InvalidTag,
    NotARepository,
    ObjectNotFound,
    RepositoryCorrupted,
    StorageError,
)
from e2ebackup.keyring import policy
from e2ebackup.keyring.policy import Credentials, Opened
from e2ebackup.keyring.slots import KeySlots
from e2ebackup.keys import KdfParams, Password, RecoveryKey
from e2ebackup.recipients import Identity, Recipient
from e2ebackup.repo.codec import (
    REPO_ID_SIZE,
    VERSION,
    VERSIONS,
    decode_config,
    encode_config,
    parse_config_header,
    read_json,
    seal_json,
    write_json,
)
from e2ebackup.repo.drop_view import DropView, check_writer_trust, load_drops, write_writer_trust
from e2ebackup.repo.drops import Drop, WriterToken, writer_identity
from e2ebackup.repo.heads import (
    Head,
    History,
    TrustedHead,
    check_pin,
    head_digest,
    head_object_name,
    read_trust,
    stale_head_names,
    write_trust,
)
from e2ebackup.repo.index import Index
from e2ebackup.repo.keystore import RepoKeyStore, load_key_slots
from e2ebackup.repo.labels import KIND_TREE, RepoKeys
from e2ebackup.repo.lock import Lock
from e2ebackup.repo.merge import (
    MAX_COMMIT_AGE,
    MERGE_ATTEMPTS,
    Changes,
    accepted_heads,
    ancestry,
    check_pin as check_pin_v3,
    head_value,
    merge,
    next_head,
    top_heads,
)
from e2ebackup.repo.names import is_id, new_id, pack_name
from e2ebackup.repo.pack import read_pack_header
from e2ebackup.repo.tree import Entry, decode_tree, snapshot_fields_valid
from e2ebackup.storage.base import Storage

if TYPE_CHECKING:
    from e2ebackup.vault.client import VaultClient

__all__ = ["DEFAULT_CHUNKER", "Head", "Repository", "SnapshotFilter", "TrustedHead"]

DEFAULT_CHUNKER = {"min": 512 << 10, "avg": 1 << 20, "max": 8 << 20}


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
        # Version 4: the drops, loaded with the index (their packs are indexed with it).
        self._drops: DropView | None = None
        self._codecs: dict[int, _core.BlobCodec] = {}  # by id() of a drop's RepoKeys
        self._accept_writers = False
        self._index_lock = threading.RLock()

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
        password: str | bytes | Password | None = None,
        recovery_key: RecoveryKey | None = None,
        kdf: KdfParams | None = None,
        chunker: dict[str, int] | None = None,
        vault: VaultClient | None = None,
        credentials: Credentials | None = None,
        publish: bool = True,
        recipients: Sequence[Recipient | str] = (),
    ) -> Repository:
        """A new repository. With ``vault``, the password is registered with that key vault
        (a guess limit, no offline guessing) instead of getting a password slot. Each of
        ``recipients`` gets a slot its identity opens (with no password at all, only those
        identities open it). ``credentials`` (from ``keyring.policy.rotate``) stands for all."""
        if credentials is None:
            credentials = Credentials.of(password, recovery_key, vault=vault, recipients=recipients)
        if (
            credentials.password is None
            and credentials.recovery_key is None
            and not credentials.recipients
        ):
            raise InvalidArgument("a repository needs a password, a recovery key or a recipient")
        if storage.exists("config"):
            raise InvalidArgument(f"there is already a repository at {storage.location}")
        if any(True for prefix in ("keys/", "heads/") for _ in storage.list(prefix)):
            raise InvalidArgument(
                f"{storage.location} holds the remains of an interrupted init or rotate (key "
                "or head objects, no config): delete them, or choose another location"
            )
        data_key = _core.generate_key()
        repo_id = _core.generate_key()[:REPO_ID_SIZE]
        keys = RepoKeys.from_data_key(data_key, repo_id)
        sizes = dict(chunker or DEFAULT_CHUNKER)
        # Checks the sizes now, before anything is stored.
        _core.Chunker(
            keys.chunker, min_size=sizes["min"], avg_size=sizes["avg"], max_size=sizes["max"]
        )
        config: dict[str, Any] = {"version": VERSION, "chunker": sizes}
        repo = cls(storage, keys, config, data_key)
        # Keys first, config last: a repository is only there once it can be opened.
        policy.enrol(RepoKeyStore(storage, repo_id), data_key, credentials, kdf=kdf)
        repo._write_head(Head(0, [], []))
        if publish:
            repo.publish()
        return repo

    def publish(self) -> None:
        """Stores the config, written last: only then is there a repository to open. A rotation
        publishes its copy once every snapshot is in it, so an interrupted one leaves nothing
        that opens (and looks like a finished, empty copy)."""
        self.storage.put_bytes("config", encode_config(self.keys, self.config))

    @classmethod
    def open(
        cls,
        storage: Storage,
        *,
        password: str | bytes | Password | None = None,
        recovery_key: RecoveryKey | None = None,
        identity: Identity | None = None,
    ) -> Repository:
        """Opens the repository with a recovery key, else an identity (a recipient slot), else
        a password (through its key vault, if it has one): the one credential policy of
        keyring.policy."""
        try:
            blob = storage.read("config")
        except ObjectNotFound:
            raise NotARepository(f"no e2ebackup repository at {storage.location}") from None
        repo_id = parse_config_header(blob)
        store = RepoKeyStore(storage, repo_id)
        slots = store.load()
        if not slots.slots and not slots.damaged:
            raise RepositoryCorrupted("the repository has no key slots")
        data_key = policy.unlock(
            store, Credentials.of(password, recovery_key, identity=identity)
        ).data_key
        keys = RepoKeys.from_data_key(data_key, repo_id)
        config = decode_config(keys, blob)
        sizes = config.get("chunker")
        try:
            if config.get("version") not in VERSIONS or not isinstance(sizes, dict):
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
        """Every key slot and the ``keys/`` object it is stored in."""
        return load_key_slots(self.storage, self.keys.repo_id)

    def _key_store(self) -> tuple[RepoKeyStore, Opened]:
        store = RepoKeyStore(self.storage, self.keys.repo_id)
        return store, policy.reopen(store, self._data_key)

    def add_password(
        self, password: str | bytes | Password, *, kdf: KdfParams | None = None, label: str = ""
    ) -> str:
        """Adds a password slot; returns its ``keys/`` object's name. Refused when a key vault
        holds the password (offline guessing would be back)."""
        store, opened = self._key_store()
        policy.add_password(store, opened, Password(password), kdf=kdf, label=label)
        return store.added[-1]

    def add_recovery_key(self, recovery_key: RecoveryKey, *, label: str = "") -> str:
        store, opened = self._key_store()
        policy.add_recovery_key(store, opened, recovery_key, label=label)
        return store.added[-1]

    def remove_key(self, index: int) -> None:
        """Removes key slot ``index`` (as :meth:`key_slots` lists them); never the last."""
        store, opened = self._key_store()
        policy.remove_slot(store, opened, index)

    def change_password(
        self,
        old: str | bytes | Password,
        new: str | bytes | Password,
        *,
        kdf: KdfParams | None = None,
    ) -> None:
        """Adds a slot for the new password, then removes the old password's slot: there is no
        moment without a working key. A password held by a key vault is registered anew at the
        same vault (``old`` must log in there), and the old vault record deleted afterwards.
        A vault slot that does not prove itself with the data key is deleted, not contacted."""
        store, opened = self._key_store()
        policy.change_password(store, opened, Password(old), Password(new), kdf=kdf)

    def rotation_credentials(
        self, password: str | bytes | Password | None, recovery_key: RecoveryKey | None
    ) -> Credentials:
        """What a repository that replaces this one is enrolled with (keyring.policy.rotate):
        the same proven vaults if this one's password is held by one, else a password slot."""
        _, opened = self._key_store()
        return policy.rotate(opened, password=Password.of(password), recovery_key=recovery_key)

    def has_recovery_key_slot(self) -> bool:
        return self._key_store()[1].has_recovery_key

    # -- head

    #: The head the user expects (``--expect-head``, ``E2EBACKUP_EXPECT_HEAD``): 16 to 64 hex
    #: digits of its SHA-256. The newest head must be it or descend from it.
    expect_head: str | None = None

    @property
    def version(self) -> int:
        """The repository's format version (1, 2 or 3): 3 lets many writers commit at once."""
        return int(self.config.get("version", 1))

    @property
    def many_writers(self) -> bool:
        """Whether backups run beside each other (format version 3: merged heads)."""
        return self.version >= 3

    @property
    def takes_drops(self) -> bool:
        """Whether writers that cannot read may back up into it (format version 4: drops)."""
        return self.version >= 4

    def writer_recipient(self) -> Recipient:
        """The recipient every drop is sealed to (in every writer token)."""
        return writer_identity(self._data_key).recipient

    def issue_writer_token(self) -> WriterToken:
        """A token for a new writer: it can back up into this repository and read nothing
        (docs/FORMAT.md, Writers that cannot read). Keep it as secret as a password: its holder
        can add snapshots under this writer's name."""
        if not self.takes_drops:
            raise InvalidArgument(
                f"this repository is format version {self.version}; writers need version 4 "
                "(make a new repository, or `e2ebackup rotate` this one into one)"
            )
        return WriterToken.issue(self._data_key, self.keys.repo_id)

    def _history(self) -> History:
        return History(self.storage, self.keys, self.version)

    def _write_head(self, head: Head) -> None:
        name = head_object_name(head.seq, new_id())
        if self.many_writers:
            if head.time is None:  # the first head, made by init
                head.time = time.time()
            value = head_value(head)
        else:
            value = {
                "seq": head.seq,
                "snapshots": head.snapshots,
                "indexes": head.indexes,
                "parent": head.parent,
            }
        stored = seal_json(self.keys, name, value)
        self.storage.put_bytes(name, stored)
        head.name = name
        head.digest = head_digest(stored)
        # This device's own next head extends what it trusted, and so its pins.
        trusted = read_trust(self.keys.repo_id)
        write_trust(self.keys.repo_id, head, trusted.pins if trusted else ())
        self._head = head

    def head(self, *, refresh: bool = False) -> Head:
        """The newest head, once it is checked to extend the head this device trusted (and the
        pinned ``expect_head``); this device then trusts it. Raises RolledBack, HistoryForked
        or HistoryUnverifiable (docs/FORMAT.md, Heads) otherwise; :meth:`trust` accepts."""
        if self._head is not None and not refresh:
            return self._head
        history = self._history()
        trusted = read_trust(self.keys.repo_id)
        if self.many_writers:
            return self._merged_head(history, trusted)
        newest = history.newest(trusted)
        pins: tuple[str, ...] = ()
        if trusted is not None:
            history.check_extends(newest, trusted)
            pins = trusted.pins
        if self.expect_head is not None:
            pin = check_pin(self.expect_head)
            if pin not in pins:
                history.check_pin(newest, pin)
                pins = (*pins, pin)
        if trusted is None or (trusted.digest, trusted.pins) != (newest.digest, pins):
            write_trust(self.keys.repo_id, newest, pins)
        self._head = newest
        return newest

    def _merged_head(self, history: History, trusted: TrustedHead | None) -> Head:
        """Version 3: the merge of the top heads and of the trusted heads they do not reach
        yet, once checked against what this device trusted; this device then trusts it."""
        view = merge(accepted_heads(history, trusted))
        pins = trusted.pins if trusted is not None else ()
        if self.expect_head is not None:
            pin = check_pin(self.expect_head)
            if pin not in pins:
                check_pin_v3(history, view.members, pin)
                pins = (*pins, pin)
        members = tuple((str(h.name), str(h.digest)) for h in view.members)
        if trusted is None or (trusted.seq, trusted.heads, trusted.pins) != (
            view.seq,
            members,
            pins,
        ):
            write_trust(self.keys.repo_id, view, pins)
        self._head = view
        return view

    def trusted_head(self) -> TrustedHead | None:
        """The head this device trusts, from its state folder (None on a new device)."""
        return read_trust(self.keys.repo_id)

    def newest_head(self) -> Head:
        """The newest head as the storage shows it: authenticated and the only one with its
        seq, but not checked against what this device trusted. What :meth:`trust` accepts.
        In version 3, the merge of the top heads."""
        history = self._history()
        return merge(top_heads(history)) if self.many_writers else history.newest()

    def trust(self, expected: str | None = None) -> Head:
        """Accepts the storage's newest head on purpose (after a refusal the user understands,
        or on a new device): this device trusts it from now on. With ``expected`` (hex digits
        of its SHA-256, as another device shows it), only that head is accepted."""
        try:
            newest = self.newest_head()
        except HistoryForked:
            if expected is None:
                raise
            return self._continue_branch(check_pin(expected))
        if expected is not None and not any(
            str(h.digest).startswith(check_pin(expected)) for h in newest.stored_heads
        ):
            raise InvalidArgument(
                f"the newest head is {newest.digest}, not {expected}: nothing was trusted"
            )
        write_trust(self.keys.repo_id, newest, (check_pin(expected),) if expected else ())
        self._head = newest
        if self.takes_drops:  # the writers' drops as they are now, too
            self._accept_writers = True
            self.reload_index()
            self.drop_view()
        return newest

    def _continue_branch(self, pin: str) -> Head:
        """Two heads have the newest seq: trusts the one ``pin`` names and writes the next head
        on top of it (under the exclusive lock), so every device sees one newest head again."""
        with self.lock(exclusive=True):
            history = self._history()
            seq = max(history.by_seq)
            heads = [history.read(name) for name in history.by_seq[seq]]
            chosen = [h for h in heads if str(h.digest).startswith(pin)]
            if len(heads) < 2 or len(chosen) != 1:
                raise InvalidArgument(f"no single head with seq {seq} is {pin}: nothing trusted")
            write_trust(self.keys.repo_id, chosen[0])
            head = Head(seq + 1, chosen[0].snapshots, chosen[0].indexes, parent=chosen[0].digest)
            self._write_head(head)
        return head

    def commit(
        self,
        *,
        add_snapshots: Sequence[str] = (),
        remove_snapshots: Sequence[str] = (),
        add_indexes: Sequence[str] = (),
        remove_indexes: Sequence[str] = (),
        clear_tombstones: Sequence[str] = (),
        condemn: Sequence[str] = (),
    ) -> Head:
        """Writes the next head, naming the current one as its parent; then deletes the heads
        older than the last KEEP_HEADS (a crash before that leaves a few extra old heads, which
        the next commit deletes). In version 3 the current head is the merge of the top heads,
        removals become tombstones (``clear_tombstones`` leaves some out: prune's, once their
        objects are deleted), and others may commit at the same time (:meth:`_commit_merged`)."""
        if self.many_writers:
            drops = self.drop_view() if remove_snapshots else DropView()
            of = {sid: drops.snapshot(sid) for sid in remove_snapshots}
            gone = [d.name for d in of.values() if d is not None]
            head = self._commit_merged(
                Changes(
                    add_snapshots,
                    [sid for sid, d in of.items() if d is None],
                    add_indexes,
                    remove_indexes,
                    clear_tombstones,
                    gone,
                    condemn,
                )
            )
            self._delete_old_heads(head.seq)
            return head
        old = self.head(refresh=True)
        head = Head(
            old.seq + 1,
            [s for s in old.snapshots if s not in remove_snapshots] + list(add_snapshots),
            [i for i in old.indexes if i not in remove_indexes] + list(add_indexes),
            parent=old.digest,
        )
        self._write_head(head)
        self._delete_old_heads(head.seq)
        return head

    def _delete_old_heads(self, seq: int) -> None:
        for name in stale_head_names(self.storage, seq):
            try:
                self.storage.delete(name)
            except StorageError:
                break  # the commit is done; the next one deletes what is left

    def _commit_merged(self, changes: Changes) -> Head:
        """Version 3 (FORMAT.md, Many writers): merge the top heads, write the next head on
        top, then check that the heads others wrote meanwhile reach it, and merge it in with a
        head of its own when they do not (they committed on top of an older state)."""
        while True:
            listed = time.monotonic()
            head = next_head(self.head(refresh=True), changes)
            if time.monotonic() - listed <= MAX_COMMIT_AGE:
                break  # else what it would write could be stale: list again
        self._write_head(head)
        mine = head
        for _ in range(MERGE_ATTEMPTS):
            history = self._history()
            tops = top_heads(history)
            if tops[0].seq <= mine.seq or mine.digest in ancestry(history, tops, mine.seq).digests:
                break
            # This device trusts ``mine``, which no top head reaches: the view merges it in.
            self._write_head(next_head(self._merged_head(history, read_trust(self.keys.repo_id))))
            mine = self._head  # type: ignore[assignment]
        return mine

    # -- index and locks

    @property
    def index(self) -> Index:
        # Pack writers' threads add to it: the first use must load it once, not once each.
        with self._index_lock:
            if self._index is None:
                index = Index.load(
                    self.storage, self.keys, self.head().indexes, condemned=self.many_writers
                )
                self._drops = self._load_drops(index) if self.takes_drops else DropView()
                self._index = index
            return self._index

    def reload_index(self) -> None:
        """Forgets the loaded index (and drops); the next use reads them again."""
        self._index = None
        self._drops = None
        self._codecs = {}

    # -- drops (version 4)

    def drop_view(self) -> DropView:
        """The writers' drops (docs/FORMAT.md, Writers that cannot read): loaded with the
        index, since their packs are indexed with it; without loading it when there are none."""
        if self._drops is None:
            if not self.takes_drops or not any(True for _ in self.storage.list("drops/")):
                self._drops = DropView()
            else:
                self.index  # noqa: B018 (loads the drops with it)
        assert self._drops is not None
        return self._drops

    def _load_drops(self, index: Index) -> DropView:
        """Opens every drop, checks the writers' chains against this device's trust, and
        indexes the drops' packs (FORMAT.md, Writers that cannot read)."""
        forgotten = set(self.head().dropped)
        drops, problems = load_drops(
            self.storage,
            self.keys.repo_id,
            self._data_key,
            threads=self.storage.read_concurrency,
            pruned=forgotten,
        )
        if self._accept_writers:
            self._accept_writers = False
        else:
            check_writer_trust(self.keys.repo_id, drops, forgotten)
        write_writer_trust(self.keys.repo_id, drops, replace=not drops)
        view = DropView(problems=problems)
        owners = self._pack_owners(index, drops, view.problems)
        present = {i.name: i.size for i in self.storage.list("data/")}
        taken = set(self.head().snapshots)
        for drop in drops:
            refused = [p for p, _, _ in drop.packs if owners.get(p) is not drop]
            if refused:
                view.problems.append(
                    f"{drop.name} is refused: its pack {refused[0][:16]} is another's (its "
                    "header opens with another drop's or the repository's key, or none)"
                )
                continue
            for pack_id, size, entries in drop.packs:
                if present.get(pack_name(pack_id)) != size:
                    # Deleted by a prune (condemned, so tombstoned), or lost by the storage:
                    # then the writer stores its blobs again (a later drop).
                    if pack_name(pack_id) not in forgotten:
                        view.problems.append(
                            f"pack {pack_id[:16]} of {drop.name} is missing from the storage"
                        )
                    continue
                index.add_pack(pack_id, size, entries, new=False)
                view.pack_keys[pack_id] = drop.keys
            view.drops.append(drop)
            if drop.name in forgotten:
                continue
            sid = drop.snapshot_id
            if sid in taken:
                view.problems.append(f"{drop.name} is refused: its snapshot id is taken")
                continue
            taken.add(sid)
            view.live.append(drop)
        return view

    def _pack_owners(
        self, index: Index, drops: list[Drop], problems: list[str]
    ) -> dict[str, Drop | None]:
        """Which drop each pack named by a drop belongs to. A pack the repository's index
        lists is the repository's (None); a pack two drops name is the one whose header opens
        with its keys (a writer cannot make a header under another drop's session key), else
        nobody's. So a writer naming another's pack hides nothing but its own drop."""
        claims: dict[str, list[Drop]] = {}
        for drop in drops:
            for pack_id, _, _ in drop.packs:
                claims.setdefault(pack_id, []).append(drop)
        owners: dict[str, Drop | None] = {}
        for pack_id, claimants in claims.items():
            if pack_id in index.pack_sizes:
                owners[pack_id] = None
            elif len(claimants) == 1:
                owners[pack_id] = claimants[0]
            else:
                owners[pack_id] = next(
                    (d for d in claimants if self._header_opens(d, pack_id)), None
                )
                if owners[pack_id] is None:
                    problems.append(f"pack {pack_id[:16]} is named by several drops, owned by none")
        return owners

    def _header_opens(self, drop: Drop, pack_id: str) -> bool:
        size = next(size for p, size, _ in drop.packs if p == pack_id)
        try:
            read_pack_header(self.storage, drop.keys, pack_id, size)
        except (RepositoryCorrupted, StorageError, InvalidArgument):
            return False
        return True

    def keys_for(self, pack_id: str) -> RepoKeys:
        """The keys a pack is under: a drop's, or the repository's."""
        if self._drops is None or not self._drops.pack_keys:
            return self.keys
        return self._drops.pack_keys.get(pack_id, self.keys)

    def codec_for(self, pack_id: str) -> _core.BlobCodec:
        """The blob codec of a pack's blobs (:meth:`keys_for`), one per drop."""
        keys = self.keys_for(pack_id)
        if keys is self.keys:
            return self.codec
        codec = self._codecs.get(id(keys))
        if codec is None:
            codec = self._codecs[id(keys)] = keys.codec()
        return codec

    def chunker_max(self, sid: str) -> int:
        """The largest data blob the snapshot ``sid`` may hold: its drop's chunker ``max`` for a
        writer's snapshot (a writer cannot read the config), else the config's."""
        drop = self.drop_of(sid)
        sizes = drop.chunker if drop is not None else self.config["chunker"]
        return int(sizes["max"])

    def is_drop_pack(self, pack_id: str) -> bool:
        return self._drops is not None and pack_id in self._drops.pack_keys

    def recover_orphan_packs(self) -> int:
        """Adds packs that a crashed backup stored but never indexed (their headers are
        authenticated), so the next backup reuses them. Returns how many."""
        index = self.index
        found = 0
        for info in self.storage.list("data/"):
            pack_id = info.name.rsplit("/", 1)[-1]
            if pack_id in index.pack_sizes:
                continue
            if not is_id(pack_id) or info.name != pack_name(pack_id):
                continue  # not a pack of ours (a name the storage made up); verify reports it
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

    def lock(self, *, exclusive: bool, wait: float = 0.0, prune: bool = False) -> Lock:
        return Lock(self.storage, self.keys, exclusive=exclusive, wait=wait, prune=prune)

    def read_lock(self) -> AbstractContextManager[object]:
        """The shared lock readers take (restore, verify, listings), or none with ``no_lock``."""
        return nullcontext() if self.no_lock else self.lock(exclusive=False)

    # -- snapshots

    #: Called with a message for each listed snapshot whose object is missing, when listings
    #: and ``latest`` skip it; without it, a :mod:`warnings` warning.
    on_missing_snapshot: Callable[[str], None] | None = None

    def snapshots(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every live snapshot (listed in the head), oldest first. A listed snapshot whose
        object is missing is skipped and reported (``on_missing_snapshot``), so that the others
        stay listed and ``latest`` restorable; one that does not authenticate raises."""
        sids = self.snapshot_ids()
        loaded = ordered_map(self._read_snapshot, sids, threads=self.storage.read_concurrency)
        items = []
        for sid, value in zip(sids, loaded, strict=True):
            if value is not None:
                items.append((sid, value))
                continue
            self._report_missing(
                f"snapshot {sid[:8]} is listed but missing from the storage (deleted?); "
                "skipped, the other snapshots are not affected"
            )
        for problem in self.drop_view().problems:
            self._report_missing(problem)
        items.sort(key=lambda kv: kv[1]["time"])
        return iter(items)

    def _report_missing(self, message: str) -> None:
        if self.on_missing_snapshot is not None:
            self.on_missing_snapshot(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def snapshot_ids(self) -> list[str]:
        """Every live snapshot's id: the head's, then the live drops' (version 4)."""
        return self.head().snapshots + [d.snapshot_id for d in self.drop_view().live]

    def drop_of(self, sid: str) -> Drop | None:
        """The drop a snapshot came in (None for a snapshot of the repository's own)."""
        return self.drop_view().snapshot(sid) if self.takes_drops else None

    def load_snapshot(self, sid: str) -> dict[str, Any]:
        value = self._read_snapshot(sid)
        if value is None:
            raise RepositoryCorrupted(f"snapshot {sid[:8]} is listed but missing (deleted?)")
        return value

    def _read_snapshot(self, sid: str) -> dict[str, Any] | None:
        """A snapshot object, checked; None if it is not stored."""
        drop = self.drop_of(sid)
        if drop is not None:
            return drop.snapshot  # checked when the drop was loaded
        try:
            value = read_json(self.storage, self.keys, f"snapshots/{sid}")
        except ObjectNotFound:
            return None
        if not isinstance(value, dict) or value.get("id") != sid:
            raise RepositoryCorrupted(f"snapshot {sid[:8]} is malformed or was swapped")
        if not snapshot_fields_valid(value):
            raise RepositoryCorrupted(f"snapshot {sid[:8]} is malformed")
        return value

    def find_snapshot(
        self, ref: str, where: SnapshotFilter | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A snapshot by id, unique id prefix, or ``latest`` (the newest of those ``where``
        admits: of a host, of some paths, with some tags; a listed snapshot that is missing
        from the storage is skipped, with a warning). An id loads only that snapshot, so a
        damaged or deleted other snapshot does not stand in the way of restoring it."""
        ids = self.snapshot_ids()
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
        loc = self.index.locate(blob_id)
        if loc.kind != kind:
            raise RepositoryCorrupted(f"blob {blob_id.hex()[:16]} has the wrong type")
        sealed = self.storage.read(pack_name(loc.pack), offset=loc.offset, length=loc.length)
        try:
            return self.codec_for(loc.pack).open(kind, blob_id, sealed)
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
