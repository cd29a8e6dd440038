"""Retries, concurrency limits and bandwidth limits, as wrappers around any backend."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

from e2ebackup.errors import ObjectExists, StorageError, StorageUnavailable
from e2ebackup.storage.base import ObjectInfo, Storage

__all__ = ["LimitedStorage", "RetryingStorage", "ThrottledStorage", "TokenBucket"]

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

    def read(
        self,
        name: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
    ) -> bytes:
        # Retries cover the whole transfer, not only the request.
        return self._call(
            f"get {name}",
            lambda: self.inner.read(name, offset=offset, length=length, max_size=max_size),
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

    def read(
        self,
        name: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
    ) -> bytes:
        with self._slots:
            return self.inner.read(name, offset=offset, length=length, max_size=max_size)

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


class TokenBucket:
    """``rate`` bytes a second on average, shared by every thread that takes from it. A caller
    takes what it moved and sleeps off any debt, so bursts of up to ``burst`` bytes pass at once
    and the long-run rate holds whatever the number of threads."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a bandwidth limit must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 4, 64 << 10))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            debt = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if debt > 0:
            self._sleep(debt)


class _Metered:
    """A stream whose reads are paid for from a token bucket; everything else passes through
    (seek and tell included, so a retried upload can rewind it)."""

    def __init__(self, inner: BinaryIO, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self._bucket.take(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        got = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self._bucket.take(got or 0)
        return int(got or 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _Metered:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


class ThrottledStorage(Storage):
    """Uploads at most ``upload`` and downloads at most ``download`` bytes a second on average
    (None: no limit), over all threads together: a backup that leaves the household's uplink
    usable, as restic's ``--limit-upload``. Put it inside the retries, so a retried upload is
    paid for again."""

    def __init__(
        self,
        inner: Storage,
        *,
        upload: float | None = None,
        download: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.location = inner.location
        self.upload_concurrency = inner.upload_concurrency
        self.up = TokenBucket(upload, sleep=sleep, clock=clock) if upload else None
        self.down = TokenBucket(download, sleep=sleep, clock=clock) if download else None

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        if self.up is not None:
            data = _Metered(data, self.up)  # type: ignore[assignment]
        self.inner.put(name, data, size=size, sha256=sha256)

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        stream = self.inner.open(name, offset=offset, length=length)
        return stream if self.down is None else _Metered(stream, self.down)  # type: ignore[return-value]

    def read(
        self,
        name: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
    ) -> bytes:
        data = self.inner.read(name, offset=offset, length=length, max_size=max_size)
        if self.down is not None:
            self.down.take(len(data))
        return data

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def close(self) -> None:
        self.inner.close()
