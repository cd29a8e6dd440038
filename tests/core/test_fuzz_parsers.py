"""Structured fuzzing (Hypothesis) of the parsers written in Python: every byte they read comes
from the storage, and some of it from whoever holds the repository's keys (docs/FUZZING.md).

The property is the same for each: arbitrary or mutated input gives either a valid result or an
``e2ebackup.errors.E2EBackupError`` (any other exception fails the test), in bounded time (small
inputs). Raw bytes test what the storage can write; for objects behind the AEAD (tree, index,
snapshot, head, config, pack header), the test seals the fuzzed JSON or bytes with the
repository's own keys, as any holder of the key could.

CI runs a fixed, derandomized set of examples. A long random run:

    E2EBACKUP_FUZZ_EXAMPLES=100000 python -m pytest tests/core/test_fuzz_parsers.py -x -q
"""

from __future__ import annotations

import importlib
import io
import json
import os
import struct
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import pytest
from e2ebackup import _core
from e2ebackup.errors import E2EBackupError
from e2ebackup.keyring.slots import KeySlots
from e2ebackup.keys import RecoveryKey
from e2ebackup.recipients import Identity, Recipient, parse_recipients
from e2ebackup.repo.codec import MAGIC, decode_config, parse_config_header, seal_json
from e2ebackup.repo.drops import WriterToken, open_drop, seal_drop
from e2ebackup.repo.index import Index
from e2ebackup.repo.labels import LABEL_CONFIG, LABEL_PACK, RepoKeys
from e2ebackup.repo.pack import parse_pack_header, read_pack_header
from e2ebackup.repo.repository import Repository, SnapshotFilter
from e2ebackup.repo.tree import decode_tree
from e2ebackup.sealed import read_header
from e2ebackup.storage.local import LocalStorage
from hypothesis import HealthCheck, example, given, settings, strategies as st

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
_LONG = int(os.environ.get("E2EBACKUP_FUZZ_EXAMPLES", "0"))

T = TypeVar("T")


def fuzz_settings(examples: int) -> settings:
    """Derandomized (the same examples every run) unless a long random run was asked for."""
    return settings(
        max_examples=_LONG or examples,
        derandomize=not _LONG,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def parsed_or_refused(parse: Callable[[], T]) -> T | None:
    """The result, or None for a typed refusal. Any other exception propagates: a bug."""
    try:
        return parse()
    except E2EBackupError:
        return None


# ---- strategies ---------------------------------------------------------------------------------

hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: object) -> bytes:
    # allow_nan: Python's json reads NaN and Infinity, so a writer with the key can use them.
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes flipped, set, cut, repeated or inserted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == 2:
            del data[at:]
        elif op == 3:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def object_names(prefix: str) -> Iterator[str]:
    for n in count():
        yield f"{prefix}{n:064x}"


# ---- fixtures: a repository with known keys --------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    state = tmp_path_factory.mktemp("state")
    old = os.environ.get("E2EBACKUP_STATE_DIR")
    os.environ["E2EBACKUP_STATE_DIR"] = str(state)
    try:
        storage = LocalStorage(tmp_path_factory.mktemp("repo"))
        yield Repository.init(storage, recovery_key=RecoveryKey.generate())
    finally:
        if old is None:
            del os.environ["E2EBACKUP_STATE_DIR"]
        else:
            os.environ["E2EBACKUP_STATE_DIR"] = old


def sealed_json(keys: RepoKeys, name: str, value: object) -> bytes:
    """``value`` sealed as the metadata object ``name``; JSON that json.dumps cannot write in
    the usual form (NaN) is still valid for Python's reader."""
    try:
        return seal_json(keys, name, value)
    except ValueError:
        return _core.encrypt(keys.metadata, dumps(value), context=_metadata_context(keys, name))


def _metadata_context(keys: RepoKeys, name: str) -> bytes:
    return b"e2ebackup/v1/repo/metadata\x00" + keys.repo_id + name.encode()


# ---- trees -----------------------------------------------------------------------------------

