"""Writers that cannot read (format version 4, docs/FORMAT.md "Writers that cannot read"), as
a user sees them through the Python API: a writer holding only its token text backs up, the
repository's readers (recovery key, password, identity) list, restore and verify what it
wrote; the writer deduplicates against itself, survives a pack the storage lost and a crash;
forget and prune keep what later drops need; and nothing the writer holds opens a drop.

Each device (the reader, each writer) has its own state folder (E2EBACKUP_STATE_DIR)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from e2ebackup import _core
from e2ebackup.errors import (
    InvalidArgument,
    InvalidTag,
    KeySlotError,
    NoMatchingKeySlot,
    RepositoryCorrupted,
)
from e2ebackup.keyring.slots import KeySlots
from e2ebackup.keys import RecoveryKey
from e2ebackup.recipients import Identity
from e2ebackup.repo import drops as drops_module
from e2ebackup.repo.backup import BackupStats, backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.drops import WriterToken, drop_keys, open_drop
from e2ebackup.repo.labels import derive
from e2ebackup.repo.pack import parse_pack_header
from e2ebackup.repo.prune import forget
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from e2ebackup.repo.writer import WriterState, backup_as_writer
from e2ebackup.storage import LocalStorage
from repo_helpers import FAST, PASSWORD, device, make_tree, snapshot_of


@pytest.fixture(autouse=True)
def reader_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reader's device; writers switch to their own with :func:`device`."""
    state = tmp_path / "state-reader"
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(state))
    return state


def write(repo: Path, token_text: str, src: Path, state: Path) -> tuple[str, BackupStats, str]:
    """A backup by a writer that holds nothing but ``token_text`` and its state folder."""
    with device(state):
        return backup_as_writer(
            LocalStorage(repo, create=False), WriterToken.parse(token_text), [src]
        )


def restored_equal(repo: Repository, sid: str, src: Path, out: Path) -> bool:
    restore(repo, sid, out)
    return snapshot_of(out / src.name) == snapshot_of(src)


def objects(repo: Path) -> dict[str, bytes]:
    storage = LocalStorage(repo, create=False)
    return {i.name: storage.read(i.name, max_size=1 << 30) for i in storage.list("")}


def new_repo(path: Path, **credentials: Any) -> Repository:
    return Repository.init(LocalStorage(path), **credentials)


# ---- a writer backs up, readers of every kind restore -------------------------------------------


@pytest.mark.parametrize("reader", ["recovery-key", "password", "identity"])
def test_a_writer_with_only_its_token_text_backs_up_and_readers_restore(
    tmp_path: Path, reader: str
) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=12)
    (src / "nested" / "deeper" / "deepest").mkdir(parents=True)
    (src / "nested" / "deeper" / "deepest" / "leaf.txt").write_bytes(b"leaf\n")
    (src / "random.bin").write_bytes(os.urandom(3_000_000))
    repo_path = tmp_path / "repo"
    rk, identity = RecoveryKey.generate(), Identity.generate()
    credentials: dict[str, dict[str, Any]] = {
        "recovery-key": {"recovery_key": rk},
        "password": {"password": PASSWORD, "kdf": FAST},
        "identity": {"recipients": [identity.recipient]},
    }
    opens: dict[str, dict[str, Any]] = {
        "recovery-key": {"recovery_key": rk},
        "password": {"password": PASSWORD},
        "identity": {"identity": identity},
    }
    issuer = new_repo(repo_path, **credentials[reader])
    assert issuer.version == 4
    assert issuer.takes_drops
    token_text = issuer.issue_writer_token().secret()
    assert token_text.startswith("E2EBACKUP-WRITER-1")

    sid, stats, drop = write(repo_path, token_text, src, tmp_path / "state-writer")
    assert stats.blobs_added > 0
    assert drop.startswith("drops/")

    repo = Repository.open(LocalStorage(repo_path, create=False), **opens[reader])
    assert repo.snapshot_ids() == [sid]
    assert [s for s, _ in repo.snapshots()] == [sid]
    dropped = repo.drop_of(sid)
    assert dropped is not None
    assert dropped.name == drop
    assert repo.drop_view().problems == []
    assert restored_equal(repo, sid, src, tmp_path / "out")
    report = verify(repo, read_data=True)
    assert report.ok, report.errors


