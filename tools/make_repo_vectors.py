"""Generate the repository test vectors: tests/vectors/repo_v1/, repo_v2/, repo_v3/ and
tests/vectors/chunker_v1.json.

    python tools/make_repo_vectors.py            # rewrite them
    python tools/make_repo_vectors.py --check    # exit 1 if the committed files are out of date

repo_vN/repo/ is a small repository of format version N made by the minimal writer of
tests/reference/repo.py (written from docs/FORMAT.md alone, never e2ebackup itself);
repo_vN/manifest.json says how to open it and what every snapshot restores to. repo_v2 also
lists states of the storage (the repository with some heads removed and some of repo_v2/extra/
added: rolled back, forked...) and what a device that trusts or pins a given head must make of
each. repo_v3 is written by two writers committing at once (format version 3: heads merged,
tombstones, a straggler head, a condemned pack still read), with its own states and invalid
heads. chunker_v1.json holds gear-table values and cut
points of the keyed FastCDC chunker. Every key, salt, name and file byte comes from a fixed seed
and every time is fixed, so re-running produces byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from reference import (  # noqa: E402
    c2sp,
    repo as ref,
    sealed as sref,
)
from reference.sha256_ctr import sha256_ctr  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
REPO_VECTORS = "repo_v1"
REPO_V2_VECTORS = "repo_v2"
V2_SEED_PREFIX = "e2ebackup/repo_v2/"
CHUNKER_VECTORS = "chunker_v1.json"
SEED_PREFIX = "e2ebackup/repo_v1/"
CHUNKER_SEED_PREFIX = "e2ebackup/chunker_v1/"
REGENERATE = "python tools/make_repo_vectors.py"

PASSWORD = "correct horse battery staple"  # noqa: S105 (a test vector)
ARGON2_CHEAP = sref.Argon2id(memory_kib=256, iterations=1, parallelism=1)
CHUNKER = (256, 1024, 4096)
PACK_SIZE = 16 * 1024  # small, so that one backup makes several data packs
CREATED = 1764115200  # 2025-11-26T00:00:00Z
T0_NS = CREATED * 10**9


stream = sha256_ctr  # every byte of the vectors comes from here


def rnd(purpose: str, length: int) -> bytes:
    return stream(SEED_PREFIX + purpose, length)


def seeded(prefix: str) -> Callable[[str, int], bytes]:
    return lambda purpose, length: stream(prefix + purpose, length)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the repository ---------------------------------------------------------------------------

_ino = iter(range(1000, 10**6))


def meta(mode: int, minute: int) -> ref.Meta:
    t = T0_NS + minute * 60 * 10**9 + 123_456_789
    return ref.Meta(mode=mode, mtime_ns=t, ctime_ns=t + 1, ino=next(_ino), uid=1000, gid=1000)


def file(data: bytes, mode: int = 0o644, minute: int = 0) -> ref.File:
    return ref.File(data, meta(mode, minute))


def folder(entries: dict[str, ref.Node_], minute: int = 0) -> ref.Dir:
    return ref.Dir(entries, meta(0o755, minute))


def link(target: str) -> ref.Symlink:
    return ref.Symlink(target, meta(0o777, 0))


def readme(extra: bool) -> bytes:
    lines = [f"line {i:03d}: the quick brown fox jumps over the lazy dog\n" for i in range(120)]
    if extra:  # an edit in the middle: chunks before and after it are reused
        lines[60:60] = ["an inserted paragraph, which changes only the chunks around it\n"] * 3
    return "".join(lines).encode()


RANDOM = rnd("file/random.bin", 20000)
# A JPEG-looking file: writers store it without zstd, although it compresses well.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00" + b"not really a photo " * 300
NON_UTF8 = b"latin1-\xe9t\xe9".decode("utf-8", "surrogateescape")
UNICODE = "ünïcödé ñame 🎉.txt"


def project(second: bool) -> ref.Dir:
    entries: dict[str, ref.Node_] = {
        "README.md": file(readme(second), minute=2 if second else 1),
        "random.bin": file(RANDOM + (rnd("file/appended", 500) if second else b"")),
        "zeros.bin": file(bytes(10000)),  # cut at max only; its full chunks deduplicate
        "photo.jpg": file(JPEG),
        "empty": file(b""),
        "empty-dir": folder({}),
        "script.sh": file(b"#!/bin/sh\necho hello\n", 0o755),
        "private.key": file(b"-----BEGIN SECRET-----\n", 0o600),
        "link": link("README.md"),
        "dangling": link("does/not/exist"),
        UNICODE: file("ünïcödé\n".encode()),
        NON_UTF8: file(b"a name that is not UTF-8\n"),
        "src": folder(
            {
                "main.py": file(b"import lib.util\n\nprint(lib.util.answer())\n"),
                "lib": folder({"util.py": file(b"def answer():\n    return 42\n")}),
            }
        ),
    }
    if second:
        entries["new.txt"] = file(b"added in the second snapshot\n", minute=3)
    else:
        entries["copy-of-random.bin"] = file(RANDOM)  # deduplicated whole
    return folder(entries)


def notes() -> ref.File:
    return file(b"notes kept next to the project\n" * 10)


PATHS = ["/home/alice/project", "/home/alice/notes.txt"]


def slot_specs(
    rnd: Callable[[str, int], bytes] = rnd,
) -> tuple[sref.PasswordSlot, sref.RecoveryKeySlot]:
    pw = sref.PasswordSlot(
        password=PASSWORD,
        kdf=ARGON2_CHEAP,
        salt=rnd("slot/password/salt", 16),
        wrap_salt=rnd("slot/password/wrap-salt", c2sp.SALT_SIZE),
        created=CREATED,
        label="laptop",
    )
    rk = sref.RecoveryKeySlot(
        recovery_key=rnd("slot/recovery-key/key", 32),
        wrap_salt=rnd("slot/recovery-key/wrap-salt", c2sp.SALT_SIZE),
        created=CREATED + 1,
        label="paper copy",
    )
    return pw, rk


def slot_inputs(
    key_objects: list[str], pw: sref.PasswordSlot, rk: sref.RecoveryKeySlot
) -> list[dict[str, Any]]:
    """The manifest's description of the two key objects and every input of their slots."""
    return [
        {
            "object": key_objects[0],
            "kind": "password",
            "created": pw.created,
            "label": pw.label,
            "kdf": {
                "name": "argon2id",
                "memory_kib": ARGON2_CHEAP.memory_kib,
                "iterations": ARGON2_CHEAP.iterations,
                "parallelism": ARGON2_CHEAP.parallelism,
            },
            "salt": pw.salt.hex(),
            "wrap_salt": pw.wrap_salt.hex(),
            "kek": pw.kek().hex(),
        },
        {
            "object": key_objects[1],
            "kind": "recovery-key",
            "created": rk.created,
            "label": rk.label,
            "recovery_key": rk.recovery_key.hex(),
            "wrap_salt": rk.wrap_salt.hex(),
        },
    ]


def tree_field(tree: ref.Tree, snapshot: dict[str, ref.Node_]) -> dict[str, Any]:
    """The expected restore, by path: files by size, SHA-256, mode and mtime."""
    metas: dict[str, ref.Meta] = {}

    def collect(entries: dict[str, ref.Node_], prefix: str) -> None:
        for name, node in entries.items():
            metas[prefix + name] = node.meta
            if isinstance(node, ref.Dir):
                collect(node.entries, prefix + name + "/")

    collect(snapshot, "")
    out: dict[str, Any] = {}
    for path, node in tree.items():
        if isinstance(node, bytes):
            m = metas[path]
            out[path] = {
                "type": "file",
                "size": len(node),
                "sha256": sha256(node),
                "mode": m.mode,
                "mtime_ns": m.mtime_ns,
            }
        elif node == "dir":
            out[path] = {"type": "dir"}
        else:
            out[path] = {"type": "symlink", "target": node[1]}
    return out