_ENTRY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(max_size=6) | st.sampled_from(["", ".", "..", "a/b", "a\x00", "\udcff"]),
    "type": st.sampled_from(["file", "dir", "symlink", "fifo", ""]),
    "mode": st.integers(-1, 0o177777),
    "mtime_ns": st.integers(-(2**64), 2**64),
    "ctime_ns": st.integers(-(2**64), 2**64),
    "size": st.integers(-1, 2**64),
    "ino": st.integers(-1, 2**65),
    "uid": st.integers(-1, 2**33),
    "gid": st.integers(-1, 2**33),
    "content": st.lists(hex64 | st.text(max_size=4), max_size=3),
    "subtree": hex64 | st.text(max_size=4),
    "target": st.text(max_size=8),
}
tree_entries = st.fixed_dictionaries(
    {}, optional={k: v | json_values for k, v in _ENTRY_FIELDS.items()}
)
tree_docs = st.fixed_dictionaries({"entries": st.lists(tree_entries | json_values, max_size=5)})
_TREE_SEEDS = [
    b'{"entries":[]}',
    b'{"entries":[{"name":"a","type":"file","mode":420,"mtime_ns":1,"size":3,"content":["'
    + b"ab" * 32
    + b'"]},{"name":"d","type":"dir","mode":493,"mtime_ns":2,"subtree":"'
    + b"cd" * 32
    + b'"},{"name":"l","type":"symlink","mode":511,"mtime_ns":3,"target":"a"}]}',
]


@fuzz_settings(200)
@given(
    tree_docs.map(dumps) | json_values.map(dumps) | mutated(_TREE_SEEDS) | st.binary(max_size=64)
)
@example(b"[" * 5_000)
@example(b'{"entries":' + b"[" * 5_000)
@example(b'{"entries":[{"name":"\\ud800"}]}')
@example(b'{"entries":[{"name":"a","mode":Infinity}]}')
def test_tree_listings(data: bytes) -> None:
    entries = parsed_or_refused(lambda: decode_tree(data))
    if entries is not None:
        assert isinstance(entries, list)
        assert all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries)


# ---- index objects ---------------------------------------------------------------------------

_blob_rows = st.lists(
    st.tuples(st.integers(-1, 3), hex64, st.integers(-1, 2**40), st.integers(-1, 2**40)).map(list)
    | json_values,
    max_size=3,
)
index_docs = st.fixed_dictionaries(
    {
        "packs": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": hex64 | json_values,
                    "size": st.integers(-1, 2**40) | json_values,
                    "blobs": _blob_rows | json_values,
                },
            )
            | json_values,
            max_size=3,
        )
    }
)
_index_names = object_names("index/")


@fuzz_settings(200)
@given(value=index_docs | json_values, raw=st.none() | st.binary(max_size=80))
@example(
    value={"packs": [{"id": "ab" * 32, "size": 1, "blobs": [[float("inf"), "00", 0, 0]]}]}, raw=None
)
@example(value=None, raw=b"")
def test_index_objects(repo: Repository, value: object, raw: bytes | None) -> None:
    name = next(_index_names)
    body = raw if raw is not None else sealed_json(repo.keys, name, value)
    repo.storage.put_bytes(name, body)
    try:
        index = parsed_or_refused(lambda: Index.load(repo.storage, repo.keys, [name]))
        assert raw is None or index is None, "unauthenticated bytes made an index"
    finally:
        repo.storage.delete(name)


@fuzz_settings(100)
@given(st.binary(max_size=40))
@example(b"\xff\xfe")
@example(b"[" * 5_000)
def test_metadata_objects_that_are_not_json(repo: Repository, body: bytes) -> None:
    """Authentic bytes that are not JSON (or not UTF-8) are a corrupt object, not a crash."""
    name = next(_index_names)
    repo.storage.put_bytes(
        name, _core.encrypt(repo.keys.metadata, body, context=_metadata_context(repo.keys, name))
    )
    try:
        parsed_or_refused(lambda: Index.load(repo.storage, repo.keys, [name]))
    finally:
        repo.storage.delete(name)


# ---- snapshots and heads ---------------------------------------------------------------------

snapshot_docs = st.fixed_dictionaries(
    {},
    optional={
        "time": st.floats() | st.integers() | json_values,
        "tree": hex64 | json_values,
        "paths": st.lists(st.text(max_size=6), max_size=2) | json_values,
        "hostname": st.text(max_size=6) | json_values,
        "tags": st.lists(st.text(max_size=4), max_size=2) | json_values,
        "summary": json_values,
    },
)


