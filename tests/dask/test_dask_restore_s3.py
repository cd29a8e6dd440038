# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""A restore on a real Dask cluster into an S3 prefix as plaintext objects
(``e2ebackup.dask.restore_to_s3``) on a real S3 server (``rclone serve s3``): every regular
file becomes one object, byte for byte (nested folders, an empty file, a file of several
multipart parts); nothing is written without the explicit opt-in; existing objects are not
replaced without ``overwrite``; a damaged pack raises RepositoryCorrupted and the damaged file
has no object (nor an incomplete upload left behind); ``subpath`` and ``exclude`` work; the
command line's ``restore --dask local --to-s3 ... --plaintext-to-s3`` does the same."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import distributed
import pytest
from dask_helpers import kill_workers, s3_ready_cluster, wait_busy, write_files
from e2ebackup.dask import S3RestoreStats, S3Target, StorageSpec, restore_to_s3
from e2ebackup.errors import (
    InvalidArgument,
    RepositoryCorrupted,
    RestoreLimitExceeded,
    StorageDataMismatch,
)
from e2ebackup.repo.backup import backup
from e2ebackup.repo.names import pack_name
from e2ebackup.storage.s3 import S3Storage, check_key_path
from repo_helpers import PASSWORD, cli, new_repo, open_repo

if TYPE_CHECKING:
    from servers.cloud import S3Server

# The S3 server fixture; its module is imported through pytest, so its asserts are rewritten.
pytest_plugins = ["servers.cloud"]

