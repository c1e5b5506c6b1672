"""Lane cycle times from task status events, and ETAs that count queue and time in lane.

A task's lanes follow its status: ``in_progress`` is the work lane, ``ready_to_review``
the review lane and ``ready_to_qa`` the QA lane; ``completed`` ends the flow. Time in
``blocked`` is left out of the lane it interrupted and reported on its own, and every
re-entry into a lane adds to that lane's time.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

LANE_OF_STATUS = {"in_progress": "work", "ready_to_review": "review", "ready_to_qa": "qa"}
LANES = ("work", "review", "qa")  #: in flow order
BLOCKED = "blocked"


@dataclass(frozen=True)
class StatusEvent:
    task_id: str
    from_status: str | None
    to_status: str
    at: datetime


@dataclass(frozen=True)
class _Stint:
    status: str
    start: datetime
    end: datetime | None  #: None while the task is still in this status


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600.0


def _stints(events: Iterable[StatusEvent]) -> dict[str, list[_Stint]]:
    by_task: dict[str, list[StatusEvent]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    stints: dict[str, list[_Stint]] = {}
    for task_id, task_events in by_task.items():
        ordered = sorted(task_events, key=lambda e: e.at)
        ends: list[datetime | None] = [e.at for e in ordered[1:]]
        stints[task_id] = [
            _Stint(e.to_status, e.at, end) for e, end in zip(ordered, [*ends, None], strict=True)
        ]
    return stints


def _bucket(status: str) -> str | None:
    """The lane a status belongs to, ``blocked``, or None (backlog, completed)."""
    return BLOCKED if status == BLOCKED else LANE_OF_STATUS.get(status)


def _durations(stints: Sequence[_Stint], now: datetime | None) -> dict[str, float]:
    totals: dict[str, float] = {}
    for stint in stints:
        bucket = _bucket(stint.status)
        end = stint.end or now
        if bucket is None or end is None:
            continue
        totals[bucket] = totals.get(bucket, 0.0) + _hours(end - stint.start)
    return totals


def lane_durations(
    events: Iterable[StatusEvent], now: datetime | None = None
) -> dict[str, dict[str, float]]:
    """Hours each task spent per lane (``work``, ``review``, ``qa``) and ``blocked``.

    Only lanes a task visited appear. The status a task is in right now counts up to
    ``now`` when given, and not at all otherwise.
    """
    return {task: _durations(s, now) for task, s in _stints(events).items()}


def _finished(stints: Sequence[_Stint]) -> dict[str, tuple[float, datetime]]:
    """Hours per lane (and ``blocked``) the task has left, with when it last left it."""
    lane, blocked = _current_lane(stints)
    done: dict[str, tuple[float, datetime]] = {}
    for bucket, hours in _durations(stints, None).items():
        if bucket == lane or (bucket == BLOCKED and blocked):
            continue
        left = max(s.end for s in stints if s.end is not None and _bucket(s.status) == bucket)
        done[bucket] = (hours, left)
    return done


def finished_lane_hours(
    events: Iterable[StatusEvent], since: datetime | None = None
) -> dict[str, list[float]]:
    """Per lane and ``blocked``: the hours of each task that has left it (since ``since``).

    A task still in a lane (or blocked inside it) is left out of that lane: its time there
    is not finished. Every visit of a task to a lane adds up to one duration.
    """
    hours: dict[str, list[float]] = {bucket: [] for bucket in (*LANES, BLOCKED)}
    for task_stints in _stints(events).values():
        for bucket, (spent, left) in _finished(task_stints).items():
            if since is None or left >= since:
                hours[bucket].append(spent)
    return hours


def work_in_progress(events: Iterable[StatusEvent], now: datetime) -> dict[str, dict[str, float]]:
    """Per lane and ``blocked``: the tasks whose latest status is in it, with hours so far.

    Hours count every visit to that lane (or every block) up to ``now``.
    """
    wip: dict[str, dict[str, float]] = {bucket: {} for bucket in (*LANES, BLOCKED)}
    for task, task_stints in _stints(events).items():
        bucket = _bucket(task_stints[-1].status)
        if bucket is not None:
            wip[bucket][task] = _durations(task_stints, now).get(bucket, 0.0)
    return wip


@dataclass(frozen=True)
class LaneStats:
    """Cycle-time statistics of one lane, in hours (None without any sample)."""

    count: int
    total_hours: float
    mean_hours: float | None
    p50_hours: float | None
    p85_hours: float | None


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted ``ordered`` by linear interpolation, as numpy's
    default ``percentile`` computes it (the same rounding), without copying the values."""
    position = (len(ordered) - 1) * q
    below = int(position)
    t = position - below
    a = ordered[below]
    b = ordered[min(below + 1, len(ordered) - 1)]
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def lane_stats(hours: Sequence[float]) -> LaneStats:
    """Count, total, mean and the 50th/85th percentiles (linear interpolation)."""
    if not hours:
        return LaneStats(0, 0.0, None, None, None)
    ordered = sorted(hours)  # linear for the sorted lists the lanes are read as
    p50, p85 = _percentile(ordered, 0.5), _percentile(ordered, 0.85)
    return LaneStats(len(hours), float(sum(hours)), statistics.fmean(hours), p50, p85)


