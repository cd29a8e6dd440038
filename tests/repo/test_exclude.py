"""Backup excludes: name and path globs, ``**``, exclude files, CACHEDIR.TAG folders; through
the API and the command line, with the progress total counting the same files."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ebackup.errors import InvalidArgument
from e2ebackup.repo.backup import backup, scan_size
from e2ebackup.repo.exclude import CACHEDIR_TAG, Excludes, read_lines
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from hypothesis import assume, given, settings, strategies as st
from repo_helpers import PASSWORD, cli, new_repo, open_repo

TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n"


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.tmp", "/home/ann/a.tmp", True),
        ("*.tmp", "/home/ann/a.tmpx", False),
        ("node_modules", "/src/app/node_modules", True),
        ("node_modules", "/src/app/node_modules_old", False),
        ("Pictures/thumbnails", "/home/ann/Pictures/thumbnails", True),
        ("Pictures/thumbnails", "/home/ann/MyPictures/thumbnails", False),
        ("/home/ann/Downloads", "/home/ann/Downloads", True),
        ("/home/ann/Downloads", "/mnt/home/ann/Downloads", False),
        ("/data/**/tmp", "/data/tmp", True),
        ("/data/**/tmp", "/data/a/b/tmp", True),
        ("/data/*/tmp", "/data/a/b/tmp", False),
        ("/data/**", "/data/a/b", True),
        ("photo-??.jpg", "/p/photo-12.jpg", True),
        ("photo-??.jpg", "/p/photo-123.jpg", False),
        ("[!.]*.log", "/var/x.log", True),
        ("[!.]*.log", "/var/.x.log", False),
        ("cache/", "/home/ann/cache", True),  # a trailing slash names the folder
        ("a+b(c)", "/x/a+b(c)", True),  # regular-expression characters are literal
        ("[]x]y", "/p/]y", True),  # a "]" first in a set is a member, as in fnmatch
        ("[!]x]y", "/p/]y", False),
        ("[!]x]y", "/p/ay", True),
        ("[^a]", "/p/^", True),  # "^" is a member, not a negation
        ("[^a]", "/p/b", False),
        ("[[&~|]", "/p/&", True),
        ("[a-c]", "/p/b", True),
        ("\\x", "/p/\\x", True),
    ],
)
def test_patterns(pattern: str, path: str, matches: bool) -> None:
    assert Excludes([pattern]).excluded(path, os.path.basename(path)) is matches


def test_home_folder_and_bad_patterns() -> None:
    home = os.path.expanduser("~")
    assert Excludes(["~/Downloads"]).excluded(f"{home}/Downloads", "Downloads")
    with pytest.raises(InvalidArgument, match="without"):
        Excludes(["photo[12"])
    assert not Excludes(["[z-a]"]).excluded("/p/z", "z")  # an empty range: as fnmatch
    assert not Excludes([])
    assert Excludes([], exclude_caches=True)


def test_exclude_file(tmp_path: Path) -> None:
    f = tmp_path / "excludes"
    f.write_text("# caches\n*.tmp\n\n   node_modules  \n  # indented comment\n")
    assert read_lines(str(f)) == ["*.tmp", "node_modules"]


def make_source(root: Path) -> None:
    (root / "keep" / "deep").mkdir(parents=True)
    (root / "keep" / "a.txt").write_text("a")
    (root / "keep" / "deep" / "b.txt").write_text("b")
    (root / "keep" / "deep" / "scratch.tmp").write_text("tmp")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text("x" * 5000)
    (root / "cache").mkdir()
    (root / "cache" / CACHEDIR_TAG).write_bytes(TAG)
    (root / "cache" / "blob.bin").write_bytes(os.urandom(3000))
    (root / "fake-cache").mkdir()
    (root / "fake-cache" / CACHEDIR_TAG).write_bytes(b"not the signature")
    (root / "fake-cache" / "kept.bin").write_bytes(b"kept")


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def source_and_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Repository]:
    """``tmp_path/src`` made by make_source, and an empty repository to back it up into."""
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    make_source(tmp_path / "src")
    return tmp_path / "src", new_repo(tmp_path / "repo")


def test_backup_leaves_out_what_is_excluded(
    tmp_path: Path, source_and_repo: tuple[Path, Repository]
) -> None:
    src, repo = source_and_repo
    _, stats = backup(repo, [str(src)], exclude=["*.tmp", "node_modules"], exclude_caches=True)
    assert stats.excluded == 3  # scratch.tmp, node_modules, cache/blob.bin
    restore(open_repo(tmp_path / "repo"), "latest", str(tmp_path / "out"))
    assert listing(tmp_path / "out" / "src") == [
        "cache", f"cache/{CACHEDIR_TAG}", "fake-cache", f"fake-cache/{CACHEDIR_TAG}",
        "fake-cache/kept.bin", "keep", "keep/a.txt", "keep/deep", "keep/deep/b.txt",
    ]  # fmt: skip
    # The progress total counts the same files.
    excludes = Excludes(["*.tmp", "node_modules"], exclude_caches=True)
    files, size = scan_size([str(src)], excludes)
    assert files == 5
    assert size == sum(
        p.stat().st_size for p in (tmp_path / "out" / "src").rglob("*") if p.is_file()
    )


def test_a_path_given_is_backed_up_even_if_a_pattern_matches_it(
    tmp_path: Path, source_and_repo: tuple[Path, Repository]
) -> None:
    src, repo = source_and_repo
    backup(repo, [str(src / "node_modules")], exclude=["node_modules"])
    restore(repo, "latest", str(tmp_path / "out"))
    assert listing(tmp_path / "out") == ["node_modules", "node_modules/pkg",
                                         "node_modules/pkg/index.js"]  # fmt: skip


def test_command_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_source(src)
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    patterns = tmp_path / "patterns"
    patterns.write_text("# build output\nnode_modules\n")
    bad = cli(tmp_path, "backup", "-r", repo, str(src), "-e", "[oops")
    assert bad.returncode == 2
    assert "'[' without ']'" in bad.stderr
    done = cli(tmp_path, "backup", "-r", repo, str(src), "-e", "*.tmp",
               "--exclude-file", str(patterns), "--exclude-caches", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stats"]["excluded"] == 3
    shown = cli(tmp_path, "ls", "-r", repo, "latest", "--json")
    names = {e["path"] for e in json.loads(shown.stdout)}
    assert not any("node_modules" in n or n.endswith(".tmp") or "blob.bin" in n for n in names)
    assert any(n.endswith("keep/deep/b.txt") for n in names)


def test_restore_leaves_out_what_is_excluded(
    tmp_path: Path, source_and_repo: tuple[Path, Repository]
) -> None:
    src, repo = source_and_repo
    backup(repo, [str(src)])
    stats = restore(repo, "latest", str(tmp_path / "out"), exclude=["*.tmp", "/src/cache"])
    assert stats.excluded == 2
    assert listing(tmp_path / "out" / "src") == [
        "fake-cache", f"fake-cache/{CACHEDIR_TAG}", "fake-cache/kept.bin",
        "keep", "keep/a.txt", "keep/deep", "keep/deep/b.txt",
        "node_modules", "node_modules/pkg", "node_modules/pkg/index.js",
    ]  # fmt: skip
    assert stats.bytes == stats.bytes_total  # the total leaves out the same files
    # With --include, patterns still match whole paths in the snapshot.
    sub = restore(repo, "latest", str(tmp_path / "sub"), subpath="src/keep",
                  exclude=["/src/keep/deep"])  # fmt: skip
    assert listing(tmp_path / "sub") == ["src", "src/keep", "src/keep/a.txt"]
    assert sub.bytes == sub.bytes_total == 1


def test_restore_several_includes(tmp_path: Path, source_and_repo: tuple[Path, Repository]) -> None:
    src, repo = source_and_repo
    backup(repo, [str(src)])
    stats = restore(repo, "latest", str(tmp_path / "out"),
                    subpath=["src/keep/deep", "/src/fake-cache/kept.bin"])  # fmt: skip
    assert listing(tmp_path / "out") == [
        "src", "src/fake-cache", "src/fake-cache/kept.bin", "src/keep", "src/keep/deep",
        "src/keep/deep/b.txt", "src/keep/deep/scratch.tmp",
    ]  # fmt: skip
    assert stats.bytes == stats.bytes_total == len("b") + len("tmp") + len("kept")
    with pytest.raises(InvalidArgument, match="given twice"):
        restore(repo, "latest", str(tmp_path / "x"), subpath=["src/keep", "/src//keep/"])
    with pytest.raises(InvalidArgument, match="is inside"):
        restore(repo, "latest", str(tmp_path / "x"), subpath=["src/keep", "src/keep/deep"])
    r = cli(tmp_path, "restore", "-r", str(tmp_path / "repo"), "latest", "--target",
            str(tmp_path / "cli"), "--include", "src/keep/a.txt", "--include", "src/cache",
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert listing(tmp_path / "cli") == [
        "src", "src/cache", f"src/cache/{CACHEDIR_TAG}", "src/cache/blob.bin", "src/keep",
        "src/keep/a.txt",
    ]  # fmt: skip


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    pattern=st.text(alphabet="ab*?[]!^-&", max_size=8),
    name=st.text(alphabet="ab^-]&!", min_size=1, max_size=6),
)
def test_name_patterns_match_as_fnmatch_does(pattern: str, name: str) -> None:
    """On names, the glob is fnmatch's (where fnmatch's pattern is one we accept)."""
    try:
        ours = Excludes([pattern])
    except InvalidArgument:
        assume(False)
        return
    if not pattern.strip():
        return
    assert ours.excluded(f"/x/{name}", name) is fnmatch.fnmatchcase(name, pattern.strip())


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted inside the tree to back up (needs root, as a real mount does)."""
    point = tmp_path / "src" / "keep" / "usb-disk"
    point.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)],
        capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (point / "on-the-other-disk.bin").write_bytes(b"elsewhere" * 100)
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def test_one_file_system_keeps_the_mount_point_empty(
    tmp_path: Path, mounted: Path, source_and_repo: tuple[Path, Repository]
) -> None:
    src, repo = source_and_repo
    _, whole = backup(repo, [str(src)])
    assert whole.excluded == 0
    _, stats = backup(repo, [str(src)], one_file_system=True)
    assert stats.excluded == 1
    restore(repo, "latest", str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "keep" / "usb-disk").is_dir()
    assert list((tmp_path / "out" / "src" / "keep" / "usb-disk").iterdir()) == []
    assert (tmp_path / "out" / "src" / "keep" / "a.txt").read_text() == "a"
    with_mount = scan_size([str(src)])
    without = scan_size([str(src)], one_file_system=True)
    assert with_mount == (without[0] + 1, without[1] + 900)
    r = cli(tmp_path, "backup", "-r", str(tmp_path / "repo"), str(src), "-x", "--json",
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stats"]["excluded"] == 1


def test_dry_run_stores_nothing_and_says_what_a_backup_would_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "src"
    make_source(src)
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    repo = new_repo(tmp_path / "repo")

    def stored() -> list[str]:
        return sorted(o.name for o in repo.storage.list("") if not o.name.startswith("locks/"))

    before = stored()
    sid, dry = backup(repo, [str(src)], exclude=["*.tmp"], dry_run=True)
    assert sid == ""
    assert stored() == before
    assert list(repo.snapshots()) == []
    _, real = backup(repo, [str(src)], exclude=["*.tmp"])
    assert dry.bytes_added == real.bytes_added > 3 << 20  # sealing is deterministic in size
    assert (dry.files_new, dry.excluded) == (real.files_new, real.excluded)
    r = cli(tmp_path, "backup", "-r", str(tmp_path / "repo"), str(src), "-n",
            E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("dry run, nothing stored: ")
    assert len(list(repo.snapshots())) == 1


def test_files_from_and_the_check_alias(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_source(src)
    listing_file = tmp_path / "paths"
    listing_file.write_text(f"# what to back up\n{src / 'keep'}\n\n  {src / 'cache'}  \n")
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    done = cli(tmp_path, "backup", "-r", repo, "--files-from", str(listing_file), "--json")
    assert done.returncode == 0, done.stderr
    [snap] = json.loads(cli(tmp_path, "snapshots", "-r", repo, "--json").stdout)
    assert sorted(snap["paths"]) == [str(src / "cache"), str(src / "keep")]
    checked = cli(tmp_path, "check", "-r", repo, "--read-data")
    assert checked.returncode == 0, checked.stderr
    assert "no errors" in checked.stdout
