"""Known-answer tests for the repository format: tests/vectors/repo_v1/, repo_v2/, repo_v3/ and
chunker_v1.json against e2ebackup and the independent reference (tests/reference/repo.py);
repositories made by e2ebackup read by the reference; tampered copies, the rolled-back and
forked states of repo_v2 and the states and invalid heads of repo_v3, judged by both."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import os
import random
import shutil
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import e2ebackup.errors
import pytest
import zstandard
from e2ebackup._core import Chunker
from e2ebackup.errors import NotARepository, RepositoryCorrupted
from e2ebackup.keys import Argon2idParams, RecoveryKey
from e2ebackup.repo import heads as heads_module
from e2ebackup.repo.backup import backup
from e2ebackup.repo.check import verify
from e2ebackup.repo.heads import Head, write_trust
from e2ebackup.repo.prune import forget
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from e2ebackup.storage import LocalStorage
from reference import repo as ref, sealed as sref

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
REPO_VECTOR = VECTORS / "repo_v1"
GENERATOR = ROOT / "tools" / "make_repo_vectors.py"

MANIFEST: dict[str, Any] = json.loads((REPO_VECTOR / "manifest.json").read_text("utf-8"))
REPO_V2_VECTOR = VECTORS / "repo_v2"
MANIFEST_V2: dict[str, Any] = json.loads((REPO_V2_VECTOR / "manifest.json").read_text("utf-8"))
STATES: list[dict[str, Any]] = MANIFEST_V2["states"]
CHUNKER_DOC: dict[str, Any] = json.loads((VECTORS / "chunker_v1.json").read_text("utf-8"))
CASES: list[dict[str, Any]] = CHUNKER_DOC["cases"]
PASSWORD: str = MANIFEST["password"]
RECOVERY_KEY: str = MANIFEST["recovery_key"]
LISTED = [s["id"] for s in MANIFEST["snapshots"]]
UNLISTED: list[str] = MANIFEST["unlisted_snapshots"]
LATEST: str = MANIFEST["latest"]

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
SMALL_CHUNKS = {"min": 256, "avg": 1024, "max": 4096}


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh device: e2ebackup records the highest head seq it has seen here."""
    path = tmp_path / "state"
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(path))
    return path


@functools.cache
def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_repo_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vector_copy(tmp_path: Path, name: str = "repo") -> Path:
    """A private copy of the vector repository (e2ebackup may write locks into it)."""
    dest = tmp_path / name
    shutil.copytree(REPO_VECTOR / "repo", dest)
    return dest


def e2e_open(path: Path, **credentials: Any) -> Repository:
    if not credentials:
        credentials = {"password": PASSWORD}
    return Repository.open(LocalStorage(path, create=False), **credentials)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_tree(snapshot_id: str) -> dict[str, Any]:
    tree: dict[str, Any] = next(s for s in MANIFEST["snapshots"] if s["id"] == snapshot_id)["tree"]
    return tree


def hashed(tree: ref.Tree) -> dict[str, Any]:
    """A reference restore in the manifest's form, without modes and times."""
    out: dict[str, Any] = {}
    for path, node in tree.items():
        if isinstance(node, bytes):
            out[path] = {"type": "file", "size": len(node), "sha256": sha256(node)}
        elif node == "dir":
            out[path] = {"type": "dir"}
        else:
            out[path] = {"type": "symlink", "target": node[1]}
    return out


def without_meta(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        p: {k: v for k, v in e.items() if k not in ("mode", "mtime_ns")} for p, e in tree.items()
    }


def on_disk(root: Path) -> dict[str, Any]:
    """A restored folder in the manifest's form (paths as surrogate-escaped strings)."""
    out: dict[str, Any] = {}
    base = os.fsencode(root)
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            full = os.path.join(folder, name)
            path = os.fsdecode(os.path.relpath(full, base))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[path] = {"type": "symlink", "target": os.fsdecode(os.readlink(full))}
            elif stat.S_ISDIR(st.st_mode):
                out[path] = {"type": "dir"}
            else:
                with open(full, "rb") as f:
                    data = f.read()
                out[path] = {
                    "type": "file",
                    "size": len(data),
                    "sha256": sha256(data),
                    "mode": stat.S_IMODE(st.st_mode),
                    "mtime_ns": st.st_mtime_ns,
                }
    return out


# ---- the committed files ------------------------------------------------------------------------


def test_files_match_the_generator() -> None:
    module = load_generator()
    rendered: dict[str, bytes] = module.render()
    assert module.on_disk() == rendered, "run python tools/make_repo_vectors.py"


def test_vectors_are_small_and_cover_the_cases() -> None:
    repo_bytes = sum(p.stat().st_size for p in (REPO_VECTOR / "repo").rglob("*") if p.is_file())
    assert repo_bytes < 200_000
    assert len(LISTED) == 2
    assert LISTED[-1] == LATEST
    assert UNLISTED
    assert MANIFEST["stale_heads"]
    kinds = {e["type"] for s in MANIFEST["snapshots"] for e in s["tree"].values()}
    assert kinds == {"file", "dir", "symlink"}
    names = [p for s in MANIFEST["snapshots"] for p in s["tree"]]
    assert any("\udce9" in p for p in names), "a name that is not UTF-8"
    assert any(e.get("size") == 0 for s in MANIFEST["snapshots"] for e in s["tree"].values())
    data_packs = [n for n in MANIFEST["objects"] if n.startswith("data/")]
    assert len(data_packs) >= 4
    ids = [c["id"] for c in CASES]
    assert len(set(ids)) == len(ids)


# ---- the vector repository, read by the reference -------------------------------------------


@pytest.mark.parametrize("credential", ["password", "recovery_key"])
def test_reference_restores_the_vector(credential: str) -> None:
    if credential == "password":
        r = ref.Repository.open(REPO_VECTOR / "repo", password=PASSWORD)
    else:
        r = ref.Repository.open(REPO_VECTOR / "repo", recovery_key=RECOVERY_KEY)
    assert r.keys.data_key.hex() == MANIFEST["inputs"]["data_key"]
    assert r.head.seq == MANIFEST["head"]["seq"]
    assert r.head.name == MANIFEST["head"]["name"]
    assert r.snapshot_ids() == LISTED
    assert r.latest() == LATEST
    for sid in LISTED:
        assert hashed(r.restore(sid)) == without_meta(manifest_tree(sid))
    for sid in UNLISTED:
        assert (REPO_VECTOR / "repo" / "snapshots" / sid).is_file()
        with pytest.raises(ref.SnapshotNotFound):
            r.restore(sid)
    assert r.check() == []


def test_reference_intermediate_values() -> None:
    r = ref.Repository.open(REPO_VECTOR / "repo", password=PASSWORD)
    k = MANIFEST["keys"]
    assert [r.keys.config, r.keys.metadata, r.keys.blob, r.keys.blob_id] == [
        bytes.fromhex(k[n]) for n in ("config", "metadata", "blob", "blob-id")
    ]
    assert r.keys.chunker.hex() == k["chunker"]
    assert r.keys.pack_header.hex() == k["pack-header"]
    assert r.chunker == tuple(MANIFEST["inputs"]["chunker"][n] for n in ("min", "avg", "max"))
    gear = b"".join(g.to_bytes(8, "little") for g in ref.gear_table(r.keys.chunker))
    assert sha256(gear) == MANIFEST["gear_sha256"]
    stored = {
        n: {"size": (r.root / n).stat().st_size, "sha256": sha256((r.root / n).read_bytes())}
        for n in ref.object_names(r.root, "")
    }
    assert stored == MANIFEST["objects"]


def test_reference_rejects_wrong_credentials() -> None:
    with pytest.raises(ref.WrongPassword):
        ref.Repository.open(REPO_VECTOR / "repo", password=PASSWORD + "!")
    with pytest.raises(ref.WrongRecoveryKey):
        ref.Repository.open(REPO_VECTOR / "repo", recovery_key=bytes(32))


# ---- the vector repository, read by e2ebackup -----------------------------------------------