def test_second_backup_deduplicates_and_a_lost_pack_is_stored_again(tmp_path: Path) -> None:
    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=8)
    (src / "random.bin").write_bytes(os.urandom(3_000_000))
    rk = RecoveryKey.generate()
    token_text = new_repo(repo_path, recovery_key=rk).issue_writer_token().secret()

    sid1, stats1, _ = write(repo_path, token_text, src, wstate)
    sid2, stats2, _ = write(repo_path, token_text, src, wstate)
    assert stats1.blobs_added > 0
    assert stats2.blobs_added == 0
    assert stats2.bytes_added == 0
    repo = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
    assert sorted(repo.snapshot_ids()) == sorted([sid1, sid2])
    assert restored_equal(repo, sid1, src, tmp_path / "out1")
    assert restored_equal(repo, sid2, src, tmp_path / "out2")

    # The storage loses one of the writer's packs: the next drop stores its blobs again.
    storage = LocalStorage(repo_path, create=False)
    packs = sorted(i.name for i in storage.list("data/"))
    assert packs
    storage.delete(packs[0])
    sid3, stats3, _ = write(repo_path, token_text, src, wstate)
    assert stats3.blobs_added > 0
    repo = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
    assert sid3 in repo.snapshot_ids()
    assert restored_equal(repo, sid3, src, tmp_path / "out3")


def test_an_unchanged_backup_skips_files_and_the_device_names_only_its_last_backup(
    tmp_path: Path,
) -> None:
    """The writer keeps the listings of its last backup (FORMAT.md: the only file metadata it
    may keep): an unchanged re-run reads no file and stores nothing, a changed file is read
    again, and a file deleted before a backup is named nowhere in the writer's state folder
    afterwards. With ``file_list=False`` nothing is kept and every file is read again."""
    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=8)
    (src / "secret-plans-2027.txt").write_text("moving to Lisbon\n")
    rk = RecoveryKey.generate()
    token_text = new_repo(repo_path, recovery_key=rk).issue_writer_token().secret()

    _, first, _ = write(repo_path, token_text, src, wstate)
    _, again, _ = write(repo_path, token_text, src, wstate)
    assert again.files_unmodified == first.files_new > 0
    assert again.bytes_read == 0
    assert again.blobs_added == 0
    (src / "secret-plans-2027.txt").unlink()
    (src / "empty-file").write_bytes(b"now with content")
    sid3, third, _ = write(repo_path, token_text, src, wstate)
    assert third.files_changed == 1
    assert third.bytes_read == len(b"now with content")
    kept = b"".join(p.read_bytes() for p in wstate.rglob("*") if p.is_file())
    assert b"secret-plans-2027" not in kept
    assert b"Lisbon" not in kept

    with device(wstate):
        token = WriterToken.parse(token_text)
        sid4, fourth, _ = backup_as_writer(
            LocalStorage(repo_path, create=False), token, [src], file_list=False
        )
    assert fourth.files_unmodified == 0
    assert fourth.bytes_read > 0
    assert not any("listings" in p.name for p in wstate.rglob("*"))
    repo = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
    assert restored_equal(repo, sid3, src, tmp_path / "out3")
    assert restored_equal(repo, sid4, src, tmp_path / "out4")


