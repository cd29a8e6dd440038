"""Repository backup and restore of a media-like tree: e2ebackup, and borg 1.4 when installed.

The tree is ``repo_vs_borg.make_media_tree`` (JPEG / MP4 magic + random data, a big binary
file, text, SQLite) of ``E2EBACKUP_BENCH_REPO_MB`` MiB (default 256; the CI smoke run uses a
few MiB), in a scratch directory under ``E2EBACKUP_BENCH_DIR`` (default: the system temporary
directory), read once so that the page cache is warm. Groups:

- ``repo backup``: a first backup into a fresh repository (created untimed before every call),
  through the API (in this process) and the command line (a fresh process, as borg is);
- ``repo backup unchanged``: a second backup of the same tree (no file is read again);
- ``repo restore``: a whole snapshot into an empty folder (checked once against the source).

Before every call, untimed, ``os.sync()`` flushes the previous round's writes. borg
(``bash benches/install_borg.sh``) runs as ``borg create`` / ``borg extract`` with a
``repokey-blake2`` repository and its default compression; without it those cases are skipped
with the reason. e2ebackup fsyncs every file it writes and borg does not, so restore figures
favour borg on a disk slower than the page cache. The full comparison (multi-GiB, peak memory,
ceilings, incremental runs) is ``repo_vs_borg.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import repo_vs_borg as rvb
from conftest import MAX_ROUNDS, MIB, TARGET_SECONDS, env_bytes
from e2ebackup.keys import Argon2idParams
from e2ebackup.repo.backup import backup
from e2ebackup.repo.repository import Repository
from e2ebackup.repo.restore import restore
from e2ebackup.storage import LocalStorage
from pytest_benchmark.fixture import BenchmarkFixture

REPO_BYTES = env_bytes("E2EBACKUP_BENCH_REPO_MB", 256)
MIN_ROUNDS = 3
# The key derivation is not what is measured: every e2ebackup repository here, including those
# the command line opens, uses a cheap Argon2id (borg's repokey PBKDF2 is cheap too).
FAST_KDF = Argon2idParams(memory_kib=8 * 1024, iterations=1, parallelism=1)


@dataclass
class Scene:
    scratch: Path
    tree: rvb.Tree
    e2e: rvb.E2E
    borg: rvb.Borg | None
    borg_why: str
    repos: dict[str, Path] = field(default_factory=dict)

    def fresh(self, name: str) -> Path:
        path = self.scratch / name
        shutil.rmtree(path, ignore_errors=True)
        return path


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    scratch = Path(
        tempfile.mkdtemp(prefix="e2ebackup-bench-repo-", dir=os.environ.get("E2EBACKUP_BENCH_DIR"))
    )
    with pytest.MonkeyPatch.context() as mp:
        try:
            # The API's rollback-protection state goes to the scratch directory, not to ~/.local.
            mp.setenv("E2EBACKUP_STATE_DIR", str(scratch / "state"))
            tree = rvb.make_media_tree(
                scratch / "src" / "tree", REPO_BYTES, REPO_BYTES // 4, seed=1
            )
            os.sync()
            rvb.warm(tree.root)
            exe, why = rvb.find_borg(install=False)
            yield Scene(
                scratch, tree, rvb.E2E(scratch), rvb.Borg(exe, scratch) if exe else None, why
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def run(
    benchmark: BenchmarkFixture,
    fn: Callable[[], object],
    *,
    group: str,
    case: str,
    nbytes: int,
    setup: Callable[[], None] | None = None,
    note: str = "",
) -> None:
    """Like ``conftest.run``, for calls of a second or more that need a fresh repository or
    target each: one untimed warm-up and at least ``MIN_ROUNDS`` rounds (the CI smoke run then
    takes seconds), else about ``2 x E2EBACKUP_BENCH_SECONDS`` of work."""
    benchmark.group = group
    benchmark.extra_info.update({"case": case, "bytes": nbytes, "note": note})
    rounds = 1
    if not benchmark.disabled:
        start = time.perf_counter()
        if setup is not None:
            setup()
        fn()
        cost = max(time.perf_counter() - start, 1e-6)
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(2 * TARGET_SECONDS / cost)))
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0
    )


def api_repo(path: Path) -> Repository:
    return Repository.init(LocalStorage(path), password=rvb.PASSWORD, kdf=FAST_KDF)


def backed_up(scene: Scene, tool: str) -> Path:
    """A repository holding one backup of the tree (made once per module and tool)."""
    if tool not in scene.repos:
        path = scene.fresh(f"{tool}-full")
        if tool == "e2ebackup":
            backup(api_repo(path), [str(scene.tree.root)])
        else:
            assert scene.borg is not None
            scene.borg.init(path)
            cmd = scene.borg.create(path, "a1", None, scene.tree.root.name)
            subprocess.run(
                cmd, env=scene.borg.env, cwd=scene.tree.root.parent, check=True, capture_output=True
            )
        scene.repos[tool] = path
    return scene.repos[tool]


def need_borg(scene: Scene) -> rvb.Borg:
    if scene.borg is None:
        print(f"borg cases skipped: {scene.borg_why}")
        pytest.skip(scene.borg_why)
    return scene.borg


def check_restore(scene: Scene, target: Path) -> None:
    rvb.verify_restore(scene.tree, target / scene.tree.root.name, sample=5)


# --- first backup --------------------------------------------------------------------------------


def test_e2ebackup_backup_api(benchmark: BenchmarkFixture, scene: Scene) -> None:
    state: dict[str, Repository] = {}

    def setup() -> None:
        state["repo"] = api_repo(scene.fresh("e2e-api"))
        os.sync()

    def fn() -> None:
        backup(state["repo"], [str(scene.tree.root)])

    run(
        benchmark,
        fn,
        group="repo backup",
        case="e2ebackup backup (API)",
        nbytes=scene.tree.bytes,
        setup=setup,
    )


def test_e2ebackup_backup_cli(benchmark: BenchmarkFixture, scene: Scene) -> None:
    repo = scene.scratch / "e2e-cli"
    cmd = scene.e2e.cmd("backup", "-r", str(repo), str(scene.tree.root), "-q")

    def setup() -> None:
        api_repo(scene.fresh("e2e-cli"))
        os.sync()

    def fn() -> None:
        subprocess.run(cmd, env=scene.e2e.env, check=True)

    run(
        benchmark,
        fn,
        group="repo backup",
        case="e2ebackup backup (CLI)",
        nbytes=scene.tree.bytes,
        setup=setup,
        note="a fresh process",
    )


def test_borg_create(benchmark: BenchmarkFixture, scene: Scene) -> None:
    borg = need_borg(scene)
    repo = scene.scratch / "borg"
    cmd = borg.create(repo, "a1", None, scene.tree.root.name)

    def setup() -> None:
        borg.init(scene.fresh("borg"))
        os.sync()

    def fn() -> None:
        subprocess.run(
            cmd, env=borg.env, cwd=scene.tree.root.parent, check=True, stdout=subprocess.DEVNULL
        )

    run(
        benchmark,
        fn,
        group="repo backup",
        case="borg create",
        nbytes=scene.tree.bytes,
        setup=setup,
        note=f"{borg.version()}, lz4, repokey-blake2",
    )


# --- second backup of the unchanged tree ---------------------------------------------------------


def test_e2ebackup_backup_unchanged(benchmark: BenchmarkFixture, scene: Scene) -> None:
    repo = Repository.open(LocalStorage(backed_up(scene, "e2ebackup")), password=rvb.PASSWORD)
    run(
        benchmark,
        lambda: backup(repo, [str(scene.tree.root)]),
        group="repo backup unchanged",
        case="e2ebackup backup (API)",
        nbytes=scene.tree.bytes,
        setup=os.sync,
    )


def test_borg_create_unchanged(benchmark: BenchmarkFixture, scene: Scene) -> None:
    borg = need_borg(scene)
    repo = backed_up(scene, "borg")
    counter = iter(range(2, 1 << 30))

    def fn() -> None:
        cmd = borg.create(repo, f"a{next(counter)}", None, scene.tree.root.name)
        subprocess.run(
            cmd, env=borg.env, cwd=scene.tree.root.parent, check=True, stdout=subprocess.DEVNULL
        )

    run(
        benchmark,
        fn,
        group="repo backup unchanged",
        case="borg create",
        nbytes=scene.tree.bytes,
        setup=os.sync,
        note="a fresh process",
    )


# --- restore -------------------------------------------------------------------------------------


def test_e2ebackup_restore_api(benchmark: BenchmarkFixture, scene: Scene) -> None:
    repo = Repository.open(LocalStorage(backed_up(scene, "e2ebackup")), password=rvb.PASSWORD)
    target = scene.scratch / "restore-api"

    def setup() -> None:
        scene.fresh("restore-api")
        os.sync()

    run(
        benchmark,
        lambda: restore(repo, "latest", str(target)),
        group="repo restore",
        case="e2ebackup restore (API)",
        nbytes=scene.tree.bytes,
        setup=setup,
    )
    check_restore(scene, target)


def test_e2ebackup_restore_cli(benchmark: BenchmarkFixture, scene: Scene) -> None:
    repo = backed_up(scene, "e2ebackup")
    target = scene.scratch / "restore-cli"
    cmd = scene.e2e.cmd("restore", "-r", str(repo), "latest", "--target", str(target), "-q")

    def setup() -> None:
        scene.fresh("restore-cli")
        os.sync()

    run(
        benchmark,
        lambda: subprocess.run(cmd, env=scene.e2e.env, check=True),
        group="repo restore",
        case="e2ebackup restore (CLI)",
        nbytes=scene.tree.bytes,
        setup=setup,
        note="a fresh process",
    )
    check_restore(scene, target)


def test_borg_extract(benchmark: BenchmarkFixture, scene: Scene) -> None:
    borg = need_borg(scene)
    repo = backed_up(scene, "borg")
    target = scene.scratch / "restore-borg"
    cmd = [borg.exe, "extract", f"{repo}::a1"]

    def setup() -> None:
        scene.fresh("restore-borg").mkdir()
        os.sync()

    run(
        benchmark,
        lambda: subprocess.run(cmd, env=borg.env, cwd=target, check=True),
        group="repo restore",
        case="borg extract",
        nbytes=scene.tree.bytes,
        setup=setup,
        note="no fsync of extracted files",
    )
    check_restore(scene, target)


def test_tree_size(scene: Scene) -> None:
    """Not a benchmark: the tree has the size asked for (within a MiB)."""
    assert abs(scene.tree.bytes - REPO_BYTES) < 2 * MIB + REPO_BYTES // 50
