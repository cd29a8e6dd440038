"""The key vault under load: logins per second that one ``e2ebackup vault serve`` process (SQLite)
sustains on this machine, and correctness while it does.

The KSF (Argon2id) runs on the clients, not on the vault, so the vault's cost per login is two
HTTP requests, a few Ristretto255 operations and two short write transactions. The clients here
use a cheap KSF (256 KiB, t=1) so that they, sharing the machine's cores with the vault, measure
the vault rather than Argon2. ``bytes`` is the number of logins per call, so the report's rate
is logins per second. Run: ``python -m pytest benches/test_bench_vault.py --benchmark-only -s``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import run
from e2ebackup import _core
from e2ebackup.errors import VaultLoginFailed, VaultRecordGone
from e2ebackup.keyring.vault_slot import VaultSlot
from e2ebackup.keys import Argon2idParams
from e2ebackup.vault.client import VaultClient
from pytest_benchmark.fixture import BenchmarkFixture

CLIENTS = int(os.environ.get("E2EBACKUP_BENCH_VAULT_CLIENTS", "4"))
LOGINS = int(os.environ.get("E2EBACKUP_BENCH_VAULT_LOGINS", "50"))  # per client per call
FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def vault_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "e2ebackup", "vault", "serve", "--port", str(port)]
        cmd += ["--data-dir", tmp, "--log-level", "warning"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(url + "/v1/status", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        try:
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def test_vault_logins_per_second(benchmark: BenchmarkFixture, vault_url: str) -> None:
    data_key = _core.generate_key()
    clients = [VaultClient(vault_url, ksf=FAST) for _ in range(CLIENTS)]
    slots = [c.register(PASSWORD, data_key) for c in clients]
    wrong_per_call: list[int] = []

    def one_client(i: int) -> int:
        client, slot = clients[i], slots[i]
        ok = 0
        for n in range(LOGINS):
            if n % 10 == 9:  # a wrong password now and then: charged, then given back below
                with pytest.raises(VaultLoginFailed) as e:
                    client.unlock(slot, "not the password")
                assert e.value.attempts_left == 9  # the previous right login reset the count
                wrong_per_call.append(1)
                continue
            assert client.unlock(slot, PASSWORD) == data_key
            ok += 1
        return ok

    def batch() -> None:
        with ThreadPoolExecutor(CLIENTS) as pool:
            assert sum(pool.map(one_client, range(CLIENTS))) == CLIENTS * (LOGINS - LOGINS // 10)

    run(
        benchmark,
        batch,
        group="vault logins (KSF on the clients)",
        case=f"e2ebackup vault, SQLite, {CLIENTS} clients",
        nbytes=CLIENTS * LOGINS,
        note="logins per call; a tenth use a wrong password",
        seconds=0.2,
    )
    stats = benchmark.stats
    if stats is not None:
        rate = CLIENTS * LOGINS / stats.stats.median
        benchmark.extra_info["logins_per_second"] = round(rate, 1)
        print(f"\nvault: {rate:.0f} logins/s ({CLIENTS} clients, median of {stats.stats.rounds})")

    # Correctness after the load: a record under ten wrong passwords is gone, and the
    # attempt counts seen were exact.
    victim = clients[0].register(PASSWORD, data_key)
    with ThreadPoolExecutor(CLIENTS) as pool:
        lefts = sorted(pool.map(lambda _: _wrong(vault_url, victim), range(10)))
    assert lefts == list(range(10))
    with pytest.raises(VaultRecordGone):
        clients[1].unlock(victim, PASSWORD)
    for c in clients:
        c.close()


def _wrong(url: str, slot: VaultSlot) -> int:
    with VaultClient(url, ksf=FAST) as c, pytest.raises(VaultLoginFailed) as e:
        c.unlock(slot, "guess")
    assert e.value.attempts_left is not None
    return e.value.attempts_left