REPO_FORMAT = {
    "summary": (
        "A repository of e2ebackup format version 1 (docs/FORMAT.md, section Repository) in "
        "repo/, one file per object. Open it with the password or the recovery key; the head "
        "lists the snapshots, each of which MUST restore to its tree."
    ),
    "password": "opens the Argon2id password slot (m=256 KiB, t=1, p=1).",
    "recovery_key": "opens the recovery-key slot (display form).",
    "inputs": (
        "every random input: data_key (DK), repo_id, the key slots with all their inputs, the "
        "chunker parameters and the writer's pack size. Every other salt and name is the "
        "sha256-ctr stream of the seed prefix followed by the writer's purpose string; rebuild "
        "the repository with tests/reference/repo.py's Writer."
    ),
    "keys": "the derived keys, hex: derive(DK, 'e2ebackup/v1/repo/<label>').",
    "gear_sha256": "SHA-256 of the 2048-byte gear stream BLAKE3-XOF(GK, 'e2ebackup/v1/repo/"
    "chunker-gear').",
    "objects": "every object in repo/ with its size and SHA-256.",
    "head": "the newest head (seq and name); stale_heads are older heads still stored.",
    "snapshots": (
        "the snapshots the head lists, in its order: id, time (Unix seconds), paths, and tree, "
        "the expected restore by path relative to the restore target: {type: file, size, "
        "sha256, mode, mtime_ns}, {type: dir} or {type: symlink, target}. Paths are Python "
        "strings, names that are not UTF-8 with surrogate escapes (os.fsencode gives the "
        "bytes)."
    ),
    "latest": "the id 'latest' MUST resolve to.",
    "unlisted_snapshots": (
        "snapshot objects in repo/ that the head does not list (an interrupted backup: its "
        "packs and index are stored too, but unlisted). They MUST NOT be offered for restore."
    ),
}


def build_repo(dest: Path, version: int = 1) -> dict[str, Any]:
    """Write the repository of format ``version`` into ``dest`` (which must not exist); return
    the manifest (for version 2 with the states of section "Heads, rollback and forks", whose
    extra objects it writes into ``dest.parent / "extra"``)."""
    global _ino
    _ino = iter(range(1000, 10**6))
    seed_prefix = SEED_PREFIX if version == 1 else V2_SEED_PREFIX
    rnd = seeded(seed_prefix)
    data_key = rnd("data-key", 32)
    repo_id = rnd("repo-id", ref.REPO_ID_SIZE)
    w = ref.Writer(
        dest,
        data_key=data_key,
        repo_id=repo_id,
        rand=rnd,
        chunker=CHUNKER,
        pack_size=PACK_SIZE,
        version=version,
    )
    pw, rk = slot_specs(rnd)
    key_objects = [w.add_key(pw), w.add_key(rk)]
    if version >= 2:
        w.first_head()
    w.put("config", w.config_bytes())

    note = notes()
    snap1: dict[str, ref.Node_] = {"project": project(False), "notes.txt": note}
    snap2: dict[str, ref.Node_] = {"project": project(True), "notes.txt": note}
    draft = {"draft.txt": file(rnd("file/draft.txt", 3000))}
    snap3: dict[str, ref.Node_] = {"project": project(True), "notes.txt": note, **draft}
    t = float(CREATED + 86400)
    id1 = w.backup(snap1, time=t + 0.25, started=t, paths=PATHS, hostname="vectors")
    stale_head = w.head_name
    id2 = w.backup(
        snap2,
        time=t + 3600.5,
        started=t + 3600,
        paths=PATHS,
        hostname="vectors",
        tags=["second"],
        delete_old_head=False,
    )
    id3 = w.backup(
        snap3, time=t + 7200.75, started=t + 7200, paths=PATHS, hostname="vectors", commit=False
    )

    # The reference must read back what it wrote.
    r = ref.Repository.open(dest, password=PASSWORD)
    assert r.snapshot_ids() == [id1, id2]
    assert r.latest() == id2
    assert r.check() == []
    trees = {id1: (r.restore(id1), snap1), id2: (r.restore(id2), snap2)}
    assert trees[id1][0] == ref.expected_tree(snap1)
    assert trees[id2][0] == ref.expected_tree(snap2)
    assert ref.Repository.open(dest, recovery_key=rk.recovery_key).keys.data_key == data_key

    objects = {
        n: {"size": (dest / n).stat().st_size, "sha256": sha256((dest / n).read_bytes())}
        for n in ref.object_names(dest, "")
    }
    keys = r.keys
    manifest: dict[str, Any] = {
        "source": {
            "generator": "tools/make_repo_vectors.py",
            "reference": "tests/reference/repo.py (pure Python from docs/FORMAT.md, on "
            "tests/reference/c2sp.py, tests/reference/sealed.py, blake3 and zstandard; "
            "independent of e2ebackup)",
            "deterministic": "keys, ids, salts, names and file contents are sha256-ctr streams "
            f"of seeds starting with {seed_prefix!r}; times are fixed; re-running reproduces "
            "these files byte for byte (with the pinned zstandard)",
            "regenerate": REGENERATE,
        },
        "format": REPO_FORMAT if version == 1 else REPO_V2_FORMAT,
        "password": PASSWORD,
        "recovery_key": sref.format_recovery_key(rk.recovery_key),
        "inputs": {
            "data_key": data_key.hex(),
            "repo_id": repo_id.hex(),
            "seed_prefix": seed_prefix,
            "chunker": dict(zip(("min", "avg", "max"), CHUNKER, strict=True)),
            "pack_size": PACK_SIZE,
            "slots": slot_inputs(key_objects, pw, rk),
        },
        "keys": {
            "config": keys.config.hex(),
            "metadata": keys.metadata.hex(),
            "blob": keys.blob.hex(),
            "blob-id": keys.blob_id.hex(),
            "chunker": keys.chunker.hex(),
            "pack-header": keys.pack_header.hex(),
        },
        "gear_sha256": sha256(
            b"".join(g.to_bytes(8, "little") for g in ref.gear_table(keys.chunker))
        ),
        "objects": objects,
        "head": {"seq": r.head.seq, "name": r.head.name},
        "stale_heads": [stale_head],
        "snapshots": [
            {
                "id": sid,
                "time": r.snapshot(sid)["time"],
                "paths": PATHS,
                "tree": tree_field(*trees[sid]),
            }
            for sid in (id1, id2)
        ],
        "latest": id2,
        "unlisted_snapshots": [id3],
    }
    if version >= 2:
        manifest["stale_heads"] = [name for _, name in r.heads()[:-1]]
        manifest["heads"] = [
            {"seq": h.seq, "name": h.name, "sha256": h.hash, "parent": h.parent}
            for h in (r.read_head(name) for _, name in r.heads())
        ]
        manifest["states"] = history_states(w, r, id1, id3, dest.parent / "extra")
    return manifest


