"""Key material on a Dask worker stays in memory: a worker under memory pressure spills what it
holds to its local disk, and the holders of e2ebackup's secrets refuse to be written there
(e2ebackup.dask.runner.Hidden), while they still travel over connections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distributed.protocol.serialize import deserialize, serialize, serialize_bytelist
from distributed.spill import SpillBuffer
from e2ebackup.dask.runner import Hidden

SECRET = b"\x8f" * 7 + b"not-on-disk-" + os.urandom(16)


class Holder(Hidden):
    """A holder as the library's are: fields in slots, pickled by __reduce__."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __reduce__(self) -> tuple[object, ...]:
        return (Holder, (self.key,))


def files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_serializing_without_a_peer_is_refused() -> None:
    with pytest.raises(TypeError) as caught:
        serialize_bytelist(Holder(SECRET), on_error="raise")  # what a spill does
    assert SECRET.hex() not in str(caught.value)
    assert "not-on-disk" not in repr(caught.value)


def test_a_spilling_worker_keeps_the_holder_in_memory(tmp_path: Path) -> None:
    # The worker's own buffer: over its target, the least recently used values go to disk.
    buffer = SpillBuffer(str(tmp_path), target=3000)
    buffer["before"] = os.urandom(2000)
    buffer["holder"] = Holder(SECRET)
    buffer["after"] = os.urandom(2000)  # over the target: something must be spilled
    buffer["later"] = os.urandom(2000)
    assert "before" in buffer.slow  # spilling works...
    assert "holder" in buffer.fast  # ...and skips the holder
    assert "holder" not in buffer.slow
    assert files_holding(tmp_path, b"not-on-disk-") == []
    assert isinstance(buffer["holder"], Holder)
    assert buffer["holder"].key == SECRET


def test_a_connection_still_carries_it() -> None:
    peer = {
        "sender": {"address": "tcp://127.0.0.1:1"},
        "recipient": {"address": "tcp://127.0.0.1:2"},
    }
    header, frames = serialize(
        Holder(SECRET), serializers=("dask", "pickle"), on_error="raise", context=peer
    )
    assert header["serializer"] == "dask"
    received = deserialize(header, frames)  # type: ignore[no-untyped-call]
    assert isinstance(received, Holder)
    assert received.key == SECRET