@pytest.mark.parametrize("credential", ["password", "recovery_key"])
def test_e2ebackup_restores_the_vector(tmp_path: Path, credential: str) -> None:
    path = vector_copy(tmp_path)
    if credential == "password":
        repo = e2e_open(path)
    else:
        key = RecoveryKey(bytes.fromhex(RECOVERY_KEY.replace(" ", "")))
        repo = e2e_open(path, recovery_key=key)
    assert [sid for sid, _ in repo.snapshots()] == LISTED
    assert repo.find_snapshot("latest")[0] == LATEST
    for n, sid in enumerate(LISTED):
        target = tmp_path / f"restored-{n}"
        restore(repo, "latest" if sid == LATEST else sid, str(target))
        assert on_disk(target) == manifest_tree(sid), sid
    for sid in UNLISTED:
        with pytest.raises(e2ebackup.errors.E2EBackupError):
            repo.find_snapshot(sid)
    report = verify(repo, read_data=True)
    assert report.ok, report.errors


def test_e2ebackup_rejects_wrong_credentials(tmp_path: Path) -> None:
    path = vector_copy(tmp_path)
    with pytest.raises(e2ebackup.errors.WrongPassword):
        e2e_open(path, password=PASSWORD + "!")
    with pytest.raises(e2ebackup.errors.WrongRecoveryKey):
        e2e_open(path, recovery_key=RecoveryKey(bytes(32)))


# ---- repo_v2: the head chain and the states the storage may show -----------------------------


def v2_tree(snapshot_id: str) -> dict[str, Any]:
    tree: dict[str, Any] = next(s for s in MANIFEST_V2["snapshots"] if s["id"] == snapshot_id)[
        "tree"
    ]
    return tree


@pytest.mark.parametrize("credential", ["password", "recovery_key"])
def test_reference_restores_the_v2_vector(credential: str) -> None:
    path = REPO_V2_VECTOR / "repo"
    if credential == "password":
        r = ref.Repository.open(path, password=PASSWORD)
    else:
        r = ref.Repository.open(path, recovery_key=MANIFEST_V2["recovery_key"])
    assert r.keys.data_key.hex() == MANIFEST_V2["inputs"]["data_key"]
    assert r.config["version"] == 2
    assert (r.head.seq, r.head.name) == (MANIFEST_V2["head"]["seq"], MANIFEST_V2["head"]["name"])
    chain = [
        {"seq": h.seq, "name": h.name, "sha256": h.hash, "parent": h.parent}
        for h in (r.read_head(n) for _, n in r.heads())
    ]
    assert chain == MANIFEST_V2["heads"]
    for older, newer in itertools.pairwise(chain):
        assert newer["parent"] == older["sha256"]
    assert chain[0]["parent"] is None
    listed = [s["id"] for s in MANIFEST_V2["snapshots"]]
    assert r.snapshot_ids() == listed
    assert r.latest() == MANIFEST_V2["latest"]
    for sid in listed:
        assert hashed(r.restore(sid)) == without_meta(v2_tree(sid))
    stored = {
        n: {"size": (path / n).stat().st_size, "sha256": sha256((path / n).read_bytes())}
        for n in ref.object_names(path, "")
    }
    assert stored == MANIFEST_V2["objects"]
    assert r.check() == []


def test_e2ebackup_restores_the_v2_vector(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    shutil.copytree(REPO_V2_VECTOR / "repo", path)
    repo = e2e_open(path)
    assert repo.config["version"] == 2
    head = repo.head()
    assert (head.seq, head.name) == (MANIFEST_V2["head"]["seq"], MANIFEST_V2["head"]["name"])
    assert head.digest == MANIFEST_V2["heads"][-1]["sha256"]
    assert head.parent == MANIFEST_V2["heads"][-1]["parent"]
    listed = [s["id"] for s in MANIFEST_V2["snapshots"]]
    assert [sid for sid, _ in repo.snapshots()] == listed
    for n, sid in enumerate(listed):
        restore(repo, sid, str(tmp_path / f"out-{n}"))
        assert on_disk(tmp_path / f"out-{n}") == v2_tree(sid)
    for sid in MANIFEST_V2["unlisted_snapshots"]:
        with pytest.raises(e2ebackup.errors.E2EBackupError):
            repo.find_snapshot(sid)
    report = verify(repo, read_data=True)
    assert report.ok, report.errors


def state_copy(tmp_path: Path, state: dict[str, Any]) -> Path:
    """The v2 vector as the storage shows it in ``state``."""
    path = tmp_path / "repo"
    shutil.copytree(REPO_V2_VECTOR / "repo", path)
    for name in state["remove"]:
        (path / name).unlink()
    for name in state["add"]:
        shutil.copy(REPO_V2_VECTOR / "extra" / name, path / name)
    return path


REF_ERRORS: dict[str, type[Exception]] = {
    "RolledBack": ref.Rollback,
    "HistoryForked": ref.Forked,
    "HistoryUnverifiable": ref.Unverifiable,
    "NotTrusted": ref.HistoryRefused,
    "RepositoryCorrupted": ref.Corrupt,
}
E2E_ERRORS: dict[str, type[Exception]] = {
    "RolledBack": e2ebackup.errors.RolledBack,
    "HistoryForked": e2ebackup.errors.HistoryForked,
    "HistoryUnverifiable": e2ebackup.errors.HistoryUnverifiable,
    "NotTrusted": e2ebackup.errors.HistoryNotTrusted,
    "RepositoryCorrupted": RepositoryCorrupted,
}


@pytest.mark.parametrize("state", STATES, ids=lambda c: c["id"])
def test_reference_judges_the_v2_states(tmp_path: Path, state: dict[str, Any]) -> None:
    path = state_copy(tmp_path, state)
    t = state["trusted"]
    kwargs: dict[str, Any] = {
        "trusted": (t["seq"], t["sha256"]) if t else None,
        "expect_head": state["expect_head"],
    }
    if "error" in state["result"]:
        with pytest.raises(REF_ERRORS[state["result"]["error"]]):
            ref.Repository.open(path, password=PASSWORD, **kwargs)
    else:
        r = ref.Repository.open(path, password=PASSWORD, **kwargs)
        assert r.head.name == state["result"]["head"]


@pytest.mark.parametrize("state", STATES, ids=lambda c: c["id"])
def test_e2ebackup_judges_the_v2_states(tmp_path: Path, state: dict[str, Any]) -> None:
    path = state_copy(tmp_path, state)
    repo = e2e_open(path)
    t = state["trusted"]
    if t is not None:
        write_trust(repo.keys.repo_id, Head(t["seq"], [], [], t["name"], digest=t["sha256"]))
    repo.expect_head = state["expect_head"]
    if "error" in state["result"]:
        with pytest.raises(E2E_ERRORS[state["result"]["error"]]) as caught:
            repo.head()
        if state["result"]["error"] != "RepositoryCorrupted":
            assert "e2ebackup trust" in str(caught.value)
        trusted = repo.trusted_head()
        assert (
            None if trusted is None else (trusted.seq, trusted.name, trusted.digest, trusted.pins)
        ) == (None if t is None else (t["seq"], t["name"], t["sha256"], ())), (
            "a refused state is not trusted"
        )
    else:
        assert repo.head().name == state["result"]["head"]
        trusted = repo.trusted_head()
        assert trusted is not None
        assert trusted.name == state["result"]["head"]


# ---- repo_v3: many writers, merged heads, tombstones, condemned packs ------------------------

REPO_V3_VECTOR = VECTORS / "repo_v3"
MANIFEST_V3: dict[str, Any] = json.loads((REPO_V3_VECTOR / "manifest.json").read_text("utf-8"))
STATES_V3: list[dict[str, Any]] = MANIFEST_V3["states"]
V3_TREES: dict[str, dict[str, Any]] = {
    s["id"]: s["tree"] for s in MANIFEST_V3["snapshots"] + MANIFEST_V3["other_snapshots"]
}
V3_LISTED = [s["id"] for s in MANIFEST_V3["snapshots"]]


def v3_heads_by_name() -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in MANIFEST_V3["heads"]}


