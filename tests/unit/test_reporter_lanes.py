from datetime import UTC, datetime, timedelta

import pytest

from services.reporter.lanes import StatusEvent, lane_durations, lane_etas

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