MIB = 1 << 20
BUCKET = "e2ebackup"
PART = 5 * MIB  # S3's smallest part: the big file below is three parts
BIG = 2 * PART + 123_457


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A repository with one snapshot of ``src``: nested folders, an empty file, a file of
    three parts, a symlink, an empty folder, a setuid file and a name that is not UTF-8; and
    the files that become objects, by key."""
    root = tmp_path_factory.mktemp("s3restore")
    src = root / "src"
    files = {
        "top.txt": b"top\n",
        "empty": b"",
        "a/b/c/deep.txt": b"deep " * 1000,
        "a/b/other.bin": os.urandom(300_000),
        "a/sibling.txt": b"sibling\n",
        "ünï cödé/name with spaces.txt": b"unicode\n",
        "big/three-parts.bin": os.urandom(BIG),
        "setuid.sh": b"#!/bin/sh\n",
    }
    write_files(src, files)
    os.chmod(src / "setuid.sh", 0o4755)
    os.chmod(src / "a" / "sibling.txt", 0o640)
    os.utime(src / "top.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (src / "empty-folder" / "nested").mkdir(parents=True)
    os.symlink("top.txt", src / "link")
    with open(os.fsencode(src) + b"/latin1-\xe9t\xe9", "wb") as f:  # no UTF-8: no key
        f.write(b"a name S3 cannot hold")
    backup(new_repo(root / "repo"), [src])
    return root / "repo", {f"src/{k}": v for k, v in files.items()}


@pytest.fixture
def env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This process's credentials too (the test looks at the bucket with its own client)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


def target(s3: S3Server, prefix: str | None = None) -> S3Target:
    return S3Target(
        BUCKET,
        prefix or f"out-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3.endpoint,
        part_size=PART,
        multipart_threshold=PART,
    )


def objects(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """Every object below ``prefix``, by key relative to it."""
    c = s3.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            out[key[len(prefix) + 1 :]] = c.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return out


def incomplete_uploads(s3: S3Server, prefix: str) -> list[Any]:
    try:
        resp = s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/")
    except Exception as e:  # rclone answers NoSuchUpload when there is none at all
        if "NoSuchUpload" in str(e):
            return []
        raise
    return list(resp.get("Uploads", []))


def to_s3(
    repo: Path, where: S3Target, client: distributed.Client, **options: Any
) -> S3RestoreStats:
    options.setdefault("plaintext_to_cloud", True)
    return restore_to_s3(open_repo(repo), "latest", where, client=client, **options)


def test_every_file_becomes_an_object_byte_for_byte(
    source: tuple[Path, dict[str, bytes]], client: distributed.Client, env: S3Server
) -> None:
    repo, files = source
    where = target(env)
    stats = to_s3(repo, where, client, unit_bytes=MIB)
    assert objects(env, where.prefix) == files
    assert stats.files == len(files)
    unnamed = len(b"a name S3 cannot hold")
    assert stats.bytes == stats.bytes_total - unnamed == sum(len(v) for v in files.values())
    assert stats.skipped_existing == []
    assert stats.names_not_kept == ["src/latin1-\udce9t\udce9"]
    # What objects cannot hold is counted, not made: the symlink, the empty folders (the
    # nested one too), the setuid bit; no folder or symlink was "restored".
    assert stats.symlinks_not_kept == 1
    assert stats.empty_dirs_not_kept == 2
    assert stats.special_bits_not_kept == 1
    assert stats.dirs_not_kept == 8  # src, a, a/b, a/b/c, big, ünï cödé, empty-folder/nested
    assert stats.dirs == stats.symlinks == 0
    # The big file went up in parts (a multipart ETag: the MD5 of the parts' MD5s, "-3").
    c = env.client()
    head = c.head_object(Bucket=BUCKET, Key=f"{where.prefix}/src/big/three-parts.bin")
    assert head["ContentLength"] == BIG
    etag = head["ETag"].strip('"')
    assert "-" not in etag or etag.endswith("-3")
    # The modification time and the permission bits as metadata (rclone answers "Mtime").
    for rel, mtime, mode in [
        ("top.txt", "1600000000.123456789", "0644"),
        ("a/sibling.txt", None, "0640"),
        ("setuid.sh", None, "0755"),
    ]:
        head = c.head_object(Bucket=BUCKET, Key=f"{where.prefix}/src/{rel}")
        meta = {k.lower(): v for k, v in head["Metadata"].items()}
        assert meta["mode"] == mode
        if mtime is not None:
            assert meta["mtime"] == mtime
    assert incomplete_uploads(env, where.prefix) == []


def test_nothing_is_written_without_the_explicit_opt_in(
    source: tuple[Path, dict[str, bytes]], client: distributed.Client, env: S3Server
) -> None:
    repo, _ = source
    where = target(env)
    for ambiguous in (False, "yes", 1):
        with pytest.raises(InvalidArgument, match="plaintext_to_cloud=True"):
            to_s3(repo, where, client, plaintext_to_cloud=ambiguous)
    with pytest.raises(InvalidArgument, match="plaintext_to_cloud=True"):
        restore_to_s3(open_repo(repo), "latest", where, client=client)  # the default
    assert objects(env, where.prefix) == {}


def test_existing_objects_are_not_replaced_without_overwrite(
    source: tuple[Path, dict[str, bytes]], client: distributed.Client, env: S3Server
) -> None:
    repo, files = source
    where = target(env)
    c = env.client()
    theirs = {"src/top.txt": b"someone else's small object", "src/big/three-parts.bin": b"x"}
    for rel, data in theirs.items():
        c.put_object(Bucket=BUCKET, Key=f"{where.prefix}/{rel}", Body=data)
    stats = to_s3(repo, where, client, unit_bytes=MIB)
    assert sorted(stats.skipped_existing) == sorted(
        f"s3://{BUCKET}/{where.prefix}/{rel}" for rel in theirs
    )
    assert stats.files == len(files) - len(theirs)
    assert objects(env, where.prefix) == {**files, **theirs}
    # With overwrite they are replaced.
    again = to_s3(repo, where, client, unit_bytes=MIB, overwrite=True)
    assert again.files == len(files)
    assert again.skipped_existing == []
    assert objects(env, where.prefix) == files
    # Once more: each object is this restore's own (its size, mtime and mode): counted as
    # written (as a retried unit counts those an earlier attempt placed), none replaced.
    third = to_s3(repo, where, client, unit_bytes=MIB)
    assert third.files == len(files)
    assert third.skipped_existing == []
    assert objects(env, where.prefix) == files


def test_a_damaged_pack_raises_and_its_file_has_no_object(
    source: tuple[Path, dict[str, bytes]],
    client: distributed.Client,
    env: S3Server,
    tmp_path: Path,
) -> None:
    import shutil

    shutil.copytree(source[0], tmp_path / "repo")
    repo = open_repo(tmp_path / "repo")
    _, snapshot = repo.find_snapshot("latest", None)
    entries = {e["name"]: e for e in repo.read_tree(str(snapshot["tree"]))}
    src = {e["name"]: e for e in repo.read_tree(str(entries["src"]["subtree"]))}
    big = {e["name"]: e for e in repo.read_tree(str(src["big"]["subtree"]))}
    content = big["three-parts.bin"]["content"]
    assert len(content) > 2  # its last blob comes after parts went up
    loc = repo.index.locate(bytes.fromhex(content[-1]))
    path = tmp_path / "repo" / pack_name(loc.pack)
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    where = target(env)
    with pytest.raises(RepositoryCorrupted, match="damaged"):
        to_s3(tmp_path / "repo", where, client, unit_bytes=MIB, retries=1)
    written = objects(env, where.prefix)
    assert "src/big/three-parts.bin" not in written
    for rel, got in written.items():  # what is there is complete and right
        assert got == source[1][rel], rel
    assert incomplete_uploads(env, where.prefix) == []  # the upload was aborted
    # (Which the server would have shown: an upload left as a killed worker leaves it.)
    c = env.client()
    key = f"{where.prefix}/src/big/three-parts.bin"
    started = c.create_multipart_upload(Bucket=BUCKET, Key=key)
    assert [u["Key"] for u in incomplete_uploads(env, where.prefix)] == [key]
    c.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=started["UploadId"])


def test_subpath_and_excludes(
    source: tuple[Path, dict[str, bytes]], client: distributed.Client, env: S3Server
) -> None:
    repo, files = source
    where = target(env)
    stats = to_s3(repo, where, client, subpath="src/a")
    assert objects(env, where.prefix) == {k: v for k, v in files.items() if k.startswith("src/a/")}
    assert stats.files == 3
    other = target(env)
    stats = to_s3(repo, other, client, exclude=["*.bin", "ünï cödé"])
    expected = {k: v for k, v in files.items() if not k.endswith(".bin") and "ünï cödé" not in k}
    assert objects(env, other.prefix) == expected
    assert stats.excluded == 3
    # The budget is checked before anything is written.
    over = target(env)
    with pytest.raises(RestoreLimitExceeded):
        to_s3(repo, over, client, max_files=3)
    with pytest.raises(RestoreLimitExceeded):
        to_s3(repo, over, client, max_size=BIG)
    assert objects(env, over.prefix) == {}


def test_the_command_line(
    source: tuple[Path, dict[str, bytes]], env: S3Server, tmp_path: Path
) -> None:
    repo, files = source
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    s3 = ["--to-s3", f"s3://{BUCKET}/{prefix}", "--to-s3-endpoint", env.endpoint]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        """``restore --dask local``, the S3 credentials in its (and its workers')
        environment."""
        return cli(
            tmp_path,
            *["restore", "-r", str(repo), "latest", "--dask", "local", *args],
            E2EBACKUP_PASSWORD=PASSWORD,
            AWS_ACCESS_KEY_ID=env.access_key,
            AWS_SECRET_ACCESS_KEY=env.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
        )

    refused = run(*s3)
    assert refused.returncode != 0
    assert "--plaintext-to-s3" in refused.stderr
    assert objects(env, prefix) == {}
    both = run(*s3, "--plaintext-to-s3", "--target", str(tmp_path))
    assert both.returncode != 0
    r = run(*s3, "--plaintext-to-s3", "--include", "src/a")
    assert r.returncode == 0, r.stderr
    assert "as objects" in r.stdout + r.stderr
    assert objects(env, prefix) == {k: v for k, v in files.items() if k.startswith("src/a/")}
    # Again: the objects are there; without --overwrite none is replaced.
    theirs = b"changed by someone"
    env.client().put_object(Bucket=BUCKET, Key=f"{prefix}/src/a/sibling.txt", Body=theirs)
    again = run(*s3, "--plaintext-to-s3", "--include", "src/a")
    assert "not replaced" in again.stderr
    assert again.returncode != 0
    assert objects(env, prefix)["src/a/sibling.txt"] == theirs


def test_key_paths_are_checked() -> None:
    assert check_key_path("a/b c/ü.txt") == "a/b c/ü.txt"
    for bad in ("", "/abs", "a//b", "a/../b", "./a", "a/.", "a/\udce9", "a\nb", "x" * 1025):
        with pytest.raises(InvalidArgument):
            check_key_path(bad)
    for prefix in ("a/../b", "a//b"):
        with pytest.raises(InvalidArgument):
            S3Target(BUCKET, prefix)
    with pytest.raises(InvalidArgument):
        S3Target.from_url("/local/folder")


def test_a_stream_upload_goes_up_in_parts_and_leaves_nothing_when_stopped(env: S3Server) -> None:
    """S3Storage.upload, the writing side of the workers, in this process."""
    storage = S3Storage(BUCKET, endpoint_url=env.endpoint, part_size=PART, multipart_threshold=PART)
    prefix = f"stream-{uuid.uuid4().hex[:8]}"
    data = os.urandom(BIG)
    up = storage.upload(f"{prefix}/ok.bin", size=BIG, metadata={"mode": "0600"}, overwrite=False)
    for i in range(0, BIG, MIB):
        up.write(data[i : i + MIB])
    # The parts go up as they fill (the multipart upload is started by the first), and
    # nothing is visible before complete().
    assert [u["Key"] for u in incomplete_uploads(env, prefix)] == [f"{prefix}/ok.bin"]
    assert objects(env, prefix) == {}
    up.complete()
    assert storage.parts_uploaded == 3
    assert objects(env, prefix) == {"ok.bin": data}
    assert storage.head_path(f"{prefix}/ok.bin") == (BIG, {"mode": "0600"})
    # Stopped after two parts, too long, or too short: no object, no upload left.
    stopped = storage.upload(f"{prefix}/stopped.bin", size=BIG, overwrite=False)
    stopped.write(data[: 2 * PART])
    stopped.abort()
    too_long = storage.upload(f"{prefix}/long.bin", size=10, overwrite=False)
    with pytest.raises(StorageDataMismatch):
        too_long.write(b"x" * 11)
    too_short = storage.upload(f"{prefix}/short.bin", size=BIG, overwrite=False)
    too_short.write(data[: PART + 1])
    with pytest.raises(StorageDataMismatch):
        too_short.complete()
    assert objects(env, prefix) == {"ok.bin": data}
    assert incomplete_uploads(env, prefix) == []
    # (rclone ignores If-None-Match: the refusal of an existing object is the sink's HEAD.)
    replaced = storage.upload(f"{prefix}/ok.bin", size=1, overwrite=True)
    replaced.write(b"x")
    replaced.complete()
    assert objects(env, prefix) == {"ok.bin": b"x"}
    with pytest.raises(InvalidArgument):
        storage.upload("../escape", size=0, overwrite=False)


def test_a_worker_killed_mid_restore_leaves_every_object_right(
    source: tuple[Path, dict[str, bytes]], client: distributed.Client, env: S3Server
) -> None:
    """The worker restoring everything (one unit) is killed with SIGKILL once an object is
    there (reads slowed down so that the run lasts): Dask runs the unit again on the other
    worker, which counts the objects the dead attempt completed as written; every object is
    then the file's bytes, none is missing, and the statistics are a clean run's."""
    repo, files = source
    where = target(env)
    slow = StorageSpec(str(repo), limit_download=2 * MIB)
    outcome: list[S3RestoreStats] = []
    runner = threading.Thread(
        target=lambda: outcome.append(to_s3(repo, where, client, unit_bytes=1 << 30, storage=slow))
    )
    runner.start()

    ready = lambda: bool(objects(env, where.prefix))  # noqa: E731
    busy = wait_busy(client, "e2ebackup-restore-s3-", runner, ready=ready)
    kill_workers(client, busy[0])
    runner.join(300)
    assert not runner.is_alive()
    assert len(outcome) == 1
    assert objects(env, where.prefix) == files
    assert outcome[0].files == len(files)
    assert outcome[0].skipped_existing == []
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests
