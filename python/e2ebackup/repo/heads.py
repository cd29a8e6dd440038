"""Heads: which snapshots and indexes are live, as a hash chain each device checks.

Every head names the SHA-256 of the stored bytes of the head before it (``parent``). A device
keeps, in its state folder, the newest head it trusted (seq, name, SHA-256) and accepts only a
newest head whose chain leads back to it: an older seq is a rollback, another head at the
trusted seq (or a chain through one) a fork, two heads with the newest seq a fork too, and a
chain with heads missing cannot be checked. docs/FORMAT.md, "Heads, rollback and forks", is
the normative text; ``e2ebackup trust`` accepts a new state on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from e2ebackup.errors import (
    HistoryForked,
    HistoryNotTrusted,
    HistoryUnverifiable,
    InvalidArgument,
    RepositoryCorrupted,
    RolledBack,
)
from e2ebackup.paths import fsync_directory
from e2ebackup.repo.codec import open_json
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.storage.base import Storage

HEAD_NAME = re.compile(r"^heads/([0-9a-f]{16})-[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_INDEX_NAME = re.compile(r"^index/[0-9a-f]{64}\Z")
_PIN = re.compile(r"^[0-9a-f]{16,64}\Z")

#: Heads a commit keeps (the newest and those before it). A device that last saw a head older
#: than these cannot check the chain and says so (HistoryUnverifiable); ``trust`` accepts.
KEEP_HEADS = 100

#: A head lists snapshot ids and index names: 64 MiB is a million snapshots. Larger objects
#: under heads/ are refused unread.
MAX_HEAD_SIZE = 64 << 20

_TRUST_FILE = "trusted-head"
_LEGACY_SEQ_FILE = "head"  # e2ebackup before format 2 kept only the seq, as text


@dataclass
class Head:
    seq: int
    snapshots: list[str]
    indexes: list[str]
    name: str | None = None
    #: SHA-256 (hex) of the stored bytes of the head before this one; None for seq 0, and for
    #: heads written before format version 2.
    parent: str | None = None
    #: SHA-256 (hex) of this head's stored bytes: what a device trusts and a user pins. For
    #: the merge of several version-3 heads (``members``), their digests joined by commas.
    digest: str | None = None
    #: Version 3: the heads this one merges, as (seq, SHA-256 hex); its writer's clock; its
    #: tombstones (object name -> time dropped).
    parents: list[tuple[int, str]] = field(default_factory=list)
    time: float | None = None
    dropped: dict[str, float] = field(default_factory=dict)
    #: Version 3, a view rather than a stored head: the stored heads merged into it (the top
    #: heads, and trusted heads no top head reaches yet).
    members: list[Head] = field(default_factory=list)

    @property
    def stored_heads(self) -> list[Head]:
        """The stored heads this head stands for: its members, or itself."""
        return self.members or [self]


@dataclass(frozen=True)
class TrustedHead:
    """The newest head a device accepted. ``digest`` is None when only a seq is known (state
    left by e2ebackup before format version 2)."""

    seq: int
    name: str | None = None
    digest: str | None = None
    #: Pins (``expect_head``) found in the chain of this head. A later head that extends it
    #: descends from them too, however long ago: a pin kept in a script keeps working after
    #: its head is deleted.
    pins: tuple[str, ...] = ()
    #: Version 3: every head the device accepted, as (name, SHA-256 hex): the top heads and
    #: those merged with them. Empty when only ``name``/``digest`` are known.
    heads: tuple[tuple[str, str], ...] = ()


def head_digest(stored: bytes) -> str:
    """The name of a head's exact bytes: SHA-256 of the object as stored (the sealed message).

    A plain hash is enough: heads are sealed under the metadata key with their name in the
    context, so the storage cannot make a head of its own; the hash only has to pin which of
    the genuine heads is meant, and anyone may compute and compare it (``sha256sum``)."""
    return hashlib.sha256(stored).hexdigest()


def head_object_name(seq: int, random_id: str) -> str:
    return f"heads/{seq:016x}-{random_id}"


def state_dir(repo_id: bytes) -> Path:
    base = os.environ.get("E2EBACKUP_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "e2ebackup"
    )
    return Path(base) / repo_id.hex()


def read_trust(repo_id: bytes) -> TrustedHead | None:
    folder = state_dir(repo_id)
    try:
        value = json.loads((folder / _TRUST_FILE).read_text("utf-8"))
        pins = tuple(p for p in value.get("pins", []) if isinstance(p, str) and _PIN.match(p))
        heads = tuple(
            (str(n), str(d))
            for n, d in value.get("heads", [])
            if isinstance(n, str) and HEAD_NAME.match(n) and isinstance(d, str) and _HEX64.match(d)
        )
        # Version 3 needs only "heads" (FORMAT.md); "name" and "sha256" are the first of them,
        # as e2ebackup before format 3 reads it.
        seq = value["seq"]
        name, digest = (value["name"], value["sha256"]) if not heads else heads[0]
        if type(seq) is int and seq >= 0 and isinstance(name, str) and _HEX64.match(digest):
            return TrustedHead(seq, name, digest, pins, heads)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return TrustedHead(int((folder / _LEGACY_SEQ_FILE).read_text()))
    except (OSError, ValueError):
        return None


def write_trust(repo_id: bytes, head: Head, pins: tuple[str, ...] = ()) -> None:
    """Records ``head`` as trusted, with the ``pins`` its chain was checked against: a
    temporary file, fsynced, renamed over the old record, so a crash leaves the old record or
    the new one. Without a writable state folder the checks are limited to this run."""
    stored = head.stored_heads
    value: dict[str, object] = {
        "seq": head.seq,
        # name and sha256 as e2ebackup before format 3 keeps them: the first head.
        "name": stored[0].name,
        "sha256": stored[0].digest,
        "pins": list(pins[-8:]),
    }
    if head.time is not None or head.members:  # version 3: every head accepted
        value["heads"] = [[h.name, h.digest] for h in stored]
    write_state_file(repo_id, _TRUST_FILE, json.dumps(value))


def write_state_file(repo_id: bytes, name: str, body: str) -> None:
    """Writes ``body`` to ``name`` in the repository's state folder: a temporary file,
    fsynced, renamed over the old one, so a crash leaves the old record or the new one.
    Without a writable state folder nothing is kept (the checks are limited to this run)."""
    try:
        folder = state_dir(repo_id)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_directory(str(folder))
    except OSError:
        pass


def parse_head(name: str, value: object, stored: bytes, *, version: int) -> Head:
    """A head from its authenticated JSON; ``version`` is the repository's format version."""
    if version >= 3:
        return _parse_head_v3(name, value, stored, drops=version >= 4)
    m = HEAD_NAME.match(name)
    if m is None:
        raise RepositoryCorrupted(f"{name} is not a head name")
    seq = int(m.group(1), 16)
    if not isinstance(value, dict) or type(value.get("seq")) is not int:
        raise RepositoryCorrupted(f"{name} is malformed")
    if value["seq"] != seq:
        raise RepositoryCorrupted(f"{name} does not match its sequence number")
    snapshots, indexes, parent = value.get("snapshots"), value.get("indexes"), value.get("parent")
    if (
        not isinstance(snapshots, list)
        or not all(isinstance(s, str) and _HEX64.match(s) for s in snapshots)
        or not isinstance(indexes, list)
        or not all(isinstance(i, str) and _INDEX_NAME.match(i) for i in indexes)
        or not (parent is None or (isinstance(parent, str) and _HEX64.match(parent)))
    ):
        raise RepositoryCorrupted(f"{name} is malformed")
    if seq == 0 and parent is not None:
        raise RepositoryCorrupted(f"{name} is the first head but names a parent")
    if seq > 0 and parent is None and version >= 2:
        raise RepositoryCorrupted(f"{name} names no parent head")
    return Head(seq, list(snapshots), list(indexes), name, parent, head_digest(stored))