def test_two_writers_beside_a_reader_backup(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    rk = RecoveryKey.generate()
    repo = new_repo(repo_path, recovery_key=rk)
    tokens = [repo.issue_writer_token().secret() for _ in range(2)]
    sources = []
    for n in range(3):
        src = tmp_path / f"src{n}"
        make_tree(src, small_files=5)
        (src / "own.bin").write_bytes(os.urandom(200_000 + n))
        sources.append(src)
    # The same content in two writers' trees: they do not deduplicate against each other.
    (sources[1] / "shared.bin").write_bytes(b"shared" * 50_000)
    (sources[2] / "shared.bin").write_bytes(b"shared" * 50_000)
    own, _ = backup(repo, [str(sources[0])])
    w1, _, _ = write(repo_path, tokens[0], sources[1], tmp_path / "state-w1")
    w2, _, _ = write(repo_path, tokens[1], sources[2], tmp_path / "state-w2")

    for state in (tmp_path / "state-reader", tmp_path / "state-other-reader"):
        with device(state):
            reader = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
            assert sorted(s for s, _ in reader.snapshots()) == sorted([own, w1, w2])
            assert reader.drop_view().problems == []
            report = verify(reader, read_data=True)
            assert report.ok, report.errors
            assert report.snapshots == 3
            writers = {d.writer for d in reader.drop_view().live}
            assert len(writers) == 2
    for sid, src in zip([own, w1, w2], sources, strict=True):
        assert restored_equal(reader, sid, src, tmp_path / f"out-{sid[:8]}")


# ---- forget and prune ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["commit", "forget-policy"])
def test_forget_hides_a_drop_for_every_device_and_prune_keeps_what_later_drops_need(
    tmp_path: Path, how: str
) -> None:
    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=6)
    (src / "random.bin").write_bytes(os.urandom(1_000_000))
    rk = RecoveryKey.generate()
    repo = new_repo(repo_path, recovery_key=rk)
    token_text = repo.issue_writer_token().secret()
    reader_src = tmp_path / "reader-src"
    make_tree(reader_src, small_files=3)
    own, _ = backup(repo, [str(reader_src)])
    sid1, _, _ = write(repo_path, token_text, src, wstate)
    sid2, stats2, _ = write(repo_path, token_text, src, wstate)
    assert stats2.blobs_added == 0  # sid2 reads every blob from sid1's packs

    repo = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
    if how == "commit":
        repo.commit(remove_snapshots=[sid1])
        forget(repo, keep_last=1000, prune=True, grace=0)
    else:
        # Grouped by host and paths: the writer's two snapshots are one group, the reader's
        # own another; keep_last=1 forgets sid1 only.
        forget(repo, keep_last=1, prune=True, grace=0)

    for state in (tmp_path / "state-reader", tmp_path / "state-new-device"):
        with device(state):
            reader = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
            assert sorted(reader.snapshot_ids()) == sorted([own, sid2])
            assert reader.drop_view().problems == []
            report = verify(reader, read_data=True)
            assert report.ok, report.errors
    assert restored_equal(reader, sid2, src, tmp_path / "out2")
    assert restored_equal(reader, own, reader_src, tmp_path / "out-own")

    # The writer carries on deduplicating against the forgotten drop's packs, still restorable.
    (src / "new.txt").write_bytes(b"new after prune\n")
    sid3, stats3, _ = write(repo_path, token_text, src, wstate)
    assert 0 < stats3.blobs_added <= 3
    reader = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
    assert sorted(reader.snapshot_ids()) == sorted([own, sid2, sid3])
    assert restored_equal(reader, sid3, src, tmp_path / "out3")
    assert verify(reader, read_data=True).ok


# ---- forward secrecy: what the writer holds opens nothing ---------------------------------------

_LABELS = [getattr(drops_module, name) for name in dir(drops_module) if name.startswith("LABEL_")]