def history_states(
    w: ref.Writer, r: ref.Repository, id1: str, id3: str, extra: Path
) -> list[dict[str, Any]]:
    """What the storage could show a device, and what the device must make of it. Another
    device B, shown the state at seq 1, wrote its own seq 2 (and 3) listing snapshot 1 and the
    interrupted backup's snapshot 3: a fork. Its heads go to ``extra``, with head 1 replayed
    under a newer name."""
    h0, h1, h2 = (r.read_head(name) for _, name in r.heads())
    index3 = sorted(set(ref.object_names(w.root, "index/")) - set(h2.indexes))
    lists = ([id1, id3], h1.indexes + index3)
    b2_name, b2 = w.seal_head(2, *lists, h1.hash)
    b3_name, b3 = w.seal_head(3, *lists, ref.head_hash(b2))
    replay_name = f"heads/{3:016x}-{w.rand('name/replayed-head', 32).hex()}"
    b1_name, b1 = w.seal_head(1, [], [], h0.hash)  # another seq 1, in place of head 1
    for name, data in (
        (b2_name, b2),
        (b3_name, b3),
        (replay_name, (w.root / str(h1.name)).read_bytes()),
        (b1_name, b1),
    ):
        (extra / name).parent.mkdir(parents=True, exist_ok=True)
        (extra / name).write_bytes(data)

    def trust(h: ref.Head) -> dict[str, Any]:
        return {"seq": h.seq, "name": h.name, "sha256": h.hash}

    no2 = [str(h2.name)]  # the storage hides head 2
    cases: list[tuple[str, list[str], list[str], Any, Any, dict[str, str]]] = [
        # (id, remove, add, trusted, expect_head, result)
        ("new-device", [], [], None, None, {"head": str(h2.name)}),
        ("trusts-1", [], [], trust(h1), None, {"head": str(h2.name)}),
        ("trusts-2", [], [], trust(h2), None, {"head": str(h2.name)}),
        ("pins-1", [], [], None, str(h1.hash)[:16], {"head": str(h2.name)}),
        ("pins-0", [], [], None, h0.hash, {"head": str(h2.name)}),
        ("rolled-back", no2, [], trust(h2), None, {"error": "RolledBack"}),
        ("rolled-back-pinned", no2, [], None, str(h2.hash)[:16], {"error": "NotTrusted"}),
        ("rolled-back-new-device", no2, [], None, None, {"head": str(h1.name)}),
        ("fork", no2, [b2_name], trust(h2), None, {"error": "HistoryForked"}),
        ("fork-pinned", no2, [b2_name], None, str(h2.hash)[:16], {"error": "NotTrusted"}),
        ("fork-trusts-1", no2, [b2_name], trust(h1), None, {"head": b2_name}),
        ("fork-ahead", no2, [b2_name, b3_name], trust(h2), None, {"error": "HistoryForked"}),
        ("two-heads-new-device", [], [b2_name], None, None, {"error": "HistoryForked"}),
        ("two-heads-trusts-2", [], [b2_name], trust(h2), None, {"error": "HistoryForked"}),
        ("gap", [str(h1.name)], [], trust(h1), None, {"error": "HistoryUnverifiable"}),
        ("gap-trusts-2", [str(h1.name)], [], trust(h2), None, {"head": str(h2.name)}),
        ("parent-replaced", [str(h1.name)], [b1_name], trust(h0), None, {"error": "HistoryForked"}),
        ("replayed-head", [], [replay_name], None, None, {"error": "RepositoryCorrupted"}),
    ]
    return [
        {"id": i, "remove": rm, "add": add, "trusted": t, "expect_head": pin, "result": res}
        for i, rm, add, t, pin, res in cases
    ]


REPO_V2_FORMAT = {
    **REPO_FORMAT,
    "summary": (
        "A repository of e2ebackup format version 2 (docs/FORMAT.md, section Repository) in "
        "repo/, one file per object. Open it with the password or the recovery key; the head "
        "lists the snapshots, each of which MUST restore to its tree."
    ),
    "head": "the newest head (seq and name); stale_heads are older heads still stored (all of "
    "them: a version-2 writer keeps the last 100).",
    "heads": "every stored head with its sha256 (of the stored bytes) and parent, the sha256 "
    "of the head with seq - 1 (null for seq 0).",
    "states": (
        "what the storage could show a device: the repository with the heads in remove deleted "
        "and the objects in add (files under extra/, same names) stored; the head the device "
        "trusts (trusted: seq, name, sha256; null for a new device) or pins (expect_head: a "
        "prefix of a head's sha256); and the result a reader MUST give: the head it uses, or "
        "an error: RolledBack, HistoryForked, HistoryUnverifiable, NotTrusted (a pin not in "
        "the chain; e2ebackup raises the base class HistoryNotTrusted) or RepositoryCorrupted "
        "(a head that does not open). A device shown B's branch (snapshots 1 and 3) after "
        "trusting head 1 cannot tell it from a real history and accepts it."
    ),
}


REPO_V2_README = """\
# repo_v2: a repository test vector with forked and rolled-back states

Generated by `{regenerate}` (do not edit). `repo/` is a repository of e2ebackup format version 2,
one file per object, made by the minimal writer of `tests/reference/repo.py` (written from
docs/FORMAT.md alone). `manifest.json` lists every input, every object, the head chain, what
each snapshot restores to, and the `states`: what the storage may show a device (heads removed,
heads of another branch from `extra/` added) and what the device must make of each.

- Password: `{password}`
- Recovery key: `{recovery_key}`
- Chunker: min {min}, avg {avg}, max {max} bytes; packs of about {pack_size} bytes.
- Heads seq 0 to {seq}, each naming its parent; the newest lists {n} snapshots, latest
  `{latest}`. An interrupted backup left the unlisted snapshot `{unlisted}` (with its packs and
  index): readers MUST NOT offer it.
- {states} states: {state_ids}.
- {objects} objects, {size} bytes in all.
"""


REPO_README = """\
# repo_v1: a repository test vector

Generated by `{regenerate}` (do not edit). `repo/` is a repository of e2ebackup format version 1,
one file per object, made by the minimal writer of `tests/reference/repo.py` (written from
docs/FORMAT.md alone). `manifest.json` lists every input, every object and what each snapshot
restores to.

- Password: `{password}`
- Recovery key: `{recovery_key}`
- Chunker: min {min}, avg {avg}, max {max} bytes; packs of about {pack_size} bytes.
- Head seq {seq}, listing {n} snapshots; latest `{latest}`. An older head is still stored, and
  an interrupted backup left the unlisted snapshot `{unlisted}` (with its packs and index):
  readers MUST NOT offer it.
- {objects} objects, {size} bytes in all.
"""


