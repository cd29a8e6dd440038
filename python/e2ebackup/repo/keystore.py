"""A repository's key slots: the ``keys/`` objects, as the key policy's ``SlotStore``.

Writers put one slot in each object, so adding a key never rewrites another and changing a
password (the new slot stored, then the old deleted) never leaves the repository without a
working key. The storage can add objects of its own; the slots of all of them together are
capped (docs/FORMAT.md, Objects), counted before any of them is tried.
"""

from __future__ import annotations

from e2ebackup.errors import InvalidArgument, ObjectNotFound, TooManyKeySlots
from e2ebackup.keyring.slots import MAX_SLOTS, KeySlot, KeySlots
from e2ebackup.repo.names import is_id, key_object_name, new_id
from e2ebackup.storage.base import Storage

__all__ = ["RepoKeyStore", "load_key_slots"]


class RepoKeyStore:
    """The ``keys/`` objects of the repository ``repo_id`` in ``storage``."""

    def __init__(self, storage: Storage, repo_id: bytes) -> None:
        self.storage = storage
        self.repo_id = repo_id
        self._objects: list[tuple[str, KeySlots]] = []
        self._loaded = False
        self._merged: KeySlots | None = None  # what load() returned, until an edit
        self.added: list[str] = []  # names of the objects this store wrote

    @property
    def container_id(self) -> bytes:
        return self.repo_id

    def load(self) -> KeySlots:
        """Every slot of every ``keys/`` object, in the order of the objects' names. Refuses
        more than ``MAX_SLOTS`` in all, counting objects before reading them. Read once per
        store until it is edited."""
        if self._merged is not None:
            return self._merged
        # Only `keys/<id>` objects are key objects (one id validator for every stored name).
        infos = sorted(
            (o for o in self.storage.list("keys/") if is_id(o.name[len("keys/") :])),
            key=lambda o: o.name,
        )
        if len(infos) > MAX_SLOTS:
            raise TooManyKeySlots(
                f"{len(infos)} key objects ({len(infos)} key slots or more); a repository holds "
                f"at most {MAX_SLOTS} key slots (the others were added by whoever can write to "
                "the storage)"
            )
        self._objects = []
        for info in infos:
            try:
                data = self.storage.read(info.name)
            except ObjectNotFound:
                # Deleted since the listing: a slot replaced meanwhile (`key passwd` stores the
                # new slot, then deletes the old), or a delete still under way at the storage
                # when its process was killed. Its replacement is in the listing, or a later one.
                continue
            self._objects.append((info.name, KeySlots.decode(self.repo_id, data)))
        self._loaded = True
        merged = KeySlots(self.repo_id)
        for _, one in self._objects:
            merged.slots.extend(one.slots)
            merged.unknown.extend(one.unknown)
            merged.damaged_kinds.extend(one.damaged_kinds)
        merged.check_count()
        self._merged = merged
        return merged

    def names(self) -> list[str]:
        """The object name of each slot, in the order :meth:`load` lists them."""
        return [name for name, one in self._objects for _ in one.slots]

    def _count(self) -> int:
        if not self._loaded:
            self.load()
        return sum(len(one.slots) + len(one.unknown) for _, one in self._objects)

    def _put(self, slots: KeySlots) -> str:
        name = key_object_name(new_id())
        self.storage.put_bytes(name, slots.encode())
        self._objects.append((name, slots))
        self.added.append(name)
        self._merged = None
        return name

    def add(self, slot: KeySlot) -> None:
        if self._count() >= MAX_SLOTS:
            raise InvalidArgument(f"a repository holds at most {MAX_SLOTS} key slots")
        self._put(KeySlots(self.repo_id, [slot]))

    def replace(self, old: KeySlot, new: KeySlot) -> None:
        # The new slot is stored before the old one goes: never a moment without a key.
        self._put(KeySlots(self.repo_id, [new]))
        self.remove(old)

    def remove(self, slot: KeySlot) -> None:
        at = next(
            i for i, (_, one) in enumerate(self._objects) if any(s is slot for s in one.slots)
        )
        name, one = self._objects.pop(at)
        self._merged = None
        rest = [s for s in one.slots if s is not slot]
        if rest or one.unknown:
            # An object holding other slots too (not ours: writers put one in each) is
            # rewritten without this one.
            self._put(KeySlots(self.repo_id, rest, one.unknown))
        self.storage.delete(name)

    def commit(self) -> None:
        """Nothing is staged: every edit is stored as it is made."""


def load_key_slots(storage: Storage, repo_id: bytes) -> tuple[KeySlots, list[str]]:
    """All key slots and the name of the object each came from, in the same order."""
    store = RepoKeyStore(storage, repo_id)
    slots = store.load()
    return slots, store.names()