#: Version 3: a head merges at most this many heads (FORMAT.md, Many writers).
MAX_PARENTS = 64
_DROPPED_NAME = re.compile(r"^(snapshots|index)/[0-9a-f]{64}\Z")
# Version 4 adds drops and drops' packs (FORMAT.md, Writers that cannot read).
_DROPPED_NAME_V4 = re.compile(
    r"^(?:(?:snapshots|index|drops)/[0-9a-f]{64}|data/([0-9a-f]{2})/\1[0-9a-f]{62})\Z"
)
_MAX_TIME = 1 << 34


def _is_time(value: object) -> bool:
    return type(value) in (int, float) and 0 <= value <= _MAX_TIME  # type: ignore[operator]


def _parse_head_v3(name: str, value: object, stored: bytes, *, drops: bool) -> Head:
    """A version-3 head: every MUST of FORMAT.md, Many writers, checked before any use."""
    m = HEAD_NAME.match(name)
    if m is None:
        raise RepositoryCorrupted(f"{name} is not a head name")
    seq = int(m.group(1), 16)
    if not isinstance(value, dict) or type(value.get("seq")) is not int:
        raise RepositoryCorrupted(f"{name} is malformed")
    if value["seq"] != seq:
        raise RepositoryCorrupted(f"{name} does not match its sequence number")
    snapshots, indexes = value.get("snapshots"), value.get("indexes")
    parents, dropped, when = value.get("parents"), value.get("dropped"), value.get("time")
    if (
        "parent" in value
        or not _is_time(when)
        or not isinstance(snapshots, list)
        or not all(isinstance(s, str) and _HEX64.match(s) for s in snapshots)
        or not isinstance(indexes, list)
        or not all(isinstance(i, str) and _INDEX_NAME.match(i) for i in indexes)
        or not isinstance(parents, list)
        or not all(
            isinstance(p, list)
            and len(p) == 2
            and type(p[0]) is int
            and 0 <= p[0] < seq
            and isinstance(p[1], str)
            and _HEX64.match(p[1])
            for p in parents
        )
        or not isinstance(dropped, list)
        or not all(
            isinstance(d, list)
            and len(d) == 2
            and isinstance(d[0], str)
            and (_DROPPED_NAME_V4 if drops else _DROPPED_NAME).match(d[0])
            and _is_time(d[1])
            for d in dropped
        )
    ):
        raise RepositoryCorrupted(f"{name} is malformed")
    tombstones = {str(d[0]): float(d[1]) for d in dropped}
    listed = [f"snapshots/{s}" for s in snapshots] + list(indexes)
    if (
        len(set(listed)) != len(listed)
        or len(tombstones) != len(dropped)
        or any(n in tombstones for n in listed)
    ):
        raise RepositoryCorrupted(f"{name} lists a name twice, or lists a name it drops")
    if len({p[1] for p in parents}) != len(parents):
        raise RepositoryCorrupted(f"{name} names a parent head twice")
    if (seq == 0) != (not parents) or len(parents) > MAX_PARENTS:
        raise RepositoryCorrupted(f"{name} names {len(parents)} parent heads at seq {seq}")
    return Head(
        seq,
        list(snapshots),
        list(indexes),
        name,
        digest=head_digest(stored),
        parents=[(int(p[0]), str(p[1])) for p in parents],
        time=float(when),  # type: ignore[arg-type]
        dropped=tombstones,
    )


