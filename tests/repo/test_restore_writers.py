"""Restore's writer threads (issue #13): small files written in batches by
``_core.write_new_files`` (unnamed until whole, metadata through the descriptor), larger ones
streamed with pwrite; what the walk hands over is exactly what lands, nothing else."""

from __future__ import annotations

import importlib
import os
import stat
import sys
from pathlib import Path

import pytest
from e2ebackup import _core
from e2ebackup.errors import InvalidArgument, InvalidTag
from e2ebackup.repo.backup import backup
from e2ebackup.repo.restore import restore
from repo_helpers import make_tree, new_repo, open_repo, snapshot_of

pytestmark = pytest.mark.skipif(
    not hasattr(_core, "write_new_files"), reason="batched writes are Linux only"
)

MTIME = 1_700_000_000_123_456_789


def _folder(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_write_new_files_places_content_mode_and_times(tmp_path: Path) -> None:
    fd = _folder(tmp_path)
    try:
        placed = _core.write_new_files(
            fd,
            [
                (b"a", [b"hello ", bytearray(b"world")], 0o640, -1, -1, MTIME),
                (b"empty", [], 0o600, -1, -1, -5),  # before 1970: a negative time
            ],
        )
    finally:
        os.close(fd)
    assert placed == [True, True]
    assert (tmp_path / "a").read_bytes() == b"hello world"
    st = os.stat(tmp_path / "a")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == MTIME
    assert os.stat(tmp_path / "empty").st_mtime_ns == -5
    assert sorted(os.listdir(tmp_path)) == ["a", "empty"]  # no temporary name left


def test_write_new_files_never_replaces_an_existing_name(tmp_path: Path) -> None:
    (tmp_path / "there").write_bytes(b"mine")
    os.symlink("/etc/passwd", tmp_path / "link")
    fd = _folder(tmp_path)
    try:
        placed = _core.write_new_files(
            fd,
            [
                (b"there", [b"theirs"], 0o644, -1, -1, 0),
                (b"link", [b"theirs"], 0o644, -1, -1, 0),
                (b"new", [b"x"], 0o644, -1, -1, 0),
            ],
        )
    finally:
        os.close(fd)
    assert placed == [False, False, True]
    assert (tmp_path / "there").read_bytes() == b"mine"
    assert os.readlink(tmp_path / "link") == "/etc/passwd"
    assert sorted(os.listdir(tmp_path)) == ["link", "new", "there"]


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"../x", b"nul\0byte"])
def test_write_new_files_refuses_what_is_not_a_file_name(tmp_path: Path, name: bytes) -> None:
    fd = _folder(tmp_path)
    try:
        with pytest.raises(ValueError, match="not a file name"):
            _core.write_new_files(
                fd, [(b"ok", [b"x"], 0o644, -1, -1, 0), (name, [b"x"], 0o644, -1, -1, 0)]
            )
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []  # checked before anything is written


def test_write_new_files_reports_a_failure_with_its_errno(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"")
    fd = os.open(tmp_path / "plain", os.O_RDONLY)  # not a folder: ENOTDIR
    try:
        with pytest.raises(NotADirectoryError, match="'a'"):
            _core.write_new_files(fd, [(b"a", [b"x"], 0o644, -1, -1, 0)])
    finally:
        os.close(fd)


@pytest.mark.parametrize("batch_files", [1, 3, 256])
def test_restore_through_batches_and_streams_matches_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_files: int
) -> None:
    """Small files batched (one per batch, a few, many), files above the batch size streamed
    with pwrite, in one tree: everything restored as it was, folders' times included."""
    extract = importlib.import_module("e2ebackup.repo.extract")
    monkeypatch.setattr(extract, "BATCH_FILES", batch_files)
    monkeypatch.setattr(extract, "BATCH_FILE_MAX", 64 << 10)
    src = tmp_path / "src"
    make_tree(src, small_files=120, big=[(3 << 20) + 7, 100_000])
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    out = tmp_path / "out"
    stats = restore(open_repo(tmp_path / "repo"), "latest", str(out))
    assert snapshot_of(out / "src") == snapshot_of(src)
    assert stats.skipped_existing == []
    assert stats.files == sum(1 for v in snapshot_of(src).values() if v[0] == "file")