def render_repo(version: int = 1) -> dict[str, bytes]:
    """Every file of tests/vectors/repo_v<version>/, by path relative to tests/vectors/."""
    folder = {1: REPO_VECTORS, 2: REPO_V2_VECTORS, 3: REPO_V3_VECTORS}[version]
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "repo"
        manifest = build_repo(dest, version) if version < 3 else build_repo_v3(dest)
        files = {}
        for part in ("repo", "extra"):
            base = Path(tmp) / part
            for n in ref.object_names(base, ""):
                files[f"{folder}/{part}/{n}"] = (base / n).read_bytes()
    files[f"{folder}/manifest.json"] = (
        json.dumps(manifest, indent=1, ensure_ascii=True) + "\n"
    ).encode()
    ch = manifest["inputs"]["chunker"]
    if version >= 3:
        files[f"{folder}/README.md"] = REPO_V3_README.format(
            regenerate=REGENERATE,
            password=manifest["password"],
            recovery_key=manifest["recovery_key"],
            pack_size=manifest["inputs"]["pack_size"],
            n=len(manifest["snapshots"]),
            latest=manifest["latest"],
            forgotten=manifest["forgotten"]["snapshot"],
            straggler=manifest["straggler"]["snapshot"],
            states=len(manifest["states"]),
            state_ids=", ".join(f"`{c['id']}`" for c in manifest["states"]),
            objects=len(manifest["objects"]),
            size=sum(o["size"] for o in manifest["objects"].values()),
            **ch,
        ).encode()
        return files
    if version >= 2:
        files[f"{folder}/README.md"] = REPO_V2_README.format(
            regenerate=REGENERATE,
            password=manifest["password"],
            recovery_key=manifest["recovery_key"],
            pack_size=manifest["inputs"]["pack_size"],
            seq=manifest["head"]["seq"],
            n=len(manifest["snapshots"]),
            latest=manifest["latest"],
            unlisted=manifest["unlisted_snapshots"][0],
            states=len(manifest["states"]),
            state_ids=", ".join(f"`{c['id']}`" for c in manifest["states"]),
            objects=len(manifest["objects"]),
            size=sum(o["size"] for o in manifest["objects"].values()),
            **ch,
        ).encode()
        return files
    files[f"{folder}/README.md"] = REPO_README.format(
        regenerate=REGENERATE,
        password=manifest["password"],
        recovery_key=manifest["recovery_key"],
        pack_size=manifest["inputs"]["pack_size"],
        seq=manifest["head"]["seq"],
        n=len(manifest["snapshots"]),
        latest=manifest["latest"],
        unlisted=manifest["unlisted_snapshots"][0],
        objects=len(manifest["objects"]),
        size=sum(o["size"] for o in manifest["objects"].values()),
        **ch,
    ).encode()
    return files


# ---- repo_v3: many writers ----------------------------------------------------------------------

REPO_V3_VECTORS = "repo_v3"
V3_SEED_PREFIX = "e2ebackup/repo_v3/"


def v3_history(dest: Path) -> tuple[ref.Writer, dict[str, Any]]:
    """Write the version-3 repository into ``dest``; return its writer and what it made, by
    role: heads h0..h5 (h2a/h2b and h4a/h4b committed at once, h3c the straggler), snapshots
    s1..s5, the trees each snapshot holds, the prune's index, the key objects and slots."""
    global _ino
    _ino = iter(range(1000, 10**6))
    rnd = seeded(V3_SEED_PREFIX)
    w = ref.Writer(
        dest,
        data_key=rnd("data-key", 32),
        repo_id=rnd("repo-id", ref.REPO_ID_SIZE),
        rand=rnd,
        chunker=CHUNKER,
        pack_size=PACK_SIZE,
        version=3,
    )
    pw, rk = slot_specs(rnd)
    key_objects = [w.add_key(pw), w.add_key(rk)]
    made: dict[str, Any] = {"key_objects": key_objects, "slots": (pw, rk)}
    made["h0"] = w.first_head(time=float(CREATED))
    w.put("config", w.config_bytes())

    t = float(CREATED + 86400)
    download = rnd("file/download.bin", 24000)  # the forgotten snapshot's data, reused later
    trees: dict[str, dict[str, ref.Node_]] = {}

    def snap(roots: dict[str, ref.Node_], base: list[str] | None, **kw: Any) -> tuple[str, str]:
        """A backup on the heads ``base`` (None: the top heads): its snapshot and head."""
        sid = w.backup(roots, base=base, **kw)
        trees[sid] = roots
        assert w.head_name is not None
        return sid, w.head_name

    bob = {"hostname": "desktop", "username": "bob"}
    alice = {"hostname": "laptop", "username": "alice"}
    scratch: dict[str, ref.Node_] = {"scratch": folder({"download.bin": file(download)})}
    made["s1"], made["h1"] = snap(
        scratch, None, time=t + 0.25, started=t, paths=["/home/bob/scratch"], **bob
    )
    # Seq 2: two writers commit at once on head 1.
    both2: dict[str, ref.Node_] = {"project": project(False), "notes.txt": notes()}
    made["s2"], made["h2a"] = snap(
        both2, [made["h1"]], time=t + 3600.5, started=t + 3600, paths=PATHS, **alice
    )
    photos: dict[str, ref.Node_] = {
        "photos": folder(
            {"photo.jpg": file(JPEG), "trip.txt": file(b"three days by the sea\n" * 20)}
        )
    }
    made["s3"], made["h2b"] = snap(
        photos, [made["h1"]], time=t + 3601.25, started=t + 3601, paths=["/home/bob/photos"], **bob
    )
    seq2 = [made["h2a"], made["h2b"]]
    # Seq 3: a forget (a tombstone) merging both; at once the desktop commits a backup on the
    # same two heads and is killed before its step 3: a straggler no later head names.
    w.forget(made["s1"], time=t + 7200.0, base=seq2)
    made["h3"] = w.head_name
    todo: dict[str, ref.Node_] = {"todo.txt": file(b"- water the plants\n- back up the laptop\n")}
    made["s4"], made["h3c"] = snap(
        todo, seq2, time=t + 7200.5, started=t + 7200, paths=["/home/bob/todo.txt"], **bob
    )
    # Seq 4: a backup and a prune at once on head 3. The backup loaded the index before the
    # prune condemned the forgotten snapshot's packs, and reuses their blobs.
    later: dict[str, ref.Node_] = {
        "project": project(True),
        "notes.txt": notes(),
        "download.bin": file(download),
    }
    paths5 = [*PATHS, "/home/alice/download.bin"]
    made["s5"], made["h4a"] = snap(
        later, [made["h3"]], time=t + 10800.5, started=t + 10800, paths=paths5, **alice
    )
    made["h4b"] = w.prune(time=t + 10801.0, base=[made["h3"]])
    made["prune_index"] = w.indexes[-1]
    # Seq 5: a merge head with both seq-4 heads as parents, no change of its own.
    made["h5"] = w.commit(time=t + 14400.0, base=[made["h4a"], made["h4b"]])
    made["trees"] = trees
    return w, made


REPO_V3_FORMAT = {
    **REPO_FORMAT,
    "summary": (
        "A repository of e2ebackup format version 3 (docs/FORMAT.md, section Many writers) in "
        "repo/, one file per object, written by two writers (hosts laptop and desktop) that "
        "committed at once. Open it with the password or the recovery key; the merge of the "
        "top heads lists the snapshots, each of which MUST restore to its tree."
    ),
    "head": "the top seq and the top heads (names); the live snapshots and indexes are their "
    "merge.",
    "heads": "every stored head: seq, name, sha256 (of the stored bytes), time, parents "
    "([seq, sha256] pairs), snapshots, indexes and dropped (tombstones [name, time]); role "
    "says how the history made it.",
    "unlisted_snapshots": (
        "snapshot objects in repo/ that the merge of the top heads does not list: the forgotten "
        "snapshot (a tombstone drops it; prune deletes its object only after the grace period) "
        "and the straggler's (its head is below the top and no top head reaches it). They MUST "
        "NOT be offered for restore, except in the states that list them."
    ),
    "other_snapshots": "the unlisted snapshots with their trees (some states list them).",
    "condemned": (
        "the prune's index lists the forgotten snapshot's packs with condemned (no live "
        "snapshot used them when it ran); the backup committed at once with it reused their "
        "blobs, so restoring that snapshot MUST read blobs from condemned packs (blobs: those "
        "no live pack holds)."
    ),
    "states": (
        "what the storage could show a device: the repository with the objects in remove "
        "deleted and those in add (files under extra/, same names) stored; the heads the "
        "device trusts (trusted: {seq, heads: [[name, sha256], ...]}, the form of e2ebackup's "
        "trusted-head file; null for a new device) or pins (expect_head: a prefix of a head's "
        "sha256); and the result a reader MUST give: the heads it merges (heads, sorted by "
        "sha256: what the device trusts next, at seq), the snapshots listed, in order, "
        "latest, and the merged tombstones (dropped); or an error: RolledBack, HistoryForked, "
        "HistoryUnverifiable, NotTrusted (a pin matching no merged or reached head; e2ebackup "
        "raises the base class "
        "HistoryNotTrusted) or RepositoryCorrupted (a top head that does not open or breaks a "
        "rule of the head format). why says which rule decides."
    ),
}


