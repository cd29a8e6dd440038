# mypy: disable-error-code="no-untyped-call"
"""The runner's window: however many units a run has, only a few tasks a worker thread are
on the cluster at once, every unit still runs exactly once, and a task's failure is its
own (dask/runner.py)."""

from __future__ import annotations

from collections.abc import Iterator

import distributed
import pytest
from e2ebackup.dask import runner
from e2ebackup.errors import InvalidArgument


class _Token(runner.Hidden):
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[object, ...]:
        return (_Token, (self.value,))


def _double(token: _Token, unit: int) -> int:
    if unit == 13:
        raise InvalidArgument("unit 13 fails")
    return token.value * unit


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with (
        distributed.LocalCluster(
            n_workers=2, processes=False, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _ours(dask_scheduler: distributed.Scheduler) -> tuple[int, int]:
    """The run's tasks and scattered units the scheduler holds now."""
    keys = [str(k) for k in dask_scheduler.tasks]
    tasks = sum(1 for k in keys if k.startswith("e2ebackup-window-"))
    scattered = sum(1 for k in keys if not k.startswith("e2ebackup-"))
    return tasks, scattered


@pytest.mark.parametrize("scatter_units", [False, True])
def test_a_window_of_tasks_at_a_time(client: distributed.Client, scatter_units: bool) -> None:
    units = list(range(60))
    window = max(runner.MIN_WINDOW, runner.WINDOW_PER_THREAD * 2)
    assert window < len(units)  # the test needs more units than one window
    results: dict[int, object] = {}
    most_tasks = most_scattered = 0
    for unit, result in runner.run_units(
        client, _Token(3), _double, units, name="window", scatter_units=scatter_units, retries=0
    ):
        assert unit not in results
        results[unit] = result
        tasks, scattered = client.run_on_scheduler(_ours)
        most_tasks = max(most_tasks, tasks)
        most_scattered = max(most_scattered, scattered)
    assert sorted(results) == units
    for number, outcome in results.items():
        if number == 13:
            assert isinstance(outcome, InvalidArgument)
        else:
            assert outcome == 3 * number
    # Releasing is a message of its own, so the scheduler may still hold a few finished ones
    # when asked: bounded by two windows, far below the run's 60 units.
    assert 0 < most_tasks <= 2 * window < len(units)
    # The holder, and with scatter_units the units of the tasks in flight only.
    assert most_scattered <= 1 + (2 * window if scatter_units else 0)


def test_no_units_no_tasks(client: distributed.Client) -> None:
    assert list(runner.run_units(client, _Token(1), _double, [], name="window")) == []
