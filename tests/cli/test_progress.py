"""One progress style for every long command (issue 16, item 8): the rich bar of
``e2ebackup.cli.progress``, with a total and an ETA where one is known (encrypt and decrypt of a
regular file, verify), the indeterminate form for a pipe, SI units, and nothing at all on a
standard error that is not a terminal or with ``--quiet``/``--json``.

The bar itself is rendered on a forced-terminal rich console with a fake clock; the commands run
in-process (``main``) with standard error replaced by a stream that says it is a terminal, and
every update of the bar recorded."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2ebackup
import pytest
from e2ebackup import sealed
from e2ebackup.cli import (
    progress as progress_module,
    recipients as recipients_cli,
    repo as repo_cli,
)
from e2ebackup.cli.main import main, parse
from e2ebackup.cli.progress import byte_progress, progress_bar, regular_size
from e2ebackup.keys import format_hex_key
from e2ebackup.repo.backup import backup
from helpers import random_bytes
from repo_helpers import FAST, PASSWORD, make_tree, new_repo, open_repo
from rich.console import Console

Call = tuple[int, int | None, str, bool]


class _Terminal(io.StringIO):
    """A standard error that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _args(**options: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"quiet": False, "json": False, **options})


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=140, color_system=None)


_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _text(console: Console) -> str:
    """The last frame drawn (the bar is redrawn in place, then erased)."""
    file = console.file
    assert isinstance(file, io.StringIO)
    frames = [_CONTROL.sub("", f).strip() for f in file.getvalue().split("\x1b[2K")]
    return [f for f in frames if f][-1]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The bar itself.


def test_a_known_total_shows_amount_throughput_and_eta_in_si_units() -> None:
    console, clock = _console(), _Clock()
    with progress_bar(_args(), "encrypt", total=10_000_000, console=console, clock=clock) as bar:
        assert bar is not None
        bar(1_000_000, 10_000_000, "encrypt")
        clock.now += 1
        bar(2_000_000, 10_000_000, "encrypt")  # 1 MB/s, 8 MB left: 8 seconds
    shown = _text(console)
    assert "encrypt" in shown
    assert "2.0/10.0 MB" in shown
    assert "1.0 MB/s" in shown
    assert "ETA 0:00:08" in shown
    assert "MiB" not in shown
    assert "elapsed" not in shown


def test_an_unknown_total_shows_bytes_done_and_time_elapsed_without_eta() -> None:
    console, clock = _console(), _Clock()
    with progress_bar(_args(), "encrypt", console=console, clock=clock) as bar:
        assert bar is not None
        bar(1_500_000, None, "encrypt")
        clock.now += 12
        bar(3_500_000, None, "encrypt")
    shown = _text(console)
    assert "3.5 MB " in shown
    assert not re.search(r"\d/[\d?]", shown)  # no total: no "done/total"
    assert "0:00:12 elapsed" in shown
    assert "ETA" not in shown


def test_a_total_given_as_none_later_is_unknown_again() -> None:
    console = _console()
    with progress_bar(_args(), "backup", total=5_000, console=console, clock=_Clock()) as bar:
        assert bar is not None
        bar(1_000, None, "backup")
    assert "elapsed" in _text(console)
    assert "/5.0 kB" not in _text(console)


def test_things_counted_show_done_of_total_and_no_throughput() -> None:
    console = _console()
    with progress_bar(_args(), "verify", console=console, clock=_Clock()) as bar:
        assert bar is not None
        bar(12, 340, "verify: 340 pack headers", in_bytes=False)
    shown = _text(console)
    assert "verify: 340 pack headers" in shown
    assert "12/340" in shown
    assert "B/s" not in shown
    assert " MB" not in shown
    assert "bytes" not in shown
    assert "ETA" in shown


def test_byte_progress_hands_the_library_a_callback_of_bytes_done() -> None:
    console, clock = _console(), _Clock()
    with byte_progress(_args(), "decrypt", 4_000, console=console, clock=clock) as progress:
        assert progress is not None
        progress(3_000)
    assert "3.0/4.0 kB" in _text(console)


