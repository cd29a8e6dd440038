# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""A backup on Dask of an fsspec URL (``e2ebackup.dask.backup(repo, ["webdav://..."])``,
e2ebackup.dask.sources): this process lists the URL, the workers read the files through
fsspec. On a real WebDAV server (rclone's, through the webdav4 package) and on ``file://``: a
nested tree restores byte-identical with the normal restore, a second run reads nothing
unchanged and re-reads what changed, hostile names in a listing are reported and never
stored, and the source's credentials never reach the scheduler."""

from __future__ import annotations

import base64
import os
import posixpath
import sqlite3
import stat
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.base
import distributed
import fsspec  # type: ignore[import-untyped]
import pytest
from dask_helpers import s3_ready_cluster, scheduler_view, write_files
from e2ebackup.dask import backup as dask_backup
from e2ebackup.dask.sources import URLSource, bad_name, public_url
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.backup import BackupStats
from e2ebackup.repo.check import verify
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]
from repo_helpers import PASSWORD, cli, new_repo, open_repo

if TYPE_CHECKING:
    from servers.cloud import RcloneServer

# The WebDAV server fixture; its module is imported through pytest, so its asserts are rewritten.
pytest_plugins = ["servers.cloud"]

MIB = 1 << 20


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with s3_ready_cluster() as c:
        yield c


def nested_files() -> tuple[dict[str, bytes], list[str]]:
    """Files by relative path (nested folders, an empty file, one content in two folders, odd
    names) and the empty folders."""
    shared = os.urandom(2 * MIB)
    files = {
        "empty": b"",
        "Media/2026/IMG_0001.jpg": os.urandom(3 * MIB),
        "Media/2026/IMG_0002.jpg": shared,
        "Media/2025/deep/er/copy.jpg": shared,
        "docs/notes.txt": b"hello\n" * 1000,
        "docs/odd name with spaces & \u00fcn\u00efcode.txt": b"odd\n",
    }
    files.update({f"chats/c{i:02d}.txt": f"message {i}\n".encode() * (i + 1) for i in range(20)})
    return files, ["empty-dir/nested-empty"]


