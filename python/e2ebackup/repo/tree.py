"""Tree blobs: one per directory, the sorted list of its entries, stored as compact JSON in a
blob of kind tree. Identical directories have identical trees and so are stored once.

An entry: ``name``; ``type`` (file, dir, symlink); ``mode`` (permission bits); ``mtime_ns``;
``size`` (files); ``content`` (files: hex ids of the data blobs, in order); ``subtree`` (dirs:
hex id); ``target`` (symlinks); ``ino`` and ``ctime_ns`` (to spot unchanged files next time);
``uid``/``gid``. Names that are not valid UTF-8 are kept through surrogate escapes.

A listing comes from whoever holds the repository's keys, not necessarily its owner (a
repository received from someone else): :func:`decode_tree` checks every field it will act on
(docs/FORMAT.md, Trees and snapshots), so what a malformed listing would make restore do (set a
file-type bit as a mode, chown to a negative id, take a size for a string) never happens.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypedDict

from e2ebackup.errors import RepositoryCorrupted, TreeTooDeep

MAX_TREE = 32 << 20
# Listings nested below a snapshot's root tree: deeper is refused (TreeTooDeep). Above what
# any earlier writer could store (backup then failed near 490 levels), far above real folders.
MAX_DEPTH = 512
# The mode bits a listing may carry: permissions, setuid, setgid, sticky; no file-type bits.
MODE_BITS = 0o7777
TYPES = ("file", "dir", "symlink")

_BLOB_ID = re.compile(r"[0-9a-f]{64}")
# Integer fields and their ranges: ids and inode numbers unsigned, times signed 64-bit.
_INTS = {
    "mode": (0, MODE_BITS),
    "mtime_ns": (-(1 << 63), (1 << 63) - 1),
    "ctime_ns": (-(1 << 63), (1 << 63) - 1),
    "ino": (0, (1 << 64) - 1),
    "uid": (0, (1 << 32) - 1),
    "gid": (0, (1 << 32) - 1),
    "size": (0, (1 << 63) - 1),
}


def check_depth(depth: int, where: str = "") -> None:
    """Raises :class:`TreeTooDeep` when a listing ``depth`` levels below the root (the root
    tree is 0) is too deep."""
    if depth > MAX_DEPTH:
        raise TreeTooDeep(where, MAX_DEPTH)


class Entry(TypedDict, total=False):
    name: str
    type: str
    mode: int
    mtime_ns: int
    ctime_ns: int
    size: int
    ino: int
    uid: int
    gid: int
    content: list[str]
    subtree: str
    target: str


def encode_tree(entries: list[Entry]) -> bytes:
    entries = sorted(entries, key=lambda e: e["name"])
    data = json.dumps({"entries": entries}, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_TREE:
        raise RepositoryCorrupted("a single directory has too many entries to store")
    return data


def decode_tree(data: bytes) -> list[Entry]:
    try:
        if len(data) > MAX_TREE:
            raise TypeError
        value: Any = json.loads(data)
        entries = value["entries"]
        if not isinstance(entries, list):
            raise TypeError
        names = set()
        for e in entries:
            _check_entry(e)
            if e["name"] in names:
                raise TypeError
            names.add(e["name"])
        return entries
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: deep nesting
        raise RepositoryCorrupted("a tree blob is malformed") from None


def decode_checked_tree(data: bytes) -> list[Entry]:
    """The entries of ``data``, bytes that :func:`decode_tree` accepted before in this process
    (restore keeps the listings it sized the restore with): parsed again, not checked again."""
    entries: list[Entry] = json.loads(data)["entries"]
    return entries


def _check_entry(e: Any) -> None:
    """Raises TypeError unless ``e`` is an entry as docs/FORMAT.md defines it."""
    if not isinstance(e, dict) or not isinstance(e.get("name"), str):
        raise TypeError
    name = e["name"]
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise TypeError
    kind = e.get("type")
    if kind not in TYPES:
        raise TypeError
    for key, (low, high) in _INTS.items():
        if key in e:
            v = e[key]
            if type(v) is not int or not low <= v <= high:  # bool is not an int here
                raise TypeError
    if kind == "file":
        content = e.get("content", [])
        if not isinstance(content, list):
            raise TypeError
        for blob_id in content:
            if not isinstance(blob_id, str) or not _BLOB_ID.fullmatch(blob_id):
                raise TypeError
    elif kind == "dir":
        if not isinstance(e.get("subtree"), str) or not _BLOB_ID.fullmatch(e["subtree"]):
            raise TypeError
    else:
        target = e.get("target")
        if not isinstance(target, str) or not target or "\0" in target:
            raise TypeError


def snapshot_fields_valid(value: dict[str, Any]) -> bool:
    """Whether the fields that listings, filters, retention and restore act on have the types
    of docs/FORMAT.md (Trees and snapshots): a holder of the key may have written anything."""

    def number(v: object) -> bool:  # seconds since the epoch, up to the year 2514
        return type(v) in (int, float) and 0 <= v <= 2**34  # type: ignore[operator]

    def count(v: object) -> bool:  # a statistic: a byte or file count
        return type(v) in (int, float) and 0 <= v <= 2**63  # type: ignore[operator]

    def strings(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    def hex64(v: object) -> bool:
        return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)

    stats = value.get("stats", {})
    return (
        number(value.get("time"))
        and number(value.get("started", 0))
        and hex64(value.get("tree"))
        and strings(value.get("paths"))
        and strings(value.get("tags", []))
        and isinstance(value.get("hostname"), str)
        and isinstance(value.get("username", ""), str)
        and (value.get("parent") is None or hex64(value.get("parent")))
        and isinstance(stats, dict)
        and all(count(v) for v in stats.values())
    )