def _candidates(token: WriterToken, token_text: str, state: Path) -> list[bytes]:
    """Every 32-byte key a writer could try: zeros, its auth key, every key derived from it
    with every label of drops.py (one and two levels), every 32-byte window of its token's
    bytes, and every 32-byte window of every hex run and raw byte string in its state folder."""
    auth = token.auth
    out = {bytes(32), auth, _core.hkdf_sha256(auth, info=drops_module.LABEL_WRITER_AUTH)}
    first = [derive(auth, label) for label in _LABELS]
    out.update(first)
    out.update(derive(k, label) for k in first for label in _LABELS)
    raw = token.repo_id + token.writer_id + token.auth + token.recipient.public
    out.update(raw[i : i + 32] for i in range(0, len(raw) - 31))
    out.update(hashlib.sha256(token_text.encode()).digest() for _ in range(1))
    for path in state.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        out.update(data[i : i + 32] for i in range(0, max(0, len(data) - 31), 8))
        text = data.decode("latin-1")
        for run in "".join(c if c in "0123456789abcdef" else " " for c in text).split():
            if len(run) >= 64:
                blob = bytes.fromhex(run[: len(run) // 2 * 2])
                out.update(blob[i : i + 32] for i in range(0, len(blob) - 31))
    return sorted(out)


def test_nothing_the_writer_holds_opens_its_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=4)
    (src / "random.bin").write_bytes(os.urandom(300_000))
    rk = RecoveryKey.generate()
    repo = new_repo(repo_path, recovery_key=rk)
    token_text = repo.issue_writer_token().secret()

    # Record the session key the writer makes (the one secret it must forget).
    made: list[bytes] = []
    real_generate = _core.generate_key

    def recording() -> bytes:
        key = real_generate()
        made.append(key)
        return key

    monkeypatch.setattr("e2ebackup.repo.writer._core.generate_key", recording)
    _, _, drop_name = write(repo_path, token_text, src, wstate)
    monkeypatch.undo()
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state-reader"))
    assert made, "the writer made no session key through _core.generate_key"

    token = WriterToken.parse(token_text)
    storage = LocalStorage(repo_path, create=False)
    stored = storage.read(drop_name)
    data_key = repo._data_key

    # What the writer keeps holds neither the session key, any key derived from it, nor DK.
    held = token_text.encode() + b"".join(p.read_bytes() for p in wstate.rglob("*") if p.is_file())
    for secret in [*made, data_key]:
        derived = [derive(secret, label) for label in _LABELS]
        for value in [secret, *derived]:
            assert value not in held
            assert value.hex().encode() not in held
            assert value.hex().upper().encode() not in held

    # Token: no secret in repr, str or format; not picklable.
    for shown in (repr(token), str(token), f"{token}", f"{token!r}"):
        assert token.auth.hex() not in shown
        assert token_text not in shown
        assert token_text[18:60] not in shown
    with pytest.raises(TypeError):
        pickle.dumps(token)
    with pytest.raises((TypeError, AttributeError)):
        vars(token)

    candidates = _candidates(token, token_text, wstate)
    assert len(candidates) > 100
    for secret in made:
        assert secret not in candidates  # the test's own sanity: the writer does not hold SK

    area_len = int.from_bytes(stored[25:29], "big")
    area = stored[29 : 29 + area_len]
    body_len = int.from_bytes(stored[29 + area_len : 33 + area_len], "big")
    body = stored[33 + area_len : 33 + area_len + body_len]
    slots = KeySlots.decode(drops_module._container_id(token.repo_id, drop_name), area)
    assert slots.unlock_identity(drops_module.writer_identity(data_key))  # the right seed does
    context = drops_module.CONTEXT_DROP + b"\x00" + token.repo_id + drop_name.encode()

    with device(wstate):
        state = WriterState.load(token)
    pack_id, (pack_size, entries) = next(iter(state.packs.items()))
    pack_blob = storage.read(f"data/{pack_id[:2]}/{pack_id}", max_size=1 << 26)
    assert len(pack_blob) == pack_size
    blob_id, loc = entries[0]
    sealed_blob = pack_blob[loc.offset : loc.offset + loc.length]

    for key in candidates:
        # As a data key: the writer identity, every writer's auth key derived from it.
        with pytest.raises(RepositoryCorrupted):
            open_drop(drop_name, stored, repo_id=token.repo_id, data_key=key)
        # As the writer identity's seed: the slot does not open.
        with pytest.raises(KeySlotError):
            slots.unlock_identity(Identity(key))
        # As the session key or the metadata key: the body does not decrypt.
        for k in (key, derive(key, drops_module.LABEL_DROP_METADATA)):
            with pytest.raises(InvalidTag):
                _core.decrypt(k, body, context=context)
        # As the session key: the pack header does not open.
        keys = drop_keys(token.repo_id, token.auth, key)
        with pytest.raises(RepositoryCorrupted):
            parse_pack_header(keys, pack_id, pack_blob, pack_size)
        # As the session key: the writer's own blob does not open.
        with pytest.raises(InvalidTag):
            keys.codec().open(loc.kind, blob_id, sealed_blob)
    # The reader's data key opens all of it (the attempts above were meaningful).
    opened = open_drop(drop_name, stored, repo_id=token.repo_id, data_key=data_key)
    assert opened.writer == token.writer_id.hex()


def test_the_token_text_and_object_do_not_leak_the_auth_key(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", recovery_key=RecoveryKey.generate())
    token = repo.issue_writer_token()
    text = token.secret()
    again = WriterToken.parse("  " + text.lower() + "\n")
    assert again.auth == token.auth
    assert again.writer_id == token.writer_id
    assert again.repo_id == token.repo_id
    assert again.recipient == repo.writer_recipient()
    for shown in (repr(token), str(token), repr([token]), f"{token}"):
        assert token.auth.hex() not in shown
        assert text not in shown
    with pytest.raises(TypeError):
        pickle.dumps(token, protocol=pickle.HIGHEST_PROTOCOL)
    import copy

    with pytest.raises(TypeError):
        copy.deepcopy(token)
    # Two tokens of one repository: different writers, same recipient.
    other = repo.issue_writer_token()
    assert other.writer_id != token.writer_id
    assert other.auth != token.auth
    assert other.recipient == token.recipient
    # A mangled token is refused.
    for bad in (text[:-1] + ("Q" if text[-1] != "Q" else "P"), text[:40], "", "E2EBACKUP-WRITER-1"):
        with pytest.raises(InvalidArgument):
            WriterToken.parse(bad)


# ---- a crash between storing the drop and saving the state --------------------------------------


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_writer_crash_around_storing_the_drop_is_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """Call 1 of WriterState.save records the pending drop (before the drop is stored), call 2
    the stored drop: a crash at either leaves a state the next backup settles, no fork."""
    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=4)
    rk = RecoveryKey.generate()
    token_text = new_repo(repo_path, recovery_key=rk).issue_writer_token().secret()
    sid0, _, _ = write(repo_path, token_text, src, wstate)

    calls = {"n": 0}
    real_save = WriterState.save

    def crashing(self: WriterState, token: WriterToken) -> None:
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise KeyboardInterrupt("killed")
        real_save(self, token)

    monkeypatch.setattr(WriterState, "save", crashing)
    (src / "changed.txt").write_bytes(b"second\n")
    with pytest.raises(KeyboardInterrupt):
        write(repo_path, token_text, src, wstate)
    monkeypatch.setattr(WriterState, "save", real_save)
    stored_drops = sorted(i.name for i in LocalStorage(repo_path, create=False).list("drops/"))
    assert len(stored_drops) == (1 if failing_call == 1 else 2)

    (src / "third.txt").write_bytes(b"third\n")
    sid2, _, _ = write(repo_path, token_text, src, wstate)
    for state in (tmp_path / "state-reader", tmp_path / "state-new"):
        with device(state):
            reader = Repository.open(LocalStorage(repo_path, create=False), recovery_key=rk)
            assert reader.drop_view().problems == []
            ids = reader.snapshot_ids()
            assert sid0 in ids
            assert sid2 in ids
            assert len(ids) == len(stored_drops) + 1
            seqs = sorted(d.seq for d in reader.drop_view().drops)
            assert seqs == list(range(1, len(ids) + 1))
    assert restored_equal(reader, sid2, src, tmp_path / "out")
    assert verify(reader, read_data=True).ok


# ---- refusals -----------------------------------------------------------------------------------


def test_a_wrong_identity_is_a_typed_error(tmp_path: Path) -> None:
    mine, other = Identity.generate(), Identity.generate()
    new_repo(tmp_path / "repo", recipients=[mine.recipient])
    with pytest.raises(NoMatchingKeySlot):
        Repository.open(LocalStorage(tmp_path / "repo", create=False), identity=other)
    assert Repository.open(LocalStorage(tmp_path / "repo", create=False), identity=mine)


def test_a_token_for_another_repository_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=2)
    first = new_repo(tmp_path / "one", recovery_key=RecoveryKey.generate())
    new_repo(tmp_path / "two", recovery_key=RecoveryKey.generate())
    token_text = first.issue_writer_token().secret()
    before = objects(tmp_path / "two")
    with pytest.raises(InvalidArgument):
        write(tmp_path / "two", token_text, src, tmp_path / "state-writer")
    assert objects(tmp_path / "two") == before


