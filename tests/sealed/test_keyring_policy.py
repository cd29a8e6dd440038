"""The one credential policy (e2ebackup.keyring.policy) over both real slot stores: a sealed
file's header and a repository's ``keys/`` objects."""

from __future__ import annotations

import copy
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from e2ebackup.errors import (
    ConflictingKeySlots,
    InvalidArgument,
    TooManyKeySlots,
    WrongPassword,
)
from e2ebackup.keyring import policy
from e2ebackup.keyring.policy import Credentials, SlotStore
from e2ebackup.keyring.slots import (
    KIND_PASSWORD,
    KIND_VAULT,
    MAX_PASSWORD_SLOTS,
    MAX_SLOTS,
    KeySlot,
    KeySlots,
    password_attempt_order,
)
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import Argon2idParams, Password, RecoveryKey, ScryptParams
from e2ebackup.repo.keystore import RepoKeyStore
from e2ebackup.sealed import HeaderSlots, SealedHeader
from e2ebackup.storage import LocalStorage

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
PW = Password("correct horse")
NOWHERE = VaultSlot("http://127.0.0.1:9", os.urandom(16), os.urandom(32), FAST)


def sealed_store(tmp: Path) -> SlotStore:
    cid = os.urandom(16)
    return HeaderSlots(SealedHeader(1, "aes-256-gcm", cid, KeySlots(cid), 0))


def repo_store(tmp: Path) -> SlotStore:
    return RepoKeyStore(LocalStorage(tmp / "repo"), os.urandom(16))


STORES = pytest.mark.parametrize("make", [sealed_store, repo_store], ids=["sealed", "repo"])
MakeStore = Callable[[Path], SlotStore]


def kinds(store: SlotStore) -> list[int]:
    return [s.kind for s in store.load().slots]


def planted_vault(store: SlotStore) -> KeySlot:
    """A vault slot made under another data key, as the storage could: its check fails."""
    slot = KeySlots(store.container_id).add_vault(os.urandom(32), NOWHERE)
    store.add(slot)
    return slot


# -- Password and RecoveryKey ------------------------------------------------------------------


def test_a_password_is_normalised_once_and_hidden() -> None:
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")
    assert Password(composed) == Password(decomposed)
    assert Password(decomposed).secret == composed.encode()
    assert Password(Password(composed)) == Password(composed)
    assert Password(b"\xff\xfe").secret == b"\xff\xfe"  # not UTF-8: used as given
    assert Password.of(None) is None
    with pytest.raises(InvalidArgument):
        Password("")
    shown = repr(Password("hunter2")) + str(Password("hunter2")) + f"{Password('hunter2')}"
    assert "hunter2" not in shown
    same = Password("x")
    assert copy.copy(same) is same
    assert copy.deepcopy(same) is same


def test_a_recovery_key_copies_but_does_not_pickle() -> None:
    rk = RecoveryKey.generate()
    assert copy.deepcopy(rk) is rk
    with pytest.raises(TypeError):
        rk.__reduce_ex__(2)


# -- enrol and unlock ---------------------------------------------------------------------------


@STORES
def test_enrol_then_unlock_with_either_credential(tmp_path: Path, make: MakeStore) -> None:
    store = make(tmp_path)
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    policy.enrol(store, dk, Credentials(PW, rk), kdf=FAST)
    assert sorted(kinds(store)) == [1, 2]
    assert policy.unlock(store, Credentials(PW)).data_key == dk
    assert policy.unlock(store, Credentials(recovery_key=rk)).data_key == dk
    # The recovery key goes first: a wrong password beside it is never hashed.
    assert policy.unlock(store, Credentials(Password("wrong"), rk)).data_key == dk
    with pytest.raises(WrongPassword):
        policy.unlock(store, Credentials(Password("wrong")))
    with pytest.raises(InvalidArgument):
        policy.unlock(store, Credentials())


def test_enrol_needs_a_credential_and_a_vault_needs_a_password(tmp_path: Path) -> None:
    store = sealed_store(tmp_path)
    with pytest.raises(InvalidArgument):
        policy.enrol(store, os.urandom(32), Credentials())
    with pytest.raises(InvalidArgument, match="needs a password"):
        policy.enrol(
            store,
            os.urandom(32),
            Credentials(recovery_key=RecoveryKey.generate(), keep_vaults=(NOWHERE,)),
        )


@STORES
def test_a_vault_slot_beside_a_password_slot_is_refused_on_read(
    tmp_path: Path, make: MakeStore
) -> None:
    store = make(tmp_path)
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    policy.enrol(store, dk, Credentials(PW, rk), kdf=FAST)
    planted = planted_vault(store)
    # With the password, which of the two is genuine cannot be told: refused, nothing tried.
    with pytest.raises(ConflictingKeySlots):
        policy.unlock(store, Credentials(PW))
    # With the recovery key, the planted slot fails its check: ignored.
    opened = policy.unlock(store, Credentials(recovery_key=rk))
    assert opened.vaults == []
    assert opened.planted == [planted]
    # A vault slot that proves itself (made with the data key) beside a password slot: refused.
    store.add(KeySlots(store.container_id).add_vault(dk, NOWHERE))
    with pytest.raises(ConflictingKeySlots):
        policy.unlock(store, Credentials(recovery_key=rk))


@STORES
def test_edits_drop_planted_vault_slots(tmp_path: Path, make: MakeStore) -> None:
    store = make(tmp_path)
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    policy.enrol(store, dk, Credentials(recovery_key=rk))
    planted_vault(store)
    opened = policy.unlock(store, Credentials(recovery_key=rk))
    policy.add_password(store, opened, PW, kdf=FAST)
    assert KIND_VAULT not in kinds(store)
    assert policy.unlock(store, Credentials(PW)).data_key == dk


