"""Repository locks: exclusive for writers (backup, forget, prune, key changes), shared for
readers, with stale-lock recovery. In a version-3 repository backups take shared locks and
forget/prune a *prune lock* (``"prune": true``), which conflicts only with exclusive locks and
other prune locks (docs/FORMAT.md, Many writers, Locks).

A lock is an encrypted object ``locks/<id>`` naming its host, process and time, refreshed every
few minutes while held. A lock is stale when it was not refreshed for ``STALE_AFTER`` seconds, or
when it belongs to a process on this host that no longer runs (say after kill -9).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType

from e2ebackup.errors import (
    E2EBackupError,
    InvalidArgument,
    ObjectNotFound,
    RepositoryCorrupted,
    RepositoryLocked,
    StoragePermissionDenied,
)
from e2ebackup.repo.codec import read_json, write_json
from e2ebackup.repo.labels import RepoKeys
from e2ebackup.repo.names import new_id
from e2ebackup.storage.base import Storage

REFRESH_EVERY = 120.0
STALE_AFTER = 1800.0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    def __init__(
        self,
        storage: Storage,
        keys: RepoKeys,
        *,
        exclusive: bool,
        wait: float = 0.0,
        prune: bool = False,
    ) -> None:
        if exclusive and prune:
            raise InvalidArgument("a lock is exclusive or a prune lock, not both")
        self.storage = storage
        self.keys = keys
        self.exclusive = exclusive
        self.prune = prune
        self.wait = wait
        self.name = f"locks/{new_id()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "exclusive": self.exclusive,
        }
        if self.prune:
            record["prune"] = True
        return record

    def _conflicts_with(self, other: dict[str, object]) -> bool:
        """Exclusive conflicts with every lock, prune with prune; shared never with shared or
        prune. A record without ``prune`` (written before version 3) is not a prune lock."""
        if self.exclusive or other.get("exclusive"):
            return True
        return self.prune and other.get("prune") is True

    def _conflicts(self) -> list[str]:
        found = []
        for info in self.storage.list("locks/"):
            if info.name == self.name:
                continue
            try:
                other = read_json(self.storage, self.keys, info.name)
            except (ObjectNotFound, RepositoryCorrupted):
                continue  # released meanwhile, or not ours to judge: ignored, never trusted
            if self._is_stale(other):
                self.storage.delete(info.name)
                continue
            if self._conflicts_with(other):
                found.append(f"{other.get('host')} pid {other.get('pid')}")
        return found

    @staticmethod
    def _is_stale(other: dict[str, object]) -> bool:
        age = time.time() - float(other.get("time", 0))  # type: ignore[arg-type]
        if age > STALE_AFTER:
            return True
        same_host = other.get("host") == socket.gethostname()
        pid = other.get("pid")
        return same_host and isinstance(pid, int) and pid != os.getpid() and not _process_alive(pid)

    def acquire(self) -> Lock:
        deadline = time.monotonic() + self.wait
        while True:
            try:
                write_json(self.storage, self.keys, self.name, self._record())
            except StoragePermissionDenied as e:
                if self.exclusive or self.prune:
                    raise
                raise StoragePermissionDenied(
                    f"{e}; reading takes a lock object this storage does not let us write "
                    "(read-only access?): --no-lock reads without one"
                ) from None
            holders = self._conflicts()
            if not holders:
                break
            self.storage.delete(self.name)
            if time.monotonic() >= deadline:
                kind = "exclusive" if self.exclusive else "prune" if self.prune else "shared"
                raise RepositoryLocked(
                    f"cannot take a {kind} lock: the repository is locked by {', '.join(holders)}"
                )
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._refresh, name="e2ebackup-lock", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            old = self.name
            self.name = f"locks/{new_id()}"
            try:
                write_json(self.storage, self.keys, self.name, self._record())
                self.storage.delete(old)
            except E2EBackupError:
                self.name = old

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.storage.delete(self.name)

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
