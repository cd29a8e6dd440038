"""Attack: restore a repository written by someone else.

Threat. The storage provider alone cannot write a folder listing or a file that restore accepts:
every blob is authenticated under the repository's keys. These attacks need the keys, so the
attacker is whoever else holds them: a repository (and its password) received from someone
("here is the backup of the shared drive"), or another device writing to a shared repository
that was compromised. Restoring such an *untrusted repository* must be as safe as extracting an
untrusted tar archive with GNU tar's and libarchive's secure defaults: it may write new files
and folders inside the target, and nothing else. Each test crafts the malicious repository with
the repository's own keys and runs the command-line ``restore`` as a user would.

What must hold: a typed error (exit 1 and a message, never a traceback); nothing that existed is
changed (a folder's mode, owner and times; files; whatever a symlink points to); no setuid,
setgid or sticky bit unless asked for; memory bounded whatever the stored data expands to; and a
budget (``--max-size``, ``--max-files``, by default the target's free space) refused before
anything is written.
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2ebackup.errors import RepositoryCorrupted, RestoreLimitExceeded
from e2ebackup.repo.backup import Archiver
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import Restorer, restore as restore_api
from e2ebackup.repo.tree import Entry, decode_tree
from e2ebackup.storage import LocalStorage
from repo_helpers import FAST, cli, env

PASSWORD = "pw"  # what repo_helpers.cli gives the command line
MiB = 1 << 20


class Crafter:
    """Writes chunks, folder listings and a snapshot of the attacker's choosing, with the
    repository's keys (what a malicious sharer, or a compromised device of a shared repository,
    can do)."""

    def __init__(self, path: Path) -> None:
        storage = LocalStorage(path) if not (path / "config").exists() else None
        if storage is not None:
            self.repo = Repository.init(storage, password=PASSWORD, kdf=FAST)
        else:
            self.repo = Repository.open(LocalStorage(path, create=False), password=PASSWORD)
        self.archiver = Archiver(self.repo, threads=1)

    def chunk(self, data: bytes) -> str:
        """Stores one chunk as it is (no chunker: any size the attacker likes)."""
        (blob_id,) = self.archiver._add_chunks([data])
        return blob_id

    def tree(self, entries: list[Entry]) -> str:
        return self.archiver._add_tree(entries)

    def commit(self, root: list[Entry]) -> str:
        tree = self.archiver._add_tree(root)
        self.archiver._seal_batch()
        self.archiver.writer.finish()
        return self.archiver._commit(
            tree, ["/" + str(e["name"]) for e in root], time.time(), None, None
        )


def file(name: str, content: list[str], size: int, **extra: Any) -> Entry:
    entry: Entry = {"name": name, "type": "file", "mode": 0o644, "mtime_ns": 0}
    entry.update({"content": content, "size": size, **extra})  # type: ignore[typeddict-item]
    return entry


def folder(name: str, subtree: str, **extra: Any) -> Entry:
    entry: Entry = {"name": name, "type": "dir", "mode": 0o755, "mtime_ns": 0, "subtree": subtree}
    entry.update(extra)  # type: ignore[typeddict-item]
    return entry


def restore(tmp: Path, repo: Path, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(tmp, "restore", "-r", str(repo), "latest", "--target", str(target), *args)


def refused(done: subprocess.CompletedProcess[str], words: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert words in done.stderr.lower(), done.stderr


def tree_state(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Mode, owner, group and mtime of everything under ``root`` (symlinks not followed)."""
    out = {}
    for folder_, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            st = os.lstat(os.path.join(folder_, name))
            rel = os.path.relpath(os.path.join(folder_, name), root)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return out