@pytest.mark.parametrize("options", [{"quiet": True}, {"json": True}])
def test_quiet_and_json_draw_nothing_even_on_a_terminal(options: dict[str, bool]) -> None:
    console = _console()
    with progress_bar(_args(**options), "verify", console=console) as bar:
        assert bar is None
    assert isinstance(console.file, io.StringIO)
    assert console.file.getvalue() == ""


def test_no_terminal_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Console(file=io.StringIO(), force_terminal=False)
    with progress_bar(_args(), "backup", console=plain) as bar:
        assert bar is None
    # The default: standard error, when it is a terminal.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(_args(), "backup") as bar:
        assert bar is None
    monkeypatch.setenv("FORCE_COLOR", "1")  # colours in CI logs are no reason for a bar
    with progress_bar(_args(), "backup") as bar:
        assert bar is None
    monkeypatch.setattr(sys, "stderr", _Terminal())
    _plain_terminal_environment(monkeypatch)
    with progress_bar(_args(), "backup") as bar:
        assert bar is not None


def test_regular_size_knows_files_and_not_pipes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert regular_size(str(path)) == 1000
    assert regular_size(path) == 1000
    with open(path, "rb") as f:  # standard input redirected from a file, partly read
        f.read(100)
        assert regular_size(f) == 900
    os.mkfifo(tmp_path / "fifo")  # a path that is a pipe (bash's <(...)) has no size
    assert regular_size(str(tmp_path / "fifo")) is None
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pipe:
        os.close(w)
        assert regular_size(pipe) is None
    assert regular_size(io.BytesIO(b"abc")) is None
    assert regular_size(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("100", 100),
        ("2M", 2_000_000),
        ("2MB", 2_000_000),
        ("20g", 20_000_000_000),
        ("3KiB", 3 * 1024),
        ("2MiB", 2 << 20),
    ],
)
def test_a_size_given_is_in_the_units_shown(given: str, size: int) -> None:
    """One unit system: ``--max-size 2M`` is the 2.0 MB the bar and summaries show; powers of
    1024 only when asked for by name (MiB)."""
    args = ["restore", "-r", "r", "latest", "--target", "t", "--max-size", given]
    assert parse(args).max_size == size


# The commands, run in-process on a (fake) terminal.


def _plain_terminal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")


@contextlib.contextmanager
def _recorded(monkeypatch: pytest.MonkeyPatch, *, terminal: bool) -> Iterator[list[Call | None]]:
    """Standard error a terminal (or not); every bar opened appends None if it was not drawn,
    and each update of a drawn bar appends (done, total, text, in_bytes)."""
    _plain_terminal_environment(monkeypatch)
    stderr = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    calls: list[Call | None] = []
    real = progress_module.progress_bar

    @contextlib.contextmanager
    def spy(args: argparse.Namespace, what: str, **options: Any) -> Iterator[Any]:
        with real(args, what, **options) as bar:
            if bar is None:
                calls.append(None)
                yield None
                return

            def record(done: int, total: int | None, text: str, *, in_bytes: bool = True) -> None:
                calls.append((done, total, text, in_bytes))
                bar(done, total, text, in_bytes=in_bytes)

            yield record

    monkeypatch.setattr(progress_module, "progress_bar", spy)
    monkeypatch.setattr(repo_cli, "progress_bar", spy)
    yield calls


def _stderr() -> str:
    """What the command wrote on the (replaced) standard error."""
    assert isinstance(sys.stderr, io.StringIO)
    return sys.stderr.getvalue()


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(format_hex_key(e2ebackup.generate_key()) + "\n")
    return path


def _stdin_from(monkeypatch: pytest.MonkeyPatch, binary: io.BufferedReader) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(binary))


