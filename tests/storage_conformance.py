"""One conformance suite for every storage backend (restic's approach): a backend passes when
every check here passes against a real instance of it.

Use it by subclassing :class:`StorageConformance` in a test module and providing a ``storage``
fixture that yields a fresh, empty backend.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest
from e2ebackup.errors import (
    InvalidArgument,
    ObjectExists,
    ObjectNotFound,
    ObjectTooLarge,
    StorageDataMismatch,
)
from e2ebackup.storage import Storage


def put(storage: Storage, name: str, data: bytes) -> None:
    storage.put(name, io.BytesIO(data), size=len(data), sha256=hashlib.sha256(data).digest())


class StorageConformance:
    """Every backend must pass these. Subclasses provide the ``storage`` fixture."""

    def test_put_read_stat_round_trip(self, storage: Storage) -> None:
        for name, size in (("config", 0), ("data/ab/abcdef", 1), ("index/x", 5 << 20)):
            data = os.urandom(size)
            put(storage, name, data)
            assert storage.read(name) == data
            assert storage.stat(name).size == size
            assert storage.exists(name)

    def test_ranged_reads(self, storage: Storage) -> None:
        data = os.urandom(3 << 20)
        put(storage, "data/00/ranged", data)
        for offset, length in ((0, 1), (5, 100), (1 << 20, 1 << 20), (len(data) - 7, 7)):
            assert (
                storage.read("data/00/ranged", offset=offset, length=length)
                == data[offset : offset + length]
            )
        assert storage.read("data/00/ranged", offset=len(data) - 3) == data[-3:]
        with storage.open("data/00/ranged", offset=10, length=1000) as f:
            assert f.read(10) == data[10:20]
            assert f.read() == data[20:1010]
        for offset, length in ((-1, 10), (0, -1)):
            with pytest.raises(InvalidArgument):
                storage.read("data/00/ranged", offset=offset, length=length)

    def test_objects_are_written_once(self, storage: Storage) -> None:
        put(storage, "snapshots/one", b"first")
        with pytest.raises(ObjectExists):
            put(storage, "snapshots/one", b"second")
        assert storage.read("snapshots/one") == b"first"

    def test_missing_objects(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            storage.read("data/ff/missing")
        with pytest.raises(ObjectNotFound):
            storage.stat("data/ff/missing")
        assert not storage.exists("data/ff/missing")
        storage.delete("data/ff/missing")  # not an error

    def test_list_by_prefix_and_delete(self, storage: Storage) -> None:
        names = {"data/aa/1", "data/aa/2", "data/bb/3", "index/4", "snapshots/5", "config"}
        for n in names:
            put(storage, n, n.encode())
        assert {o.name for o in storage.list()} == names
        assert {o.name for o in storage.list("data/")} == {"data/aa/1", "data/aa/2", "data/bb/3"}
        assert {o.name for o in storage.list("data/aa/")} == {"data/aa/1", "data/aa/2"}
        assert {(o.name, o.size) for o in storage.list("index/")} == {("index/4", 7)}
        storage.delete("data/aa/1")
        assert {o.name for o in storage.list("data/")} == {"data/aa/2", "data/bb/3"}

    def test_upload_is_verified(self, storage: Storage) -> None:
        data = b"x" * 1000
        # The typed error, whatever the backend: bytes that are not what the caller declared.
        with pytest.raises(StorageDataMismatch):
            storage.put("data/cc/bad", io.BytesIO(data), size=1000, sha256=b"\0" * 32)
        with pytest.raises(StorageDataMismatch):
            storage.put(
                "data/cc/short",
                io.BytesIO(data[:10]),
                size=1000,
                sha256=hashlib.sha256(data).digest(),
            )
        assert not storage.exists("data/cc/bad")
        assert not storage.exists("data/cc/short")

    def test_bad_names_are_refused(self, storage: Storage) -> None:
        bad = ("", "/abs", "a/../b", "a//b", "a b", "../x", "..", ".", "a/./b", "x\n", "a\\b", "a/")
        for name in bad:
            with pytest.raises(InvalidArgument):
                storage.read(name)
            with pytest.raises(InvalidArgument):
                put(storage, name, b"x")
            with pytest.raises(InvalidArgument):
                storage.stat(name)
            with pytest.raises(InvalidArgument):
                storage.delete(name)

    def test_reads_are_capped(self, storage: Storage) -> None:
        """A read takes no more than it asked for: ``max_size``, or for a whole object the
        limit of its kind (a config is a few hundred bytes; 1 MiB is refused)."""
        put(storage, "data/dd/capped", b"x" * 100)
        assert storage.read("data/dd/capped", max_size=100) == b"x" * 100
        with pytest.raises(ObjectTooLarge):
            storage.read("data/dd/capped", max_size=99)
        put(storage, "config", bytes((1 << 20) + 1))
        with pytest.raises(ObjectTooLarge):
            storage.read("config")

    def test_concurrent_writers(self, storage: Storage) -> None:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                put(storage, f"data/{i:02x}/obj", bytes([i]) * 10_000)
            except BaseException as e:  # collected and re-raised in the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(list(storage.list("data/"))) == 8
