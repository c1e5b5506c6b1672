"""Batch assignment: models for many tasks at once, maximising total value under quota.

Pure functions. Each task may take one of its options (a model that passes the filters,
in the strategy's order) or stay pending; each subscription's remaining tokens and
dollars bound the sum of what its tasks would reserve. Small problems are solved exactly
as a 0-1 integer programme (``scipy.optimize.milp``); large ones greedily, taking tasks by
value per token and giving each the first option that still fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

#: Above this many (task, option) pairs, the greedy plan is used.
EXACT_MAX_PAIRS = 4_000
#: Weight of the strategy's preference between options: far below one point of value.
PREFERENCE = 1e-3


@dataclass(frozen=True, slots=True)
class Option:
    """A model a task could take, with what it would reserve."""

    model: str
    subscription: str
    tokens: int
    micro_usd: int


@dataclass(frozen=True, slots=True)
class BatchTask:
    task_id: str
    value: float
    #: In the strategy's order of preference.
    options: tuple[Option, ...]


@dataclass(frozen=True, slots=True)
class Room:
    """What a subscription can still reserve; ``None`` is unlimited."""

    tokens: int | None = None
    micro_usd: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    method: str  # "milp", "greedy" or "empty"
    chosen: dict[str, Option | None]

    def total_value(self, tasks: Sequence[BatchTask]) -> float:
        return sum(t.value for t in tasks if self.chosen.get(t.task_id) is not None)


def _weight(task: BatchTask, rank: int) -> float:
    # Every assignment is worth its value plus a little (so value-0 tasks still get room),
    # a little more for the strategy's earlier options.
    return task.value + PREFERENCE * (1 + (len(task.options) - rank) / len(task.options))


def plan_batch(
    tasks: Sequence[BatchTask],
    room: Mapping[str, Room],
    *,
    exact_max_pairs: int = EXACT_MAX_PAIRS,
    time_limit_s: float = 10.0,
) -> Plan:
    """The best assignment of ``tasks`` within ``room`` (subscriptions not listed: no room).

    Returns:
        The plan: each task's option, or ``None`` when it stays pending.
    """
    pairs = [(t, i, o) for t in tasks for i, o in enumerate(t.options) if o.subscription in room]
    if not pairs:
        return Plan("empty", {t.task_id: None for t in tasks})
    if len(pairs) > exact_max_pairs:
        return greedy(tasks, room)
    return _exact(tasks, room, pairs, time_limit_s) or greedy(tasks, room)


def greedy(tasks: Sequence[BatchTask], room: Mapping[str, Room]) -> Plan:
    """Tasks by value per token (highest first), each to its first option that still fits."""
    left = {name: [r.tokens, r.micro_usd] for name, r in room.items()}

    def density(t: BatchTask) -> float:
        tokens = min((o.tokens for o in t.options), default=0)
        return t.value / max(tokens, 1)

    chosen: dict[str, Option | None] = {t.task_id: None for t in tasks}
    for t in sorted(tasks, key=lambda t: (-density(t), -t.value, t.task_id)):
        for o in t.options:
            budget = left.get(o.subscription)
            if budget is None:
                continue
            tokens, micro = budget
            if (tokens is None or o.tokens <= tokens) and (micro is None or o.micro_usd <= micro):
                budget[0] = None if tokens is None else tokens - o.tokens
                budget[1] = None if micro is None else micro - o.micro_usd
                chosen[t.task_id] = o
                break
    return Plan("greedy", chosen)


def _exact(
    tasks: Sequence[BatchTask],
    room: Mapping[str, Room],
    pairs: list[tuple[BatchTask, int, Option]],
    time_limit_s: float,
) -> Plan | None:
    n = len(pairs)
    c = -np.array([_weight(t, i) for t, i, _ in pairs])
    task_row = {t.task_id: k for k, t in enumerate(tasks)}
    limits: list[tuple[str, str, int]] = []
    for name, r in sorted(room.items()):
        if r.tokens is not None:
            limits.append((name, "tokens", r.tokens))
        if r.micro_usd is not None:
            limits.append((name, "micro_usd", r.micro_usd))
    a = lil_matrix((len(tasks) + len(limits), n))
    for j, (t, _, o) in enumerate(pairs):
        a[task_row[t.task_id], j] = 1
        for k, (name, unit, _) in enumerate(limits):
            if o.subscription == name:
                a[len(tasks) + k, j] = getattr(o, unit)
    upper = np.array([1.0] * len(tasks) + [float(limit) for *_, limit in limits])
    result = milp(
        c,
        constraints=LinearConstraint(a.tocsr(), -np.inf, upper),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit_s},
    )
    if result.x is None:
        return None
    chosen: dict[str, Option | None] = {t.task_id: None for t in tasks}
    for j, (t, _, o) in enumerate(pairs):
        if result.x[j] > 0.5:
            chosen[t.task_id] = o
    return Plan("milp", chosen)