def as_tree(files: dict[str, bytes], empty: Sequence[str] = ()) -> dict[str, bytes | None]:
    """What :func:`tree_of` gives for these files and empty folders."""
    out: dict[str, bytes | None] = dict(files)
    for rel in [*files, *(f"{e}/x" for e in empty)]:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out["/".join(parts[:i])] = None
    return out


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) below ``root``, by relative path."""
    out: dict[str, bytes | None] = {}
    for folder, dirs, names in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = None
        for n in names:
            out[os.path.relpath(os.path.join(folder, n), root)] = Path(folder, n).read_bytes()
    return out


def restored(repo: Repository, sid: str, target: Path, name: str) -> dict[str, bytes | None]:
    restore(repo, sid, target)
    return tree_of(target / name)


def clean(repo: Repository) -> None:
    report = verify(repo, read_data=True)
    assert report.ok, report.errors
    assert report.warnings == []


def dav_credentials() -> tuple[str, str]:
    from servers import cloud

    return cloud.WEBDAV_USER, cloud.WEBDAV_PASSWORD


def dav_options(server: RcloneServer) -> dict[str, Any]:
    return {"base_url": server.url, "auth": dav_credentials()}


def on_dav(server: RcloneServer, files: dict[str, bytes], empty: Sequence[str] = ()) -> str:
    """The files and empty folders uploaded through WebDAV into a fresh folder (so that the
    server's listings know them at once); the folder's URL."""
    folder = f"media-{uuid.uuid4().hex[:8]}"
    upload(server, folder, files, empty)
    return f"webdav://{folder}"


def upload(
    server: RcloneServer, folder: str, files: dict[str, bytes], empty: Sequence[str] = ()
) -> None:
    fs = fsspec.filesystem("webdav", **dav_options(server))
    for rel in [*files, *(f"{e}/x" for e in empty)]:
        fs.makedirs(posixpath.dirname(f"{folder}/{rel}"), exist_ok=True)
    for rel, data in files.items():
        fs.pipe_file(f"{folder}/{rel}", data)


def test_a_nested_tree_on_webdav_restores_byte_identical(
    tmp_path: Path, client: distributed.Client, webdav_server: RcloneServer
) -> None:
    files, empty = nested_files()
    url = on_dav(webdav_server, files, empty)
    repo = new_repo(tmp_path / "repo")
    sid, stats = dask_backup(
        repo, [url], client=client, unit_bytes=4 * MIB, source_options=dav_options(webdav_server)
    )
    assert stats.files_new == len(files)
    assert stats.errors == stats.files_changed == stats.files_unmodified == 0
    assert stats.bytes_read == sum(len(d) for d in files.values())
    assert 0 < stats.bytes_added < stats.bytes_read  # the shared chunks once
    repo = open_repo(tmp_path / "repo")
    assert repo.load_snapshot(sid)["paths"] == [url]
    name = url.rpartition("/")[2]
    assert restored(repo, sid, tmp_path / "out", name) == as_tree(files, empty)
    # Modes the listing does not give: the defaults; times: the listing's (whole seconds).
    out = tmp_path / "out" / name
    assert stat.S_IMODE(os.stat(out / "docs" / "notes.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(out / "Media").st_mode) == 0o755
    src = webdav_server.root / name
    assert os.stat(out / "empty").st_mtime == int(os.stat(src / "empty").st_mtime)
    clean(open_repo(tmp_path / "repo"))


def test_a_large_remote_file_is_read_in_pieces(
    tmp_path: Path, client: distributed.Client, webdav_server: RcloneServer
) -> None:
    """A file of several pieces on WebDAV: each piece's task opens the remote file and seeks
    to its offset; the joined chunks restore it byte for byte (an SQLite-looking start is
    read as bytes, as URL sources read databases)."""
    files = {
        "video.mp4": os.urandom(3 * MIB + 12345),
        "looks.sqlite": b"SQLite format 3\x00" + os.urandom(2 * MIB + 7),
        "small.txt": b"small\n",
    }
    url = on_dav(webdav_server, files)
    repo = new_repo(tmp_path / "repo")
    with distributed.get_task_stream(client) as stream:
        sid, stats = dask_backup(
            repo,
            [url],
            client=client,
            unit_bytes=MIB,
            piece_bytes=MIB,
            source_options=dav_options(webdav_server),
        )
    assert stats.errors == 0
    assert stats.sqlite_captured == 0
    assert stats.bytes_read == sum(len(d) for d in files.values())
    # 4 pieces of the video, 3 of the other, the small file: more tasks than files.
    tasks = [t for t in stream.data if str(t["key"]).startswith("e2ebackup-backup-")]
    assert len(tasks) > len(files)
    name = url.rpartition("/")[2]
    assert restored(open_repo(tmp_path / "repo"), sid, tmp_path / "out", name) == files
    clean(open_repo(tmp_path / "repo"))


def test_a_second_run_reads_only_what_changed(
    tmp_path: Path, client: distributed.Client, webdav_server: RcloneServer
) -> None:
    files = {f"Media/IMG_{i:04d}.jpg": os.urandom(MIB // 2 + i) for i in range(6)}
    files["notes/a.txt"] = b"a\n"
    url = on_dav(webdav_server, files)
    options = dav_options(webdav_server)
    repo = new_repo(tmp_path / "repo")
    first, stats = dask_backup(repo, [url], client=client, unit_bytes=MIB, source_options=options)
    assert stats.files_new == 7

    # Nothing changed: nothing read, the same root.
    repo = open_repo(tmp_path / "repo")
    second, stats = dask_backup(repo, [url], client=client, source_options=options)
    assert (stats.files_new, stats.files_changed, stats.files_unmodified) == (0, 0, 7)
    assert stats.bytes_read == 0
    assert stats.bytes_unmodified == sum(len(d) for d in files.values())
    assert repo.load_snapshot(second)["parent"] == first
    assert repo.load_snapshot(second)["tree"] == repo.load_snapshot(first)["tree"]

    # A file of another size and a new one: read; the rest not.
    changed = {"Media/IMG_0003.jpg": os.urandom(MIB), "notes/b.txt": b"b\n"}
    upload(webdav_server, url.rpartition("/")[2], changed)
    files.update(changed)
    repo = open_repo(tmp_path / "repo")
    third, stats = dask_backup(repo, [url], client=client, source_options=options)
    assert (stats.files_new, stats.files_changed, stats.files_unmodified) == (1, 1, 6)
    assert stats.bytes_read == MIB + 2
    assert repo.load_snapshot(third)["parent"] == second
    out = restored(open_repo(tmp_path / "repo"), third, tmp_path / "out", url.rpartition("/")[2])
    assert out == as_tree(files)
    clean(open_repo(tmp_path / "repo"))


def test_a_file_url_keeps_modes_and_reads_sqlite_as_bytes(
    tmp_path: Path, client: distributed.Client
) -> None:
    """``file://``: the listing gives the permission bits, which are kept; a symbolic link is
    left out (counted as special); an SQLite database is read as its bytes, not captured; a
    file of the same size and another time is read again."""
    src = tmp_path / "data"
    files, empty = nested_files()
    write_files(src, files)
    for e in empty:
        (src / e).mkdir(parents=True)
    os.chmod(src / "docs" / "notes.txt", 0o600)
    os.symlink("docs/notes.txt", src / "link")
    con = sqlite3.connect(src / "msgstore.db")
    con.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, text TEXT)")
    con.executemany("INSERT INTO m (text) VALUES (?)", [(f"row {i}",) for i in range(100)])
    con.commit()
    con.close()
    repo = new_repo(tmp_path / "repo")
    url = f"file://{src}/"
    sid, stats = dask_backup(repo, [url], client=client)
    assert stats.files_new == len(files) + 1
    assert stats.sqlite_captured == 0
    assert stats.skipped_special == 1
    repo = open_repo(tmp_path / "repo")
    assert repo.load_snapshot(sid)["paths"] == [f"file://{src}"]
    expected = tree_of(src)
    del expected["link"]
    assert restored(repo, sid, tmp_path / "out", "data") == expected
    out = tmp_path / "out" / "data"
    assert stat.S_IMODE(os.stat(out / "docs" / "notes.txt").st_mode) == 0o600
    # The listing's time is a float of seconds: within a microsecond.
    mtime_ns = os.stat(src / "msgstore.db").st_mtime_ns
    assert abs(os.stat(out / "msgstore.db").st_mtime_ns - mtime_ns) < 1000
    rows = sqlite3.connect(out / "msgstore.db").execute("SELECT count(*) FROM m").fetchone()
    assert rows == (100,)

    target = src / "docs" / "notes.txt"
    before = os.stat(target).st_mtime
    target.write_bytes(b"HELLO\n" * 1000)
    os.utime(target, (before + 10, before + 10))
    _, stats = dask_backup(open_repo(tmp_path / "repo"), [url], client=client)
    assert (stats.files_changed, stats.files_unmodified) == (1, len(files))
    assert stats.bytes_read == 6000


HOSTILE = ["..", ".", "a/b", "nul\0byte", "\udcff-not-text"]


class HostileFS(LocalFileSystem):  # type: ignore[misc]
    """A local folder whose listings also hold what a store someone else writes to may list:
    names the tree format refuses, an entry outside the folder, a name listed twice."""

    protocol = ("hostile",)
    root_marker = "/"

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        path = str(path)
        if path.startswith("hostile://"):
            path = path[len("hostile://") :]
        return super()._strip_protocol(path)

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
        listing = super().ls(path, detail=True, **kwargs)
        folder = self._strip_protocol(path).rstrip("/")
        extra = [
            {"name": f"{folder}/{bad}", "type": "file", "size": 3, "mtime": 1.0} for bad in HOSTILE
        ]
        extra.append({"name": "/etc/passwd", "type": "file", "size": 3, "mtime": 1.0})
        extra.append({"name": f"{folder}/keep.txt", "type": "file", "size": 3, "mtime": 2.0})
        return listing + extra


@pytest.fixture
def in_process() -> Iterator[distributed.Client]:
    """Workers in this process: they know the protocol the test registers."""
    fsspec.register_implementation("hostile", HostileFS, clobber=True)
    with (
        distributed.LocalCluster(
            n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_hostile_names_in_a_listing_are_reported_not_stored(
    tmp_path: Path, in_process: distributed.Client
) -> None:
    src = tmp_path / "bucket"
    write_files(src, {"keep.txt": b"one", "sub/x.bin": os.urandom(1000)})
    reported: list[tuple[str, Exception]] = []
    repo = new_repo(tmp_path / "repo")
    sid, stats = dask_backup(
        repo,
        [f"hostile://{src}"],
        client=in_process,
        on_error=lambda p, e: reported.append((p, e)),
    )
    # In each of the two folders: the bad names and the entry outside it; at the top,
    # keep.txt listed twice (the real one is kept); and sub/keep.txt, listed but not there,
    # fails when its worker opens it.
    refused = [(p, e) for p, e in reported if isinstance(e, InvalidArgument)]
    assert len(refused) == 2 * (len(HOSTILE) + 1) + 1
    assert sum(p == "/etc/passwd" for p, _ in refused) == 2
    assert sum("listed twice" in str(e) for _, e in refused) == 1
    assert [(p, type(e)) for p, e in reported if (p, e) not in refused] == [
        (f"{src}/sub/keep.txt", FileNotFoundError)
    ]
    assert stats.errors == len(reported)
    assert stats.files_new == 2
    out = restored(open_repo(tmp_path / "repo"), sid, tmp_path / "out", "bucket")
    assert out == {
        "keep.txt": b"one",
        "sub": None,
        "sub/x.bin": (src / "sub" / "x.bin").read_bytes(),
    }


def test_the_source_credentials_never_reach_the_scheduler(
    tmp_path: Path, client: distributed.Client, webdav_server: RcloneServer
) -> None:
    """The storage options (the WebDAV password) go to the workers in the holder of the keys,
    scattered directly: no task name, run spec or scattered object's name carries them."""
    url = on_dav(webdav_server, {f"f{i}.bin": os.urandom(300_000) for i in range(6)})
    repo = new_repo(tmp_path / "repo")
    options = dav_options(webdav_server)
    with scheduler_view(client) as seen:
        _, stats = dask_backup(repo, [url], client=client, unit_bytes=MIB, source_options=options)
    assert stats.files_new == 6
    assert any("e2ebackup-backup-" in text for text, _ in seen)
    user, password = dav_credentials()
    basic = base64.b64encode(f"{user}:{password}".encode())
    tokens = {
        password.encode(),
        password.encode().hex().encode(),
        basic,
        dask.base.tokenize(password).encode(),
        dask.base.tokenize(options).encode(),
    }
    for text, spec in seen:
        for token in tokens:
            assert token not in text.encode()
            assert token not in spec
    assert password not in repr(URLSource([url], options))


def test_urls_are_recorded_without_credentials() -> None:
    assert public_url("s3://KEY:SECRET@bucket/media/?versionId=3#x") == "s3://bucket/media"
    assert public_url("webdav://user:pw@host:8080/a/b/") == "webdav://host:8080/a/b"
    assert public_url("file:///") == "file:///"
    assert public_url("file:///data/") == "file:///data"


def test_names_the_tree_format_refuses() -> None:
    for name in HOSTILE:
        assert bad_name(name) is not None, name
    assert bad_name("") is not None
    for name in ("a", "..a", "a..", " ", "new\nline", "ünï", "\uff0e\uff0e"):
        assert bad_name(name) is None, name


def test_urls_and_local_paths_do_not_mix(tmp_path: Path, client: distributed.Client) -> None:
    repo = new_repo(tmp_path / "repo")
    with pytest.raises(InvalidArgument):
        dask_backup(repo, [tmp_path, f"file://{tmp_path}"], client=client)
    with pytest.raises(InvalidArgument):
        dask_backup(repo, [tmp_path], client=client, source_options={"a": 1})
    with pytest.raises(InvalidArgument):
        dask_backup(repo, [f"file://{tmp_path}"], client=client, exclude_caches=True)


def test_a_file_gone_before_its_worker_reads_it_is_reported(
    tmp_path: Path, client: distributed.Client, webdav_server: RcloneServer
) -> None:
    """Listed by the coordinator, deleted on the server before a worker opens it: reported
    through ``on_error`` and left out; the rest is saved."""
    url = on_dav(webdav_server, {"z-keep.txt": b"kept\n", "b.bin": os.urandom(MIB)})
    folder = url.rpartition("/")[2]
    options = dav_options(webdav_server)
    dask_backup(new_repo(tmp_path / "repo"), [url], client=client, source_options=options)
    upload(webdav_server, folder, {"a-vanishes.bin": os.urandom(MIB), "c-new.txt": b"new\n"})
    fs = fsspec.filesystem("webdav", **options)
    victim = f"{folder}/a-vanishes.bin"

    def progress(stats: BackupStats, path: str) -> None:
        # z-keep.txt is unchanged: reported while the listing is walked, after
        # a-vanishes.bin was listed and before any worker read it.
        if path.endswith("z-keep.txt") and fs.exists(victim):
            fs.rm_file(victim)

    reported: list[tuple[str, Exception]] = []
    sid, stats = dask_backup(
        open_repo(tmp_path / "repo"),
        [url],
        client=client,
        progress=progress,
        on_error=lambda p, e: reported.append((p, e)),
        source_options=options,
    )
    assert [p for p, _ in reported] == [victim]
    assert isinstance(reported[0][1], OSError)
    assert stats.errors == 1
    assert (stats.files_new, stats.files_unmodified) == (1, 2)
    out = restored(open_repo(tmp_path / "repo"), sid, tmp_path / "out", folder)
    assert set(out) == {"z-keep.txt", "b.bin", "c-new.txt"}
    clean(open_repo(tmp_path / "repo"))


def test_the_command_line_backs_up_a_url(tmp_path: Path) -> None:
    src = tmp_path / "data"
    files, _ = nested_files()
    write_files(src, files)
    new_repo(tmp_path / "repo")
    common = ("-r", str(tmp_path / "repo"))
    url = f"file://{src}"
    r = cli(tmp_path, "backup", *common, "--dask", "local", url, E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode == 0, r.stderr
    assert f"{len(files)} files ({len(files)} new" in r.stdout, r.stdout
    r = cli(tmp_path, "restore", *common, "latest", "--target", str(tmp_path / "out"),
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert tree_of(tmp_path / "out" / "data") == tree_of(src)
    # Without --dask a URL is no path.
    r = cli(tmp_path, "backup", *common, url, E2EBACKUP_PASSWORD=PASSWORD)
    assert r.returncode != 0
    assert "no such file" in r.stderr
