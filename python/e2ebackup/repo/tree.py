"""Tree blobs: one per directory, the sorted list of its entries, stored as compact JSON in a
blob of kind tree. Identical directories have identical trees and so are stored once.

An entry: ``name``; ``type`` (file, dir, symlink); ``mode`` (permission bits); ``mtime_ns``;
``size`` (files); ``content`` (files: hex ids of the data blobs, in order); ``subtree`` (dirs:
hex id); ``target`` (symlinks); ``ino`` and ``ctime_ns`` (to spot unchanged files next time);
``uid``/``gid``. Names that are not valid UTF-8 are kept through surrogate escapes.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from e2ebackup.repo.objects import RepositoryCorrupted

MAX_TREE = 32 << 20


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
        value: Any = json.loads(data)
        entries = value["entries"]
        if not isinstance(entries, list):
            raise TypeError
        names = set()
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or "/" in e["name"]:
                raise TypeError
            if e["name"] in ("", ".", "..") or e["name"] in names or "\0" in e["name"]:
                raise TypeError
            names.add(e["name"])
        return entries
    except (ValueError, KeyError, TypeError):
        raise RepositoryCorrupted("a tree blob is malformed") from None
