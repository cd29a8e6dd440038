"""Attacks on writers that cannot read (format version 4, docs/FORMAT.md "Writers that cannot
read"): the storage edits, renames, copies, deletes and replays drops; someone holding only the
public writer recipient W forges drops; a compromised writer (it holds its token) makes drops
that claim another writer's packs, smuggle a costly password slot, or point at wrong bytes;
the storage sends an endless drop; an attacker edits a writer's state file.

Each must be refused or reported with a typed error (e2ebackup.errors), leave every other
snapshot listed and restorable byte-identical, and never yield silently wrong bytes.

Devices are state folders (E2EBACKUP_STATE_DIR): what each device trusted is kept there."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import importlib
import io
import json
import os
import struct
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from e2ebackup import _core
from e2ebackup.errors import (
    E2EBackupError,
    HistoryNotTrusted,
    InvalidArgument,
    ObjectTooLarge,
    RepositoryCorrupted,
    RolledBack,
)
from e2ebackup.keyring.slots import KeySlots
from e2ebackup.keys import Argon2idParams, RecoveryKey, ScryptParams
from e2ebackup.recipients import Identity
from e2ebackup.repo import drops as D
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.labels import KIND_TREE, derive
from e2ebackup.repo.names import new_id
from e2ebackup.repo.prune import forget
from e2ebackup.repo.repository import DEFAULT_CHUNKER, Repository
from e2ebackup.repo.restore import restore
from e2ebackup.repo.tree import encode_tree
from e2ebackup.repo.writer import WriterState, backup_as_writer
from e2ebackup.storage import LocalStorage, base as storage_base
from e2ebackup.storage.base import ObjectInfo, Storage
from repo_helpers import device, make_tree, snapshot_of

# ---- the world: a reader's repository, its own backup and two writers ---------------------------


@pytest.fixture(autouse=True)
def reader_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state-reader"))


@dataclasses.dataclass
class Writer:
    name: str
    token_text: str
    state: Path
    src: Path
    sids: list[str] = dataclasses.field(default_factory=list)
    drops: list[str] = dataclasses.field(default_factory=list)

    @property
    def token(self) -> D.WriterToken:
        return D.WriterToken.parse(self.token_text)

    def packs(self) -> dict[str, int]:
        """The writer's packs, as its state lists them: id -> size."""
        with device(self.state):
            return {p: s for p, (s, _) in WriterState.load(self.token).packs.items()}

    def load_state(self) -> WriterState:
        with device(self.state):
            return WriterState.load(self.token)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.path = tmp / "repo"
        self.rk = RecoveryKey.generate()
        repo = Repository.init(LocalStorage(self.path), recovery_key=self.rk)
        self.repo_id = repo.keys.repo_id
        self.data_key = repo._data_key  # to check what an honest reader would see
        self.own_src = tmp / "src-own"
        make_tree(self.own_src, small_files=3)
        self.own_sid, _ = backup(repo, [str(self.own_src)])
        self.writers: dict[str, Writer] = {}
        self._repo = repo

    @property
    def storage(self) -> LocalStorage:
        return LocalStorage(self.path, create=False)

    def add_writer(self, name: str, token: D.WriterToken | None = None) -> Writer:
        token = token or self._repo.issue_writer_token()
        src = self.tmp / f"src-{name}"
        make_tree(src, small_files=3)
        (src / f"{name}.bin").write_bytes(os.urandom(150_000))
        w = Writer(name, token.secret(), self.tmp / f"state-{name}", src)
        self.writers[name] = w
        return w

    def issue(self) -> D.WriterToken:
        return self._repo.issue_writer_token()

    def write(self, w: Writer) -> str:
        (w.src / f"n{len(w.sids)}.txt").write_bytes(f"{w.name} {len(w.sids)}\n".encode())
        with device(w.state):
            sid, _, drop = backup_as_writer(self.storage, w.token, [w.src])
        w.sids.append(sid)
        w.drops.append(drop)
        return sid

    def open(self, state: str = "state-reader", storage: Storage | None = None) -> Repository:
        with device(self.tmp / state):
            repo = Repository.open(storage or self.storage, recovery_key=self.rk)
            repo.on_missing_snapshot = lambda message: None
            repo.snapshot_ids()  # loads the drops (and checks trust) as this device
            return repo

    def restores(self, repo: Repository, sid: str, src: Path) -> bool:
        out = self.tmp / f"out-{sid[:8]}-{new_id()[:6]}"
        restore(repo, sid, out)
        return snapshot_of(out / src.name) == snapshot_of(src)

    def others_fine(self, repo: Repository, skip: set[str]) -> None:
        """Every snapshot but those in ``skip`` (sids) is listed and restores byte-identical:
        the reader's own and each writer's newest."""
        ids = repo.snapshot_ids()
        assert len(ids) == len(set(ids)), "a snapshot id is listed twice"
        assert self.own_sid in ids
        assert self.restores(repo, self.own_sid, self.own_src)
        for w in self.writers.values():
            if w.sids and w.sids[-1] not in skip:
                assert w.sids[-1] in ids
                assert self.restores(repo, w.sids[-1], w.src)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.write(w.add_writer("a"))
    w.write(w.add_writer("b"))
    w.open("state-reader")  # the reader's device has seen both drops
    return w