@fuzz_settings(60)
@given(value=snapshot_docs | json_values, right_id=st.booleans())
@example(value={"paths": [["x"]], "tags": [[1]], "hostname": []}, right_id=True)
def test_snapshot_objects(repo: Repository, value: object, right_id: bool) -> None:
    """A listed snapshot of any content: loading, listing and choosing ``latest`` (with a
    filter that reads its host, paths and tags) give a result or a typed error."""
    sid = os.urandom(32).hex()
    name = f"snapshots/{sid}"
    if right_id and isinstance(value, dict):
        value = dict(value, id=sid)
    repo.storage.put_bytes(name, sealed_json(repo.keys, name, value))
    repo.commit(add_snapshots=[sid])
    try:
        parsed_or_refused(lambda: repo.load_snapshot(sid))
        parsed_or_refused(lambda: list(repo.snapshots()))
        where = SnapshotFilter(host="h", paths=("/p",), tags=("t",))
        parsed_or_refused(lambda: repo.find_snapshot("latest", where))
    finally:
        repo.commit(remove_snapshots=[sid])
        repo.storage.delete(name)


def _parse_head() -> Callable[..., object] | None:
    """The head decoder, if this version has one as a function (the format is changing)."""
    try:
        module = importlib.import_module("e2ebackup.repo.heads")
    except ImportError:
        return None
    parse = getattr(module, "parse_head", None)
    return parse if callable(parse) else None


head_docs = st.fixed_dictionaries(
    {},
    optional={
        "seq": st.integers(-1, 3) | json_values,
        "snapshots": st.lists(hex64, max_size=2) | json_values,
        "indexes": st.lists(hex64.map(lambda h: "index/" + h), max_size=2) | json_values,
        "parent": hex64 | json_values,
        # Version 3 (many writers): parents, time, tombstones.
        "parents": st.lists(st.tuples(st.integers(-1, 3), hex64).map(list), max_size=3)
        | json_values,
        "time": st.floats(-1, 2**35) | st.integers(-1, 2**35) | json_values,
        "dropped": st.lists(
            st.tuples(
                st.sampled_from(["snapshots/", "index/", "config/", ""]).flatmap(
                    lambda p: hex64.map(lambda h: p + h)
                ),
                st.floats(-1, 2**35) | json_values,
            ).map(list),
            max_size=3,
        )
        | json_values,
    },
)


@fuzz_settings(400)
@given(value=head_docs | json_values, seq=st.integers(0, 3), version=st.integers(1, 4))
def test_head_objects(value: object, seq: int, version: int) -> None:
    parse = _parse_head()
    if parse is None:
        pytest.skip("no e2ebackup.repo.heads.parse_head in this version")
    name = f"heads/{seq:016x}-{'0' * 64}"
    parsed_or_refused(lambda: parse(name, value, dumps(value), version=version))


# ---- config ----------------------------------------------------------------------------------

config_docs = st.fixed_dictionaries(
    {},
    optional={
        "version": st.integers(0, 3) | json_values,
        "chunker": st.fixed_dictionaries(
            {}, optional={k: st.integers(-1, 2**30) | json_values for k in ("min", "avg", "max")}
        )
        | json_values,
    },
)


@fuzz_settings(300)
@given(
    header_version=st.integers(0, 3),
    body=config_docs.map(dumps) | json_values.map(dumps) | st.binary(max_size=40),
    raw=st.none() | st.binary(max_size=80),
)
@example(header_version=1, body=b"\xff", raw=None)
@example(header_version=1, body=b"[" * 5_000, raw=None)
def test_config(repo: Repository, header_version: int, body: bytes, raw: bytes | None) -> None:
    fixed = MAGIC + bytes([header_version]) + repo.keys.repo_id
    blob = (
        raw
        if raw is not None
        else fixed + _core.encrypt(repo.keys.config, body, context=LABEL_CONFIG + b"\x00" + fixed)
    )
    repo_id = parsed_or_refused(lambda: parse_config_header(blob))
    if repo_id is not None:
        config = parsed_or_refused(lambda: decode_config(repo.keys, blob))
        assert config is None or isinstance(config, dict)


# ---- sealed files and key slots --------------------------------------------------------------


