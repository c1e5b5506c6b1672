"""Monte Carlo completion forecasts, with or without task dependencies.

Each draw samples every remaining task's hours and adds them up (or, with dependencies,
takes the longest chain through them); the percentiles of many draws say how likely the
work is to be done within a given number of hours.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DRAWS = 10_000


@dataclass(frozen=True)
class LogNormal:
    """A positive quantity whose logarithm is normal with mean ``mu`` and sd ``sigma``."""

    mu: float
    sigma: float


Spread = LogNormal | Sequence[float]  #: a distribution, or observed samples to resample


@dataclass(frozen=True)
class Forecast:
    """Hours to finish, as percentiles over the simulated draws."""

    p50: float
    p85: float
    p95: float
    mean: float
    draws: int


class DependencyError(ValueError):
    """The dependency graph has a cycle or names a task that does not exist."""


def _draw(spread: Spread, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(spread, LogNormal):
        if spread.sigma < 0:
            raise ValueError(f"sigma cannot be negative, got {spread.sigma}")
        return rng.lognormal(spread.mu, spread.sigma, n)
    samples = np.asarray(spread, dtype=float)
    if samples.size == 0:
        raise ValueError("cannot resample from an empty list of samples")
    return rng.choice(samples, size=n, replace=True)


def _summary(totals: np.ndarray) -> Forecast:
    p50, p85, p95 = np.percentile(totals, [50, 85, 95])
    return Forecast(float(p50), float(p85), float(p95), float(totals.mean()), totals.size)


def forecast_hours(
    points: Sequence[float] = (),
    velocity: Spread | None = None,
    hours: Sequence[Spread] = (),
    n: int = DRAWS,
    seed: int | None = 0,
) -> Forecast:
    """Forecast the total hours of the remaining tasks.

    Tasks given as story points are converted with one velocity per draw: a team's pace
    is shared by its tasks, so a slow week slows all of them at once. Tasks given as hour
    distributions are drawn independently.

    Args:
        points: point estimates of the tasks measured in story points.
        velocity: points per hour, as a distribution or observed samples.
        hours: per-task hour distributions (``LogNormal``) or hour samples.
        n: number of draws.
        seed: seed of the random generator, so a report is reproducible.

    Raises:
        ValueError: when points are given without a velocity, or velocity is not positive.
    """
    if n < 1:
        raise ValueError(f"need at least one draw, got {n}")
    rng = np.random.default_rng(seed)
    totals = np.zeros(n)
    if points:
        if velocity is None:
            raise ValueError("tasks estimated in points need a velocity distribution")
        pace = _draw(velocity, n, rng)
        if np.any(pace <= 0):
            raise ValueError("velocity must be positive")
        totals += float(np.sum(points)) / pace
    for spread in hours:
        totals += _draw(spread, n, rng)
    return _summary(totals)


def _order(
    tasks: Sequence[str], deps: Mapping[str, Collection[str]], done: Collection[str]
) -> list[str]:
    """Tasks in dependency order; raises a DependencyError naming the culprit."""
    known = set(tasks)
    for task in tasks:
        for dep in deps.get(task, ()):
            if dep not in known and dep not in done:
                raise DependencyError(
                    f"task {task!r} depends on {dep!r}, which is neither remaining nor done"
                )
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed
    # Iterative depth-first search: long dependency chains must not hit the recursion limit.
    for root in tasks:
        if state.get(root):
            continue
        state[root] = 1
        path = [root]
        stack = [iter(deps.get(root, ()))]
        while stack:
            waits_for: str | None = next(stack[-1], None)
            if waits_for is None:
                stack.pop()
                placed = path.pop()
                state[placed] = 2
                order.append(placed)
            elif waits_for in known and state.get(waits_for) == 1:
                cycle = [*path[path.index(waits_for) :], waits_for]
                raise DependencyError(
                    f"dependency cycle (each waits for the next): {' -> '.join(cycle)}"
                )
            elif waits_for in known and not state.get(waits_for):
                state[waits_for] = 1
                path.append(waits_for)
                stack.append(iter(deps.get(waits_for, ())))
    return order


def critical_path(
    tasks: Sequence[str],
    deps: Mapping[str, Collection[str]],
    hours: Mapping[str, float],
    done: Collection[str] = (),
) -> tuple[list[str], float]:
    """The longest chain of dependent tasks and its total hours.

    Args:
        tasks: remaining task ids.
        deps: task id -> ids it waits for.
        hours: task id -> duration in hours.
        done: finished task ids; dependencies on them are already satisfied.

    Raises:
        DependencyError: on a cycle (naming it) or a dependency on an unknown task.

    Example:
        >>> critical_path(["a", "b", "c"], {"c": ["a", "b"]}, {"a": 1, "b": 3, "c": 2})
        (['b', 'c'], 5.0)
    """
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for task in _order(tasks, deps, done):
        ready = [d for d in deps.get(task, ()) if d in finish]
        last = max(ready, key=lambda d: finish[d], default=None)
        before[task] = last
        finish[task] = (finish[last] if last else 0.0) + float(hours[task])
    if not finish:
        return [], 0.0
    end = max(finish, key=lambda t: finish[t])
    total = finish[end]
    step: str | None = end
    path: list[str] = []
    while step is not None:
        path.append(step)
        step = before[step]
    return path[::-1], total


def forecast_with_dependencies(
    tasks: Mapping[str, Spread],
    deps: Mapping[str, Collection[str]],
    done: Collection[str] = (),
    n: int = DRAWS,
    seed: int | None = 0,
) -> Forecast:
    """Forecast hours to finish when tasks wait for their dependencies.

    Unlimited parallelism is assumed: each draw's answer is its critical path length,
    so this is the lower bound a team with enough hands could reach.

    Args:
        tasks: remaining task id -> hour distribution or samples.
        deps: task id -> ids it waits for.
        done: finished task ids; dependencies on them are already satisfied.

    Raises:
        DependencyError: on a cycle (naming it) or a dependency on an unknown task.
    """
    if n < 1:
        raise ValueError(f"need at least one draw, got {n}")
    rng = np.random.default_rng(seed)
    order = _order(list(tasks), deps, done)
    finish: dict[str, np.ndarray] = {}
    for task in order:
        start = np.zeros(n)
        for dep in deps.get(task, ()):
            if dep in finish:
                start = np.maximum(start, finish[dep])
        finish[task] = start + _draw(tasks[task], n, rng)
    if not finish:
        return _summary(np.zeros(n))
    return _summary(np.max(np.vstack(list(finish.values())), axis=0))