def test_restore_into_a_filled_target_skips_what_is_there(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, small_files=20)
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    out = tmp_path / "out"
    restore(open_repo(tmp_path / "repo"), "latest", str(out))
    restored = out / "src"
    victim = next(p for p in restored.rglob("*") if p.is_file() and not p.is_symlink())
    victim.write_bytes(b"changed by the user")
    gone = next(p for p in restored.rglob("*") if p.is_file() and p != victim)
    gone.unlink()
    stats = restore(open_repo(tmp_path / "repo"), "latest", str(out))
    assert victim.read_bytes() == b"changed by the user"  # never replaced without --overwrite
    assert str(victim) in stats.skipped_existing
    assert gone.exists()  # what was missing is restored
    assert stats.files == 1
    stats = restore(open_repo(tmp_path / "repo"), "latest", str(out), overwrite=True)
    assert snapshot_of(restored) == snapshot_of(src)


@pytest.mark.skipif(sys.platform != "linux", reason="counts descriptors in /proc")
def test_failed_batch_fails_the_restore_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's failure (here: the disk is full at the second batch) ends the restore with
    the error; no descriptor stays open and no file of the failed batch has a name."""
    extract = importlib.import_module("e2ebackup.repo.extract")
    monkeypatch.setattr(extract, "BATCH_FILES", 2)
    real = _core.write_new_files
    calls = [0]

    def full_disk(
        folder: int, files: list[tuple[bytes, list[bytes], int, int, int, int]]
    ) -> list[bool]:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(28, "No space left on device", files[0][0])
        return real(folder, files)

    monkeypatch.setattr(extract._core, "write_new_files", full_disk)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(10):
        (src / "d" / f"f{i}").write_bytes(b"%d" % i)
    repo = new_repo(tmp_path / "repo")
    backup(repo, [str(src)])
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="No space"):
        restore(open_repo(tmp_path / "repo"), "latest", str(tmp_path / "out"))
    assert len(os.listdir("/proc/self/fd")) <= before
    names = os.listdir(tmp_path / "out" / "src" / "d")
    assert "f2" not in names
    assert "f3" not in names
    assert all(not n.endswith(".e2ebackup-tmp") for n in names)


def _codec() -> _core.BlobCodec:
    return _core.BlobCodec(b"i" * 32, b"e" * 32, b"r" * 16)


def test_open_many_matches_open_one_by_one() -> None:
    codec = _codec()
    blobs = [b"first" * 100, os.urandom(5000), b"", b"x" * 70_000]
    sealed = codec.seal_many(0, blobs)
    # A read as restore makes it: blobs side by side, one named twice.
    order = [0, 1, 0, 2, 3]
    buf = b"".join(sealed[i][1] for i in order)
    spans, at = [], 0
    for i in order:
        spans.append((at, len(sealed[i][1])))
        at += len(sealed[i][1])
    ids = [sealed[i][0] for i in order]
    out = codec.open_many(0, ids, spans, buf)
    assert out == [blobs[i] for i in order]
    assert out[0] is out[2]  # a repeat is opened once
    # Past the limit, what is not opened yet is left to the caller; repeats still resolve.
    out = codec.open_many(0, ids, spans, buf, limit=1)
    assert out == [blobs[0], None, blobs[0], None, None]


def test_open_many_refuses_damage_and_spans_outside_the_buffer() -> None:
    codec = _codec()
    (blob_id, sealed), (other_id, _) = codec.seal_many(0, [b"payload" * 50, b"other"])
    damaged = bytearray(sealed)
    damaged[-1] ^= 1
    with pytest.raises(InvalidTag):
        codec.open_many(0, [blob_id], [(0, len(sealed))], bytes(damaged))
    with pytest.raises(InvalidTag):  # swapped: the id binds the blob
        codec.open_many(0, [other_id], [(0, len(sealed))], sealed)
    with pytest.raises(InvalidArgument):
        codec.open_many(0, [blob_id], [(1, len(sealed))], sealed)
    with pytest.raises(InvalidArgument):
        codec.open_many(0, [blob_id, other_id], [(0, len(sealed))], sealed)