def _sealed_seeds() -> list[bytes]:
    vectors = json.loads((VECTORS / "sealed_v1.json").read_text())["vectors"]
    files = [bytes.fromhex(v["sealed_file"]) for v in vectors if isinstance(v["sealed_file"], str)]
    # Files with recipient slots (kind 4), valid and not.
    recipient = json.loads((VECTORS / "recipient_v1.json").read_text())
    files += [bytes.fromhex(f["file"]) for f in recipient["files"] + recipient["invalid"]]
    # The header is what read_header reads; the payload only makes the examples slow.
    return [f[: 30 + struct.unpack(">I", f[26:30])[0] + 8] if len(f) >= 30 else f for f in files]


_SEALED = _sealed_seeds()
_SLOT_AREAS = [f[30:-8] for f in _SEALED if f.startswith(b"E2EBSEAL") and len(f) > 38]


@fuzz_settings(500)
@given(mutated(_SEALED) | st.binary(max_size=64))
def test_sealed_headers(data: bytes) -> None:
    header = parsed_or_refused(lambda: read_header(io.BytesIO(data)))
    if header is not None:
        assert header.payload_offset <= len(data)
        header.slots.describe()


@fuzz_settings(500)
@given(mutated(_SLOT_AREAS) | st.binary(max_size=64))
@example(b"\x01\x03\x00\x04abcd" + bytes(16))
def test_key_slot_areas(area: bytes) -> None:
    slots = parsed_or_refused(lambda: KeySlots.decode(bytes(16), area))
    if slots is not None:
        slots.describe()  # what `key list` shows
        parsed_or_refused(slots.encode)  # nothing left to write is a typed refusal too


_RECIPIENT_KEYS = json.loads((VECTORS / "recipient_v1.json").read_text())["keys"]
_KEY_TEXTS = [k[name].encode() for k in _RECIPIENT_KEYS for name in ("identity", "recipient_text")]


@fuzz_settings(500)
@given(mutated(_KEY_TEXTS) | st.binary(max_size=80))
@example(_KEY_TEXTS[0])  # a valid identity line
@example(_KEY_TEXTS[1])  # a valid recipient
@example(b"e2ebackup1")
@example(b"E2EBACKUP-SECRET-KEY-1")
def test_recipient_and_identity_texts(data: bytes) -> None:
    """A recipients file or an identity file is whatever bytes the user was handed: each parses
    or is a typed refusal, and what parses prints back as itself."""
    text = data.decode("utf-8", errors="replace")
    recipient = parsed_or_refused(lambda: Recipient.parse(text))
    if recipient is not None:
        assert Recipient.parse(str(recipient)) == recipient
    parsed_or_refused(lambda: parse_recipients(text))
    identity = parsed_or_refused(lambda: Identity.parse(text))
    if identity is not None:
        assert Identity.parse(identity.secret()) == identity


# ---- pack headers ----------------------------------------------------------------------------


def _repo_v1_packs() -> tuple[RepoKeys, list[tuple[str, bytes]]]:
    manifest = json.loads((VECTORS / "repo_v1" / "manifest.json").read_text())
    keys = RepoKeys.from_data_key(
        bytes.fromhex(manifest["inputs"]["data_key"]), bytes.fromhex(manifest["inputs"]["repo_id"])
    )
    packs = [
        (name.rsplit("/", 1)[-1], (VECTORS / "repo_v1" / "repo" / name).read_bytes())
        for name in sorted(manifest["objects"])
        if name.startswith("data/")
    ]
    return keys, packs


_V1_KEYS, _V1_PACKS = _repo_v1_packs()
_PACK_TAILS = [pack[-4 - struct.unpack(">I", pack[-4:])[0] :] for _, pack in _V1_PACKS]


@fuzz_settings(400)
@given(
    tail=mutated(_PACK_TAILS) | st.binary(max_size=64),
    pick=st.integers(0, len(_V1_PACKS) - 1),
    size_delta=st.integers(-8, 8) | st.just(0),
)
def test_pack_header_bytes(tail: bytes, pick: int, size_delta: int) -> None:
    """Whatever the storage puts at the end of a pack, and whatever size it lists."""
    pack_id, pack = _V1_PACKS[pick]
    size = len(pack) + size_delta
    entries = parsed_or_refused(lambda: parse_pack_header(_V1_KEYS, pack_id, tail, size))
    if entries is not None:
        assert sum(loc.length for _, loc in entries) <= size