def drop_parts(stored: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges [start, end) of each region of a drop."""
    area_len = struct.unpack(">I", stored[25:29])[0]
    body_at = 29 + area_len + 4
    body_len = struct.unpack(">I", stored[29 + area_len : body_at])[0]
    return {
        "magic": (0, 8),
        "version": (8, 9),
        "repo_id": (9, 25),
        "slots_len": (25, 29),
        "slots": (29, 29 + area_len),
        "body_len": (29 + area_len, body_at),
        "body": (body_at, body_at + body_len),
        "mac": (body_at + body_len, len(stored)),
    }


def seal(name: str, token: D.WriterToken, sk: bytes, value: dict[str, Any], area: bytes) -> bytes:
    """A drop as FORMAT.md lays it out, with a slot area of the attacker's making, MACed with
    the token's key (what a compromised writer can do)."""
    metadata = derive(sk, D.LABEL_DROP_METADATA)
    context = D.CONTEXT_DROP + b"\x00" + token.repo_id + name.encode()
    body = _core.encrypt(
        metadata, json.dumps(value, separators=(",", ":")).encode(), context=context
    )
    signed = (
        D.MAGIC
        + bytes([D.DROP_VERSION])
        + token.repo_id
        + struct.pack(">I", len(area))
        + area
        + struct.pack(">I", len(body))
        + body
    )
    mac_key = derive(token.auth, D.LABEL_DROP_MAC_KEY)
    mac = hmac.new(mac_key, D.CONTEXT_MAC + b"\x00" + name.encode() + signed, hashlib.sha256)
    return signed + mac.digest()


def drop_value(
    token: D.WriterToken,
    state: WriterState | None,
    *,
    tree: str | None = None,
    sid: str | None = None,
    packs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A well-formed drop body for ``token``'s next drop after ``state``."""
    seq = (state.seq if state else 0) + 1
    return {
        "writer": token.writer_id.hex(),
        "seq": seq,
        "prev": list(state.prev) if state and state.prev else None,
        "time": 1_800_000_000,
        "snapshot": {
            "id": sid or new_id(),
            "time": 1_800_000_000,
            "started": 1_800_000_000,
            "hostname": "attacker",
            "username": "",
            "paths": ["/evil"],
            "tree": tree or new_id(),
            "parent": None,
            "tags": [],
            "stats": {},
        },
        "packs": packs or [],
        "chunker": dict(DEFAULT_CHUNKER),
    }


def slot_container(repo_id: bytes, name: str) -> bytes:
    """The container id of a drop's slot area (FORMAT.md: bound to the drop's name)."""
    return D._container_id(repo_id, name)


def newest_restores_or_typed(world: World, repo: Repository, w: Writer) -> None:
    sid = w.sids[-1]
    if sid not in repo.snapshot_ids():
        return
    with suppress(E2EBackupError):
        assert world.restores(repo, sid, w.src)


def problems_naming(repo: Repository, text: str) -> list[str]:
    return [p for p in repo.drop_view().problems if text in p]


# ---- the storage edits, renames, copies, deletes and replays drops ------------------------------

REGIONS = ["magic", "version", "repo_id", "slots_len", "slots", "body_len", "body", "mac"]


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_tampered_drop_byte_is_reported_and_the_rest_restores(
    world: World, region: str, where: str
) -> None:
    b = world.writers["b"]
    name = b.drops[0]
    stored = bytearray(world.storage.read(name))
    start, end = drop_parts(bytes(stored))[region]
    at = {"first": start, "middle": (start + end) // 2, "last": end - 1}[where]
    stored[at] ^= 0x01
    world.storage.delete(name)
    world.storage.put_bytes(name, bytes(stored))

    repo = world.open("state-new-device")
    assert problems_naming(repo, name[6:]) or problems_naming(repo, name)
    assert b.sids[0] not in repo.snapshot_ids()
    assert not verify(repo, read_data=False).ok
    world.others_fine(repo, skip={b.sids[0]})
    # The device that had seen B's drop refuses the storage's state (B's chain went back).
    with pytest.raises(HistoryNotTrusted):
        world.open("state-reader")


def test_a_renamed_drop_is_refused(world: World) -> None:
    a = world.writers["a"]
    world.write(a)  # a second drop names the first as prev
    old = a.drops[0]
    new = f"drops/{new_id()}"
    world.storage.put_bytes(new, world.storage.read(old))
    world.storage.delete(old)
    repo = world.open("state-new-device")
    assert problems_naming(repo, new[6:14]) or problems_naming(repo, new)
    assert a.sids[0] not in repo.snapshot_ids()
    assert problems_naming(repo, "missing")  # a's second drop names a drop that is gone
    assert not verify(repo).ok
    # a's second drop reused blobs of the first one's packs, whose keys only that drop held:
    # it restores byte-identical or fails typed; the others are unaffected.
    newest_restores_or_typed(world, repo, a)
    world.others_fine(repo, skip={a.sids[-1]})


def test_a_drop_copied_into_another_repository_is_refused(world: World, tmp_path: Path) -> None:
    other = World(tmp_path / "other")
    a = world.writers["a"]
    other.storage.put_bytes(a.drops[0], world.storage.read(a.drops[0]))
    repo = other.open("state-other")
    assert repo.snapshot_ids() == [other.own_sid]
    assert problems_naming(repo, "another repository")
    assert not verify(repo).ok
    assert other.restores(repo, other.own_sid, other.own_src)


def test_a_deleted_middle_drop_is_reported_and_a_deleted_newest_is_a_rollback(
    world: World,
) -> None:
    a = world.writers["a"]
    world.write(a)
    world.write(a)
    seen = world.open("state-reader")  # this device sees a's three drops
    assert sorted(d.seq for d in seen.drop_view().drops if d.writer == a.token.writer_id.hex()) == [
        1,
        2,
        3,
    ]

    world.storage.delete(a.drops[1])
    repo = world.open("state-new-device")
    assert problems_naming(repo, "missing")
    assert a.sids[1] not in repo.snapshot_ids()
    assert not verify(repo).ok
    newest_restores_or_typed(world, repo, a)
    world.others_fine(repo, skip={a.sids[-1]})

    world.storage.delete(a.drops[2])
    with pytest.raises(RolledBack):
        world.open("state-reader")
    with device(world.tmp / "state-reader"):
        trusting = Repository.open(world.storage, recovery_key=world.rk)
        trusting.trust()
    repo = world.open("state-reader")  # accepted from now on
    assert a.sids[0] in repo.snapshot_ids()
    assert a.sids[2] not in repo.snapshot_ids()
    assert world.restores(repo, world.own_sid, world.own_src)


def test_a_hidden_newest_drop_behind_a_newer_fork_is_refused(world: World) -> None:
    """The storage shows a device that saw a's drop 2 a state where drop 2 is gone and a
    drop 3 exists that does not descend from it (a's state was copied, then both ran)."""
    a = world.writers["a"]
    copy = world.tmp / "state-a-copy"
    import shutil

    shutil.copytree(a.state, copy)
    world.write(a)  # drop 2
    world.open("state-reader")  # seen
    twin = Writer("a", a.token_text, copy, a.src)
    world.write(twin)  # another drop 2 (a fork)
    world.write(twin)  # drop 3 on the fork
    fresh = world.open("state-new-device")
    assert problems_naming(fresh, "fork")
    world.storage.delete(a.drops[1])
    with pytest.raises(HistoryNotTrusted):
        world.open("state-reader")


def test_a_drop_replayed_under_a_new_name_is_refused(world: World) -> None:
    a = world.writers["a"]
    replay = f"drops/{new_id()}"
    world.storage.put_bytes(replay, world.storage.read(a.drops[0]))
    repo = world.open("state-new-device")
    ids = repo.snapshot_ids()
    assert len(ids) == len(set(ids))
    assert ids.count(a.sids[0]) == 1
    assert problems_naming(repo, replay[6:14]) or problems_naming(repo, replay)
    world.others_fine(repo, skip=set())


# ---- forgeries: W alone, and compromised writers ------------------------------------------------


@pytest.mark.parametrize("claimed", ["random writer", "writer a's id", "writer a's next seq"])
def test_a_drop_forged_with_only_the_public_recipient_is_refused(
    world: World, claimed: str
) -> None:
    a = world.writers["a"]
    writer_id = os.urandom(16) if claimed == "random writer" else a.token.writer_id
    forger = D.WriterToken(world.repo_id, writer_id, os.urandom(32), a.token.recipient)
    state = a.load_state() if claimed == "writer a's next seq" else None
    name = f"drops/{new_id()}"
    sk = _core.generate_key()
    forged = D.seal_drop(name, forger, sk, drop_value(forger, state))
    world.storage.put_bytes(name, forged)
    repo = world.open("state-new-device")
    assert problems_naming(repo, "MAC")
    assert all(d.name != name for d in repo.drop_view().drops)
    listed = {sid for sid, _ in repo.snapshots()}
    assert listed == {world.own_sid, a.sids[0], world.writers["b"].sids[0]}
    assert not verify(repo).ok
    world.others_fine(repo, skip=set())
    # The device that had trusted a's drop is not made to see a fork or a rollback either.
    seen = world.open("state-reader")
    assert a.sids[0] in seen.snapshot_ids()


def _writers_in_order(world: World, a_first: bool) -> tuple[Writer, Writer]:
    """Two fresh writers a2 and b2, a2's id sorting before b2's exactly when ``a_first``."""
    while True:
        t1, t2 = world.issue(), world.issue()
        if (t1.writer_id < t2.writer_id) == a_first:
            break
    return world.add_writer("a2", t1), world.add_writer("b2", t2)


@pytest.mark.parametrize("a_first", [True, False], ids=["attacker-sorts-first", "victim-first"])
def test_a_compromised_writer_claiming_anothers_pack_never_yields_wrong_bytes(
    world: World, a_first: bool
) -> None:
    attacker, victim = _writers_in_order(world, a_first)
    world.write(victim)
    world.write(attacker)
    victim_pack, victim_size = next(iter(victim.packs().items()))
    blob = os.urandom(32)
    state = attacker.load_state()
    value = drop_value(
        attacker.token,
        state,
        tree=blob.hex(),
        packs=[
            {"id": victim_pack, "size": victim_size, "blobs": [[KIND_TREE, blob.hex(), 0, 100]]}
        ],
    )
    name = f"drops/{new_id()}"
    sk = _core.generate_key()
    world.storage.put_bytes(name, D.seal_drop(name, attacker.token, sk, value))
    forged_sid = value["snapshot"]["id"]

    repo = world.open("state-new-device")
    ids = repo.snapshot_ids()
    assert problems_naming(repo, "listed elsewhere") or problems_naming(repo, "pack")
    if victim.sids[0] in ids:
        assert world.restores(repo, victim.sids[0], victim.src)
    else:
        assert problems_naming(repo, victim.drops[0][6:])
    if forged_sid in ids:
        with pytest.raises(E2EBackupError):
            restore(repo, forged_sid, world.tmp / "out-forged")
    assert not verify(repo, read_data=True).ok
    world.others_fine(repo, skip={victim.sids[0], forged_sid})


def test_a_writer_naming_anothers_pack_hides_only_its_own_drop(world: World) -> None:
    """A compromised writer whose id sorts first names the victim's pack (visible in data/).
    Found open on the first version: the victim's drop was refused (the first claim won),
    and forgetting the offender did not lift it. Now the pack is the drop's whose header opens
    with its keys: the victim stays listed and restores, the offender's drop is refused."""
    attacker, victim = _writers_in_order(world, a_first=True)
    world.write(victim)
    world.write(attacker)
    victim_pack, victim_size = next(iter(victim.packs().items()))
    value = drop_value(
        attacker.token,
        attacker.load_state(),
        packs=[{"id": victim_pack, "size": victim_size, "blobs": []}],
    )
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, attacker.token, _core.generate_key(), value))
    repo = world.open("state-new-device")
    assert victim.sids[0] in repo.snapshot_ids(), repo.drop_view().problems
    assert value["snapshot"]["id"] not in repo.snapshot_ids()
    assert problems_naming(repo, name[6:])
    assert world.restores(repo, victim.sids[0], victim.src)


@pytest.mark.parametrize("blob", ["fresh-id", "its-own-earlier-id"])
def test_a_compromised_writers_blob_at_wrong_offsets_fails_typed(world: World, blob: str) -> None:
    """Writer a lists, in a new pack of its own (its old pack's bytes copied under a new id,
    as a writer can), a tree blob at the place of another blob: a fresh id fails to restore
    with a typed error; an id its earlier drop holds is read from there (authentic bytes) or
    fails typed. b's and the reader's snapshots are unaffected; verify fails."""
    a = world.writers["a"]
    state = a.load_state()
    pack_id, (size, entries) = next(iter(state.packs.items()))
    (own_id, loc), (_, other_loc) = entries[0], entries[-1]
    assert loc != other_loc
    blob_id = os.urandom(32) if blob == "fresh-id" else own_id
    new_pack = new_id()
    world.storage.put_bytes(
        f"data/{new_pack[:2]}/{new_pack}", world.storage.read(f"data/{pack_id[:2]}/{pack_id}")
    )
    value = drop_value(
        a.token,
        state,
        tree=blob_id.hex(),
        packs=[
            {
                "id": new_pack,
                "size": size,
                "blobs": [[KIND_TREE, blob_id.hex(), other_loc.offset, other_loc.length]],
            }
        ],
    )
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, a.token, _core.generate_key(), value))
    repo = world.open("state-new-device")
    forged = value["snapshot"]["id"]
    if forged in repo.snapshot_ids():
        out = world.tmp / "out-forged"
        if blob == "fresh-id":
            with pytest.raises(E2EBackupError):
                restore(repo, forged, out)
        else:
            try:
                restore(repo, forged, out)
            except E2EBackupError:
                pass
            else:  # what it restored are a's own files, byte for byte
                mine = {os.path.basename(k): v for k, v in snapshot_of(a.src).items()}
                for rel, entry in snapshot_of(out).items():
                    if entry[0] == "file":
                        assert mine[os.path.basename(rel)][3:] == entry[3:]
    assert not verify(repo, read_data=True).ok
    ids = repo.snapshot_ids()
    assert world.own_sid in ids
    assert world.writers["b"].sids[0] in ids
    assert world.restores(repo, world.own_sid, world.own_src)
    b = world.writers["b"]
    assert world.restores(repo, b.sids[0], b.src)