def test_encrypt_and_decrypt_of_a_file_draw_the_bar_with_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, src = _key_file(tmp_path), tmp_path / "plain"
    src.write_bytes(random_bytes(9 << 20))  # more than two 4 MiB blocks: several updates
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["encrypt", "-k", str(key), str(src), str(tmp_path / "enc")]) == 0
        sealed_size = (tmp_path / "enc").stat().st_size
        assert main(["decrypt", "-k", str(key), str(tmp_path / "enc"), str(tmp_path / "dec")]) == 0
    encrypting = [c for c in calls if c is not None and c[2] == "encrypt"]
    decrypting = [c for c in calls if c is not None and c[2] == "decrypt"]
    assert len(encrypting) >= 3
    assert len(decrypting) >= 3
    assert {c[1] for c in encrypting} == {9 << 20}
    assert encrypting[-1][0] == 9 << 20
    assert {c[1] for c in decrypting} == {sealed_size}
    assert decrypting[-1][0] == sealed_size
    assert "MB" in _stderr()  # drawn, on standard error


def test_decrypt_of_a_sealed_file_counts_its_header_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar of a sealed file ends at the file's size (header and payload), not short of
    it: the library's callback counts the bytes of the file, as its return value does."""
    src, enc = tmp_path / "plain", tmp_path / "enc"
    src.write_bytes(random_bytes(5 << 20))
    sealed.seal_file(src, enc, password=PASSWORD, kdf=FAST)
    seen: list[int] = []
    assert sealed.unseal_file(enc, tmp_path / "lib", password=PASSWORD, progress=seen.append) == (
        enc.stat().st_size
    )
    assert seen[-1] == enc.stat().st_size
    monkeypatch.setenv("E2EBACKUP_PASSWORD", PASSWORD)
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["decrypt", str(enc), str(tmp_path / "dec")]) == 0
    assert calls
    assert calls[-1] == (enc.stat().st_size, enc.stat().st_size, "decrypt", True)
    assert (tmp_path / "dec").read_bytes() == src.read_bytes()