def v3_states(w: ref.Writer, made: dict[str, Any], extra: Path) -> list[dict[str, Any]]:
    """The states of repo_v3 (see REPO_V3_FORMAT["states"]); extra objects go to ``extra``."""
    root = w.root

    def hh(name: str) -> str:
        return ref.head_hash((root / name).read_bytes())

    def pair(name: str) -> list[str]:
        return [name, hh(name)]

    def trusted(seq: int, *names: str) -> dict[str, Any]:
        return {"seq": seq, "heads": [pair(n) for n in names]}

    h5 = made["h5"]
    top = w.v3_heads[h5]
    stamp = float(CREATED + 86400 + 18000)

    def put_extra(name: str, data: bytes) -> str:
        (extra / name).parent.mkdir(parents=True, exist_ok=True)
        (extra / name).write_bytes(data)
        return name

    def on_top(doc_edit: Callable[[dict[str, Any]], None], seq: int = 6) -> str:
        """A head at seq 6 on head 5 (valid unless ``doc_edit`` breaks it), sealed properly."""
        doc: dict[str, Any] = {
            "seq": seq,
            "time": stamp,
            "parents": [[5, hh(h5)]],
            "snapshots": list(top.snapshots),
            "indexes": list(top.indexes),
            "dropped": [[n, t] for n, t in top.dropped],
        }
        doc_edit(doc)
        name, stored = w.seal_head_doc(seq, doc)
        return put_extra(name, stored)

    s1, s2 = made["s1"], made["s2"]
    keys_name = f"keys/{w.rand('name/tombstone-for-a-key', 32).hex()}"
    fake = [w.rand(f"name/fake-parent/{i}", 32).hex() for i in range(64)]

    def edit(**changes: Any) -> Callable[[dict[str, Any]], None]:
        def apply(doc: dict[str, Any]) -> None:
            for k, v in changes.items():
                if v is None:
                    del doc[k]
                else:
                    doc[k] = v(doc) if callable(v) else v

        return apply

    invalid: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
        ("parent-present", "has parent (a version-2 field)", edit(parent=hh(h5))),
        ("parent-seq-not-lower", "a parent's seq is not lower", edit(parents=[[6, hh(h5)]])),
        ("parent-seq-higher", "a parent's seq is higher", edit(parents=[[7, hh(h5)]])),
        ("parent-hash-twice", "a parent hash named twice", edit(parents=[[5, hh(h5)]] * 2)),
        (
            "parent-hash-twice-other-seq",
            "a parent hash named twice, with two seqs",
            edit(parents=[[5, hh(h5)], [4, hh(h5)]]),
        ),
        ("no-parents", "no parents for seq > 0", edit(parents=[])),
        (
            "65-parents",
            "65 parents (at most 64)",
            edit(parents=[[5, hh(h5)]] + [[4, f] for f in fake]),
        ),
        ("parent-bad-hash", "a parent hash that is not 64 hex", edit(parents=[[5, "ab" * 31]])),
        (
            "snapshot-listed-twice",
            "a snapshot listed twice",
            edit(snapshots=lambda d: d["snapshots"] + d["snapshots"][:1]),
        ),
        (
            "index-listed-twice",
            "an index listed twice",
            edit(indexes=lambda d: d["indexes"] + d["indexes"][:1]),
        ),
        (
            "snapshot-listed-and-dropped",
            "a snapshot listed and dropped",
            edit(dropped=lambda d: sorted([*d["dropped"], [f"snapshots/{s2}", stamp]])),
        ),
        (
            "index-listed-and-dropped",
            "an index listed and dropped",
            edit(dropped=lambda d: sorted([*d["dropped"], [d["indexes"][0], stamp]])),
        ),
        (
            "dropped-listed-again",
            "a dropped snapshot listed again (its tombstone kept)",
            edit(snapshots=lambda d: [*d["snapshots"], s1]),
        ),
        (
            "tombstone-twice",
            "a tombstone named twice",
            edit(dropped=lambda d: [*d["dropped"], [f"snapshots/{s1}", stamp]]),
        ),
        (
            "tombstone-bad-name",
            "a tombstone for a key object (only snapshots/<id> and index/<id>)",
            edit(dropped=lambda d: [*d["dropped"], [keys_name, stamp]]),
        ),
        (
            "tombstone-pack-name",
            "a tombstone for a pack (only snapshots/<id> and index/<id>)",
            edit(dropped=lambda d: [*d["dropped"], [f"data/{fake[0][:2]}/{fake[0]}", stamp]]),
        ),
        ("time-out-of-range", "time above 2^34", edit(time=float(2**34 + 1))),
        ("time-missing", "no time", edit(time=None)),
        ("parents-missing", "no parents", edit(parents=None)),
        ("dropped-missing", "no dropped", edit(dropped=None)),
        ("seq-differs-from-name", "JSON seq 7 in a head named with seq 6", edit(seq=7)),
    ]
    invalid_names = {case: on_top(doc_edit) for case, _, doc_edit in invalid}
    valid_top = on_top(lambda doc: None)
    # Two writers forget snapshot 2 at once, at different times: the merge keeps the later.
    forgets = [
        on_top(
            edit(
                snapshots=lambda d: [s for s in d["snapshots"] if s != s2],
                dropped=lambda d, k=k: sorted([*d["dropped"], [f"snapshots/{s2}", stamp + k]]),
            )
        )
        for k in (1.5, 60.25)
    ]
    replayed = put_extra(
        f"heads/{6:016x}-{w.rand('name/replayed-head', 32).hex()}",
        (root / made["h1"]).read_bytes(),
    )
    garbage = put_extra(
        f"heads/{3:016x}-{w.rand('name/garbage-head', 32).hex()}",
        w.rand("garbage-head-bytes", 300),
    )

    h0, h1, h2a, h2b, h3, h3c, h4a, h4b = (
        made[k] for k in ("h0", "h1", "h2a", "h2b", "h3", "h3c", "h4a", "h4b")
    )
    Case = tuple[str, list[str], list[str], Any, Any, Any, str]
    ok = "accepted"
    cases: list[Case] = [
        ("new-device", [], [], None, None, [h5], "a new device trusts the top heads"),
        ("trusts-top", [], [], trusted(5, h5), None, [h5], ok),
        (
            "trusts-two-heads-at-seq-4",
            [],
            [],
            trusted(4, h4a, h4b),
            None,
            [h5],
            "both trusted heads are reached from the top head",
        ),
        (
            "trusted-heads-deleted-but-named",
            [h4a, h4b],
            [],
            trusted(4, h4a, h4b),
            None,
            [h5],
            "both trusted heads are deleted, but the stored top head names them as parents: "
            "named by a reached head counts as reached",
        ),
        ("trusts-seq-2", [], [], trusted(2, h2a, h2b), None, [h5], "reached through seq 4 and 3"),
        ("trusts-seq-0", [], [], trusted(0, h0), None, [h5], "reached"),
        (
            "two-top-heads",
            [h3, h3c, h4a, h4b, h5],
            [],
            trusted(1, h1),
            None,
            [h2a, h2b],
            "two heads with the top seq are merged, not a fork: both snapshots listed",
        ),
        ("two-top-heads-new-device", [h3, h3c, h4a, h4b, h5], [], None, None, [h2a, h2b], ok),
        (
            "two-top-heads-trusts-one",
            [h3, h3c, h4a, h4b, h5],
            [],
            trusted(2, h2a),
            None,
            [h2a, h2b],
            "a device that accepted one of two heads committed at once merges the other",
        ),
        (
            "rolled-back",
            [h5],
            [],
            trusted(5, h5),
            None,
            "RolledBack",
            "the top seq (4) is lower than the trusted seq (5)",
        ),
        (
            "rolled-back-new-device",
            [h5],
            [],
            None,
            None,
            [h4a, h4b],
            "a new device cannot tell; it merges the two seq-4 heads",
        ),
        (
            "fork",
            [h4b, h5],
            [],
            trusted(4, h4a, h4b),
            None,
            "HistoryForked",
            "a trusted head (seq 4, the prune's) is hidden: neither stored nor reached, and "
            "every head on the way is stored",
        ),
        (
            "straggler-hidden",
            [h3c],
            [],
            trusted(3, h3c),
            None,
            "HistoryForked",
            "the device wrote the straggler and trusts it; the storage deleted it",
        ),
        (
            "unverifiable",
            [h1, h2a, h2b],
            [],
            trusted(1, h1),
            None,
            "HistoryUnverifiable",
            "the trusted head is not stored, and head 3 names parents at seq 2, of which no "
            "head is stored",
        ),
        (
            "straggler-trusted",
            [],
            [],
            trusted(3, h3c),
            None,
            [h3c, h5],
            "the trusted straggler is stored but not reached: merged with the top head (its "
            "snapshot listed; the forgotten snapshot it still lists stays dropped)",
        ),
        (
            "straggler-and-head-3-trusted",
            [],
            [],
            trusted(3, h3, h3c),
            None,
            [h3c, h5],
            "head 3 is reached, the straggler merged in",
        ),
        (
            "pins-reached",
            [],
            [],
            None,
            hh(h2b)[:16],
            [h5],
            "the pin matches a head reached from the top head",
        ),
        ("pins-top", [], [], None, hh(h5), [h5], "the pin matches the top head"),
        (
            "pins-nothing",
            [],
            [],
            None,
            "0" * 16,
            "NotTrusted",
            "the pin matches no stored head",
        ),
        (
            "pins-unreached-straggler",
            [],
            [],
            None,
            hh(h3c)[:16],
            "NotTrusted",
            "the straggler is stored but neither merged (no device trusts it) nor reached",
        ),
        (
            "pins-trusted-straggler",
            [],
            [],
            trusted(3, h3c),
            hh(h3c)[:32],
            [h3c, h5],
            "the pinned straggler is merged in (trusted): the pin matches a merged head",
        ),
        (
            "replayed-head",
            [],
            [replayed],
            None,
            None,
            "RepositoryCorrupted",
            "head 1's bytes under a seq-6 name do not open: a top head that does not open",
        ),
        (
            "garbage-below-top",
            [],
            [garbage],
            trusted(5, h5),
            None,
            [h5],
            "an object under heads/ below the top that no head names is never read",
        ),
        (
            "two-forgets-at-once",
            [],
            forgets,
            trusted(5, h5),
            None,
            forgets,
            "two top heads drop the same snapshot at different times: it stays dropped, and "
            "the merged tombstone has the greater time",
        ),
        (
            "valid-head-on-top",
            [],
            [valid_top],
            trusted(5, h5),
            None,
            [valid_top],
            "the control for the invalid heads below: the same head, nothing broken",
        ),
    ]
    for case, rule, _ in invalid:
        cases.append(
            (
                f"invalid-{case}",
                [],
                [invalid_names[case]],
                trusted(5, h5),
                None,
                "RepositoryCorrupted",
                f"the top head breaks a rule: {rule}",
            )
        )
    out = []
    for cid, remove, add, trust, pin, result, why in cases:
        entry: dict[str, Any] = {
            "id": cid,
            "remove": remove,
            "add": add,
            "trusted": trust,
            "expect_head": pin,
        }
        if isinstance(result, str):
            entry["result"] = {"error": result}
        else:
            entry["result"] = {"heads": result}  # completed by judge_v3_states
        entry["why"] = why
        out.append(entry)
    return out