@STORES
def test_a_proven_vault_slot_keeps_password_slots_out(tmp_path: Path, make: MakeStore) -> None:
    store = make(tmp_path)
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    policy.enrol(store, dk, Credentials(recovery_key=rk))
    store.add(KeySlots(store.container_id).add_vault(dk, NOWHERE))
    opened = policy.unlock(store, Credentials(recovery_key=rk))
    assert [s.vault for s in opened.vaults] == [NOWHERE]
    with pytest.raises(InvalidArgument, match="held by a key vault"):
        policy.add_password(store, opened, PW, kdf=FAST)


@STORES
def test_change_password_rewrites_only_its_slot(tmp_path: Path, make: MakeStore) -> None:
    store = make(tmp_path)
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    policy.enrol(store, dk, Credentials(PW, rk), kdf=ScryptParams(log2_n=4, r=1, p=1))
    opened = policy.unlock(store, Credentials(PW))
    before = [s for s in opened.slots.slots if s.kind != KIND_PASSWORD]
    new = Password("battery staple")
    policy.change_password(store, opened, PW, new)
    assert policy.unlock(store, Credentials(new)).data_key == dk
    with pytest.raises(WrongPassword):
        policy.unlock(store, Credentials(PW))
    after = store.load().slots
    assert [s for s in after if s.kind != KIND_PASSWORD] == before
    assert next(s for s in after if s.kind == KIND_PASSWORD).kdf == ScryptParams(4, 1, 1)
    with pytest.raises(WrongPassword):
        policy.change_password(store, policy.unlock(store, Credentials(new)), PW, new)


@STORES
def test_remove_never_leaves_no_slot_that_opens(tmp_path: Path, make: MakeStore) -> None:
    store = make(tmp_path)
    rk = RecoveryKey.generate()
    policy.enrol(store, os.urandom(32), Credentials(recovery_key=rk))
    planted_vault(store)
    opened = policy.unlock(store, Credentials(recovery_key=rk))
    listed = [s.kind for s in opened.slots.slots]  # a repository lists by object name
    with pytest.raises(InvalidArgument, match="last key slot"):
        policy.remove_slot(store, opened, listed.index(1))
    with pytest.raises(InvalidArgument, match="no key slot 7"):
        policy.remove_slot(store, opened, 7)
    policy.remove_slot(store, opened, listed.index(KIND_VAULT))  # the planted one
    assert kinds(store) == [1]


def test_rotate_keeps_only_proven_vaults(tmp_path: Path) -> None:
    store = sealed_store(tmp_path)
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    policy.enrol(store, dk, Credentials(recovery_key=rk))
    store.add(KeySlots(store.container_id).add_vault(dk, NOWHERE))
    planted_vault(store)
    opened = policy.unlock(store, Credentials(recovery_key=rk))
    kept = policy.rotate(opened, password=PW, recovery_key=rk)
    assert kept.keep_vaults == (NOWHERE,)
    assert kept.recovery_key == rk
    assert policy.rotate(opened, password=None, recovery_key=rk).keep_vaults == ()


# -- caps ---------------------------------------------------------------------------------------


def test_password_slots_are_tried_cheapest_first_and_capped() -> None:
    slots = KeySlots(os.urandom(16))
    dk = os.urandom(32)
    costly = slots.add_password(dk, "a", kdf=Argon2idParams(memory_kib=512, iterations=2))
    cheap = slots.add_password(dk, "b", kdf=FAST)
    assert password_attempt_order([costly, cheap]) == [cheap, costly]
    with pytest.raises(TooManyKeySlots, match=f"{MAX_PASSWORD_SLOTS + 1} password slots"):
        password_attempt_order([cheap] * (MAX_PASSWORD_SLOTS + 1))


def test_a_sealed_header_with_too_many_password_slots_is_refused_before_any_kdf() -> None:
    cid = os.urandom(16)
    slots = KeySlots(cid)
    dk = os.urandom(32)
    for _ in range(MAX_PASSWORD_SLOTS):
        slots.add_password(dk, PW, kdf=FAST)
    with pytest.raises(InvalidArgument):
        slots.add_password(dk, PW, kdf=FAST)  # writers stop at the cap
    extra = KeySlots(cid).add_password(dk, PW, kdf=FAST)
    decoded = KeySlots.decode(cid, KeySlots(cid, [*slots.slots, extra]).encode())
    store = HeaderSlots(SealedHeader(1, "aes-256-gcm", cid, decoded, 0))
    with pytest.raises(TooManyKeySlots):
        policy.unlock(store, Credentials(PW))


def test_key_objects_beyond_the_cap_are_refused_before_they_are_read(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    for _ in range(MAX_SLOTS + 1):
        storage.put_bytes(f"keys/{os.urandom(32).hex()}", b"not a slot area")  # unreadable
    with pytest.raises(TooManyKeySlots, match=f"{MAX_SLOTS + 1} key objects"):
        RepoKeyStore(storage, os.urandom(16)).load()


def test_a_full_repository_takes_no_more_slots(tmp_path: Path) -> None:
    store = RepoKeyStore(LocalStorage(tmp_path / "repo"), os.urandom(16))
    rk = RecoveryKey.generate()
    dk = os.urandom(32)
    for _ in range(MAX_SLOTS):
        store.add(KeySlots(store.container_id).add_recovery_key(dk, rk))
    opened = policy.unlock(store, Credentials(recovery_key=rk))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_SLOTS}"):
        policy.add_recovery_key(store, opened, rk)
