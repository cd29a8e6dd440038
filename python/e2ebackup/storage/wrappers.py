"""Retries and concurrency limits, as wrappers around any backend."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from e2ebackup.errors import ObjectExists, StorageError, StorageUnavailable
from e2ebackup.storage.base import ObjectInfo, Storage

__all__ = ["LimitedStorage", "RetryingStorage"]

T = TypeVar("T")
log = logging.getLogger("e2ebackup.storage")


class RetryingStorage(Storage):
    """Retries transient failures (:class:`StorageUnavailable`) with exponential backoff and
    full jitter, a bounded number of times. Uploads are retried only when the source can be
    rewound."""

    def __init__(
        self,
        inner: Storage,
        *,
        attempts: int = 6,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.location = inner.location
        self.upload_concurrency = inner.upload_concurrency
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self.retries = 0

    def _call(
        self, what: str, fn: Callable[[], T], before_retry: Callable[[], None] | None = None
    ) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except StorageUnavailable as e:
                if attempt == self.attempts:
                    raise
                delay = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not secrets
                log.warning(
                    "%s failed (%s); retry %d/%d in %.2fs",
                    what,
                    e,
                    attempt,
                    self.attempts - 1,
                    delay,
                )
                self.retries += 1
                self._sleep(delay)
                if before_retry is not None:
                    before_retry()
        raise AssertionError("unreachable")

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        start = data.tell() if data.seekable() else None
        retried = False

        def rewind() -> None:
            nonlocal retried
            if start is None:
                raise StorageUnavailable(f"cannot retry the upload of {name}: source not seekable")
            data.seek(start)
            retried = True

        def attempt() -> None:
            try:
                self.inner.put(name, data, size=size, sha256=sha256)
            except ObjectExists:
                # A failed attempt may have stored the object before its answer was lost (a
                # dropped connection after the server committed): if what is there now is
                # exactly these bytes, the upload succeeded.
                if not (retried and self._holds(name, size, sha256)):
                    raise

        self._call(f"put {name}", attempt, rewind)

    def _holds(self, name: str, size: int, sha256: bytes) -> bool:
        def digest() -> bytes:
            h = hashlib.sha256()
            with self.inner.open(name) as f:
                while block := f.read(1 << 20):
                    h.update(block)
            return h.digest()

        try:
            if self._call(f"stat {name}", lambda: self.inner.stat(name)).size != size:
                return False
            return self._call(f"check {name}", digest) == sha256
        except StorageError:
            return False

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        return self._call(
            f"get {name}", lambda: self.inner.open(name, offset=offset, length=length)
        )

    def read(self, name: str, *, offset: int = 0, length: int | None = None) -> bytes:
        # Retries cover the whole transfer, not only the request.
        return self._call(
            f"get {name}", lambda: self.inner.read(name, offset=offset, length=length)
        )

    def stat(self, name: str) -> ObjectInfo:
        return self._call(f"stat {name}", lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call(f"list {prefix}", lambda: list(self.inner.list(prefix))))

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", lambda: self.inner.delete(name))

    def close(self) -> None:
        self.inner.close()


class LimitedStorage(Storage):
    """At most ``limit`` operations in flight at once (a backend's connection budget)."""

    def __init__(self, inner: Storage, limit: int) -> None:
        self.inner = inner
        self.location = inner.location
        self.upload_concurrency = inner.upload_concurrency
        self._slots = threading.BoundedSemaphore(max(1, limit))

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        with self._slots:
            self.inner.put(name, data, size=size, sha256=sha256)

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        with self._slots:
            return self.inner.open(name, offset=offset, length=length)

    def read(self, name: str, *, offset: int = 0, length: int | None = None) -> bytes:
        with self._slots:
            return self.inner.read(name, offset=offset, length=length)

    def stat(self, name: str) -> ObjectInfo:
        with self._slots:
            return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._slots:
            return iter(list(self.inner.list(prefix)))

    def delete(self, name: str) -> None:
        with self._slots:
            self.inner.delete(name)

    def close(self) -> None:
        self.inner.close()