def test_the_bar_starts_after_the_password_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt under a live bar would be redrawn over: credentials are read first."""
    src, enc = tmp_path / "plain", tmp_path / "enc"
    src.write_bytes(random_bytes(1 << 20))
    sealed.seal_file(src, enc, password=PASSWORD, kdf=FAST)
    events: list[str] = []

    def prompt(args: argparse.Namespace, *, confirm: bool = False) -> str:
        events.append("prompt")
        return PASSWORD

    # Where decrypt reads what opens the file (cli/recipients.read_opening_credential).
    monkeypatch.setattr(recipients_cli, "read_password", prompt)
    with _recorded(monkeypatch, terminal=True) as calls:
        real = progress_module.progress_bar

        @contextlib.contextmanager
        def opened(args: argparse.Namespace, what: str, **options: Any) -> Iterator[Any]:
            events.append("bar")
            with real(args, what, **options) as bar:
                yield bar

        monkeypatch.setattr(progress_module, "progress_bar", opened)
        assert main(["decrypt", str(enc), str(tmp_path / "dec")]) == 0
    assert events == ["prompt", "bar"]
    assert calls  # and drawn


def test_standard_input_from_a_pipe_gets_the_indeterminate_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, data = _key_file(tmp_path), random_bytes(6 << 20)
    r, w = os.pipe()

    def write() -> None:
        with os.fdopen(w, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    _stdin_from(monkeypatch, os.fdopen(r, "rb"))
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["encrypt", "-k", str(key), "-", str(tmp_path / "enc")]) == 0
    writer.join()
    drawn = [c for c in calls if c is not None]
    assert drawn
    assert {c[1] for c in drawn} == {None}
    assert drawn[-1][0] == len(data)
    assert "elapsed" in _stderr()
    assert "ETA" not in _stderr()


def test_standard_input_from_a_file_gets_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, src = _key_file(tmp_path), tmp_path / "plain"
    src.write_bytes(random_bytes(1 << 20))
    _stdin_from(monkeypatch, open(src, "rb"))  # noqa: SIM115 - closed with sys.stdin
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["encrypt", "-k", str(key), "-", str(tmp_path / "enc")]) == 0
    assert calls
    assert calls[-1] == (1 << 20, 1 << 20, "encrypt", True)


def test_no_bar_on_a_standard_error_that_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, src = _key_file(tmp_path), tmp_path / "plain"
    src.write_bytes(random_bytes(5 << 20))
    with _recorded(monkeypatch, terminal=False) as calls:
        assert main(["encrypt", "-k", str(key), str(src), str(tmp_path / "enc")]) == 0
        assert main(["decrypt", "-k", str(key), str(tmp_path / "enc"), str(tmp_path / "d")]) == 0
    assert calls == [None, None]  # asked for, and not drawn
    assert _stderr() == ""  # nothing at all: no bar, no stray newline


def test_quiet_draws_no_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, src = _key_file(tmp_path), tmp_path / "plain"
    src.write_bytes(random_bytes(1 << 20))
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["encrypt", "-q", "-k", str(key), str(src), str(tmp_path / "enc")]) == 0
    assert calls == [None]
    assert _stderr() == ""


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with one snapshot, and the environment its commands read."""
    path = tmp_path / "repo"
    repo = new_repo(path)
    make_tree(tmp_path / "src", small_files=20, big=[3 << 20])
    backup(repo, [str(tmp_path / "src")])
    for name in [n for n in os.environ if n.startswith("E2EBACKUP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("E2EBACKUP_PASSWORD", PASSWORD)
    monkeypatch.setenv("E2EBACKUP_STATE_DIR", str(tmp_path / "state"))
    return path


def _verify_calls(calls: list[Call | None]) -> tuple[list[Call], list[Call]]:
    drawn = [c for c in calls if c is not None]
    return [c for c in drawn if not c[3]], [c for c in drawn if c[3]]


def test_verify_counts_pack_headers_against_their_number(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packs = open_repo(repository).index.pack_sizes
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["verify", "-r", str(repository)]) == 0
    headers, read = _verify_calls(calls)
    assert read == []  # nothing read without --read-data
    assert [c[:2] for c in headers] == [(n, len(packs)) for n in range(1, len(packs) + 1)]
    assert headers[-1][2] == f"verify: {len(packs)} pack header" + ("s" if len(packs) != 1 else "")


def test_verify_read_data_has_the_bytes_to_read_as_total(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packs = open_repo(repository).index.pack_sizes
    total = sum(packs.values())
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["verify", "-r", str(repository), "--read-data"]) == 0
    headers, read = _verify_calls(calls)
    assert headers
    assert headers[-1][:2] == (len(packs), len(packs))
    assert read
    assert {c[1] for c in read} == {total}
    assert read[-1][0] == total
    plural = "pack" if len(packs) == 1 else "packs"
    assert read[-1][2] == f"verify: {len(packs)}/{len(packs)} {plural} read"
    # The summary (standard output) is as on any terminal; the bar was on standard error.
    assert "ETA" in _stderr()
    assert " MB" in _stderr()


def test_verify_with_json_draws_no_bar(
    repository: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with _recorded(monkeypatch, terminal=True) as calls:
        assert main(["verify", "-r", str(repository), "--read-data", "--json"]) == 0
    assert calls == [None]
    report = json.loads(capsys.readouterr().out)
    packs = open_repo(repository).index.pack_sizes
    assert report["packs_to_read"] == len(packs) == report["packs"]
    assert report["bytes_to_read"] == sum(packs.values()) == report["bytes_read"]


def test_verify_library_reports_totals_before_the_work(repository: Path) -> None:
    """The totals are set before the first callback of their stage: an ETA from the start."""
    from e2ebackup.repo.check import VerifyReport, verify

    seen: list[tuple[int, int, int, int]] = []

    def progress(report: VerifyReport, pack: str) -> None:
        seen.append(
            (report.headers_to_check, report.headers, report.packs_to_read, report.bytes_to_read)
        )

    repo = open_repo(repository)
    n = len(repo.index.pack_sizes)
    verify(repo, read_data=True, progress=progress)
    assert len(seen) == 2 * n
    assert all(s[0] == n for s in seen)
    assert [s[2] for s in seen] == [0] * n + [n] * n  # set once reading starts
    assert seen[n][3] == sum(repo.index.pack_sizes.values())