V3_REF_ERRORS: dict[str, type[Exception]] = {
    "RolledBack": ref.Rollback,
    "HistoryForked": ref.Forked,
    "HistoryUnverifiable": ref.Unverifiable,
    "NotTrusted": ref.HistoryRefused,
    "RepositoryCorrupted": ref.Corrupt,
}


def v3_state_copy(repo: Path, extra: Path, state: dict[str, Any], dest: Path) -> Path:
    """The repository as the storage shows it in ``state``, copied to ``dest``."""
    shutil.copytree(repo, dest)
    for name in state["remove"]:
        (dest / name).unlink()
    for name in state["add"]:
        shutil.copy(extra / name, dest / name)
    return dest


def open_v3_state(path: Path, state: dict[str, Any]) -> ref.Repository:
    t = state["trusted"]
    return ref.Repository.open(
        path,
        password=PASSWORD,
        trusted_heads=(t["seq"], [tuple(h) for h in t["heads"]]) if t else None,
        expect_head=state["expect_head"],
    )


def judge_v3_states(repo: Path, extra: Path, states: list[dict[str, Any]]) -> None:
    """Run the reference on every state: an expected error must be raised (and no other); an
    accepted state gets its merged heads checked and its listing and latest filled in."""
    with tempfile.TemporaryDirectory() as tmp:
        for n, state in enumerate(states):
            path = v3_state_copy(repo, extra, state, Path(tmp) / str(n))
            result = state["result"]
            if "error" in result:
                try:
                    open_v3_state(path, state)
                except ref.RepoError as e:
                    wanted = V3_REF_ERRORS[result["error"]]
                    # NotTrusted is the base class: the pin cases must not be a subclass.
                    exact = type(e) is wanted if wanted is ref.HistoryRefused else True
                    if not (isinstance(e, wanted) and exact):
                        raise AssertionError(f"state {state['id']}: {e!r}") from e
                else:
                    raise AssertionError(f"state {state['id']}: the reference accepts it")
                continue
            r = open_v3_state(path, state)
            heads = sorted(
                ([name, ref.head_hash((path / name).read_bytes())] for name in result["heads"]),
                key=lambda h: h[1],
            )
            assert [list(h) for h in r.merged_heads()] == heads, state["id"]
            state["result"] = {
                "seq": r.head.seq,
                "heads": heads,
                "snapshots": r.snapshot_ids(),
                "latest": r.latest(),
                "dropped": [[n, t] for n, t in sorted(r.dropped.items())],
            }


