"""What every run on the cluster shares: the holder that carries key material to the workers,
the cutting of work into units of about equal bytes, and the rounds that scatter the holder,
run one task per unit and collect what they return.

- **Secrets never reach the scheduler:** the holder is sent by the client straight to the
  workers (``client.scatter(..., direct=True, hash=False, broadcast=True)``); tasks carry only
  a reference to it, their names are random, not a hash of their arguments, and the holder's
  ``repr`` hides it. With ``scatter_units`` the units themselves travel the same way (each to
  one worker, not broadcast), so the scheduler sees their names and sizes only. Results are
  fetched from the workers directly, not through the scheduler.
- **A window of tasks in flight:** at most ``WINDOW_PER_THREAD`` tasks a worker thread are
  submitted at a time (their units scattered with them), so what the scheduler and the
  workers hold stays the same for ten units or a million.
- **Lost holders are sent again:** when every worker holding the holder dies, Dask cancels the
  tasks that need it; they are sent again, with the holder scattered anew, in the next round
  (``retries`` rounds at most). A task that still fails is yielded with its exception.
"""

from __future__ import annotations

import itertools
import pickle
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import Any, TypeVar

import distributed
from distributed.protocol.serialize import dask_deserialize, dask_serialize

from e2ebackup.errors import InvalidArgument

__all__ = ["Hidden", "auto_unit_bytes", "run_units", "split_by_bytes"]

T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")

#: Tasks submitted at once, per worker thread of the cluster (at least ``MIN_WINDOW``): the
#: rest wait in this process, so the scheduler and the workers hold a few tasks (and their
#: scattered units) a thread, whatever the number of units; a window is topped up when half
#: of it finished, in one scatter and one submit round.
WINDOW_PER_THREAD = 4
MIN_WINDOW = 8