def test_a_compromised_writer_reusing_a_readers_snapshot_id_is_refused(world: World) -> None:
    """Snapshot ids are object names the storage (and so a writer) sees: a drop claiming the
    reader's own snapshot id does not replace or duplicate it."""
    a = world.writers["a"]
    value = drop_value(a.token, a.load_state(), sid=world.own_sid)
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, a.token, _core.generate_key(), value))
    repo = world.open("state-new-device")
    ids = repo.snapshot_ids()
    assert ids.count(world.own_sid) == 1
    assert repo.drop_of(world.own_sid) is None
    assert problems_naming(repo, name[6:14]) or problems_naming(repo, name)
    assert world.restores(repo, world.own_sid, world.own_src)


class KdfRan(Exception):
    pass


@pytest.mark.parametrize("kdf", ["argon2id", "scrypt"])
def test_a_drop_with_a_costly_password_slot_runs_no_kdf(
    world: World, monkeypatch: pytest.MonkeyPatch, kdf: str
) -> None:
    a = world.writers["a"]
    token = a.token
    sk = _core.generate_key()
    name = f"drops/{new_id()}"
    slots = KeySlots(slot_container(token.repo_id, name))
    cheap = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
    slots.add_password(sk, "pw", kdf=cheap)
    huge: Any = (
        Argon2idParams(memory_kib=4 << 20, iterations=1000, parallelism=1)
        if kdf == "argon2id"
        else ScryptParams(log2_n=30, r=8, p=16)
    )
    slots.slots[0] = dataclasses.replace(slots.slots[0], kdf=huge)
    slots.add_recipient(sk, token.recipient)
    area = slots.encode()
    world.storage.put_bytes(name, seal(name, token, sk, drop_value(token, a.load_state()), area))

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise KdfRan("a KDF ran for a drop")

    monkeypatch.setattr(_core, "argon2id", refuse)
    monkeypatch.setattr(_core, "scrypt", refuse)
    with pytest.raises(RepositoryCorrupted):
        D.open_drop(name, world.storage.read(name), repo_id=world.repo_id, data_key=world.data_key)
    repo = world.open("state-new-device")
    assert problems_naming(repo, "not a recipient")
    world.others_fine(repo, skip=set())