@fuzz_settings(300)
@given(header=st.binary(max_size=120), blobs_len=st.integers(0, 200), size_delta=st.integers(-4, 4))
def test_pack_header_contents(
    repo: Repository, header: bytes, blobs_len: int, size_delta: int
) -> None:
    """An authentic header of any bytes (a holder of the key wrote it)."""
    pack_id = "ab" * 32
    context = LABEL_PACK + b"\x00" + repo.keys.repo_id + pack_id.encode()
    sealed = _core.encrypt(repo.keys.pack, header, context=context)
    tail = sealed + struct.pack(">I", len(sealed))
    size = blobs_len + len(tail) + size_delta
    entries = parsed_or_refused(lambda: parse_pack_header(repo.keys, pack_id, tail, size))
    if entries is not None:
        assert sum(loc.length for _, loc in entries) + len(tail) == size


_pack_names = object_names("")


@fuzz_settings(150)
@given(
    body=mutated([p for _, p in _V1_PACKS]) | st.binary(max_size=16), size_delta=st.integers(-6, 2)
)
@example(body=b"", size_delta=0)
@example(body=b"\x00\x00", size_delta=0)
def test_pack_headers_read_from_storage(repo: Repository, body: bytes, size_delta: int) -> None:
    """read_pack_header with the size a listing gives (the storage's word), also for packs of
    fewer than 4 bytes."""
    pack_id = next(_pack_names)
    name = f"data/{pack_id[:2]}/{pack_id}"
    repo.storage.put_bytes(name, body)
    try:
        parsed_or_refused(
            lambda: read_pack_header(repo.storage, repo.keys, pack_id, len(body) + size_delta)
        )
    finally:
        repo.storage.delete(name)


# ---- drops (version 4): what the storage and a token holder can write -----------------------

_DROP_KEY = bytes(range(32))
_DROP_REPO = bytes(16)
_TOKEN = WriterToken.issue(_DROP_KEY, _DROP_REPO)
_DROP_NAME = "drops/" + "d" * 64
_GOOD_DROP: dict[str, Any] = {
    "writer": _TOKEN.writer_id.hex(),
    "seq": 1,
    "prev": None,
    "time": 1.5e9,
    "snapshot": {
        "id": "a" * 64,
        "time": 1.5e9,
        "hostname": "h",
        "paths": ["/x"],
        "tree": "b" * 64,
    },
    "packs": [{"id": "c" * 64, "size": 100, "blobs": [[0, "e" * 64, 0, 100]]}],
    "chunker": {"min": 64, "avg": 256, "max": 1024},
}
_DROP_BYTES = seal_drop(_DROP_NAME, _TOKEN, bytes(32), _GOOD_DROP)


def _open(stored: bytes, name: str = _DROP_NAME) -> object:
    return open_drop(name, stored, repo_id=_DROP_REPO, data_key=_DROP_KEY)


def test_the_drop_seed_opens() -> None:
    assert _open(_DROP_BYTES) is not None


@fuzz_settings(300)
@given(mutated([_DROP_BYTES]) | st.binary(max_size=120))
def test_drop_bytes(stored: bytes) -> None:
    """What the storage can write: any bytes under a drop's name."""
    drop = parsed_or_refused(lambda: _open(stored))
    assert drop is None or stored == _DROP_BYTES


drop_docs = st.fixed_dictionaries(
    {},
    optional={
        "writer": st.just(_TOKEN.writer_id.hex()),
        **{k: st.just(v) | json_values for k, v in _GOOD_DROP.items() if k != "writer"},
    },
)


@fuzz_settings(300)
@given(value=drop_docs | json_values)
def test_drop_contents(value: Any) -> None:
    """What a token holder can write: any JSON, sealed and authenticated as its writer would."""
    stored = parsed_or_refused(lambda: seal_drop(_DROP_NAME, _TOKEN, bytes(32), value))
    if stored is not None:
        parsed_or_refused(lambda: _open(stored))


@fuzz_settings(300)
@given(mutated([_TOKEN.secret().encode()]) | st.binary(max_size=80))
def test_writer_token_texts(data: bytes) -> None:
    token = parsed_or_refused(lambda: WriterToken.parse(data.decode("utf-8", "replace")))
    if token is not None:
        assert WriterToken.parse(token.secret()).writer_id == token.writer_id
