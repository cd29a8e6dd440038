# mypy: disable-error-code="no-untyped-call"
# (distributed is typed in part: Client, LocalCluster and run_on_scheduler are not.)
"""Bulk encryption on a real Dask cluster (``e2ebackup.dask``): two worker processes started by
``distributed.LocalCluster``, round trips of a mixed tree, typed failures, the key kept away
from the scheduler, a worker killed with SIGKILL in the middle of a batch, and all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import dask.base
import distributed
import e2ebackup
import pytest
from dask_helpers import scheduler_view
from e2ebackup import sealed
from e2ebackup.dask import Batch, Report, decrypt_files, encrypt_files, split_batches
from e2ebackup.keys import Argon2idParams, RecoveryKey
from e2ebackup.recipients import Identity
from helpers import BOUNDARY_LENGTHS, CHUNK

FAST_KDF = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _tree(root: Path) -> dict[str, bytes]:
    """Empty, one byte, the chunk boundaries, a few MiB; in nested folders."""
    files: dict[str, bytes] = {}
    for n in BOUNDARY_LENGTHS:
        files[f"edges/len-{n}.bin"] = os.urandom(n)
    files["one"] = b"x"
    files["deep/a/b/c/three-mib"] = os.urandom(3 << 20)
    files["deep/a/five-mib-and-a-bit"] = os.urandom((5 << 20) + 7)
    files["name with spaces é.txt"] = b"text\n" * 1000
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*e2ebackup-tmp*")]


def test_a_mixed_tree_round_trips(client: distributed.Client, tmp_path: Path, key: bytes) -> None:
    files = _tree(tmp_path / "src")
    # Small batches: many tasks, so both workers take part.
    report = encrypt_files(
        tmp_path / "src", tmp_path / "enc", client=client, key=key, batch_bytes=1 << 20
    )
    assert report.ok, report.failures
    assert report.files == len(files)
    assert report.bytes == sum(map(len, files.values()))
    assert report.batches > 2
    encrypted = _read_tree(tmp_path / "enc")
    assert sorted(encrypted) == sorted(rel + ".e2e" for rel in files)
    for rel, data in files.items():  # plain C2SP messages under the key
        assert e2ebackup.decrypt(key, encrypted[rel + ".e2e"]) == data

    back = decrypt_files(tmp_path / "enc", tmp_path / "dec", client=client, key=key)
    assert back.ok, back.failures
    assert back.files == len(files)
    assert _read_tree(tmp_path / "dec") == files
    assert _leftovers(tmp_path) == []


def test_a_recovery_key_makes_sealed_files(client: distributed.Client, tmp_path: Path) -> None:
    """Sealed files with a slot per file: a recovery key (one AEAD per file, no KDF)."""
    src = tmp_path / "src"
    src.mkdir()
    listing = []
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(1000 * i))
        listing.append(str(src / f"f{i}"))
    recovery_key = RecoveryKey.generate()
    report = encrypt_files(listing, tmp_path / "enc", client=client, recovery_key=recovery_key)
    assert report.ok
    assert report.files == 5
    assert sealed.is_sealed(tmp_path / "enc" / "f3.e2e")
    back = decrypt_files(
        tmp_path / "enc", tmp_path / "dec", client=client, recovery_key=recovery_key
    )
    assert back.ok
    assert _read_tree(tmp_path / "dec") == _read_tree(src)


@pytest.mark.parametrize("credential", ["password", "recipient"])
def test_passwords_and_recipients_make_sealed_files(
    client: distributed.Client, tmp_path: Path, credential: str
) -> None:
    """A password (a cheap KDF here; one run per file) and a recipient, opened by its
    identity: both travel to the workers in the hidden holder, never pickled as themselves."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(700 * i))
    identity = Identity.generate()
    if credential == "password":
        seal: dict[str, object] = {"password": "pässword", "kdf": FAST_KDF}
        open_: dict[str, object] = {"password": "pässword"}
    else:
        seal = {"recipients": [identity.recipient]}
        open_ = {"identity": identity}
    report = encrypt_files(src, tmp_path / "enc", client=client, **seal)  # type: ignore[arg-type]
    assert report.ok, report.failures
    assert sealed.is_sealed(tmp_path / "enc" / "f2.e2e")
    back = decrypt_files(tmp_path / "enc", tmp_path / "dec", client=client, **open_)  # type: ignore[arg-type]
    assert back.ok, back.failures
    assert _read_tree(tmp_path / "dec") == _read_tree(src)