def build_repo_v3(dest: Path) -> dict[str, Any]:
    """Write the version-3 repository into ``dest`` and its states' objects into
    ``dest.parent / "extra"``; return the manifest."""
    w, made = v3_history(dest)
    pw, rk = made["slots"]
    trees: dict[str, dict[str, ref.Node_]] = made["trees"]
    s1, s2, s3, s4, s5 = (made[f"s{i}"] for i in range(1, 6))

    r = ref.Repository.open(dest, password=PASSWORD)
    assert [h.name for h in r.merged] == [made["h5"]]
    listed = r.snapshot_ids()
    assert sorted(listed) == sorted([s2, s3, s5])
    assert r.latest() == s5
    assert r.check() == []
    assert ref.Repository.open(dest, recovery_key=rk.recovery_key).keys.data_key == w.data_key
    restored = {sid: r.restore(sid) for sid in listed}
    for sid in listed:
        assert restored[sid] == ref.expected_tree(trees[sid])
    # The merge head: two parents; the forget: a tombstone, the object still stored; the
    # straggler: below the top, reached by no top head.
    h5 = r.read_head_v3(made["h5"])
    assert len(h5.parents) == 2
    assert f"snapshots/{s1}" in dict(h5.dropped)
    assert (dest / f"snapshots/{s1}").is_file()
    reached, gaps = r.reach(r.merged)
    assert not gaps
    assert ref.head_hash((dest / made["h3c"]).read_bytes()) not in reached
    # The condemned packs: S5 reads blobs that only they hold.
    r.index()
    assert r.condemned
    only_condemned = sorted(
        c
        for _, e in r.walk(s5)
        for c in (e.get("content", []) if e["type"] == "file" else [])
        if r.index()[bytes.fromhex(c)][0] in r.condemned
    )
    assert only_condemned
    prune_index = made["prune_index"]
    prune_doc = r.metadata(prune_index)
    condemned_packs = sorted(p["id"] for p in prune_doc["packs"] if "condemned" in p)
    assert condemned_packs == sorted(r.condemned)

    extra = dest.parent / "extra"
    states = v3_states(w, made, extra)
    judge_v3_states(dest, extra, states)
    others = {s1: "the forgotten snapshot", s4: "the straggler's snapshot"}

    def snapshot_entry(sid: str) -> dict[str, Any]:
        doc = r.metadata(f"snapshots/{sid}")
        tree = ref.expected_tree(trees[sid])
        return {
            "id": sid,
            "time": doc["time"],
            "hostname": doc["hostname"],
            "paths": doc["paths"],
            "tree": tree_field(tree, trees[sid]),
        }

    roles = {
        made["h0"]: "init",
        made["h1"]: "desktop: backup of snapshot 1",
        made["h2a"]: "laptop: backup of snapshot 2, committed at once with the next on head 1",
        made["h2b"]: "desktop: backup of snapshot 3, committed at once with the previous",
        made["h3"]: "laptop: forget snapshot 1 (a tombstone), merging both seq-2 heads",
        made["h3c"]: "desktop: backup of snapshot 4 on both seq-2 heads, at once with head 3; "
        "killed before its step 3: a straggler",
        made["h4a"]: "laptop: backup of snapshot 5 on head 3 (reusing snapshot 1's blobs)",
        made["h4b"]: "prune on head 3, at once with the previous: condemns snapshot 1's packs, "
        "replaces the indexes",
        made["h5"]: "a merge head: both seq-4 heads as parents, no change of its own",
    }
    heads = []
    for name in sorted(roles):
        h = r.read_head_v3(name)
        heads.append(
            {
                "seq": h.seq,
                "name": name,
                "sha256": h.hash,
                "time": h.time,
                "parents": [list(p) for p in h.parents],
                "snapshots": h.snapshots,
                "indexes": h.indexes,
                "dropped": [list(t) for t in h.dropped],
                "role": roles[name],
            }
        )
    heads.sort(key=lambda h: (h["seq"], h["name"]))
    objects = {
        n: {"size": (dest / n).stat().st_size, "sha256": sha256((dest / n).read_bytes())}
        for n in ref.object_names(dest, "")
    }
    keys = r.keys
    return {
        "source": {
            "generator": "tools/make_repo_vectors.py",
            "reference": "tests/reference/repo.py (pure Python from docs/FORMAT.md, on "
            "tests/reference/c2sp.py, tests/reference/sealed.py, blake3 and zstandard; "
            "independent of e2ebackup)",
            "deterministic": "keys, ids, salts, names and file contents are sha256-ctr streams "
            f"of seeds starting with {V3_SEED_PREFIX!r}; times are fixed; re-running reproduces "
            "these files byte for byte (with the pinned zstandard)",
            "regenerate": REGENERATE,
        },
        "format": REPO_V3_FORMAT,
        "password": PASSWORD,
        "recovery_key": sref.format_recovery_key(rk.recovery_key),
        "inputs": {
            "data_key": w.data_key.hex(),
            "repo_id": w.repo_id.hex(),
            "seed_prefix": V3_SEED_PREFIX,
            "chunker": dict(zip(("min", "avg", "max"), CHUNKER, strict=True)),
            "pack_size": PACK_SIZE,
            "slots": slot_inputs(made["key_objects"], pw, rk),
        },
        "keys": {
            "config": keys.config.hex(),
            "metadata": keys.metadata.hex(),
            "blob": keys.blob.hex(),
            "blob-id": keys.blob_id.hex(),
            "chunker": keys.chunker.hex(),
            "pack-header": keys.pack_header.hex(),
        },
        "gear_sha256": sha256(
            b"".join(g.to_bytes(8, "little") for g in ref.gear_table(keys.chunker))
        ),
        "objects": objects,
        "head": {"seq": r.head.seq, "top_heads": [made["h5"]]},
        "heads": heads,
        "snapshots": [snapshot_entry(sid) for sid in listed],
        "latest": s5,
        "unlisted_snapshots": [s1, s4],
        "other_snapshots": [{**snapshot_entry(sid), "what": others[sid]} for sid in (s1, s4)],
        "straggler": {"head": made["h3c"], "snapshot": s4},
        "forgotten": {
            "snapshot": s1,
            "tombstone": [f"snapshots/{s1}", dict(h5.dropped)[f"snapshots/{s1}"]],
        },
        "condemned": {
            "index": prune_index,
            "packs": condemned_packs,
            "snapshot": s5,
            "blobs": only_condemned,
        },
        "states": states,
    }


REPO_V3_README = """\
# repo_v3: a repository test vector with many writers

Generated by `{regenerate}` (do not edit). `repo/` is a repository of e2ebackup format version 3
(docs/FORMAT.md, section Many writers), one file per object, made by the minimal writer of
`tests/reference/repo.py` (written from docs/FORMAT.md alone, never e2ebackup itself).
`manifest.json` lists every input, every object, every head with its parents and tombstones,
what each snapshot restores to, and the `states`: what the storage may show a device (heads
removed, heads from `extra/` added) with the heads it trusts or pins, and what the device must
make of each. Every random input comes from fixed seeds (`sha256-ctr`) and every time is fixed:
`{regenerate} --check` exits 1 if these files are out of date.
`tests/repo/test_repo_vectors.py` checks e2ebackup and the reference against them.

- Password: `{password}`
- Recovery key: `{recovery_key}`
- Chunker: min {min}, avg {avg}, max {max} bytes; packs of about {pack_size} bytes.
- History (two writers, hosts `laptop` and `desktop`): seq 0 init; seq 1 a backup; seq 2 two
  backups committed at once on seq 1 (both listed); seq 3 a forget merging both (a tombstone:
  the forgotten snapshot `{forgotten}` stays stored, unlisted) and, at once, a backup on both
  seq-2 heads whose writer was killed before its step 3 (the straggler head, which no later head
  names: its snapshot `{straggler}` is not listed); seq 4 a backup and a prune at once on seq 3
  (the prune condemns the forgotten snapshot's packs, the backup reuses their blobs: restoring
  `{latest}` reads blobs from condemned packs); seq 5 a merge head with the two seq-4 heads
  as parents. The top head lists {n} snapshots, latest `{latest}`.
- {states} states: {state_ids}. The `invalid-*` states each add, on top, a head that breaks
  one rule of the version-3 head (its `why` says which): readers MUST refuse it
  (`RepositoryCorrupted`); `valid-head-on-top` is the same head with nothing broken.
- {objects} objects, {size} bytes in all.
"""