@dataclass(frozen=True)
class TaskEta:
    """When a task in flight should reach ``completed``, and why."""

    task_id: str
    lane: str
    blocked: bool
    spent_hours: float  #: in the current lane, all stints, blocked time excluded
    wip_ahead: int  #: tasks in the same lane that entered it earlier
    queue_hours: float | None  #: wip_ahead / observed lane throughput
    remaining_in_lane_hours: float | None
    downstream_hours: float  #: median hours of the lanes after this one
    eta_hours: float | None
    eta_at: datetime | None
    overdue: bool  #: already longer in lane than any finished task was


def _median_above(ordered: Sequence[float], floor: float) -> float | None:
    """The median of the values of sorted ``ordered`` above ``floor`` (None if none is)."""
    first = bisect.bisect_right(ordered, floor)
    n = len(ordered) - first
    if n == 0:
        return None
    mid = first + n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _current_lane(stints: Sequence[_Stint]) -> tuple[str | None, bool]:
    """The lane a task is in now (the one it was in before a block) and whether blocked."""
    last = stints[-1].status
    if last != BLOCKED:
        return LANE_OF_STATUS.get(last), False
    before = next((s.status for s in reversed(stints) if s.status != BLOCKED), None)
    return (LANE_OF_STATUS.get(before) if before else None), True


def _entered(stints: Sequence[_Stint], lane: str) -> datetime:
    """When the task last came into ``lane``; a block inside the lane does not reset it."""
    entered = stints[-1].start
    for stint in reversed(stints):
        if stint.status != BLOCKED and LANE_OF_STATUS.get(stint.status) != lane:
            break
        entered = stint.start
    return entered


def lane_etas(
    events: Iterable[StatusEvent],
    now: datetime,
    history: Mapping[str, Sequence[float]] | None = None,
    since: datetime | None = None,
) -> dict[str, TaskEta]:
    """ETA to completion for every task currently in a lane (or blocked inside one).

    The remaining time in the current lane is the larger of two waits: the conditional
    median of finished lane durations longer than the time already spent (history says
    how long tasks that got this far still took), and the queue ahead divided by the
    lane's observed throughput (tasks leave the lane at that rate). Later lanes add their
    median duration; a later lane nobody has finished yet adds nothing. A task in a lane
    nobody has finished yet gets no ETA (``eta_hours`` None).

    Args:
        events: all status events (the history and the tasks in flight).
        now: the moment the ETA is computed for.
        history: extra finished lane durations in hours, e.g. from earlier periods.
        since: measure from this moment on only: lane durations of tasks that left the
            lane since then, and throughput as exits since then per hour (from the first
            event when that is later). Events before it still count towards the time a
            task in flight has spent in its lane.
    """
    stints = _stints(events)
    samples: dict[str, list[float]] = {lane: list((history or {}).get(lane, ())) for lane in LANES}
    exits = dict.fromkeys(LANES, 0)
    first_seen = min((s[0].start for s in stints.values()), default=now)
    for task_stints in stints.values():
        previous: str | None = None  # lane before any block: leaving a lane via a block counts
        for stint in task_stints:
            if stint.status == BLOCKED:
                continue
            now_in = LANE_OF_STATUS.get(stint.status)
            counted = since is None or stint.start >= since
            if previous is not None and now_in != previous and counted:
                exits[previous] += 1
            previous = now_in
        for visited, (hours, left) in _finished(task_stints).items():
            if visited in samples and (since is None or left >= since):
                samples[visited].append(hours)
    start = first_seen if since is None else max(first_seen, since)
    measured = LaneHistory(
        {lane: sorted(v) for lane, v in samples.items()}, exits, max(_hours(now - start), 1e-9)
    )
    return etas_in_flight(stints, now, measured)


@dataclass(frozen=True)
class LaneHistory:
    """What ETAs are measured from: per lane, the finished durations (hours, sorted) and
    how many tasks left it, over a window of ``window_hours``."""

    samples: Mapping[str, Sequence[float]]
    exits: Mapping[str, int]
    window_hours: float


