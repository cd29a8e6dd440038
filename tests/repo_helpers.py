"""Helpers for the repository tests: trees to back up, and comparing restored trees."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e2ebackup.keys import Argon2idParams
from e2ebackup.repo.repository import Repository
from e2ebackup.storage import LocalStorage

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
PASSWORD = "correct horse"


def env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a command-line run: no E2EBACKUP_ settings from outside, the password
    "pw", and a state folder of the test's own."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    e.update({"E2EBACKUP_PASSWORD": "pw", "E2EBACKUP_STATE_DIR": str(tmp / "state")})
    e.update(extra)
    return e


@contextmanager
def device(state: Path) -> Iterator[None]:
    """Runs as the device whose state folder is ``state`` (its trust, its writer state)."""
    old = os.environ.get("E2EBACKUP_STATE_DIR")
    os.environ["E2EBACKUP_STATE_DIR"] = str(state)
    try:
        yield
    finally:
        if old is None:
            del os.environ["E2EBACKUP_STATE_DIR"]
        else:
            os.environ["E2EBACKUP_STATE_DIR"] = old


def cli(
    tmp: Path, *args: str, cwd: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m e2ebackup ARGS`` as a user runs it (see :func:`env`)."""
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args],
        capture_output=True,
        text=True,
        env=env(tmp, **extra),
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
        cwd=cwd,
    )


def new_repo(path: Path) -> Repository:
    return Repository.init(LocalStorage(path), password=PASSWORD, kdf=FAST)


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalStorage(path, create=False), password=PASSWORD)


def make_tree(root: Path, *, small_files: int = 300, big: list[int] = ()) -> None:  # type: ignore[assignment]
    """Unicode and odd names, empty files and folders, symlinks, modes, mtimes, big files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    (root / "empty-file").write_bytes(b"")
    (root / "ünïcödé ñame 🎉.txt").write_text("unicode\n")
    (root / "spaces and\nnewline").write_bytes(b"odd name")
    odd = os.fsencode(str(root)) + b"/latin1-\xe9t\xe9"
    with open(odd, "wb") as f:
        f.write(b"not utf-8 name")
    (root / "private.key").write_bytes(b"secret")
    os.chmod(root / "private.key", 0o600)
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "script.sh", 0o755)
    os.symlink("script.sh", root / "link-to-script")
    os.symlink("does/not/exist", root / "dangling-link")
    os.utime(root / "script.sh", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    small = root / "many" / "small"
    small.mkdir(parents=True)
    for i in range(small_files):
        (small / f"f{i:05d}.txt").write_bytes(f"file {i}\n".encode() * (i % 7 + 1))
    for n, size in enumerate(big):
        with open(root / f"big{n}.bin", "wb") as f:
            left = size
            while left:
                piece = min(left, 16 << 20)
                f.write(os.urandom(piece))
                left -= piece


def snapshot_of(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything a restore must reproduce, by relative path (bytes, for odd names)."""
    out: dict[bytes, tuple[object, ...]] = {}
    base = os.fsencode(str(root))
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, base)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    data = f.read()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, len(data), hash(data))
    return out