class EndlessStream(io.RawIOBase):
    """An object that never ends, counting what it served."""

    def __init__(self, counter: list[int]) -> None:
        super().__init__()
        self.counter = counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = len(buffer)
        buffer[:n] = bytes(n)
        self.counter[0] += n
        return n


class LyingStorage(Storage):
    """The repository's storage, except one drop: listed at 2 GiB, and endless when read."""

    def __init__(self, inner: LocalStorage, name: str) -> None:
        self.inner, self.name, self.served = inner, name, [0]
        self.location = inner.location

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        self.inner.put(name, data, size=size, sha256=sha256)

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        if name == self.name:
            return io.BufferedReader(EndlessStream(self.served))
        return self.inner.open(name, offset=offset, length=length)

    def stat(self, name: str) -> ObjectInfo:
        return ObjectInfo(name, 2 << 30) if name == self.name else self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for info in self.inner.list(prefix):
            yield ObjectInfo(info.name, 2 << 30) if info.name == self.name else info

    def delete(self, name: str) -> None:
        self.inner.delete(name)


def test_an_endless_drop_is_refused_with_bounded_memory(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert storage_base.whole_read_limit("drops/" + "0" * 64) <= 1 << 30
    # The same rule with a smaller cap, so that the test holds little memory.
    limit = 1 << 20
    monkeypatch.setitem(storage_base._WHOLE_READ_LIMITS, "drops", limit)
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, b"x")
    lying = LyingStorage(world.storage, name)
    try:
        repo = world.open("state-new-device", storage=lying)
    except ObjectTooLarge:
        pass  # typed: the whole listing refused
    else:
        assert problems_naming(repo, name[6:14]) or problems_naming(repo, name)
        world.others_fine(repo, skip=set())
    assert 0 < lying.served[0] <= limit + 1 + (4 << 20)