def test_a_version_3_repository_refuses_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=2)
    monkeypatch.setattr("e2ebackup.repo.repository.VERSION", 3)
    repo = new_repo(tmp_path / "repo", recovery_key=RecoveryKey.generate())
    assert repo.version == 3
    assert not repo.takes_drops
    with pytest.raises(InvalidArgument):
        repo.issue_writer_token()
    # A token made by hand for it (from its data key) is refused by the writer too.
    token = WriterToken.issue(repo._data_key, repo.keys.repo_id)
    before = objects(tmp_path / "repo")
    with pytest.raises(InvalidArgument):
        write(tmp_path / "repo", token.secret(), src, tmp_path / "state-writer")
    assert objects(tmp_path / "repo") == before


def test_a_mangled_token_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    token = new_repo(tmp_path / "repo", recovery_key=RecoveryKey.generate()).issue_writer_token()
    text = token.secret()
    for bad in (text[:-1] + ("Q" if text[-1] != "Q" else "P"), text + "X", text[:200], text[5:]):
        with pytest.raises(InvalidArgument) as caught:
            WriterToken.parse(bad)
        message = str(caught.value) + repr(caught.value.args)
        assert bad[18:50] not in message
        assert token.auth.hex() not in message


def test_the_writer_state_file_is_private(tmp_path: Path) -> None:
    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=2)
    token = new_repo(repo_path, recovery_key=RecoveryKey.generate()).issue_writer_token()
    write(repo_path, token.secret(), src, wstate)
    with device(wstate):
        path = WriterState.path(WriterToken.parse(token.secret()))
    assert path.is_file()
    assert path.stat().st_mode & 0o077 == 0
    # It holds no token text and no auth key (only ids, names and hashes).
    held = path.read_bytes()
    assert token.auth.hex().encode() not in held
    assert token.auth not in held


