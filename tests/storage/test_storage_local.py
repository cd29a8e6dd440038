"""The local folder backend: the conformance suite, plus what only a local disk can do."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ebackup.errors import StorageError, StoragePermissionDenied, StorageUnavailable
from e2ebackup.storage import LocalStorage, RetryingStorage, Storage, open_storage
from storage_conformance import StorageConformance, put


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    with LocalStorage(tmp_path / "repo") as s:
        yield s


class TestLocalConformance(StorageConformance):
    pass


class TestRetryingLocalConformance(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        with RetryingStorage(LocalStorage(tmp_path / "repo"), sleep=lambda _: None) as s:
            yield s


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    put(s, "data/aa/x", b"123")
    with pytest.raises(StorageError):
        s.put("data/aa/y", io.BytesIO(b"123"), size=3, sha256=b"\0" * 32)
    assert sorted(p.name for p in (tmp_path / "data" / "aa").iterdir()) == ["x"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_a_clear_error(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(StoragePermissionDenied):
            put(s, "data/aa/x", b"1")
    finally:
        os.chmod(tmp_path, 0o700)


def test_read_only_filesystem_and_full_disk_are_clear_errors(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)

    class Failing(io.BytesIO):
        def __init__(self, err: int) -> None:
            super().__init__(b"x" * 100)
            self.err = err

        def read(self, n: int | None = -1) -> bytes:
            raise OSError(self.err, os.strerror(self.err))

    from e2ebackup.errors import StorageFull

    with pytest.raises(StorageFull):
        s.put("data/aa/full", Failing(errno.ENOSPC), size=100, sha256=b"\0" * 32)
    with pytest.raises(StoragePermissionDenied):
        s.put("data/aa/ro", Failing(errno.EROFS), size=100, sha256=b"\0" * 32)
    assert list(s.list()) == []


def test_retries_are_bounded_and_rewind_the_source(tmp_path: Path) -> None:
    calls = []

    class Flaky(LocalStorage):
        def put(self, name: str, data: io.BufferedIOBase, *, size: int, sha256: bytes) -> None:  # type: ignore[override]
            calls.append(data.read(3))
            if len(calls) < 3:
                raise StorageUnavailable("503 slow down")
            data.seek(0)
            super().put(name, data, size=size, sha256=sha256)  # type: ignore[arg-type]

    delays: list[float] = []
    s = RetryingStorage(Flaky(tmp_path), attempts=4, sleep=delays.append)
    put(s, "data/aa/x", b"abcdef")
    assert calls == [b"abc", b"abc", b"abc"]
    assert len(delays) == 2
    assert s.retries == 2
    always = RetryingStorage(Flaky(tmp_path), attempts=2, sleep=delays.append)
    calls.clear()
    with pytest.raises(StorageUnavailable):
        put(always, "data/aa/y", b"abcdef")


def test_open_storage_for_a_path(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path, create=True), LocalStorage)
    with pytest.raises(StorageError):
        open_storage(tmp_path / "missing")