# ---- the chunker ------------------------------------------------------------------------------

CHUNKER_FORMAT = {
    "summary": (
        "The keyed FastCDC chunker of docs/FORMAT.md (section Chunking): gear[i] is the "
        "little-endian u64 at bytes 8i..8i+8 of BLAKE3-XOF(key = GK, "
        "'e2ebackup/v1/repo/chunker-gear'); cut after byte n of a chunk (1-based) once n > min - "
        "64 updates h = (h << 1) + gear[b] mod 2^64, if (n >= min and h & mask == 0) or n >= "
        "max, mask the top log2(avg)+2 bits while n < avg and the top log2(avg)-2 bits after."
    ),
    "gear": (
        "for a gear key (GK, hex; data_key when GK was derived from it as derive(DK, "
        "'e2ebackup/v1/repo/chunker')): stream_head, the first 64 bytes of the XOF stream (hex), "
        "entries {index: value} of the table (decimal strings of the u64), and the SHA-256 of "
        "the whole 2048-byte stream."
    ),
    "cases": (
        "gear_key (hex), min, avg, max, data ({generator: sha256-ctr, seed, length} as in the "
        "other vector files, {generator: zeros, length} or {generator: repeat, pattern (hex), "
        "length}, and its sha256), cuts: the offsets after which the rule cuts (a chunk that "
        "ends with the data is not a cut unless the rule put it there), and chunks: the end "
        "offset of every chunk (the last is the data's length; [0] for empty data)."
    ),
}


def data_of(generator: dict[str, Any]) -> bytes:
    g, n = generator["generator"], int(generator["length"])
    if g == "sha256-ctr":
        return stream(generator["seed"], n)
    if g == "zeros":
        return bytes(n)
    assert g == "repeat"
    pattern = bytes.fromhex(generator["pattern"])
    return (pattern * (n // len(pattern) + 1))[:n]


def chunker_key(name: str) -> bytes:
    return stream(CHUNKER_SEED_PREFIX + "gear-key/" + name, 32)


def random_data(name: str, length: int) -> dict[str, Any]:
    return {
        "generator": "sha256-ctr",
        "seed": f"{CHUNKER_SEED_PREFIX}data/{name}",
        "length": length,
    }


def build_chunker() -> dict[str, Any]:
    dk = stream(CHUNKER_SEED_PREFIX + "data-key", 32)
    gk = sref.derive(dk, ref.LABEL_CHUNKER)
    gears = []
    for name, key, from_dk in [
        ("derived", gk, dk),
        ("zero", bytes(32), None),
        ("ff", b"\xff" * 32, None),
        ("a", chunker_key("a"), None),
    ]:
        table = ref.gear_table(key)
        raw = b"".join(g.to_bytes(8, "little") for g in table)
        entry: dict[str, Any] = {"name": name, "gear_key": key.hex()}
        if from_dk is not None:
            entry["data_key"] = from_dk.hex()
        entry["stream_head"] = raw[:64].hex()
        entry["entries"] = {str(i): str(table[i]) for i in (0, 1, 2, 127, 128, 254, 255)}
        entry["stream_sha256"] = sha256(raw)
        gears.append(entry)

    ka, kb = chunker_key("a"), chunker_key("b")
    kib, mib = 1024, 1024 * 1024
    specs: list[tuple[str, bytes, tuple[int, int, int], dict[str, Any]]] = [
        ("small-random", ka, (256, 1024, 4096), random_data("small-random", 65536)),
        ("small-random-other-key", kb, (256, 1024, 4096), random_data("small-random", 65536)),
        ("derived-key", gk, (256, 1024, 4096), random_data("derived-key", 20000)),
        ("min-64", ka, (64, 128, 256), random_data("min-64", 8192)),
        ("min-64-wide", ka, (64, 256, 16384), random_data("min-64-wide", 16384)),
        ("min-not-power", kb, (1000, 1024, 1025), random_data("min-not-power", 12000)),
        ("zeros-max-cuts", ka, (256, 1024, 4096), {"generator": "zeros", "length": 10000}),
        (
            "repeat-text",
            kb,
            (128, 512, 2048),
            {"generator": "repeat", "pattern": b"hello, chunker! ".hex(), "length": 9000},
        ),
        ("exactly-max", ka, (64, 128, 256), {"generator": "zeros", "length": 512}),
        ("shorter-than-min", ka, (256, 1024, 4096), random_data("short", 200)),
        ("one-byte", ka, (256, 1024, 4096), random_data("one-byte", 1)),
        ("empty", ka, (256, 1024, 4096), {"generator": "zeros", "length": 0}),
        ("defaults", kb, (512 * kib, mib, 8 * mib), random_data("defaults", 3 * mib)),
    ]
    cases = []
    for name, key, (mn, avg, mx), gen in specs:
        data = data_of(gen)
        cases.append(
            {
                "id": name,
                "gear_key": key.hex(),
                "min": mn,
                "avg": avg,
                "max": mx,
                "data": {**gen, "sha256": sha256(data)},
                "cuts": ref.cut_points(key, data, mn, avg, mx),
                "chunks": ref.chunk_boundaries(key, data, mn, avg, mx),
            }
        )
    return {
        "source": {
            "generator": "tools/make_repo_vectors.py",
            "reference": "tests/reference/repo.py (chunk_boundaries, cut_points, gear_table; "
            "pure Python from docs/FORMAT.md on the blake3 package)",
            "deterministic": f"keys and data are sha256-ctr streams of seeds starting with "
            f"{CHUNKER_SEED_PREFIX!r}",
            "regenerate": REGENERATE,
        },
        "format": CHUNKER_FORMAT,
        "gear": gears,
        "cases": cases,
    }


def render_chunker() -> bytes:
    return (json.dumps(build_chunker(), indent=1, ensure_ascii=True) + "\n").encode()


def render() -> dict[str, bytes]:
    """Every generated file, by path relative to tests/vectors/."""
    return {
        CHUNKER_VECTORS: render_chunker(),
        **render_repo(1),
        **render_repo(2),
        **render_repo(3),
    }


def on_disk() -> dict[str, bytes]:
    out = {}
    if (VECTORS / CHUNKER_VECTORS).exists():
        out[CHUNKER_VECTORS] = (VECTORS / CHUNKER_VECTORS).read_bytes()
    for folder in (REPO_VECTORS, REPO_V2_VECTORS, REPO_V3_VECTORS):
        base = VECTORS / folder
        for p in sorted(base.rglob("*")) if base.is_dir() else []:
            if p.is_file():
                out[p.relative_to(VECTORS).as_posix()] = p.read_bytes()
    return out


def main(argv: list[str]) -> int:
    files = render()
    if argv[1:] == ["--check"]:
        current = on_disk()
        if current != files:
            stale = sorted(set(files) ^ set(current)) + sorted(
                n for n in set(files) & set(current) if files[n] != current[n]
            )
            print(f"out of date: {', '.join(stale[:5])}; run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    for name in on_disk():
        if name not in files:
            (VECTORS / name).unlink()
    for name, data in files.items():
        path = VECTORS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    total = sum(len(d) for n, d in files.items() if n.startswith("repo_"))
    print(f"wrote {len(files)} files ({total} bytes under repo_v1/, repo_v2/ and repo_v3/)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