def test_no_session_key_stays_reachable_after_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FORMAT.md, Threat model: a dump of the key material the API holds after the backup
    opens nothing. After backup_as_writer returns (and a garbage collection), no live Python
    object holds the session key or a key derived from it: no RepoKeys, no dict, list or
    object attribute."""
    import gc

    from e2ebackup.repo.labels import RepoKeys

    src, repo_path, wstate = tmp_path / "src", tmp_path / "repo", tmp_path / "state-writer"
    make_tree(src, small_files=3)
    token_text = new_repo(repo_path, recovery_key=RecoveryKey.generate()).issue_writer_token()
    made: list[bytes] = []
    real_generate = _core.generate_key

    def recording() -> bytes:
        key = real_generate()
        made.append(key)
        return key

    monkeypatch.setattr("e2ebackup.repo.writer._core.generate_key", recording)
    write(repo_path, token_text.secret(), src, wstate)
    monkeypatch.undo()
    secrets_ = set(made)
    for sk in made:
        secrets_.update(derive(sk, label) for label in _LABELS)
    made.clear()
    gc.collect()

    def holds(obj: object) -> bool:
        if isinstance(obj, RepoKeys):
            return bool({obj.metadata, obj.blob, obj.pack} & secrets_)
        if isinstance(obj, dict):
            return any(isinstance(v, bytes) and v in secrets_ for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return any(isinstance(v, bytes) and v in secrets_ for v in obj)
        return False

    holders = [type(obj).__name__ for obj in gc.get_objects() if holds(obj)]
    assert holders == []