def test_v3_vector_covers_the_cases() -> None:
    """The history the vector promises: two heads committed at once (both listed), a merge head
    with two parents on top, a forget as a tombstone (the object still stored), a straggler
    that no top head reaches, a condemned pack a listed snapshot still reads."""
    heads = MANIFEST_V3["heads"]
    seqs = [h["seq"] for h in heads]
    assert seqs.count(2) == 2
    assert seqs.count(4) == 2
    assert seqs.count(3) == 2  # head 3 and the straggler
    [top] = [h for h in heads if h["seq"] == max(seqs)]
    assert MANIFEST_V3["head"]["top_heads"] == [top["name"]]
    assert sorted(p[1] for p in top["parents"]) == sorted(
        h["sha256"] for h in heads if h["seq"] == 4
    )
    two = [h for h in heads if h["seq"] == 2]
    added = {h["snapshots"][-1] for h in two}  # each writer's own snapshot, both listed
    assert len(added) == 2
    assert added <= set(V3_LISTED)
    forgotten = MANIFEST_V3["forgotten"]["snapshot"]
    assert (REPO_V3_VECTOR / "repo" / "snapshots" / forgotten).is_file()
    assert [f"snapshots/{forgotten}", MANIFEST_V3["forgotten"]["tombstone"][1]] in top["dropped"]
    assert forgotten not in V3_LISTED
    straggler = MANIFEST_V3["straggler"]
    assert straggler["snapshot"] not in V3_LISTED
    named = {p[1] for h in heads for p in h["parents"]}
    assert v3_heads_by_name()[straggler["head"]]["sha256"] not in named
    condemned = MANIFEST_V3["condemned"]
    assert condemned["packs"]
    assert condemned["blobs"]
    assert condemned["snapshot"] in V3_LISTED
    errors = {s["result"].get("error") for s in STATES_V3}
    assert errors >= {
        None,
        "RolledBack",
        "HistoryForked",
        "HistoryUnverifiable",
        "NotTrusted",
        "RepositoryCorrupted",
    }
    repo_bytes = sum(p.stat().st_size for p in (REPO_V3_VECTOR / "repo").rglob("*") if p.is_file())
    assert repo_bytes < 200_000


@pytest.mark.parametrize("credential", ["password", "recovery_key"])
def test_reference_restores_the_v3_vector(credential: str) -> None:
    path = REPO_V3_VECTOR / "repo"
    if credential == "password":
        r = ref.Repository.open(path, password=PASSWORD)
    else:
        r = ref.Repository.open(path, recovery_key=MANIFEST_V3["recovery_key"])
    assert r.keys.data_key.hex() == MANIFEST_V3["inputs"]["data_key"]
    assert r.config["version"] == 3
    assert r.head.seq == MANIFEST_V3["head"]["seq"]
    assert [n for n, _ in r.merged_heads()] == MANIFEST_V3["head"]["top_heads"]
    stored = [r.read_head_v3(n) for _, n in r.heads()]
    assert [
        {
            "seq": h.seq,
            "name": h.name,
            "sha256": h.hash,
            "time": h.time,
            "parents": [list(p) for p in h.parents],
            "snapshots": h.snapshots,
            "indexes": h.indexes,
            "dropped": [list(t) for t in h.dropped],
        }
        for h in stored
    ] == [{k: v for k, v in h.items() if k != "role"} for h in MANIFEST_V3["heads"]]
    for h in stored:
        assert h.hash == sha256((path / str(h.name)).read_bytes())
    assert r.snapshot_ids() == V3_LISTED
    assert r.latest() == MANIFEST_V3["latest"]
    for sid in V3_LISTED:
        assert hashed(r.restore(sid)) == without_meta(V3_TREES[sid])
    for sid in MANIFEST_V3["unlisted_snapshots"]:
        assert (path / "snapshots" / sid).is_file()
        with pytest.raises(ref.SnapshotNotFound):
            r.restore(sid)
    # The blobs the manifest names are read from condemned packs, and only from them.
    index = r.index()
    assert sorted(r.condemned) == MANIFEST_V3["condemned"]["packs"]
    for blob in MANIFEST_V3["condemned"]["blobs"]:
        assert index[bytes.fromhex(blob)][0] in r.condemned
    objects = {
        n: {"size": (path / n).stat().st_size, "sha256": sha256((path / n).read_bytes())}
        for n in ref.object_names(path, "")
    }
    assert objects == MANIFEST_V3["objects"]
    assert r.check() == []


def v3_state_copy(tmp_path: Path, state: dict[str, Any]) -> Path:
    """The v3 vector as the storage shows it in ``state``."""
    path = tmp_path / "repo"
    shutil.copytree(REPO_V3_VECTOR / "repo", path)
    for name in state["remove"]:
        (path / name).unlink()
    for name in state["add"]:
        shutil.copy(REPO_V3_VECTOR / "extra" / name, path / name)
    return path


@pytest.mark.parametrize("state", STATES_V3, ids=lambda c: c["id"])
def test_reference_judges_the_v3_states(tmp_path: Path, state: dict[str, Any]) -> None:
    path = v3_state_copy(tmp_path, state)
    t = state["trusted"]
    kwargs: dict[str, Any] = {
        "trusted_heads": (t["seq"], [tuple(h) for h in t["heads"]]) if t else None,
        "expect_head": state["expect_head"],
    }
    result = state["result"]
    if "error" in result:
        with pytest.raises(REF_ERRORS[result["error"]]) as caught:
            ref.Repository.open(path, password=PASSWORD, **kwargs)
        if result["error"] == "NotTrusted":  # the base class, not one of the three others
            assert type(caught.value) is ref.HistoryRefused
        return
    r = ref.Repository.open(path, password=PASSWORD, **kwargs)
    assert r.head.seq == result["seq"]
    assert [list(h) for h in r.merged_heads()] == result["heads"]
    assert r.snapshot_ids() == result["snapshots"]
    assert r.latest() == result["latest"]
    assert [[n, t] for n, t in sorted(r.dropped.items())] == result["dropped"]
    for sid in result["snapshots"]:
        assert hashed(r.restore(sid)) == without_meta(V3_TREES[sid]), sid


def trust_file(repo_id: str, state_dir: Path) -> Path:
    return state_dir / repo_id / "trusted-head"