def etas_in_flight(
    events: Iterable[StatusEvent] | Mapping[str, Sequence[_Stint]],
    now: datetime,
    measured: LaneHistory,
) -> dict[str, TaskEta]:
    """ETAs of the tasks in a lane (or blocked inside one) among ``events``, from history
    measured beforehand (see :func:`lane_etas` for how each is computed)."""
    stints = events if isinstance(events, Mapping) else _stints(events)
    places: list[Place] = []
    for task, task_stints in stints.items():
        lane, blocked = _current_lane(task_stints)
        if lane is not None:
            spent = _durations(task_stints, now).get(lane, 0.0)
            places.append(Place(task, lane, blocked, _entered(task_stints, lane), spent))
    return etas_of(places, now, measured)


@dataclass(frozen=True)
class Place:
    """Where an open task stands in its lane: what its ETA is computed from."""

    task_id: str
    lane: str
    blocked: bool
    entered: datetime  #: when it last came into the lane (a block inside does not reset it)
    spent_hours: float  #: in the lane so far, every visit, blocked time excluded


@dataclass(frozen=True)
class OpenTask:
    """A task whose latest move put it in a lane or ``blocked``, as kept per task.

    ``closed_hours`` are the hours of its finished stints per lane and ``blocked``; the
    stint it is in now started at ``moved_at`` and counts up to the moment asked for.
    """

    task_id: str
    status: str  #: of its latest move
    moved_at: datetime
    lane: str | None  #: the lane it is in (the one it was in before a block)
    blocked: bool
    entered: datetime | None  #: when it last came into ``lane``
    closed_hours: Mapping[str, float]

    def hours_in(self, bucket: str, now: datetime) -> float:
        """Hours in ``bucket`` (a lane or ``blocked``) up to ``now``, every visit."""
        closed = self.closed_hours.get(bucket, 0.0)
        return closed + _hours(now - self.moved_at) if _bucket(self.status) == bucket else closed

    def place(self, now: datetime) -> Place | None:
        """Its place in its lane, or None when it is in none (blocked from the backlog)."""
        if self.lane is None or self.entered is None:
            return None
        return Place(
            self.task_id, self.lane, self.blocked, self.entered, self.hours_in(self.lane, now)
        )


def open_work(tasks: Iterable[OpenTask], now: datetime) -> dict[str, dict[str, float]]:
    """:func:`work_in_progress` of tasks kept per task: per lane and ``blocked``, the
    tasks in it with their hours there so far."""
    wip: dict[str, dict[str, float]] = {bucket: {} for bucket in (*LANES, BLOCKED)}
    for task in tasks:
        bucket = _bucket(task.status)
        if bucket is not None:
            wip[bucket][task.task_id] = task.hours_in(bucket, now)
    return wip


def etas_of(places: Iterable[Place], now: datetime, measured: LaneHistory) -> dict[str, TaskEta]:
    """The ETA of each task at ``places`` (see :func:`lane_etas` for how each is computed).

    Each lane's median is taken once, and the tasks ahead of one are counted by bisecting
    the lane's sorted entry times (no loop over every pair of tasks).
    """
    current = list(places)
    ordered = {lane: measured.samples.get(lane, ()) for lane in LANES}
    medians = {lane: _median_above(v, -math.inf) for lane, v in ordered.items()}
    queued: dict[str, list[datetime]] = {lane: [] for lane in LANES}
    for p in current:
        if not p.blocked:
            queued[p.lane].append(p.entered)
    for entries in queued.values():
        entries.sort()
    rates = {lane: measured.exits.get(lane, 0) / measured.window_hours for lane in LANES}
    downstream_of = {
        lane: sum(m for ln in LANES[LANES.index(lane) + 1 :] if (m := medians[ln]) is not None)
        for lane in LANES
    }
    etas: dict[str, TaskEta] = {}
    for p in current:
        lane, spent = p.lane, p.spent_hours
        ahead = bisect.bisect_left(queued[lane], p.entered)
        rate = rates[lane]
        queue = 0.0 if ahead == 0 else (ahead / rate if rate > 0 else None)
        conditional = _median_above(ordered[lane], spent)
        if conditional is not None:
            conditional -= spent
        overdue = bool(ordered[lane]) and conditional is None
        if overdue:
            conditional = 0.0
        # Without finished tasks in this lane there is nothing to measure from: no ETA.
        remaining = None if conditional is None else max(conditional, queue or 0.0)
        downstream = downstream_of[lane]
        eta = None if remaining is None else remaining + downstream
        etas[p.task_id] = TaskEta(
            task_id=p.task_id,
            lane=lane,
            blocked=p.blocked,
            spent_hours=spent,
            wip_ahead=ahead,
            queue_hours=queue,
            remaining_in_lane_hours=remaining,
            downstream_hours=downstream,
            eta_hours=eta,
            eta_at=None if eta is None else now + timedelta(hours=eta),
            overdue=overdue,
        )
    return etas