def test_a_wrong_key_gives_typed_failures_not_a_crash(
    client: distributed.Client, tmp_path: Path, key: bytes
) -> None:
    files = _tree(tmp_path / "src")
    assert encrypt_files(tmp_path / "src", tmp_path / "enc", client=client, key=key).ok
    (tmp_path / "enc" / "not-encrypted.e2e").write_bytes(b"plain text")
    wrong = e2ebackup.generate_key()
    report = decrypt_files(tmp_path / "enc", tmp_path / "dec", client=client, key=wrong)
    assert report.files == 0
    assert len(report.failures) == len(files) + 1
    assert {f.error for f in report.failures} == {"InvalidTag"}
    assert {f.path for f in report.failures} == {rel + ".e2e" for rel in files} | {
        "not-encrypted.e2e"
    }
    assert key.hex() not in repr(report)
    assert wrong.hex() not in repr(report)
    assert not any(p.is_file() for p in (tmp_path / "dec").rglob("*"))  # nothing half-made

    sealed = decrypt_files(
        tmp_path / "enc", tmp_path / "dec2", client=client, recovery_key=RecoveryKey.generate()
    )
    assert {f.error for f in sealed.failures} == {"NotSealedFile"}


def test_the_key_never_reaches_the_scheduler(
    client: distributed.Client, tmp_path: Path, key: bytes
) -> None:
    """The scheduler holds task names, states and run specs: none carries the key, its hex,
    or a hash of it. The key went to the workers by a direct scatter."""
    _tree(tmp_path / "src")
    with scheduler_view(client) as seen:
        report = encrypt_files(
            tmp_path / "src", tmp_path / "enc", client=client, key=key, batch_bytes=1 << 20
        )
    assert report.ok
    names = [text for text, _ in seen]
    assert any("e2ebackup-encrypt-" in text for text in names)  # the watcher saw the tasks
    assert any("Credential-" in text for text in names)  # and the scattered holder's name
    tokens = {key, key.hex().encode(), key.hex().upper().encode()}
    tokens.add(dask.base.tokenize(key).encode())
    for text, spec in seen:
        for token in tokens:
            assert token not in text.encode()
            assert token not in spec
    assert key.hex() not in repr(client.futures)


def _memory_holds(pid: int, needles: list[bytes]) -> list[bool]:
    """Whether each of ``needles`` is anywhere in the readable memory of process ``pid``."""
    found = [False] * len(needles)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                region = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            for i, needle in enumerate(needles):
                found[i] = found[i] or needle in region
    return found


# The commands of docs/SCALE.md, on this machine only.
SCHEDULER = "scheduler --host 127.0.0.1 --port 0 --dashboard-address :0 --scheduler-file"
WORKER = "worker --nworkers 1 --nthreads 1 --dashboard-address :0 --scheduler-file"


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="reads /proc/PID/mem")
def test_a_real_scheduler_process_never_holds_the_key(tmp_path: Path, key: bytes) -> None:
    """``dask scheduler`` and ``dask worker`` as separate processes, as docs/SCALE.md runs
    them: after a run, the scheduler's whole memory holds neither the key nor its hex, while
    a canary sent the ordinary way (a task argument) is found there, so the search works."""
    files = _tree(tmp_path / "src")
    scheduler_file = tmp_path / "scheduler.json"
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", *SCHEDULER.split(), str(scheduler_file)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for _ in range(600):  # the scheduler writes its address once it listens
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            assert started[0].poll() is None, "dask scheduler exited"
            time.sleep(0.1)
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", *WORKER.split(), str(scheduler_file)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            canary = os.urandom(32)
            held = client.submit(len, canary, key="canary-task")  # held: the task stays
            assert held.result() == 32
            report = encrypt_files(tmp_path / "src", tmp_path / "enc", client=client, key=key)
            assert report.ok
            assert report.files == len(files)
            needles = [key, key.hex().encode(), canary]
            try:
                found = _memory_holds(started[0].pid, needles)
            except PermissionError:
                pytest.skip("this system does not let a parent read its child's memory")
            assert found == [False, False, True]
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_batches_are_of_about_equal_bytes() -> None:
    files = [(f"s{i}", f"d{i}", f"r{i}", size) for i, size in enumerate([10, 10, 10, 100, 5])]
    batches = split_batches(files, batch_bytes=25 + 2 * (64 << 10), batch_files=1000)
    assert [b.size for b in batches] == [20, 10, 100, 5]
    assert all(isinstance(b, Batch) for b in batches)
    by_count = split_batches(files, batch_bytes=1 << 40, batch_files=2)
    assert [len(b.files) for b in by_count] == [2, 2, 1]