def peak_rss_mib(tmp: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Peak resident memory of ``e2ebackup ARGS`` as a child of a fresh process, whose
    RUSAGE_CHILDREN then holds that one command alone. Each file written is capped at 1 GiB
    (RLIMIT_FSIZE), so a regression cannot fill the disk."""
    probe = (
        "import resource, subprocess, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + '\\n')\n"
        "sys.stderr.write(done.stderr)\n"
        "sys.exit(done.returncode)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "e2ebackup", *args],
        capture_output=True,
        text=True,
        env=env(tmp),
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
    )
    return int(done.stdout.split()[-1]) / 1024, done


# -- what exists is not changed ------------------------------------------------------------------


def test_existing_folder_keeps_its_mode_owner_and_times(tmp_path: Path) -> None:
    """Before: restore set an existing folder to the snapshot's 0777 and uid 4242. New files
    may be added to it (which the kernel notes in its mtime); nothing else about it changes."""
    target = tmp_path / "target"
    for name in ("docs", "keys"):
        (target / name).mkdir(parents=True)
        (target / name / "old.txt").write_text("mine")
        os.chmod(target / name, 0o700)
        os.utime(target / name, ns=(1_600_000_000 * 10**9,) * 2)
    before = tree_state(target)
    c = Crafter(tmp_path / "repo")
    docs = c.tree([file("new.txt", [c.chunk(b"hello")], 5)])
    keys = c.tree([file("old.txt", [c.chunk(b"attacker")], 8, mode=0o666)])
    evil = {"mode": 0o777, "uid": 4242, "gid": 4242, "mtime_ns": 0}
    c.commit([folder("docs", docs, **evil), folder("keys", keys, **evil)])
    done = restore(tmp_path, tmp_path / "repo", target)
    assert done.returncode == 3, done.stderr  # keys/old.txt exists: not replaced
    assert (target / "docs" / "new.txt").read_bytes() == b"hello"
    after = tree_state(target)
    assert after["docs"][:3] == before["docs"][:3]  # mode, owner, group
    del after["docs"], before["docs"], after["docs/new.txt"]
    assert after == before  # keys (nothing added): its times too; and the target itself


def test_setuid_setgid_and_sticky_are_stripped(tmp_path: Path) -> None:
    """Before: a file of mode 06755 without uid was restored setuid root."""
    c = Crafter(tmp_path / "repo")
    sub = c.tree([file("su", [c.chunk(b"#!/bin/sh\n")], 10, mode=0o6755)])
    c.commit([folder("d", sub, mode=0o1777), file("sg", [c.chunk(b"x")], 1, mode=0o2755)])
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t")
    assert done.returncode == 0, done.stderr
    for rel, mode in (("d", 0o777), ("d/su", 0o755), ("sg", 0o755)):
        assert stat.S_IMODE(os.lstat(tmp_path / "t" / rel).st_mode) == mode, rel
    # Asked for, the bits are restored (the user's own system backup).
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t2", "--keep-special-bits")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.lstat(tmp_path / "t2" / "d" / "su").st_mode) == 0o6755
    assert stat.S_IMODE(os.lstat(tmp_path / "t2" / "d").st_mode) == 0o1777


@pytest.mark.parametrize("mode", [0o100644, 0o40755, 1 << 20, -1])
def test_mode_bits_beyond_07777_are_refused(tmp_path: Path, mode: int) -> None:
    """A listing's mode is permission bits only (FORMAT.md); anything else is refused."""
    c = Crafter(tmp_path / "repo")
    c.commit([file("f", [c.chunk(b"x")], 1, mode=mode)])
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t")
    refused(done, "malformed")
    assert not (tmp_path / "t").exists() or not os.listdir(tmp_path / "t")


@pytest.mark.parametrize(
    "bad",
    [
        {"uid": -1},
        {"gid": 1 << 32},
        {"size": "5"},
        {"mtime_ns": 1.5},
        {"mode": True},
        {"type": "fifo"},
        {"content": ["../../etc/passwd"]},
        {"content": ["AB" * 32]},
        {"type": "dir", "subtree": "x" * 64},
        {"type": "symlink", "target": ""},
        {"type": "symlink", "target": "a\0b"},
    ],
)
def test_malformed_fields_are_refused(bad: dict[str, Any]) -> None:
    """Every field restore acts on has a type and a range (FORMAT.md, Trees and snapshots)."""
    entry = {"name": "f", "type": "file", "mode": 0o644, "size": 1, "content": ["ab" * 32]}
    entry.update(bad)
    with pytest.raises(RepositoryCorrupted, match="malformed"):
        decode_tree(json.dumps({"entries": [entry]}).encode())


def test_symlink_then_folder_of_the_same_name_is_refused(tmp_path: Path) -> None:
    """A symlink ``a`` to elsewhere and a folder ``a`` whose files would go through it: names
    are unique in a listing, so the listing is refused and nothing is written anywhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    c = Crafter(tmp_path / "repo")
    sub = c.tree([file("planted", [c.chunk(b"x")], 1)])
    link: Entry = {"name": "a", "type": "symlink", "target": str(outside), "mode": 0o777}
    c.commit([folder("top", c.tree([link, folder("a", sub)]))])
    refused(restore(tmp_path, tmp_path / "repo", tmp_path / "t"), "malformed")
    assert os.listdir(outside) == []


def test_owners_are_restored_only_as_root_and_only_when_asked(tmp_path: Path) -> None:
    """As root, restore sets owners (tar's default for root); ``--no-same-owner`` does not."""
    if os.geteuid() != 0:
        pytest.skip("owners are set only as root")
    c = Crafter(tmp_path / "repo")
    c.commit([file("f", [c.chunk(b"x")], 1, uid=4242, gid=4243, mode=0o4755)])
    assert restore(tmp_path, tmp_path / "repo", tmp_path / "t").returncode == 0
    st = os.lstat(tmp_path / "t" / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4243, 0o755)
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t2", "--no-same-owner")
    assert done.returncode == 0, done.stderr
    assert os.lstat(tmp_path / "t2" / "f").st_uid == 0


def test_existing_symlink_in_the_target_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "cfg")
    c = Crafter(tmp_path / "repo")
    cfg = c.tree([file("authorized_keys", [c.chunk(b"attacker key")], 12)])
    c.commit([folder("cfg", cfg)])
    for extra in ((), ("--overwrite",)):
        restore(tmp_path, tmp_path / "repo", target, *extra)
        assert os.listdir(outside) == []
    assert not os.path.islink(target / "cfg")  # --overwrite replaced the link itself


def test_folder_swapped_for_a_symlink_during_restore_is_not_followed(tmp_path: Path) -> None:
    """A local attacker (or anything racing the restore) replaces a folder that restore made
    with a symlink to elsewhere while restore fills it: later files must still land in the
    folder restore made, never through the symlink."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    repo_path = tmp_path / "repo"
    c = Crafter(repo_path)
    first = [c.chunk(os.urandom(MiB)) for _ in range(3)]
    sub = c.tree([file("a", first, 3 * MiB), file("b", [c.chunk(b"second")], 6)])
    c.commit([folder("d", sub)])
    repo = Repository.open(LocalStorage(repo_path, create=False), password=PASSWORD)
    swapped: list[str] = []

    def race(stats: object, path: str) -> None:
        if not swapped:  # while the first file (d/a) is being written
            os.rename(target / "d", target / "moved")
            os.symlink(outside, target / "d")
            swapped.append(path)

    _, snap = repo.find_snapshot("latest")
    with repo.read_lock():
        Restorer(repo, progress=race).run(snap, str(target))
    assert swapped
    assert os.listdir(outside) == []
    assert sorted(os.listdir(target / "moved")) == ["a", "b"]


# -- memory and disk bombs ---------------------------------------------------------------------


def _baseline(tmp: Path) -> float:
    c = Crafter(tmp / "small-repo")
    c.commit([file("small", [c.chunk(b"small")], 5)])
    rss, done = peak_rss_mib(
        tmp, "restore", "-r", str(tmp / "small-repo"), "latest", "--target", str(tmp / "small")
    )
    assert done.returncode == 0, done.stderr
    return rss


def test_file_of_one_repeated_chunk_restores_in_bounded_memory(tmp_path: Path) -> None:
    """Before: a 2 GiB file of zeros (one chunk id, repeated) restored with 1.7 GiB peak RSS:
    every repetition was opened and held on its own. 256 MiB here; growth must stay < 100 MiB."""
    c = Crafter(tmp_path / "repo")
    zeros = bytes(8 * MiB)
    c_id = c.chunk(zeros)
    c.commit([file("zeros", [c_id] * 32, 256 * MiB)])
    base = _baseline(tmp_path)
    rss, done = peak_rss_mib(
        tmp_path, "restore", "-r", str(tmp_path / "repo"), "latest", "--target", str(tmp_path / "t")
    )
    assert done.returncode == 0, done.stderr
    assert os.path.getsize(tmp_path / "t" / "zeros") == 256 * MiB
    assert rss - base < 100, (rss, base)


def test_many_small_stored_blobs_that_expand_restore_in_bounded_memory(tmp_path: Path) -> None:
    """Before: 35 KB of stored data reached 3.2 GiB RSS: read-ahead was bounded by stored bytes,
    and chunks that compress 1000:1 expanded in memory all at once. Distinct chunks (no sharing
    helps), 32 x 8 MiB; growth must stay < 100 MiB."""
    c = Crafter(tmp_path / "repo")
    files = []
    for i in range(32):
        data = bytearray(8 * MiB)
        data[0] = i
        files.append(file(f"f{i:02}", [c.chunk(bytes(data))], 8 * MiB))
    c.commit(files)
    base = _baseline(tmp_path)
    rss, done = peak_rss_mib(
        tmp_path, "restore", "-r", str(tmp_path / "repo"), "latest", "--target", str(tmp_path / "t")
    )
    assert done.returncode == 0, done.stderr
    assert rss - base < 100, (rss, base)


def _size_bomb(c: Crafter, fanout: int, levels: int, leaf: Entry) -> list[Entry]:
    """``fanout ** levels`` copies of ``leaf`` through one listing per level, each naming the
    level below ``fanout`` times: a few KB stored."""
    tree = c.tree([leaf])
    for _ in range(levels - 1):
        tree = c.tree([folder(f"d{i}", tree) for i in range(fanout)])
    return [folder("bomb", tree)]


def test_declared_size_over_the_budget_is_refused_before_writing(tmp_path: Path) -> None:
    """Before: 35 KB restored a 4 GiB file. ``--max-size`` refuses it up front."""
    c = Crafter(tmp_path / "repo")
    zeros = c.chunk(bytes(8 * MiB))
    c.commit([file("big", [zeros] * 512, 4096 * MiB)])
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t", "--max-size", "100M")
    refused(done, "--max-size")
    assert not (tmp_path / "t").exists() or os.listdir(tmp_path / "t") == []


def test_more_than_the_disk_holds_is_refused_without_any_option(tmp_path: Path) -> None:
    """No option: the budget is the target's free space. 16**4 copies of a 64 GiB file (4 PiB)
    from a repository of a few hundred KB; refused before anything is written."""
    c = Crafter(tmp_path / "repo")
    zeros = c.chunk(bytes(8 * MiB))
    leaf = file("huge", [zeros] * 8192, 8192 * 8 * MiB)
    c.commit(_size_bomb(c, 16, 4, leaf))
    # Run with the file size capped: a regression must not fill the disk.
    _, done = peak_rss_mib(
        tmp_path, "restore", "-r", str(tmp_path / "repo"), "latest", "--target", str(tmp_path / "t")
    )
    refused(done, "free")
    assert not (tmp_path / "t").exists() or os.listdir(tmp_path / "t") == []


def test_entry_count_over_the_budget_is_refused_before_writing(tmp_path: Path) -> None:
    """Before: 14 nested listings (40 KB) restored 49k entries. ``--max-files`` refuses it, and
    counting reuses each listing's total, so a 2**40-entry bomb is refused at once too."""
    c = Crafter(tmp_path / "repo")
    c.commit(_size_bomb(c, 2, 14, file("f", [c.chunk(b"")], 0)))
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t", "--max-files", "1000")
    refused(done, "--max-files")
    assert not (tmp_path / "t").exists() or os.listdir(tmp_path / "t") == []
    c2 = Crafter(tmp_path / "repo2")
    c2.commit(_size_bomb(c2, 2, 40, file("f", [c2.chunk(b"")], 0)))
    done = cli(
        tmp_path, "restore", "-r", str(tmp_path / "repo2"), "latest",
        "--target", str(tmp_path / "t2"), "--max-files", "1000000",
    )  # fmt: skip
    refused(done, "--max-files")


def test_file_longer_than_its_size_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    """A listing says 5 bytes; its chunks hold 64 MiB. The size is the budget: restore stops
    when a file's chunks pass it, and no file (or temporary file) is left behind."""
    c = Crafter(tmp_path / "repo")
    big = c.chunk(bytes(8 * MiB))
    c.commit([file("small.txt", [c.chunk(b"hello")] + [big] * 8, 5)])
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t")
    refused(done, "chunks are longer")
    assert os.listdir(tmp_path / "t") == []


def test_chunk_larger_than_the_chunker_allows_is_refused(tmp_path: Path) -> None:
    """The chunker cuts at ``max`` (8 MiB by default); a bigger data blob is not the writer's."""
    c = Crafter(tmp_path / "repo")
    c.commit([file("big", [c.chunk(bytes(9 * MiB))], 9 * MiB)])
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t")
    refused(done, "chunker's maximum")
    assert os.listdir(tmp_path / "t") == []


def test_restore_api_raises_a_typed_error_over_budget(tmp_path: Path) -> None:
    c = Crafter(tmp_path / "repo")
    c.commit([file("f", [c.chunk(b"12345")], 5)])
    repo = Repository.open(LocalStorage(tmp_path / "repo", create=False), password=PASSWORD)
    with pytest.raises(RestoreLimitExceeded):
        restore_api(repo, "latest", str(tmp_path / "t"), max_size=4)
    with pytest.raises(RestoreLimitExceeded):
        restore_api(repo, "latest", str(tmp_path / "t"), max_files=0)


# -- deep folder chains ------------------------------------------------------------------------


def test_deep_chain_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    """Before: a folder chain ~600 deep died with a RecursionError traceback. Listings nested
    deeper than 512 are refused by every command that walks them."""
    c = Crafter(tmp_path / "repo")
    tree = c.tree([file("f", [c.chunk(b"deep")], 4)])
    for _ in range(600):
        tree = c.tree([folder("d", tree)])
    sid = c.commit([folder("chain", tree)])
    repo = str(tmp_path / "repo")
    refused(restore(tmp_path, tmp_path / "repo", tmp_path / "t"), "deeper")
    refused(cli(tmp_path, "ls", "-r", repo, "latest"), "deeper")
    done = cli(tmp_path, "find", "-r", repo, "f")
    refused(done, "deeper")
    c.archiver = Archiver(c.repo, threads=1)
    c.commit([file("other", [c.chunk(b"x")], 1)])
    refused(cli(tmp_path, "diff", "-r", repo, sid, "latest"), "deeper")
    done = cli(tmp_path, "verify", "-r", repo)
    refused(done, "deeper")


def test_backup_of_a_600_deep_folder_chain_is_clear(tmp_path: Path) -> None:
    """Before: backup of a real 600-deep chain died with a RecursionError traceback. Now the
    part below 512 levels is reported as not backed up (exit 3), and the rest restores."""
    src = tmp_path / "src"
    deep = src.joinpath(*(["d"] * 600))
    deep.mkdir(parents=True)
    (deep / "f").write_text("deep")
    (src / "top.txt").write_text("top")
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    done = cli(tmp_path, "backup", "-r", repo, str(src))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "deeper" in done.stderr
    done = restore(tmp_path, tmp_path / "repo", tmp_path / "t")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t" / "src" / "top.txt").read_text() == "top"
    assert (tmp_path / "t" / "src").joinpath(*(["d"] * 500)).is_dir()


def test_deep_snapshot_restores_with_few_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restore holds folders open to never follow a symlink, but only the deepest few: a
    snapshot 100 folders deep, a file at each level, restores with a handful of descriptors
    (shallower folders are reopened, with O_NOFOLLOW, on the way back up)."""
    monkeypatch.setattr(importlib.import_module("e2ebackup.repo.extract"), "OPEN_FOLDERS", 4)
    c = Crafter(tmp_path / "repo")
    tree = c.tree([file("f", [c.chunk(b"deep")], 4)])
    for i in range(100):
        text = b"%d" % i
        tree = c.tree([folder("d", tree, mode=0o750), file(f"g{i}", [c.chunk(text)], len(text))])
    c.commit([folder("chain", tree)])
    base = len(os.listdir("/proc/self/fd"))
    most = [0]

    def count(stats: object, path: str) -> None:
        most[0] = max(most[0], len(os.listdir("/proc/self/fd")) - base)

    restore_api(c.repo, "latest", str(tmp_path / "t"), progress=count)
    assert 0 < most[0] < 16
    p = tmp_path / "t" / "chain"
    for i in range(99, -1, -1):
        assert (p / f"g{i}").read_bytes() == b"%d" % i
        p = p / "d"
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o750
    assert (p / "f").read_bytes() == b"deep"