class Hidden:
    """The base of what carries key material from the client to the workers (and only there:
    it is scattered directly, never through the scheduler): hidden from ``repr`` and ``str``.
    A subclass keeps its fields in ``__slots__`` and pickles them with ``__reduce__``: that
    is its one job.

    Never to disk: a worker under memory pressure spills the data it holds to its local disk
    (``distributed.worker.memory.spill``), which would leave key material in a file. Dask
    serializes for a connection with a context naming the peer and for a spill without one;
    :func:`_send_hidden` refuses the second, so the holder stays in memory (the worker keeps
    what it cannot spill, logs "Failed to pickle" with the hidden repr, and spills the rest)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<e2ebackup credential (hidden)>"

    __str__ = __repr__


def _send_hidden(
    obj: Hidden, context: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[bytes]]:
    if not context or "recipient" not in context:
        raise TypeError("e2ebackup key material is sent over a connection only, never written")
    return {}, [pickle.dumps(obj, protocol=5)]


def _receive_hidden(header: dict[str, Any], frames: list[bytes | memoryview]) -> Hidden:
    held = pickle.loads(b"".join(bytes(f) for f in frames))  # noqa: S301 - from a Dask peer
    if not isinstance(held, Hidden):
        raise TypeError("not e2ebackup key material")
    return held


# distributed's dispatchers are untyped.
dask_serialize.register(Hidden)(_send_hidden)  # type: ignore[no-untyped-call]
dask_deserialize.register(Hidden)(_receive_hidden)  # type: ignore[no-untyped-call]


def split_by_bytes(
    items: Sequence[T], cost: Callable[[T], int], *, target: int, most: int
) -> list[list[T]]:
    """``items`` cut, in order, into runs of about ``target`` in total ``cost`` and at most
    ``most`` items; an item costing more than ``target`` is alone in its run."""
    if target < 1 or most < 1:
        raise InvalidArgument("the bytes and the items of a work unit must be positive")
    units: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        n = cost(item)
        if current and (total + n > target or len(current) >= most):
            units.append(current)
            current, total = [], 0
        current.append(item)
        total += n
    if current:
        units.append(current)
    return units


def auto_unit_bytes(
    client: distributed.Client, total: int, *, most: int, least: int, per_thread: int
) -> int:
    """``most`` bytes a unit, or less when that would leave fewer than ``per_thread`` units per
    worker thread of the cluster (the last units then keep every thread busy until close to
    the end); never below ``least``."""
    threads = max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
    share = total // (per_thread * threads) + 1
    return max(least, min(most, share))


def run_units(
    client: distributed.Client,
    secret: Hidden,
    task: Callable[..., R],
    units: Sequence[U],
    *,
    name: str,
    args: tuple[Any, ...] = (),
    retries: int = 3,
    scatter_units: bool = False,
) -> Iterator[tuple[U, R | BaseException]]:
    """``task(secret, unit, *args)`` on the cluster for each of ``units``, one task each named
    ``e2ebackup-<name>-<unit number>-<run>-<random>``; yields ``(unit, result)`` as the tasks
    finish, where ``result`` is what the task returned or the exception it failed with after
    ``retries`` attempts (``KilledWorker`` for one that kept killing its workers, the task's
    own exception, or ``CancelledError`` when the holder was lost in the last round)."""
    if not units:
        return
    run = uuid.uuid4().hex
    todo = list(enumerate(units))
    for attempt in range(retries + 1):
        last = attempt == retries
        again: list[tuple[int, U]] = []
        for entry, result in _round(
            client, secret, task, todo, name, run, args, retries, scatter_units, last=last
        ):
            if isinstance(result, CancelledError) and not last:
                again.append(entry)
            else:
                yield entry[1], result
        todo = sorted(again, key=lambda e: e[0])
        if not todo:
            return


def _round(
    client: distributed.Client,
    secret: Hidden,
    task: Callable[..., R],
    todo: list[tuple[int, U]],
    name: str,
    run: str,
    args: tuple[Any, ...],
    retries: int,
    scatter_units: bool,
    *,
    last: bool,
) -> Iterator[tuple[tuple[int, U], R | BaseException]]:
    # Straight to the workers (direct=True): the scheduler learns the name and the size of the
    # scattered object, never its bytes; hash=False keeps a hash of the secret out of the name.
    held = client.scatter(secret, direct=True, hash=False, broadcast=True)  # type: ignore[no-untyped-call]
    window = max(MIN_WINDOW, WINDOW_PER_THREAD * sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
    queue = iter(todo)
    running: dict[str, tuple[tuple[int, U], Any]] = {}  # key: (entry, its scattered unit)
    finished = distributed.as_completed()  # type: ignore[no-untyped-call]

    def submit(n: int) -> None:
        batch = list(itertools.islice(queue, n))
        sent: list[Any] = [None] * len(batch)
        if scatter_units and batch:
            sent = client.scatter([u for _, u in batch], direct=True, hash=False)  # type: ignore[no-untyped-call]
        for (i, unit), given in zip(batch, sent, strict=True):
            key = f"e2ebackup-{name}-{i}-{run}-{uuid.uuid4().hex[:8]}"
            future = client.submit(
                task,
                held,
                unit if given is None else given,
                *args,
                key=key,
                retries=retries,
                pure=False,
            )
            running[key] = ((i, unit), given)
            finished.add(future)  # type: ignore[no-untyped-call]

    lost = False
    try:
        submit(window)
        for future in finished:
            entry, given = running.pop(str(future.key))
            outcome = _outcome(client, future)
            future.release()
            if given is not None:
                given.release()
            # A cancelled task lost the holder (every worker that had it died): the tasks not
            # yet submitted wait for the next round, which scatters it anew (not the last
            # round: it has no next).
            lost = lost or (isinstance(outcome, CancelledError) and not last)
            yield entry, outcome
            if not lost and len(running) <= window // 2:
                submit(window - len(running))
        for entry in queue:  # left when the holder was lost
            yield entry, CancelledError()
    finally:
        held.release()
        for _, given in running.values():
            if given is not None:
                given.release()


def _outcome(client: distributed.Client, future: distributed.Future[Any]) -> Any:
    """A finished task's result, fetched from its worker (not through the scheduler), or the
    exception it ended with."""
    if future.status == "cancelled":
        return CancelledError()
    if future.status == "error":
        return future.exception()  # type: ignore[no-untyped-call]
    try:  # finished, or lost since: then Dask computes it again and this waits
        return client.gather(future, direct=True)  # type: ignore[no-untyped-call]
    except Exception as e:  # the engine's (a CancelledError: the holder was lost meanwhile)
        return e
