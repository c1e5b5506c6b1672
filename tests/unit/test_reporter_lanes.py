from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reporter.lanes import (
    LaneStats,
    StatusEvent,
    finished_lane_hours,
    lane_durations,
    lane_etas,
    lane_stats,
    work_in_progress,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def flow(task, *steps, start="todo"):
    """Events for ``task`` moving through ``(status, hour)`` steps."""
    events, previous = [], start
    for status, hour in steps:
        events.append(StatusEvent(task, previous, status, T0 + timedelta(hours=hour)))
        previous = status
    return events


def test_durations_add_re_entries_and_exclude_blocked_time():
    events = flow(
        "A",
        ("in_progress", 0),
        ("blocked", 2),
        ("in_progress", 5),
        ("ready_to_review", 6),
        ("in_progress", 8),  # sent back for rework
        ("ready_to_review", 9),
        ("ready_to_qa", 10),
        ("completed", 12),
    )
    assert lane_durations(events[::-1]) == {
        "A": {"work": 4.0, "blocked": 3.0, "review": 3.0, "qa": 2.0}
    }


def test_current_status_counts_only_up_to_now():
    events = flow("B", ("in_progress", 0), ("ready_to_review", 1))
    assert lane_durations(events) == {"B": {"work": 1.0}}
    now = T0 + timedelta(hours=3, minutes=30)
    assert lane_durations(events, now=now) == {"B": {"work": 1.0, "review": 2.5}}


def history():
    # Four finished tasks: work took 2, 4, 6 and 8 hours, review 1 hour, QA 2 hours.
    events = []
    for i, work in enumerate((2, 4, 6, 8)):
        events += flow(
            f"h{i}",
            ("in_progress", 0),
            ("ready_to_review", work),
            ("ready_to_qa", work + 1),
            ("completed", work + 3),
        )
    return events


NOW = T0 + timedelta(hours=20)


@pytest.fixture
def etas():
    events = history()
    events += flow("x", ("in_progress", 17))
    events += flow("y", ("in_progress", 18))
    events += flow("z", ("in_progress", 19))
    events += flow("b", ("in_progress", 10), ("blocked", 12))
    events += flow("o", ("ready_to_review", 12))
    return lane_etas(events, now=NOW)


def test_only_tasks_in_flight_get_an_eta(etas):
    assert set(etas) == {"x", "y", "z", "b", "o"}


def test_eta_uses_conditional_median_given_time_spent(etas):
    x = etas["x"]
    assert (x.lane, x.spent_hours, x.wip_ahead) == ("work", 3.0, 0)
    # Tasks that took longer than 3 h took 4, 6, 8: median 6, so 3 h remain.
    assert x.remaining_in_lane_hours == pytest.approx(3.0)
    assert x.downstream_hours == pytest.approx(3.0)  # review 1 + QA 2
    assert x.eta_hours == pytest.approx(6.0)
    assert x.eta_at == NOW + timedelta(hours=6)


def test_eta_counts_work_in_progress_ahead(etas):
    # Work throughput: 4 exits in 20 h = 0.2 tasks/h.
    y, z = etas["y"], etas["z"]
    assert (y.wip_ahead, y.queue_hours) == (1, pytest.approx(5.0))
    assert y.remaining_in_lane_hours == pytest.approx(5.0)  # queue beats the 4 h median
    assert (z.wip_ahead, z.queue_hours) == (2, pytest.approx(10.0))
    assert z.eta_hours == pytest.approx(13.0)
    assert etas["x"].eta_hours < y.eta_hours < z.eta_hours


def test_blocked_task_keeps_its_lane_and_is_not_counted_ahead(etas):
    b = etas["b"]
    assert (b.lane, b.blocked, b.spent_hours) == ("work", True, 2.0)
    assert b.eta_hours == pytest.approx(4.0 + 3.0)
    assert etas["x"].wip_ahead == 0


def test_task_older_than_all_history_is_flagged_overdue(etas):
    o = etas["o"]
    assert (o.lane, o.spent_hours, o.overdue) == ("review", 8.0, True)
    assert o.remaining_in_lane_hours == 0.0
    assert o.eta_hours == pytest.approx(2.0)  # QA still ahead


def test_no_history_means_no_eta_but_extra_history_helps():
    events = flow("new", ("in_progress", 0))
    now = T0 + timedelta(hours=1)
    assert lane_etas(events, now=now)["new"].eta_hours is None
    eta = lane_etas(events, now=now, history={"work": [3.0, 5.0], "qa": [1.0]})["new"]
    assert eta.eta_hours == pytest.approx(4.0 - 1.0 + 1.0)


def mixed():
    """A done (blocked 3 h inside work), B in review, C blocked inside work."""
    return [
        *flow(
            "A",
            ("in_progress", 0),
            ("blocked", 2),
            ("in_progress", 5),
            ("ready_to_review", 6),
            ("ready_to_qa", 7),
            ("completed", 9),
        ),
        *flow("B", ("in_progress", 0), ("ready_to_review", 4)),
        *flow("C", ("in_progress", 1), ("blocked", 3)),
    ]


def test_finished_lane_hours_leave_out_the_lane_a_task_is_still_in():
    hours = finished_lane_hours(mixed())
    assert {lane: sorted(h) for lane, h in hours.items()} == {
        "work": [3.0, 4.0],  # A's two stints; B left work; C is blocked inside it
        "review": [1.0],  # B is still in review
        "qa": [2.0],
        "blocked": [3.0],  # C's block is not over
    }


def test_finished_lane_hours_count_tasks_that_left_the_lane_since():
    # A left work at 6 h, B at 4 h; A's block ended at 5 h.
    hours = finished_lane_hours(mixed(), since=T0 + timedelta(hours=5))
    assert hours == {"work": [3.0], "review": [1.0], "qa": [2.0], "blocked": [3.0]}


def test_work_in_progress_is_by_latest_status_with_time_so_far():
    wip = work_in_progress(mixed(), now=T0 + timedelta(hours=10))
    assert wip == {"work": {}, "review": {"B": 6.0}, "qa": {}, "blocked": {"C": 7.0}}


def test_lane_stats():
    assert lane_stats([4.0, 1.0, 3.0, 2.0]) == LaneStats(4, 10.0, 2.5, 2.5, pytest.approx(3.55))
    assert lane_stats([]) == LaneStats(0, 0.0, None, None, None)


def test_since_measures_history_and_throughput_from_then_on():
    events = history() + flow("x", ("in_progress", 17)) + flow("y", ("in_progress", 18))
    since = T0 + timedelta(hours=5)
    # Work left since 5 h: 6 and 8 h (2 exits in 15 h); review 1 h, QA 2 h.
    etas = lane_etas(events, now=NOW, since=since)
    assert etas["x"].remaining_in_lane_hours == pytest.approx(7.0 - 3.0)
    assert etas["x"].eta_hours == pytest.approx(4.0 + 1.0 + 2.0)
    assert etas["y"].queue_hours == pytest.approx(1 / (2 / 15))
    # Over all of history the faster early tasks count: less left, a shorter queue.
    everything = lane_etas(events, now=NOW)
    assert everything["y"].queue_hours == pytest.approx(5.0)
    assert everything["x"].eta_hours < etas["x"].eta_hours


def test_a_task_open_since_before_the_window_keeps_all_its_time_in_lane():
    events = history() + flow("old", ("in_progress", 1))
    old = lane_etas(events, now=NOW, since=T0 + timedelta(hours=5))["old"]
    assert (old.spent_hours, old.overdue) == (19.0, True)


@given(st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=1, max_size=60))
def test_lane_percentiles_are_numpys(hours):
    stats = lane_stats(hours)
    p50, p85 = np.percentile(hours, [50, 85])
    assert (stats.p50_hours, stats.p85_hours) == (float(p50), float(p85))
