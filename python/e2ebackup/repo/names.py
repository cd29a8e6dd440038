"""Object names on storage: random ids, the check every id read from storage passes before it
becomes part of a name, and the names of key objects and packs (docs/FORMAT.md, Repository)."""

from __future__ import annotations

import re
import secrets

from e2ebackup.errors import RepositoryCorrupted

__all__ = ["check_id", "is_id", "key_object_name", "new_id", "pack_name"]

_ID = re.compile(r"[0-9a-f]{64}")


def new_id() -> str:
    """A random object name: 32 bytes from the OS CSPRNG, hex."""
    return secrets.token_hex(32)


def is_id(value: object) -> bool:
    """Whether ``value`` is an object id: 64 lowercase hex digits."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, what: str) -> str:
    """``value`` if it is an object id, else :class:`RepositoryCorrupted`. Every id read from
    storage (an index's pack ids, a head's snapshot ids and index names, a listing) passes
    here before it becomes part of an object name: a name like ``thesis.docx`` must never
    reach a path (defence in depth beside the storage's own refusal of links)."""
    if not is_id(value):
        raise RepositoryCorrupted(f"{what} id {str(value)[:80]!r} is malformed")
    return str(value)


def key_object_name(slot_id: str) -> str:
    return f"keys/{slot_id}"


def pack_name(pack_id: str) -> str:
    pack_id = check_id(pack_id, "pack")
    return f"data/{pack_id[:2]}/{pack_id}"
