"""Rotation: copy every snapshot into a new repository under a new data key.

Every blob is decrypted with the old keys and sealed again with the new ones (so its id, a MAC
under the new id key, changes too); trees are rewritten with the new ids; snapshots keep their
time, paths and tags. Memory holds one blob at a time plus a map from old to new blob ids.
Afterwards the old data key (and any password or recovery key of the old repository) reads
nothing of the new repository; it still reads the old repository and every copy of it, which
is why the old one should be deleted once the new one verified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e2ebackup.keys import KdfParams, Password, RecoveryKey
from e2ebackup.repo.labels import KIND_DATA, KIND_TREE
from e2ebackup.repo.pack import BlobLocation, PackWriter
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.tree import encode_tree
from e2ebackup.storage.base import Storage


def rotate(
    old: Repository,
    new_storage: Storage,
    *,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | None = None,
    kdf: KdfParams | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Repository:
    """Makes a new repository in ``new_storage`` holding all of ``old``'s snapshots under a
    fresh data key; returns it. It keeps ``old``'s kinds of credential (keyring.policy.rotate):
    a password held by a key vault is registered at the same proven vault, else it gets a
    password slot; and a recovery-key slot for ``recovery_key``."""
    new = Repository.init(
        new_storage,
        credentials=old.rotation_credentials(password, recovery_key),
        kdf=kdf,
        chunker=old.config["chunker"],
        publish=False,
    )
    mapping: dict[bytes, bytes] = {}
    written: set[bytes] = set()

    def stored(pack_id: str, size: int, entries: list[tuple[bytes, BlobLocation]]) -> None:
        new.index.add_pack(pack_id, size, entries)

    with old.lock(exclusive=False), new.lock(exclusive=True):
        snapshots = list(old.snapshots())
        writer = PackWriter(new.storage, new.keys, stored)
        done = 0

        def copy_blob(kind: int, data: bytes) -> bytes:
            ((new_id, sealed),) = new.codec.seal_many(kind, [data], threads=1)
            if new_id not in written:
                written.add(new_id)
                writer.add(kind, new_id, sealed)
            return new_id

        def copy_tree(old_id: bytes) -> bytes:
            nonlocal done
            if old_id in mapping:
                return mapping[old_id]
            entries = old.read_tree(old_id)
            for e in entries:
                if e.get("type") == "dir":
                    e["subtree"] = copy_tree(bytes.fromhex(e["subtree"])).hex()
                content = []
                for cid in e.get("content", []):
                    key = bytes.fromhex(cid)
                    if key not in mapping:
                        data = old.read_blob(KIND_DATA, key)
                        mapping[key] = copy_blob(KIND_DATA, data)
                        done += len(data)
                        if progress is not None:
                            progress(done, len(snapshots))
                    content.append(mapping[key].hex())
                if "content" in e:
                    e["content"] = content
            mapping[old_id] = copy_blob(KIND_TREE, encode_tree(entries))
            return mapping[old_id]

        try:
            copied: list[dict[str, Any]] = []
            for _, snap in snapshots:
                value = {k: v for k, v in snap.items() if k != "id"}
                value["tree"] = copy_tree(bytes.fromhex(snap["tree"])).hex()
                value["parent"] = None
                value["rotated_from"] = old.id
                copied.append(value)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        index_name = new.index.save_new(new.storage, new.keys)
        ids = [new.write_snapshot(value) for value in copied]
        new.commit(add_snapshots=ids, add_indexes=[index_name] if index_name else [])
    new.publish()
    return new
