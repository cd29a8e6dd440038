"""Generate the repository test vectors: tests/vectors/repo_v1/, tests/vectors/repo_v2/ and
tests/vectors/chunker_v1.json.

    python tools/make_repo_vectors.py            # rewrite them
    python tools/make_repo_vectors.py --check    # exit 1 if the committed files are out of date

repo_vN/repo/ is a small repository of format version N made by the minimal writer of
tests/reference/repo.py (written from docs/FORMAT.md alone, never e2ebackup itself);
repo_vN/manifest.json says how to open it and what every snapshot restores to. repo_v2 also
lists states of the storage (the repository with some heads removed and some of repo_v2/extra/
added: rolled back, forked...) and what a device that trusts or pins a given head must make of
each. chunker_v1.json holds gear-table values and cut
points of the keyed FastCDC chunker. Every key, salt, name and file byte comes from a fixed seed
and every time is fixed, so re-running produces byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
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
            "slots": [
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
            ],
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
    folder = REPO_VECTORS if version == 1 else REPO_V2_VECTORS
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "repo"
        manifest = build_repo(dest, version)
        files = {}
        for part in ("repo", "extra"):
            base = Path(tmp) / part
            for n in ref.object_names(base, ""):
                files[f"{folder}/{part}/{n}"] = (base / n).read_bytes()
    files[f"{folder}/manifest.json"] = (
        json.dumps(manifest, indent=1, ensure_ascii=True) + "\n"
    ).encode()
    ch = manifest["inputs"]["chunker"]
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
    return {CHUNKER_VECTORS: render_chunker(), **render_repo(1), **render_repo(2)}


def on_disk() -> dict[str, bytes]:
    out = {}
    if (VECTORS / CHUNKER_VECTORS).exists():
        out[CHUNKER_VECTORS] = (VECTORS / CHUNKER_VECTORS).read_bytes()
    for folder in (REPO_VECTORS, REPO_V2_VECTORS):
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
    print(f"wrote {len(files)} files ({total} bytes under repo_v1/ and repo_v2/)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