def test_an_endless_drop_does_not_hide_the_other_snapshots(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stricter: like a damaged drop, an oversized one is skipped and reported, and the other
    snapshots stay listed (FORMAT.md: "A damaged drop is skipped and reported")."""
    monkeypatch.setitem(storage_base._WHOLE_READ_LIMITS, "drops", 1 << 20)
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, b"x")
    repo = world.open("state-new-device", storage=LyingStorage(world.storage, name))
    assert problems_naming(repo, name[6:14]) or problems_naming(repo, name)
    world.others_fine(repo, skip=set())


# ---- an attacker edits a writer's state file ----------------------------------------------------


def _state_file(w: Writer) -> Path:
    with device(w.state):
        return WriterState.path(w.token)


def _objects(world: World) -> set[str]:
    return {i.name for i in world.storage.list("")}


def _next_drop_restores_or_typed(world: World, w: Writer, *, typed_restore: bool = False) -> None:
    """The writer's next backup either fails typed, storing no drop, or its snapshot restores
    byte-identical for a reader (``typed_restore``: or fails to restore, typed), and no
    snapshot of the reader's own is hurt."""
    before = {n for n in _objects(world) if n.startswith("drops/")}
    try:
        world.write(w)
    except E2EBackupError:
        assert {n for n in _objects(world) if n.startswith("drops/")} == before
        return
    repo = world.open("state-new-device")
    assert world.restores(repo, world.own_sid, world.own_src)
    assert w.sids[-1] in repo.snapshot_ids(), repo.drop_view().problems
    if typed_restore:
        with suppress(E2EBackupError):
            assert world.restores(repo, w.sids[-1], w.src)
        return
    assert world.restores(repo, w.sids[-1], w.src)


@pytest.mark.parametrize("garbage", [b"", b"\x00\xff garbage", b"[]", b'{"seq": "x"}', b"{}"])
def test_a_garbage_state_file_is_a_typed_error(world: World, garbage: bytes) -> None:
    a = world.writers["a"]
    _state_file(a).write_bytes(garbage)
    before = _objects(world)
    with pytest.raises(InvalidArgument):
        world.write(a)
    assert _objects(world) == before


def test_a_state_file_claiming_anothers_pack_is_harmless(world: World) -> None:
    a, b = world.writers["a"], world.writers["b"]
    path = _state_file(a)
    value = json.loads(path.read_text())
    b_pack, b_size = next(iter(b.packs().items()))
    for pack in value["packs"]:
        pack["id"], pack["size"] = b_pack, b_size
    path.write_text(json.dumps(value))
    _next_drop_restores_or_typed(world, a)


def test_a_state_file_whose_pack_the_storage_lost_is_typed(world: World) -> None:
    """The attacker points a's blobs at b's pack, and the storage deletes a's own pack: a
    believes its state (FORMAT.md leaves a device whose state folder the attacker can write
    unprotected), so its next snapshot may not restore, but only with a typed error."""
    a, b = world.writers["a"], world.writers["b"]
    path = _state_file(a)
    value = json.loads(path.read_text())
    b_pack, b_size = next(iter(b.packs().items()))
    for pack in value["packs"]:
        world.storage.delete(f"data/{pack['id'][:2]}/{pack['id']}")
        pack["id"], pack["size"] = b_pack, b_size
    path.write_text(json.dumps(value))
    _next_drop_restores_or_typed(world, a, typed_restore=True)


@pytest.mark.parametrize("pending", ["config", "keys-object", "head", "../../escape", "drop-of-b"])
def test_a_state_file_with_a_forged_pending_drop_is_harmless(world: World, pending: str) -> None:
    """``pending`` names the drop a crashed backup was storing; an attacker names another
    object with its true SHA-256, so that settling it would make the writer's chain bogus."""
    a, b = world.writers["a"], world.writers["b"]
    names = {
        "config": "config",
        "keys-object": next(i.name for i in world.storage.list("keys/")),
        "head": next(i.name for i in world.storage.list("heads/")),
        "../../escape": "../../escape",
        "drop-of-b": b.drops[0],
    }
    target = names[pending]
    try:
        digest = hashlib.sha256(world.storage.read(target)).hexdigest()
    except E2EBackupError:
        digest = "0" * 64
    path = _state_file(a)
    value = json.loads(path.read_text())
    value["pending"] = [target, digest, []]
    path.write_text(json.dumps(value))
    _next_drop_restores_or_typed(world, a)


@pytest.mark.parametrize("seq", [2**53, 2**60, -1])
def test_a_state_file_with_an_impossible_seq_is_harmless(world: World, seq: int) -> None:
    a = world.writers["a"]
    path = _state_file(a)
    value = json.loads(path.read_text())
    value["seq"] = seq
    path.write_text(json.dumps(value))
    _next_drop_restores_or_typed(world, a)


def test_an_identity_is_not_a_writer_identity(world: World) -> None:
    """A reader's own identity (or any identity) does not open a drop: only seed_W does."""
    a = world.writers["a"]
    stored = world.storage.read(a.drops[0])
    start, end = drop_parts(stored)["slots"]
    slots = KeySlots.decode(slot_container(world.repo_id, a.drops[0]), stored[start:end])
    with pytest.raises(E2EBackupError):
        slots.unlock_identity(Identity.generate())
    assert slots.unlock_identity(D.writer_identity(world.data_key))


# ---- a compromised writer writes trees no honest backup makes -----------------------------------


def _evil_backup(world: World, w: Writer, monkeypatch: pytest.MonkeyPatch, change: Any) -> str:
    """A backup by ``w`` whose folder listings ``change`` edits before they are encoded (a
    writer holds the keys to its own trees: it can store any tree it likes)."""
    backup_module = importlib.import_module("e2ebackup.repo.backup")
    real = encode_tree

    def edited(entries: list[Any]) -> bytes:
        return real([change(dict(e)) for e in entries])

    monkeypatch.setattr(backup_module, "encode_tree", edited)
    try:
        return world.write(w)
    finally:
        monkeypatch.setattr(backup_module, "encode_tree", real)


@pytest.mark.parametrize("evil", ["..", "../escape.txt", "sub/escape.txt", "", "\x00x"])
def test_a_writers_tree_with_an_escaping_name_restores_nothing_outside(
    world: World, monkeypatch: pytest.MonkeyPatch, evil: str
) -> None:
    w = world.add_writer("evil")
    (w.src / "victim.txt").write_bytes(b"where does this land?\n")

    def change(e: dict[str, Any]) -> dict[str, Any]:
        if e["name"] == "victim.txt":
            e["name"] = evil
        return e

    sid = _evil_backup(world, w, monkeypatch, change)
    repo = world.open("state-new-device")
    assert sid in repo.snapshot_ids()  # the drop is fine; its tree is what is wrong
    assert not verify(repo).ok
    target = world.tmp / "deep" / "target"
    target.mkdir(parents=True)
    before = {p for p in world.tmp.rglob("*") if not str(p).startswith(str(target))}
    with pytest.raises(E2EBackupError):
        restore(repo, sid, target)
    after = {p for p in world.tmp.rglob("*") if not str(p).startswith(str(target))}
    assert after == before, sorted(str(p) for p in after - before)
    world.others_fine(repo, skip={sid})


def test_a_writers_setuid_file_is_restored_without_the_bit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world.add_writer("evil")
    (w.src / "victim.sh").write_bytes(b"#!/bin/sh\nid\n")

    def change(e: dict[str, Any]) -> dict[str, Any]:
        if e["name"] == "victim.sh":
            e["mode"] = 0o6755
        return e

    sid = _evil_backup(world, w, monkeypatch, change)
    repo = world.open("state-new-device")
    out = world.tmp / "out-setuid"
    restore(repo, sid, out)
    mode = (out / w.src.name / "victim.sh").stat().st_mode
    assert not mode & 0o7000


def test_a_drop_with_a_tree_that_is_nowhere_does_not_block_prune(world: World) -> None:
    """A compromised writer's drop names a tree no pack holds: prune (and forget) still run,
    or refuse typed; nothing of the others is lost."""
    a = world.writers["a"]
    value = drop_value(a.token, a.load_state(), tree=os.urandom(32).hex())
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, a.token, _core.generate_key(), value))
    repo = world.open("state-reader")
    try:
        forget(repo, keep_last=1000, prune=True, grace=0)
    except E2EBackupError:
        # Typed; forgetting the bogus snapshot then lets prune run.
        repo.commit(remove_snapshots=[value["snapshot"]["id"]])
        forget(repo, keep_last=1000, prune=True, grace=0)
    repo = world.open("state-reader")
    world.others_fine(repo, skip=set())