def _write_until_refused(pipe: BinaryIO) -> None:
    for _ in range(1000):
        pipe.write(bytes(CHUNK // 4))


def test_a_worker_killed_mid_batch_is_retried_and_nothing_is_half_written(
    client: distributed.Client, tmp_path: Path, key: bytes
) -> None:
    """One source is at first a FIFO this test writes into, so the task reading it is caught
    in the middle of its output (which has no name yet). The FIFO is then replaced by a regular
    file with the whole content and the worker killed with SIGKILL: Dask runs the batch again,
    on a worker that lives, and the run completes with every output whole."""
    files = _tree(tmp_path / "src")
    late = tmp_path / "src" / "zz-late"
    os.mkfifo(late)
    content = os.urandom(3 * CHUNK + 5)
    listing = [str(tmp_path / "src" / rel) for rel in files] + [str(late)]
    output = tmp_path / "enc" / "zz-late.e2e"
    outcome: list[Report] = []

    def run() -> None:
        outcome.append(
            encrypt_files(
                listing,
                tmp_path / "enc",
                client=client,
                key=key,
                root=tmp_path / "src",
                batch_bytes=4 << 20,
            )
        )

    runner = threading.Thread(target=run)
    runner.start()
    with open(late, "wb", buffering=0) as pipe:  # returns once a task opened the FIFO
        pipe.write(content[: 2 * CHUNK])
        running = client.run_on_scheduler(
            lambda dask_scheduler: {
                str(ts.key): ts.processing_on.address
                for ts in dask_scheduler.tasks.values()
                if str(ts.key).startswith("e2ebackup-encrypt-") and ts.processing_on is not None
            }
        )
        # The FIFO is the last file, so its batch is the running one with the highest number.
        batch = max(running, key=lambda name: int(name.split("-")[2]))
        victim = client.run(os.getpid)[running[batch]]
        assert not output.exists()  # mid-file: the output has no name yet
        (tmp_path / "whole").write_bytes(content)
        os.replace(tmp_path / "whole", late)  # what the next attempt opens
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(BrokenPipeError):  # its reader is gone
            _write_until_refused(pipe)
    runner.join(60)
    assert not runner.is_alive()
    (report,) = outcome
    assert report.ok, report.failures
    assert report.files == len(files) + 1
    back = decrypt_files(tmp_path / "enc", tmp_path / "dec", client=client, key=key)
    assert back.ok, back.failures
    assert _read_tree(tmp_path / "dec") == {**files, "zz-late": content}
    assert _leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


def test_losing_every_worker_at_once_sends_the_key_again(
    client: distributed.Client, tmp_path: Path, key: bytes
) -> None:
    """Both workers die while a batch is in the middle of a file: the credential they held is
    gone with them, so Dask cancels the batches; the run scatters it to the new workers and
    sends those batches again, and completes."""
    files = _tree(tmp_path / "src")
    first = tmp_path / "src" / "00-first"
    os.mkfifo(first)
    content = os.urandom(CHUNK + 3)
    listing = [str(first)] + [str(tmp_path / "src" / rel) for rel in files]
    outcome: list[Report] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            encrypt_files(listing, tmp_path / "enc", client=client, key=key, batch_bytes=1 << 20)
        )
    )
    runner.start()
    with open(first, "wb", buffering=0) as pipe:  # returns once a task opened the FIFO
        pipe.write(content[:CHUNK])
        (tmp_path / "whole").write_bytes(content)
        os.replace(tmp_path / "whole", first)
        for pid in client.run(os.getpid).values():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenPipeError):
            _write_until_refused(pipe)
    runner.join(60)
    assert not runner.is_alive()
    (report,) = outcome
    assert report.ok, report.failures
    assert report.files == len(files) + 1
    back = decrypt_files(tmp_path / "enc", tmp_path / "dec", client=client, key=key)
    assert _read_tree(tmp_path / "dec") == {**files, "00-first": content}
    assert back.ok
    client.wait_for_workers(2, timeout=60)


def test_without_the_extra_the_import_names_it() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "try:\n    import e2ebackup.dask\n"
        "except ModuleNotFoundError as e:\n    print(e.name, '|', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("distributed |")
    assert "pip install 'e2ebackup[dask]'" in out
