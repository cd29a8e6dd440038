"""``e2ebackup encrypt --dask`` / ``decrypt --dask``: a folder on a Dask cluster from the command
line, against a real scheduler (a LocalCluster's, reached over TCP by the CLI process) and
``--dask local``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import distributed
import e2ebackup
import pytest
from repo_helpers import cli


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with (
        distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        yield cluster.scheduler_address


def tree(root: Path) -> dict[str, bytes]:
    files = {
        "chats/msgstore.db": os.urandom(300_000),
        "chats/empty": b"",
        "Media/2026/IMG_0001.jpg": os.urandom(70_000),
        "Media/2026/IMG_0002.jpg": os.urandom(1),
        "notes.txt": b"hello\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def key_file(tmp: Path) -> str:
    path = tmp / "key"
    path.write_text(e2ebackup.generate_key().hex() + "\n")
    return str(path)


def test_a_folder_round_trips_through_a_real_scheduler(tmp_path: Path, scheduler: str) -> None:
    files = tree(tmp_path / "src")
    key = key_file(tmp_path)
    r = cli(tmp_path, "encrypt", "--dask", scheduler, "-k", key, str(tmp_path / "src"),
            str(tmp_path / "enc"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "encrypted 5 files" in r.stderr
    encrypted = read_tree(tmp_path / "enc")
    assert sorted(encrypted) == sorted(f"{name}.e2e" for name in files)
    for name, data in files.items():  # a C2SP message, readable one file at a time
        with open(key, "rb") as f:
            raw = e2ebackup.keys.read_key_file(f.read())
        assert e2ebackup.decrypt(raw, encrypted[f"{name}.e2e"]) == data
    r = cli(tmp_path, "decrypt", "--dask", scheduler, "-k", key, str(tmp_path / "enc"),
            str(tmp_path / "out"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert read_tree(tmp_path / "out") == files


def test_local_cluster_with_a_recovery_key_makes_sealed_files(tmp_path: Path) -> None:
    files = tree(tmp_path / "src")
    rk = e2ebackup.keys.RecoveryKey.generate()
    rk_file = tmp_path / "rk"
    rk_file.write_text(rk.reveal())
    common = ("--recovery-key-file", str(rk_file))
    r = cli(tmp_path, "encrypt", "--dask", "local", "--no-password", *common,
            str(tmp_path / "src"), str(tmp_path / "enc"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    one = tmp_path / "enc" / "notes.txt.e2e"
    r = cli(tmp_path, "decrypt", *common, str(one), str(tmp_path / "one.txt"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "one.txt").read_bytes() == files["notes.txt"]
    r = cli(tmp_path, "decrypt", "--dask", "local", *common, str(tmp_path / "enc"),
            str(tmp_path / "out"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert read_tree(tmp_path / "out") == files


def test_a_tampered_file_fails_alone_with_exit_1(tmp_path: Path, scheduler: str) -> None:
    files = tree(tmp_path / "src")
    key = key_file(tmp_path)
    r = cli(tmp_path, "encrypt", "--dask", scheduler, "-k", key, str(tmp_path / "src"),
            str(tmp_path / "enc"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    victim = tmp_path / "enc" / "chats" / "msgstore.db.e2e"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 1
    victim.write_bytes(bytes(data))
    r = cli(tmp_path, "decrypt", "--dask", scheduler, "-k", key, str(tmp_path / "enc"),
            str(tmp_path / "out"))  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "chats/msgstore.db.e2e: InvalidTag" in r.stderr
    assert "1 failed" in r.stderr
    restored = read_tree(tmp_path / "out")
    assert "chats/msgstore.db" not in restored  # nothing unauthenticated under a final name
    assert restored == {k: v for k, v in files.items() if k != "chats/msgstore.db"}


def test_dask_takes_folders_only(tmp_path: Path) -> None:
    tree(tmp_path / "src")
    key = key_file(tmp_path)
    r = cli(tmp_path, "encrypt", "--dask", "local", "-k", key, str(tmp_path / "src" / "notes.txt"),
            str(tmp_path / "enc"))  # fmt: skip
    assert r.returncode == 2
    assert "is not a folder" in r.stderr
    r = cli(tmp_path, "encrypt", "--dask", "local", "-k", key, "-", str(tmp_path / "enc"))
    assert r.returncode == 2
    assert "cannot be -" in r.stderr
    assert not (tmp_path / "enc").exists()


def test_without_the_extra_the_command_names_it(tmp_path: Path) -> None:
    # A `distributed` that cannot be imported, as on a machine without the extra.
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n"
    )
    tree(tmp_path / "src")
    r = cli(tmp_path, "encrypt", "--dask", "local", "-k", key_file(tmp_path),
            str(tmp_path / "src"), str(tmp_path / "enc"),
            PYTHONPATH=str(tmp_path / "shadow"))  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "pip install 'e2ebackup[dask]'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "enc").exists()
