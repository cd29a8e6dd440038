"""The one progress display of the command line: a rich bar on standard error for every long
command (backup, restore, verify, encrypt, decrypt, the WhatsApp commands).

One style: a spinner, what is being done, the bar, the amount, the throughput and the time left.
With a known total the bar fills and the time left is an ETA; without one (a pipe on standard
input) the bar pulses and the time is the time elapsed. Sizes are in SI units (kB, MB, GB:
powers of 1000), as every size the command line prints. The bar is drawn only on an interactive
standard error and never with ``--quiet`` or ``--json``: output on a pipe or file stays as
scripts read it. It is transient: it is erased when the command ends, before its summary.

The library knows nothing of this: it reports through its progress callbacks, the commands turn
them into calls of :class:`Bar`. rich is imported only when a bar is drawn (it costs ~90 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console


class Bar(Protocol):
    """Moves the bar: ``done`` of ``total`` (None: not known), described by ``text``; in bytes,
    or with ``in_bytes=False`` in things counted (pack headers, files)."""

    def __call__(
        self, done: int, total: int | None, text: str, *, in_bytes: bool = True
    ) -> None: ...


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command may draw a bar at all: not with ``--quiet`` or ``--json``."""
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


@contextlib.contextmanager
def progress_bar(
    args: argparse.Namespace,
    what: str,
    *,
    total: int | None = None,
    in_bytes: bool = True,
    console: Console | None = None,
    clock: Callable[[], float] | None = None,
) -> Iterator[Bar | None]:
    """The bar of a long command, on standard error when it is a terminal (else on
    ``console``, when that is one); yields a :class:`Bar`, or None when there is nobody to show
    it to. ``total`` and ``in_bytes`` are its first state, until the first update; ``clock``
    (seconds) replaces the monotonic clock of the throughput and ETA."""
    if not wanted(args):
        yield None
        return
    if console is None and not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console

    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import Progress

    # Standard output stays as it is (it may carry data: `decrypt SRC -`); what is printed on
    # standard error meanwhile (warnings) appears above the bar.
    progress = Progress(
        *_columns(), console=console, transient=True, redirect_stdout=False, get_time=clock
    )
    with progress:
        task = progress.add_task(what, total=total, in_bytes=in_bytes)

        def update(done: int, total: int | None, text: str, *, in_bytes: bool = True) -> None:
            if in_bytes != progress.tasks[0].fields["in_bytes"]:
                # A new stage (verify: headers counted, then bytes read): its own throughput,
                # ETA and time elapsed.
                progress.reset(task, total=total, completed=0, in_bytes=in_bytes)
            if total is None:  # rich's update leaves a total given as None as it was
                progress.tasks[0].total = None
            progress.update(task, completed=done, total=total, description=text, in_bytes=in_bytes)

        yield update


@contextlib.contextmanager
def byte_progress(
    args: argparse.Namespace, what: str, total: int | None, **options: Any
) -> Iterator[Callable[[int], None] | None]:
    """A bar for a byte stream (``encrypt``, ``decrypt``, the WhatsApp commands): yields the
    library's progress callback (bytes done), or None; ``total`` None draws the indeterminate
    form (bytes done, throughput, time elapsed)."""
    with progress_bar(args, what, total=total, **options) as bar:
        if bar is None:
            yield None
        else:
            yield lambda done: bar(done, total, what)


def regular_size(src: str | os.PathLike[str] | IO[bytes]) -> int | None:
    """The bytes left to read in ``src`` when it is a regular file (a path, or standard input
    redirected from a file); None for a pipe, a terminal, a socket or a device, whose size is
    not known before the end."""
    try:
        if isinstance(src, str | os.PathLike):
            st = os.stat(src)
            return st.st_size if stat.S_ISREG(st.st_mode) else None
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(st.st_size - src.tell(), 0)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def _columns() -> tuple[Any, ...]:
    """The columns of the one style (rich imported here, only when a bar is drawn)."""
    from datetime import timedelta

    from rich import filesize
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class Amount(ProgressColumn):
        """``1.2/3.4 MB`` (SI), ``1.2 MB`` without a total, ``12/340`` for things counted."""

        download = DownloadColumn(binary_units=False)

        def render(self, task: Task) -> Text:
            done = int(task.completed)
            if not task.fields.get("in_bytes", True):
                of = "" if task.total is None else f"/{int(task.total)}"
                return Text(f"{done}{of}", style="progress.download")
            if task.total is None:
                return Text(filesize.decimal(done), style="progress.download")
            return self.download.render(task)

    class Speed(ProgressColumn):
        """Bytes per second (SI); nothing for things counted."""

        transfer = TransferSpeedColumn()

        def render(self, task: Task) -> Text:
            if not task.fields.get("in_bytes", True):
                return Text("")
            return self.transfer.render(task)

    class Time(ProgressColumn):
        """``ETA 0:01:23`` with a total, ``0:00:12 elapsed`` without one."""

        remaining = TimeRemainingColumn()

        def render(self, task: Task) -> Text:
            if task.total is None:
                elapsed = timedelta(seconds=int(task.elapsed or 0))
                return Text(f"{elapsed} elapsed", style="progress.elapsed")
            return Text("ETA ", style="progress.remaining") + self.remaining.render(task)

    return (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        Amount(),
        Speed(),
        Time(),
    )