def test_a_drop_claiming_a_readers_own_pack_is_refused(world: World) -> None:
    a = world.writers["a"]
    reader = world.open("state-reader")
    own_packs = [p for p in reader.index.pack_sizes if not reader.is_drop_pack(p)]
    assert own_packs
    pack = own_packs[0]
    value = drop_value(
        a.token,
        a.load_state(),
        packs=[{"id": pack, "size": reader.index.pack_sizes[pack], "blobs": []}],
    )
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, a.token, _core.generate_key(), value))
    repo = world.open("state-new-device")
    assert problems_naming(repo, name[6:14]) or problems_naming(repo, name)
    assert value["snapshot"]["id"] not in repo.snapshot_ids()
    assert not verify(repo).ok
    world.others_fine(repo, skip=set())


@pytest.mark.parametrize("prev", ["nowhere", "its-first-drop"])
def test_a_compromised_writer_cannot_lock_a_device_out_of_the_repository(
    world: World, prev: str
) -> None:
    """Writer a (compromised: it holds its token) adds a drop above the one this device
    trusts that does not descend from it, while that drop is still stored. FORMAT.md refuses
    a writer's chain only when the trusted drop is no longer held; here the drop is reported,
    and the device keeps reading everything else (a writer that can only add must not be
    able to make readers refuse the whole repository)."""
    a = world.writers["a"]
    world.write(a)  # seq 2, trusted below
    world.open("state-reader")
    state = a.load_state()
    first = (a.drops[0], hashlib.sha256(world.storage.read(a.drops[0])).hexdigest())
    fake_prev = (f"drops/{new_id()}", new_id()) if prev == "nowhere" else first
    forged_state = WriterState(seq=state.seq, prev=fake_prev)  # seq 3, not above seq 2
    value = drop_value(a.token, forged_state)
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, a.token, _core.generate_key(), value))
    repo = world.open("state-reader")
    assert repo.drop_view().problems
    world.others_fine(repo, skip={a.sids[-1]})


def test_a_stolen_token_used_beside_its_writer_is_reported_whatever_seq_it_picks(
    world: World,
) -> None:
    """A thief holding a's token and a copy of its state adds a drop on top of a's last one,
    beside a's own next drop, with seq two above instead of one: two drops naming one prev is
    a fork all the same (FORMAT.md: prev is the writer's drop seq - 1), and must be reported."""
    a = world.writers["a"]
    state = a.load_state()
    world.write(a)  # a's honest seq 2, prev = seq 1
    thief_state = WriterState(seq=state.seq + 1, prev=state.prev)  # seq 3, prev = seq 1
    value = drop_value(a.token, thief_state)
    assert value["seq"] == 3
    name = f"drops/{new_id()}"
    world.storage.put_bytes(name, D.seal_drop(name, a.token, _core.generate_key(), value))
    repo = world.open("state-new-device")
    assert repo.drop_view().problems, "a fork with a seq gap went unreported"