def check_pin(pin: str) -> str:
    pin = pin.strip().lower()
    if not _PIN.match(pin):
        raise InvalidArgument("an expected head is 16 to 64 hex digits of its SHA-256")
    return pin


@dataclass
class History:
    """The heads the storage lists, read on demand."""

    storage: Storage
    keys: RepoKeys
    version: int
    by_seq: dict[int, list[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def accept_hint(self) -> str:
        return (
            "If that is expected (say, the storage was restored from an older copy), accept "
            f"it on purpose with: e2ebackup trust -r {self.storage.location}"
        )

    def __post_init__(self) -> None:
        for info in self.storage.list("heads/"):
            m = HEAD_NAME.match(info.name)
            if m:  # other names under heads/ are not heads
                self.by_seq.setdefault(int(m.group(1), 16), []).append(info.name)
                self.sizes[info.name] = info.size

    cache: dict[str, Head] = field(default_factory=dict)

    def read(self, name: str) -> Head:
        """The head ``name`` as the listing shows it, read once per History."""
        if name in self.cache:
            return self.cache[name]
        size = self.sizes[name]
        if size > MAX_HEAD_SIZE:
            raise RepositoryCorrupted(f"{name} is {size} bytes, too large for a head")
        stored = self.storage.read(name, length=size)  # no more than listed, whatever is there
        head = parse_head(name, open_json(self.keys, name, stored), stored, version=self.version)
        self.cache[name] = head
        return head

    def newest(self, trusted: TrustedHead | None = None) -> Head:
        """The head with the highest seq, which must be the only one with it."""
        if not self.by_seq:
            raise RepositoryCorrupted("the repository has no head object")
        seq = max(self.by_seq)
        if trusted is not None and seq < trusted.seq:
            raise RolledBack(
                f"the repository was rolled back: its newest head is seq {seq}, this device "
                f"trusted seq {trusted.seq}. {self.accept_hint}"
            )
        names = sorted(self.by_seq[seq])
        if len(names) > 1:
            digests = ", ".join(str(self.read(name).digest) for name in names)
            raise HistoryForked(
                f"{len(names)} heads have seq {seq} ({digests}): the storage shows two branches "
                "of the history (or two devices wrote at once). To go on from one of them on "
                f"purpose: e2ebackup trust -r {self.storage.location} --head HASH --yes (the "
                "other branch's snapshots are then no longer listed)"
            )
        return self.read(names[0])

    def parent(self, head: Head) -> Head | None:
        """The head ``head`` names as its parent, or None if no head with its seq is stored
        (deleted after KEEP_HEADS commits, or by the storage)."""
        for name in sorted(self.by_seq.get(head.seq - 1, [])):
            candidate = self.read(name)
            if candidate.digest == head.parent:
                return candidate
        return None

    def check_extends(self, newest: Head, trusted: TrustedHead) -> None:
        """Raises unless the chain from ``newest`` leads back to ``trusted``."""
        if newest.seq < trusted.seq:
            raise RolledBack(
                f"the repository was rolled back: its newest head is seq {newest.seq}, this "
                f"device trusted seq {trusted.seq}. {self.accept_hint}"
            )
        if trusted.digest is None:
            return  # only a seq is known (state from before format 2): the seq check above
        head = newest
        while head.seq > trusted.seq:
            if head.parent is None:
                # Written by e2ebackup before format 2 (only allowed in a version-1
                # repository): the chain starts after it, the seq check above is all there is.
                return
            parent = self.parent(head)
            if parent is None and self.by_seq.get(head.seq - 1):
                raise HistoryForked(
                    f"head seq {head.seq} names a parent that is not among the stored heads "
                    f"with seq {head.seq - 1}: the storage replaced it with another branch. "
                    f"{self.accept_hint}"
                )
            if parent is None:
                raise HistoryUnverifiable(
                    f"this device last trusted head seq {trusted.seq}; the storage no longer "
                    f"holds the heads between it and seq {newest.seq} (the repository keeps the "
                    f"last {KEEP_HEADS}), so whether the history extends what this device saw "
                    f"cannot be checked. {self.accept_hint}"
                )
            head = parent
        if head.digest != trusted.digest:
            raise HistoryForked(
                f"the history the storage shows (newest head seq {newest.seq}) does not pass "
                f"through head seq {trusted.seq} {trusted.digest[:16]}, which this device "
                f"trusted: it is another branch, and what this device saw may be hidden. "
                f"{self.accept_hint}"
            )

    def check_pin(self, newest: Head, pin: str) -> None:
        """Raises unless the head whose SHA-256 starts with ``pin`` is ``newest`` or in its
        chain."""
        head: Head | None = newest
        while head is not None:
            if head.digest is not None and head.digest.startswith(pin):
                return
            head = self.parent(head) if head.parent is not None else None
        raise HistoryNotTrusted(
            f"the storage does not show the expected head {pin}: its newest head (seq "
            f"{newest.seq}, {newest.digest}) does not descend from it (rolled back, another "
            f"branch, or older than the last {KEEP_HEADS} heads kept). {self.accept_hint}"
        )


def stale_head_names(storage: Storage, newest_seq: int) -> list[str]:
    """Heads a commit of ``newest_seq`` no longer keeps: KEEP_HEADS heads stay, so that a device
    that was away for fewer commits can still follow the chain."""
    out = []
    for info in storage.list("heads/"):
        m = HEAD_NAME.match(info.name)
        if m and int(m.group(1), 16) <= newest_seq - KEEP_HEADS:
            out.append(info.name)
    return out