def write_v3_trust(state_dir: Path, trusted: dict[str, Any], form: str) -> bytes:
    """The device's trusted state in the form docs/FORMAT.md gives for version 3
    (``{"seq", "heads", "pins"}``), or (``form`` "with-v2-fields") with the version-2 fields
    ``name`` and ``sha256`` of its first head as well, as e2ebackup also writes them."""
    doc: dict[str, Any] = {"seq": trusted["seq"], "heads": trusted["heads"], "pins": []}
    if form == "with-v2-fields":
        doc["name"], doc["sha256"] = trusted["heads"][0]
    body = json.dumps(doc).encode()
    path = trust_file(MANIFEST_V3["inputs"]["repo_id"], state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return body


def test_e2ebackup_restores_the_v3_vector(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    shutil.copytree(REPO_V3_VECTOR / "repo", path)
    repo = e2e_open(path)
    assert repo.config["version"] == 3
    assert [sid for sid, _ in repo.snapshots()] == V3_LISTED
    assert repo.find_snapshot("latest")[0] == MANIFEST_V3["latest"]
    for n, sid in enumerate(V3_LISTED):  # the latest reads blobs from condemned packs
        restore(repo, sid, str(tmp_path / f"out-{n}"))
        assert on_disk(tmp_path / f"out-{n}") == V3_TREES[sid], sid
    for sid in MANIFEST_V3["unlisted_snapshots"]:
        with pytest.raises(e2ebackup.errors.E2EBackupError):
            repo.find_snapshot(sid)
    report = verify(repo, read_data=True)
    assert report.ok, report.errors


V3_TRUST_FORMS = [
    pytest.param(state, form, id=f"{state['id']}-{form}")
    for state in STATES_V3
    for form in (["spec", "with-v2-fields"] if state["trusted"] else ["new-device"])
]


@pytest.mark.parametrize(("state", "form"), V3_TRUST_FORMS)
def test_e2ebackup_judges_the_v3_states(
    tmp_path: Path, state_dir: Path, state: dict[str, Any], form: str
) -> None:
    path = v3_state_copy(tmp_path, state)
    t = state["trusted"]
    before = write_v3_trust(state_dir, t, form) if t is not None else None
    repo = e2e_open(path)
    repo.expect_head = state["expect_head"]
    result = state["result"]
    recorded = trust_file(MANIFEST_V3["inputs"]["repo_id"], state_dir)
    if "error" in result:
        with pytest.raises(E2E_ERRORS[result["error"]]) as caught:
            list(repo.snapshots())
        if result["error"] == "NotTrusted":
            assert not isinstance(
                caught.value,
                e2ebackup.errors.RolledBack
                | e2ebackup.errors.HistoryForked
                | e2ebackup.errors.HistoryUnverifiable,
            )
        if result["error"] != "RepositoryCorrupted":
            assert "e2ebackup trust" in str(caught.value)
        after = recorded.read_bytes() if recorded.exists() else None
        assert after == before, "a refused state is not trusted"
        return
    # The merge, in the spec's order; listings show the same snapshots, oldest first.
    merged = repo.head()
    assert merged.snapshots == result["snapshots"]
    assert sorted(map(list, dict(merged.dropped).items())) == result["dropped"]
    listed = [sid for sid, _ in repo.snapshots()]
    assert sorted(listed) == sorted(result["snapshots"])
    assert repo.find_snapshot("latest")[0] == result["latest"]
    # The device now trusts the merged heads at the top seq.
    trusted = json.loads(recorded.read_text("utf-8"))
    assert trusted["seq"] == result["seq"]
    assert sorted(map(list, trusted["heads"])) == sorted(result["heads"])
    for n, sid in enumerate(result["snapshots"]):
        restore(repo, sid, str(tmp_path / f"out-{n}"))
        assert on_disk(tmp_path / f"out-{n}") == V3_TREES[sid], sid


def test_e2ebackup_backs_up_into_the_v3_vector(tmp_path: Path) -> None:
    """e2ebackup commits on the vector's top head; the reference reads its head and snapshot.
    Its file holds the data that only condemned packs hold: a writer MUST NOT deduplicate
    against those, so the new snapshot's blobs are in live packs."""
    path = tmp_path / "repo"
    shutil.copytree(REPO_V3_VECTOR / "repo", path)
    latest = MANIFEST_V3["latest"]
    download = ref.Repository.open(path, password=PASSWORD).restore(latest)["download.bin"]
    assert isinstance(download, bytes)
    src = tmp_path / "source"
    src.mkdir()
    (src / "download.bin").write_bytes(download)
    sid, _ = backup(e2e_open(path), [str(src)])
    top = MANIFEST_V3["heads"][-1]
    r = ref.Repository.open(
        path, password=PASSWORD, trusted_heads=(top["seq"], [(top["name"], top["sha256"])])
    )
    [mine] = r.merged
    assert mine.seq == top["seq"] + 1
    assert mine.parents == ((top["seq"], top["sha256"]),)
    assert r.snapshot_ids() == [*V3_LISTED, sid]
    assert r.restore(sid) == {"source": "dir", "source/download.bin": download}
    index = r.index()
    for _, entry in r.walk(sid):
        for blob in entry.get("content", []):
            assert index[bytes.fromhex(blob)][0] not in r.condemned, (
                "deduplicated on a condemned pack"
            )
    assert r.check() == []


def test_v3_restore_prefers_live_packs(tmp_path: Path) -> None:
    """A blob held by a condemned pack and, stored again by a later backup (a writer MUST NOT
    deduplicate against condemned packs), by a live one: a restore reads the live copy, so a
    damaged condemned copy does not matter."""
    w = ref.Writer(
        tmp_path / "repo",
        data_key=os.urandom(32),
        repo_id=os.urandom(16),
        rand=lambda _purpose, n: os.urandom(n),
        chunker=(256, 1024, 4096),
        version=3,
    )
    w.init([CRAFT_SLOT])
    t = 1764201600.0
    first = w.backup({"f": ref.File(PLAIN)}, time=t, started=t, paths=["/src"])
    w.forget(first, time=t + 1)
    w.prune(time=t + 2)
    second = w.backup({"f": ref.File(PLAIN)}, time=t + 3, started=t + 3, paths=["/src"])
    r = ref.Repository.open(w.root, password=PASSWORD)
    assert r.snapshot_ids() == [second]
    index = r.index()
    assert len(r.condemned) == 2  # the first backup's data pack and tree pack
    blob = ref.blob_id(r.keys.blob_id, PLAIN)
    live_pack, _ = index[blob]
    assert live_pack not in r.condemned, "the second backup stored the blob again"
    copies = [
        (pack, entry)
        for pack in r.condemned
        for entry in ref.parse_pack(r.keys, r.repo_id, pack, r.pack(pack))
        if entry.id == blob
    ]
    assert len(copies) == 1
    pack, entry = copies[0]
    flip(w.root / ref.pack_object_name(pack), entry.offset + entry.length // 2)
    assert ref.Repository.open(w.root, password=PASSWORD).restore() == {"f": PLAIN}
    restore(e2e_open(w.root), "latest", str(tmp_path / "out"))
    assert (tmp_path / "out" / "f").read_bytes() == PLAIN


def test_v3_deleted_condemned_pack_is_not_damage(tmp_path: Path) -> None:
    """A prune past the grace period (0 here) deletes condemned packs but leaves them listed,
    condemned, in its index: a pack missing from the storage is then not damage; the next
    prune drops the listing."""
    w = ref.Writer(
        tmp_path / "repo",
        data_key=os.urandom(32),
        repo_id=os.urandom(16),
        rand=lambda _purpose, n: os.urandom(n),
        chunker=(256, 1024, 4096),
        version=3,
    )
    w.init([CRAFT_SLOT])
    t = 1764201600.0
    first = w.backup({"f": ref.File(PLAIN)}, time=t, started=t, paths=["/src"])
    w.backup({"g": ref.File(b"kept\n" * 50)}, time=t + 1, started=t + 1, paths=["/src2"])
    w.forget(first, time=t + 2)
    w.prune(time=t + 3, grace=0)
    assert not (w.root / f"snapshots/{first}").exists()
    r = ref.Repository.open(w.root, password=PASSWORD)
    r.index()
    assert r.condemned
    assert not any((w.root / ref.pack_object_name(p)).exists() for p in r.condemned)
    assert r.check() == []
    assert r.restore() == {"g": b"kept\n" * 50}
    repo = e2e_open(w.root)
    restore(repo, "latest", str(tmp_path / "out"))
    assert (tmp_path / "out" / "g").read_bytes() == b"kept\n" * 50
    report = verify(repo, read_data=True)
    assert report.ok, report.errors
    w.prune(time=t + 4, grace=0)
    r = ref.Repository.open(w.root, password=PASSWORD)
    r.index()
    assert r.condemned == {}


def test_e2ebackup_forget_and_prune_read_by_the_reference(tmp_path: Path) -> None:
    """In a version-3 repository e2ebackup's forget writes a tombstone (the snapshot object
    stays until a prune past the grace period) and its prune condemns what nothing uses; the
    reference reads both."""
    src = tmp_path / "source"
    src.mkdir()
    (src / "a.txt").write_bytes(b"first version\n" * 100)
    path = tmp_path / "repo"
    repo = Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST, chunker=SMALL_CHUNKS)
    old, _ = backup(repo, [str(src)])
    (src / "a.txt").write_bytes(b"second version\n" * 100)
    new, _ = backup(repo, [str(src)])
    before = ref.Repository.open(path, password=PASSWORD).head
    forget(repo, keep_last=1, prune=True)
    r = ref.Repository.open(path, password=PASSWORD)
    [top] = r.merged
    assert top.seq > before.seq
    reached, gaps = r.reach(r.merged)
    assert before.hash in reached
    assert not gaps
    assert r.snapshot_ids() == [new]
    assert f"snapshots/{old}" in r.dropped
    assert (path / "snapshots" / old).is_file(), "deleted only after the grace period"
    r.index()
    assert r.condemned, "the first snapshot's packs are condemned, not deleted"
    assert all((path / ref.pack_object_name(p)).is_file() for p in r.condemned)
    assert r.restore() == {"source": "dir", "source/a.txt": b"second version\n" * 100}
    assert r.check() == []


def test_e2ebackup_head_chain_read_by_the_reference(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heads e2ebackup writes (format version 3) name their parents; the reference, trusting the
    first head, follows them; an older copy into which another device backed up hides the head
    this device trusts: the reference refuses it."""
    src = tmp_path / "source"
    src.mkdir()
    (src / "a.txt").write_text("one")
    path = tmp_path / "repo"
    repo = Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST, chunker=SMALL_CHUNKS)
    first = ref.Repository.open(path, password=PASSWORD).head
    assert first.seq == 0
    assert first.name is not None
    assert first.hash is not None
    backup(repo, [str(src)])
    older = tmp_path / "older"
    shutil.copytree(path, older)
    (src / "a.txt").write_text("two")
    backup(repo, [str(src)])
    forget(repo, keep_last=1)
    r = ref.Repository.open(path, password=PASSWORD, trusted_heads=(0, [(first.name, first.hash)]))
    assert r.version == 4
    assert r.head.seq == 3
    heads = [r.read_head_v3(n) for _, n in r.heads()]
    assert [h.seq for h in heads] == [0, 1, 2, 3]
    assert [h.parents for h in heads] == [()] + [((h.seq, str(h.hash)),) for h in heads[:-1]]
    theirs, seq2 = r.head, heads[2]
    assert theirs.hash is not None
    assert seq2.name is not None
    assert seq2.hash is not None
    # Another device, shown the older copy (seq 1), backs up into it: a seq 2 of its own.
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "other-device"))
    backup(e2e_open(older), [str(src)])
    assert ref.Repository.open(older, password=PASSWORD).head.seq == 2
    with pytest.raises(ref.Forked):  # the seq-2 head this device trusts is hidden
        ref.Repository.open(older, password=PASSWORD, trusted_heads=(2, [(seq2.name, seq2.hash)]))
    with pytest.raises(ref.Rollback):
        ref.Repository.open(
            older, password=PASSWORD, trusted_heads=(3, [(str(theirs.name), theirs.hash)])
        )
    with pytest.raises(ref.HistoryRefused):
        ref.Repository.open(older, password=PASSWORD, expect_head=theirs.hash)


def test_heads_are_kept_up_to_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heads_module, "KEEP_HEADS", 3)
    src = tmp_path / "source"
    src.mkdir()
    path = tmp_path / "repo"
    repo = Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST, chunker=SMALL_CHUNKS)
    for n in range(5):
        (src / "a.txt").write_text(str(n))
        backup(repo, [str(src)])
    seqs = [int(n.split("/")[1][:16], 16) for n in ref.object_names(path, "heads/")]
    assert seqs == [3, 4, 5]
    r = ref.Repository.open(path, password=PASSWORD)
    assert r.head.seq == 5
    reached, gaps = r.reach(r.merged)
    assert sorted(h.seq for h in reached.values() if h is not None) == [3, 4, 5]
    assert gaps == {2}


# ---- the chunker -----------------------------------------------------------------------------


def case_data(case: dict[str, Any]) -> bytes:
    data_of: Callable[[dict[str, Any]], bytes] = load_generator().data_of
    data = data_of(case["data"])
    assert sha256(data) == case["data"]["sha256"]
    return data


@pytest.mark.parametrize("gear", CHUNKER_DOC["gear"], ids=lambda g: g["name"])
def test_reference_gear_table(gear: dict[str, Any]) -> None:
    key = bytes.fromhex(gear["gear_key"])
    if "data_key" in gear:
        assert ref.Keys.derive(bytes.fromhex(gear["data_key"])).chunker == key
    table = ref.gear_table(key)
    raw = b"".join(g.to_bytes(8, "little") for g in table)
    assert raw[:64].hex() == gear["stream_head"]
    assert sha256(raw) == gear["stream_sha256"]
    for i, value in gear["entries"].items():
        assert table[int(i)] == int(value)


def e2e_cuts(case: dict[str, Any], data: bytes, pieces: list[int]) -> list[int]:
    """e2ebackup's cut offsets (made absolute) when ``data`` is fed in pieces of these sizes."""
    c = Chunker(
        bytes.fromhex(case["gear_key"]),
        min_size=case["min"],
        avg_size=case["avg"],
        max_size=case["max"],
    )
    cuts, pos = [], 0
    for size in pieces:
        piece = data[pos : pos + size]
        cuts += [pos + off for off in c.feed(piece)]
        pos += len(piece)
    assert pos == len(data)
    return cuts


def piece_sizes(length: int, seed: str) -> Iterator[list[int]]:
    yield [length]
    rng = random.Random(seed)
    for biggest in (7, 4096, 100_000):
        if length // biggest > 10_000:
            continue  # tiny pieces of the megabyte case: too slow through Python
        sizes: list[int] = []
        total = 0
        while total < length:
            sizes.append(rng.randint(1, biggest))
            total += sizes[-1]
        yield sizes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_e2ebackup_chunker_matches_the_vectors(case: dict[str, Any]) -> None:
    data = case_data(case)
    for sizes in piece_sizes(len(data), case["id"]):
        assert e2e_cuts(case, data, sizes) == case["cuts"], len(sizes)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["data"]["length"] <= 70_000], ids=lambda c: c["id"]
)
def test_reference_chunker_matches_the_vectors(case: dict[str, Any]) -> None:
    data, key = case_data(case), bytes.fromhex(case["gear_key"])
    params = (case["min"], case["avg"], case["max"])
    assert ref.cut_points(key, data, *params) == case["cuts"]
    assert ref.chunk_boundaries(key, data, *params) == case["chunks"]
    # The chunks are the cuts plus the end of the data, unless the rule cut there already.
    cuts = case["cuts"]
    assert case["chunks"] == (cuts if cuts and cuts[-1] == len(data) else [*cuts, len(data)])


def test_chunkers_agree_on_random_inputs() -> None:
    rng = random.Random(20261126)
    for _ in range(25):
        key = rng.randbytes(32)
        avg = 1 << rng.randint(7, 11)
        mn = rng.randint(64, avg - 1)
        mx = rng.randint(avg + 1, 4 * avg)
        length = rng.randint(0, 12_000)
        data = rng.randbytes(length) if rng.random() < 0.8 else bytes([rng.randrange(256)]) * length
        case = {"gear_key": key.hex(), "min": mn, "avg": avg, "max": mx}
        expected = ref.cut_points(key, data, mn, avg, mx)
        assert e2e_cuts(case, data, [length]) == expected, (mn, avg, mx, length)


# ---- repositories made by e2ebackup, read by the reference ----------------------------------

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def make_source(root: Path) -> None:
    """Files of various sizes around the chunker's limits, a symlink, an empty folder, a
    JPEG-looking file that compresses well, names that are not ASCII or not UTF-8."""
    rng = random.Random(7)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for size in (0, 1, 255, 256, 1023, 4096, 4097, 20_000):
        (root / f"random-{size}.bin").write_bytes(rng.randbytes(size))
    (root / "sub" / "text.txt").write_bytes(b"compressible text, said the writer\n" * 1500)
    (root / "sub" / "deeper" / "zeros").write_bytes(bytes(9000))
    (root / "photo.jpg").write_bytes(JPEG_HEAD + b"\x00" * 6000)
    (root / "small.jpg").write_bytes(JPEG_HEAD + b"\x00" * 200)  # one chunk
    (root / "ünïcödé 🎉.txt").write_bytes("ünïcödé".encode())
    with open(os.fsencode(root) + b"/latin1-\xe9t\xe9", "wb") as f:
        f.write(b"not utf-8")
    os.symlink("sub/text.txt", root / "link")
    os.chmod(root / "random-1.bin", 0o600)


def expected_from_disk(root: Path) -> ref.Tree:
    """What a restore of a snapshot of ``root`` gives, rooted at its base name."""
    out: ref.Tree = {os.fsdecode(root.name): "dir"}
    base = os.fsencode(root.parent)
    for folder, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs + files:
            full = os.path.join(folder, name)
            path = os.fsdecode(os.path.relpath(full, base))
            if os.path.islink(full):
                out[path] = ("symlink", os.fsdecode(os.readlink(full)))
            elif os.path.isdir(full):
                out[path] = "dir"
            else:
                with open(full, "rb") as f:
                    out[path] = f.read()
    return out


@pytest.fixture
def e2e_repo(tmp_path: Path) -> tuple[Path, Path, RecoveryKey]:
    """A repository made by e2ebackup with a password and a recovery key, one backup."""
    src = tmp_path / "source"
    src.mkdir()
    make_source(src)
    path = tmp_path / "e2e-repo"
    key = RecoveryKey(os.urandom(32))
    repo = Repository.init(
        LocalStorage(path),
        password=PASSWORD,
        recovery_key=key,
        kdf=FAST,
        chunker=SMALL_CHUNKS,
    )
    backup(repo, [str(src)])
    return path, src, key


def test_reference_reads_e2ebackup_repository(e2e_repo: tuple[Path, Path, RecoveryKey]) -> None:
    path, src, key = e2e_repo
    r = ref.Repository.open(path, password=PASSWORD)
    assert ref.Repository.open(path, recovery_key=key.key).keys == r.keys
    assert r.chunker == (256, 1024, 4096)
    assert r.restore() == expected_from_disk(src)
    assert r.check() == []
    # Exactly the fields the spec lists.
    assert set(r.config) == {"version", "chunker"}
    assert set(r.config["chunker"]) == {"min", "avg", "max"}
    assert r.head.name is not None
    assert set(r.metadata(r.head.name)) == {
        "seq",
        "time",
        "parents",
        "snapshots",
        "indexes",
        "dropped",
    }
    assert r.config["version"] == 4
    [sid] = r.snapshot_ids()
    assert set(r.snapshot(sid)) == {
        "id",
        "time",
        "started",
        "hostname",
        "username",
        "paths",
        "tree",
        "parent",
        "tags",
        "stats",
    }
    for index in r.head.indexes:
        packs = r.metadata(index)["packs"]
        assert all(set(pack) == {"id", "size", "blobs"} for pack in packs)
    common = {"name", "type", "mode", "mtime_ns", "ctime_ns", "ino", "uid", "gid"}
    extra = {"file": {"size", "content"}, "dir": {"subtree"}, "symlink": {"target"}}
    for p, entry in r.walk():
        assert set(entry) == common | extra[entry["type"]], p
    # Object names: random 32-byte names in lowercase hex, packs under their first two digits.
    for name in ref.object_names(path, ""):
        parts = name.split("/")
        if parts[0] in ("keys", "index", "snapshots"):
            assert ref.HEX64.fullmatch(parts[1]), name
        elif parts[0] == "data":
            assert ref.HEX64.fullmatch(parts[2]), name
            assert parts[1] == parts[2][:2], name
        else:
            assert name == "config" or ref.HEAD_NAME.fullmatch(name), name


def test_reference_reads_e2ebackup_lock(e2e_repo: tuple[Path, Path, RecoveryKey]) -> None:
    path, _, _ = e2e_repo
    lock = e2e_open(path).lock(exclusive=True)
    lock.acquire()
    try:
        r = ref.Repository.open(path, password=PASSWORD)
        [name] = ref.object_names(path, "locks/")
        assert ref.HEX64.fullmatch(name.removeprefix("locks/"))
        doc = r.metadata(name)
        assert set(doc) == {"host", "pid", "time", "exclusive"}
        assert doc["pid"] == os.getpid()
        assert doc["exclusive"] is True
    finally:
        lock.release()
    assert ref.object_names(path, "locks/") == []


def test_older_heads_are_kept_as_a_chain(e2e_repo: tuple[Path, Path, RecoveryKey]) -> None:
    path, src, _ = e2e_repo
    (src / "random-1.bin").write_bytes(b"changed")
    backup(e2e_open(path), [str(src)])
    r = ref.Repository.open(path, password=PASSWORD)
    heads = [r.read_head_v3(name) for _, name in r.heads()]
    assert [h.seq for h in heads] == [0, 1, 2]
    assert [h.parents for h in heads] == [(), ((0, heads[0].hash),), ((1, heads[1].hash),)]


def test_e2ebackup_chunks_compresses_and_packs_as_specified(
    e2e_repo: tuple[Path, Path, RecoveryKey],
) -> None:
    """Chunk boundaries and ids follow the spec; JPEG-looking data is stored without zstd,
    compressible data with it, random data stored; data and tree blobs in separate packs."""
    path, src, _ = e2e_repo
    r = ref.Repository.open(path, password=PASSWORD)
    flags: dict[str, list[int]] = {}
    for p, entry in r.walk():
        if entry["type"] != "file":
            continue
        data = (src.parent / os.fsencode(p).decode("utf-8", "surrogateescape")).read_bytes()
        chunks = ref.split(r.keys.chunker, data, *r.chunker)
        ids = [ref.blob_id(r.keys.blob_id, c).hex() for c in chunks]
        assert entry["content"] == ids, p
        flags[p] = [r.blob_body(ref.KIND_DATA, bytes.fromhex(i))[0] for i in ids]
    # Sniffing is per blob: the chunk that starts with the JPEG magic is stored as it is (the
    # zeros after it, in later chunks, are not JPEG-looking data and may be compressed).
    assert flags["source/small.jpg"] == [ref.FLAG_STORED]
    assert flags["source/photo.jpg"][0] == ref.FLAG_STORED
    # Only the file's last chunk may be shorter than the chunker minimum (256 bytes); a tail of a
    # few bytes does not shrink under zstd and is rightly stored as it is.
    text_chunks = ref.split(r.keys.chunker, (src / "sub" / "text.txt").read_bytes(), *r.chunker)
    assert all(len(c) >= 256 for c in text_chunks[:-1])
    assert set(flags["source/sub/text.txt"][:-1]) <= {ref.FLAG_ZSTD}
    if len(text_chunks[-1]) >= 256:
        assert flags["source/sub/text.txt"][-1] == ref.FLAG_ZSTD
    assert set(flags["source/random-20000.bin"]) == {ref.FLAG_STORED}
    assert flags["source/random-0.bin"] == [ref.FLAG_STORED]  # one empty chunk
    for blob, (pack, where) in r.index().items():
        assert where.id == blob
        header = ref.parse_pack(r.keys, r.repo_id, pack, r.pack(pack))
        assert {e.kind for e in header} == {where.kind}, "data and tree blobs in separate packs"


# ---- tampering ---------------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def latest_data_pack(path: Path) -> tuple[str, ref.PackEntry]:
    """A pack and a data blob in it that the latest snapshot of ``path`` uses."""
    r = ref.Repository.open(path, password=PASSWORD)
    for _, e in r.walk():
        if e["type"] == "file" and e["content"]:
            return r.index()[bytes.fromhex(e["content"][-1])]
    raise AssertionError("no file content")


def assert_both_refuse_restore(path: Path, tmp_path: Path) -> None:
    with pytest.raises(ref.Corrupt):
        ref.Repository.open(path, password=PASSWORD).restore()
    assert ref.Repository.open(path, password=PASSWORD).check() != []
    repo = e2e_open(path)
    with pytest.raises(RepositoryCorrupted):
        restore(repo, "latest", str(tmp_path / "out"))
    assert not verify(repo, read_data=True).ok


def test_flipped_blob_byte_is_rejected(tmp_path: Path) -> None:
    path = vector_copy(tmp_path)
    pack, entry = latest_data_pack(path)
    flip(path / ref.pack_object_name(pack), entry.offset + entry.length // 2)
    assert_both_refuse_restore(path, tmp_path)


def test_flipped_pack_header_byte_is_rejected(tmp_path: Path) -> None:
    path = vector_copy(tmp_path)
    pack, _ = latest_data_pack(path)
    p = path / ref.pack_object_name(pack)
    flip(p, p.stat().st_size - 20)  # inside the sealed header
    r = ref.Repository.open(path, password=PASSWORD)
    assert any(pack in problem for problem in r.check())
    assert not verify(e2e_open(path), read_data=True).ok


def test_pack_header_lengths_must_add_up(tmp_path: Path) -> None:
    """A pack with a byte appended: every blob and the header still authenticate (the header
    is found from the end), but the lengths no longer add up to the pack's size."""
    path = vector_copy(tmp_path)
    pack, _ = latest_data_pack(path)
    p = path / ref.pack_object_name(pack)
    data = p.read_bytes()
    header_length = struct.unpack(">I", data[-4:])[0]
    sealed_header = data[-4 - header_length : -4]
    p.write_bytes(data[: -4 - header_length] + b"\x00" + sealed_header + data[-4:])
    r = ref.Repository.open(path, password=PASSWORD)
    assert any("add up" in problem for problem in r.check())
    assert not verify(e2e_open(path), read_data=True).ok


def test_swapped_snapshot_is_rejected(tmp_path: Path) -> None:
    """Snapshot 1's object stored under snapshot 2's name: its context names another object."""
    path = vector_copy(tmp_path)
    first, second = LISTED
    (path / "snapshots" / second).write_bytes((path / "snapshots" / first).read_bytes())
    r = ref.Repository.open(path, password=PASSWORD)
    with pytest.raises(ref.Corrupt):
        r.snapshot(second)
    with pytest.raises(RepositoryCorrupted):
        dict(e2e_open(path).snapshots())
    with pytest.raises(RepositoryCorrupted):
        restore(e2e_open(path), second, str(tmp_path / "out"))


def test_deleted_listed_snapshot_is_reported(tmp_path: Path) -> None:
    path = vector_copy(tmp_path)
    first, second = LISTED
    (path / "snapshots" / second).unlink()
    r = ref.Repository.open(path, password=PASSWORD)
    with pytest.raises(ref.SnapshotDeleted):
        r.restore(second)
    assert hashed(r.restore(first)) == without_meta(manifest_tree(first))
    assert r.missing() == [second]
    assert r.latest() == first
    # Listings report it and go on; latest is the newest snapshot still stored.
    with pytest.warns(RuntimeWarning, match=f"{second[:8]} is listed but missing"):
        assert list(dict(e2e_open(path).snapshots())) == [first]
    with pytest.warns(RuntimeWarning, match="missing"):
        assert e2e_open(path).find_snapshot("latest")[0] == first
    with pytest.raises(RepositoryCorrupted, match="missing"):
        restore(e2e_open(path), second, str(tmp_path / "out"))


def test_replayed_forgotten_snapshot_is_not_offered(tmp_path: Path) -> None:
    src = tmp_path / "source"
    src.mkdir()
    (src / "a.txt").write_bytes(b"first version\n" * 100)
    path = tmp_path / "repo"
    repo = Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST, chunker=SMALL_CHUNKS)
    old, _ = backup(repo, [str(src)])
    saved = (path / "snapshots" / old).read_bytes()
    (src / "a.txt").write_bytes(b"second version\n" * 100)
    new, _ = backup(repo, [str(src)])
    forget(repo, keep_last=1, prune=True, grace=0)
    assert not (path / "snapshots" / old).exists(), "prune deletes forgotten snapshots"
    (path / "snapshots" / old).write_bytes(saved)  # the storage replays it

    r = ref.Repository.open(path, password=PASSWORD)
    assert r.snapshot_ids() == [new]
    with pytest.raises(ref.SnapshotNotFound):
        r.restore(old)
    assert r.restore()["source/a.txt"] == b"second version\n" * 100
    repo = e2e_open(path)
    assert [sid for sid, _ in repo.snapshots()] == [new]
    assert repo.find_snapshot("latest")[0] == new
    with pytest.raises(e2ebackup.errors.E2EBackupError):
        restore(repo, old, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_rolled_back_head_is_refused(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vector keeps its previous head: deleting the newest rolls the repository back."""
    path = vector_copy(tmp_path)
    e2e_open(path).head()  # this device sees seq 2
    assert state_dir.exists()
    (path / MANIFEST["head"]["name"]).unlink()

    seen = MANIFEST["head"]["seq"]
    with pytest.raises(ref.Rollback):
        ref.Repository.open(path, password=PASSWORD, known_seq=seen)
    older = ref.Repository.open(path, password=PASSWORD)
    assert older.head.seq == seen - 1
    assert older.snapshot_ids() == LISTED[:1]
    with pytest.raises(RepositoryCorrupted, match="rolled back"):
        e2e_open(path).head()
    # Another device that never saw seq 2 cannot tell.
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "other-device"))
    assert [sid for sid, _ in e2e_open(path).snapshots()] == LISTED[:1]


def test_state_from_before_format_2_is_a_seq_floor(tmp_path: Path, state_dir: Path) -> None:
    """A device upgraded from a version that kept only the highest seq seen (the file ``head``)
    still refuses a rollback, then trusts the newest head by its hash."""
    path = vector_copy(tmp_path)
    legacy = state_dir / MANIFEST["inputs"]["repo_id"] / "head"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(str(MANIFEST["head"]["seq"] + 1))
    with pytest.raises(e2ebackup.errors.RolledBack):
        e2e_open(path).head()
    legacy.write_text(str(MANIFEST["head"]["seq"]))
    repo = e2e_open(path)
    assert repo.head().name == MANIFEST["head"]["name"]
    trusted = repo.trusted_head()
    assert trusted is not None
    assert trusted.digest == sha256((path / MANIFEST["head"]["name"]).read_bytes())


def test_head_seq_must_match_its_name(tmp_path: Path) -> None:
    """A correctly sealed head whose JSON seq differs from the seq in its name."""
    path = vector_copy(tmp_path)
    data_key = bytes.fromhex(MANIFEST["inputs"]["data_key"])
    repo_id = bytes.fromhex(MANIFEST["inputs"]["repo_id"])
    seq = MANIFEST["head"]["seq"] + 1
    name = f"heads/{seq:016x}-{'ab' * 32}"
    doc = {"seq": seq + 1, "snapshots": LISTED, "indexes": []}
    r = ref.Repository.open(path, password=PASSWORD)
    doc["indexes"] = r.head.indexes
    sealed = ref.seal_metadata(ref.Keys.derive(data_key).metadata, repo_id, name, doc, bytes(24))
    (path / name).write_bytes(sealed)
    with pytest.raises(ref.Corrupt, match="does not match"):
        ref.Repository.open(path, password=PASSWORD)
    with pytest.raises(RepositoryCorrupted):
        e2e_open(path).head()
    # The same head with a matching seq is accepted by both.
    (path / name).unlink()
    doc["seq"] = seq
    sealed = ref.seal_metadata(ref.Keys.derive(data_key).metadata, repo_id, name, doc, bytes(24))
    (path / name).write_bytes(sealed)
    assert ref.Repository.open(path, password=PASSWORD).head.seq == seq
    assert e2e_open(path).head().seq == seq


def test_moved_metadata_object_is_rejected(tmp_path: Path) -> None:
    """An index object copied under another index name does not open."""
    path = vector_copy(tmp_path)
    r = ref.Repository.open(path, password=PASSWORD)
    a, b = r.head.indexes[:2]
    (path / b).write_bytes((path / a).read_bytes())
    with pytest.raises(ref.Corrupt):
        ref.Repository.open(path, password=PASSWORD).index()
    with pytest.raises(RepositoryCorrupted):
        restore(e2e_open(path), "latest", str(tmp_path / "out"))


# ---- malformed repositories made with the reference writer ----------------------------------

CRAFT_SLOT = sref.PasswordSlot(PASSWORD, sref.Argon2id(256, 1, 1), b"s" * 16, b"w" * 24, 1764115200)
# Shorter than the crafted repositories' chunker minimum (256): one chunk whatever the random
# chunker key (at 720 bytes, about one key in 200 cut it in two, and the malformed-body cases
# below then had no blob to malform).
PLAIN = b"hello, repository " * 12


def craft(
    path: Path,
    roots: dict[str, ref.Node_],
    writer: type[ref.Writer] = ref.Writer,
) -> ref.Writer:
    """A repository with one snapshot, made by (a subclass of) the reference writer."""
    w = writer(
        path,
        data_key=os.urandom(32),
        repo_id=os.urandom(16),
        rand=lambda _purpose, n: os.urandom(n),
        chunker=(256, 1024, 4096),
    )
    w.init([CRAFT_SLOT])
    w.backup(roots, time=1764201600.0, started=1764201599.0, paths=["/src"])
    return w


def both_refuse(path: Path, tmp_path: Path, ref_error: type[Exception] = ref.Corrupt) -> None:
    with pytest.raises(ref_error):
        ref.Repository.open(path, password=PASSWORD).restore()
    with pytest.raises(e2ebackup.errors.E2EBackupError):
        restore(e2e_open(path), "latest", str(tmp_path / "out"))


def test_crafted_repository_opens_in_both(tmp_path: Path) -> None:
    """The control for the cases below: the same writer, nothing malformed."""
    tree: dict[str, ref.Node_] = {"d": ref.Dir({"a": ref.File(PLAIN), "b": ref.File(b"")})}
    craft(tmp_path / "repo", tree)
    assert ref.Repository.open(tmp_path / "repo", password=PASSWORD).restore() == (
        ref.expected_tree(tree)
    )
    restore(e2e_open(tmp_path / "repo"), "latest", str(tmp_path / "out"))
    assert (tmp_path / "out" / "d" / "a").read_bytes() == PLAIN


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../escape"])
def test_bad_entry_names_are_rejected(tmp_path: Path, name: str) -> None:
    craft(tmp_path / "repo", {"d": ref.Dir({name: ref.File(b"pwned")})})
    both_refuse(tmp_path / "repo", tmp_path)
    assert not (tmp_path / "escape").exists()


class DuplicateNames(ref.Writer):
    def tree_bytes(self, entries: list[dict[str, Any]]) -> bytes:
        if len(entries) == 2:
            entries = [entries[0], {**entries[1], "name": entries[0]["name"]}]
        return super().tree_bytes(entries)


def test_duplicate_entry_names_are_rejected(tmp_path: Path) -> None:
    craft(
        tmp_path / "repo",
        {"d": ref.Dir({"a": ref.File(b"1"), "b": ref.File(b"2")})},
        DuplicateNames,
    )
    both_refuse(tmp_path / "repo", tmp_path)


class WrongSize(ref.Writer):
    def tree_bytes(self, entries: list[dict[str, Any]]) -> bytes:
        return super().tree_bytes(
            [{**e, "size": e["size"] + 1} if e["type"] == "file" else e for e in entries]
        )


def test_file_size_must_match_its_content(tmp_path: Path) -> None:
    craft(tmp_path / "repo", {"f": ref.File(b"hello")}, WrongSize)
    both_refuse(tmp_path / "repo", tmp_path)


def _zstd(data: bytes, **kwargs: Any) -> bytes:
    return zstandard.ZstdCompressor(**kwargs).compress(data)


BAD_BODIES: dict[str, Callable[[bytes], bytes]] = {
    "zstd-longer-than-stated": lambda p: (
        b"\x01" + struct.pack(">I", len(p)) + _zstd(p + b"more", write_content_size=False)
    ),
    "zstd-content-size-longer": lambda p: b"\x01" + struct.pack(">I", len(p)) + _zstd(p + b"x"),
    "zstd-then-garbage": lambda p: b"\x01" + struct.pack(">I", len(p)) + _zstd(p) + b"garbage",
    "stored-then-garbage": lambda p: b"\x00" + struct.pack(">I", len(p)) + p + b"garbage",
    "stored-shorter-than-stated": lambda p: b"\x00" + struct.pack(">I", len(p) + 1) + p,
    "flags-0x02": lambda p: b"\x02" + struct.pack(">I", len(p)) + p,
    "length-little-endian": lambda p: b"\x00" + struct.pack("<I", len(p)) + p,
    "stated-over-64-MiB": lambda p: b"\x00" + struct.pack(">I", 64 * 1024 * 1024 + 1) + p,
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_malformed_blob_bodies_are_rejected(tmp_path: Path, case: str) -> None:
    """Bodies that authenticate (the writer seals them) but do not decode exactly."""

    malformed: list[bytes] = []

    class BadBody(ref.Writer):
        def body(self, kind: int, plaintext: bytes) -> bytes:
            if kind == ref.KIND_DATA and plaintext == PLAIN:
                malformed.append(plaintext)
                return BAD_BODIES[case](plaintext)
            return super().body(kind, plaintext)

    craft(tmp_path / "repo", {"f": ref.File(PLAIN)}, BadBody)
    assert malformed, "the crafted repository holds no malformed blob"
    both_refuse(tmp_path / "repo", tmp_path)
    assert not verify(e2e_open(tmp_path / "repo"), read_data=True).ok


def test_snapshot_id_must_match_its_name(tmp_path: Path) -> None:
    w = craft(tmp_path / "repo", {"f": ref.File(b"x")})
    name = f"snapshots/{w.snapshots[0]}"
    doc = ref.Repository.open(w.root, password=PASSWORD).metadata(name)
    doc["id"] = "ab" * 32
    (w.root / name).write_bytes(w.seal_metadata(name, doc))
    both_refuse(w.root, tmp_path)


def test_index_pack_size_must_match(tmp_path: Path) -> None:
    w = craft(tmp_path / "repo", {"f": ref.File(b"x")})
    name = w.indexes[0]
    doc = ref.Repository.open(w.root, password=PASSWORD).metadata(name)
    doc["packs"][0]["size"] += 1
    (w.root / name).write_bytes(w.seal_metadata(name, doc))
    assert any("index says" in p for p in ref.Repository.open(w.root, password=PASSWORD).check())
    assert not verify(e2e_open(w.root), read_data=True).ok


def test_undecryptable_newest_head_is_refused(tmp_path: Path) -> None:
    """No fallback to an older head: that would be a rollback."""
    w = craft(tmp_path / "repo", {"f": ref.File(b"x")})
    (w.root / f"heads/{0xFF:016x}-{'cd' * 32}").write_bytes(os.urandom(200))
    with pytest.raises(ref.Corrupt):
        ref.Repository.open(w.root, password=PASSWORD)
    with pytest.raises(RepositoryCorrupted):
        e2e_open(w.root).head()


def test_key_object_with_trailing_bytes_is_damaged(tmp_path: Path) -> None:
    w = craft(tmp_path / "repo", {"f": ref.File(b"x")})
    key = next((w.root / "keys").iterdir())
    key.write_bytes(key.read_bytes() + b"\x00")
    with pytest.raises(ref.CorruptKeySlot):
        ref.Repository.open(w.root, password=PASSWORD)
    with pytest.raises(e2ebackup.errors.CorruptKeySlot):
        e2e_open(w.root)


def test_unknown_config_version_is_refused(tmp_path: Path) -> None:
    w = craft(tmp_path / "repo", {"f": ref.File(b"x")})
    config = bytearray((w.root / "config").read_bytes())
    config[8] = 5
    (w.root / "config").write_bytes(bytes(config))
    with pytest.raises(ref.NotARepository):
        ref.Repository.open(w.root, password=PASSWORD)
    with pytest.raises(NotARepository):
        e2e_open(w.root)
    # A version-1 config relabelled as version 2: the version byte is authenticated.
    config[8] = 2
    (w.root / "config").write_bytes(bytes(config))
    with pytest.raises(ref.Corrupt):
        ref.Repository.open(w.root, password=PASSWORD)
    with pytest.raises(RepositoryCorrupted):
        e2e_open(w.root)


def test_v2_head_without_parent_is_refused(tmp_path: Path) -> None:
    """In a version-2 repository every head after the first names its parent: a head sealed
    without one (as a version-1 writer would write it) is refused by both."""

    class NoParent(ref.Writer):
        def seal_head(
            self, seq: int, snapshots: list[str], indexes: list[str], parent: str | None
        ) -> tuple[str, bytes]:
            name = f"heads/{seq:016x}-{self._name('head')}"
            doc = {"seq": seq, "snapshots": snapshots, "indexes": indexes}
            return name, self.seal_metadata(name, doc)

    w = NoParent(
        tmp_path / "repo",
        data_key=os.urandom(32),
        repo_id=os.urandom(16),
        rand=lambda _purpose, n: os.urandom(n),
        chunker=(256, 1024, 4096),
        version=2,
    )
    w.init([CRAFT_SLOT])
    w.backup({"f": ref.File(b"x")}, time=1764201600.0, started=1764201599.0, paths=["/src"])
    with pytest.raises(ref.Corrupt, match="parent"):
        ref.Repository.open(w.root, password=PASSWORD)
    with pytest.raises(RepositoryCorrupted, match="parent"):
        e2e_open(w.root).head()


# ---- e2ebackup writes into the vector repository, the reference reads it --------------------


def test_e2ebackup_backs_up_into_the_vector(tmp_path: Path) -> None:
    """e2ebackup adopts the interrupted backup's packs, adds a snapshot and a head; the
    reference reads all three snapshots."""
    path = vector_copy(tmp_path)
    src = tmp_path / "source"
    src.mkdir()
    make_source(src)
    repo = e2e_open(path)
    sid, stats = backup(repo, [str(src)])
    assert stats.packs_recovered == 2
    # The repository stays version 1; the new head names the vector's head as its parent.
    assert repo.config["version"] == 1
    assert repo.head().parent == sha256(
        (REPO_VECTOR / "repo" / MANIFEST["head"]["name"]).read_bytes()
    )
    r = ref.Repository.open(path, password=PASSWORD, known_seq=MANIFEST["head"]["seq"] + 1)
    assert r.snapshot_ids()[: len(LISTED)] == LISTED
    assert sid in r.snapshot_ids()
    assert UNLISTED[0] not in r.snapshot_ids()
    assert r.latest() == sid
    assert r.restore() == expected_from_disk(src)
    for old in LISTED:
        assert hashed(r.restore(old)) == without_meta(manifest_tree(old))
    assert r.check() == []
