"""The cost-quality frontier of routing on recorded outcomes, in process and in seconds.

Tally's decisions are replayed with its own code -- the learner's :class:`PolicyTrainer`
(evidence of first attempts and of attempts after a failure, pooled per task class) and
the assigner's :func:`expected_values` and escalation rule -- one task at a time, the
policy learning from each run before the next decision (the live bus replay of
``route.py --bus`` runs tasks concurrently and learns a moment later). Next to it, on the
same tasks and orders: hindsight baselines (best single model, cheapest, oracle, the best
fixed order of two models) and a simple online baseline, :class:`BetaBandit`.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from services.assigner.selection import Candidate, expected_values, route_seed
from services.learner.policy import RoutingPolicy
from services.learner.settings import LearnerSettings
from services.learner.training import LearnedRun, PolicyTrainer
from tally.registry import ModelSpec

#: The band every replayed task gets in process (the estimator's band needs the bus).
BAND = "medium"
Outcomes = Mapping[str, Mapping[str, "Played"]]


@dataclass(frozen=True)
class Played:
    """One model's recorded outcome on one task, its cost in dollars."""

    success: bool
    usd: float


@dataclass(frozen=True)
class Run:
    """What one routing did over a stream of tasks."""

    solved: int
    cost: float
    first_half: float  #: spend per task over the first half of the stream
    second_half: float
    runs: int

    def solved_cost(self) -> tuple[int, float]:
        return self.solved, self.cost


def _run(per_task: Sequence[tuple[bool, float, int]]) -> Run:
    half = len(per_task) // 2
    cost = [c for _, c, _ in per_task]
    return Run(
        sum(s for s, _, _ in per_task),
        sum(cost),
        sum(cost[:half]) / max(1, half),
        sum(cost[half:]) / max(1, len(cost) - half),
        sum(n for _, _, n in per_task),
    )


def _spec(name: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "provider": "bench",
            "tier": "standard",
            "prices": {"input": 0.0, "output": 0.0},
            "context_window": 10_000_000,
            "subscription": "bench",
        }
    )


def tally(
    outcomes: Outcomes,
    order: Sequence[str],
    task_type: Callable[[str], str],
    value_usd: float,
    max_attempts: int,
) -> Run:
    """Tally's learned routing from a cold start at ``value_usd`` a solve."""
    models = sorted({m for per in outcomes.values() for m in per})
    s = LearnerSettings()
    trainer = PolicyTrainer(
        RoutingPolicy(models, pool_strength=s.pool_strength),
        group_size=s.group_size,
        held_out_share=s.held_out_share,
    )
    cands = [Candidate(_spec(m), 0.9, 0.0, 0) for m in models]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    played = []
    for i, original in enumerate(order):
        task_id, kind = f"t{i:05d}", task_type(original)
        failed: list[str] = []
        spent, solved, runs = 0.0, False, 0
        for attempt in range(1, max_attempts + 1):
            untried = [c for c in cands if c.model.name not in failed]
            if not untried:
                break
            rows = trainer.policy.rows(kind, BAND)
            ev = expected_values(
                untried,
                rows,
                value_usd=value_usd,
                after_failure=attempt > 1,
                seed=route_seed(task_id, attempt),
                attempts_left=max_attempts - attempt,
            )
            model = min(ev, key=lambda m: (-ev[m], m))
            if attempt > 1 and ev[model] <= 0:
                break  # the assigner declines the escalation
            got = outcomes[original][model]
            spent, runs = spent + got.usd, runs + 1
            trainer.observe(
                LearnedRun(
                    f"{task_id}-{attempt}",
                    task_id,
                    model,
                    kind,
                    BAND,
                    1.0 if got.success else 0.0,
                    got.usd,
                    at,
                    attempt,
                )
            )
            if got.success:
                solved = True
                break
            failed.append(model)
        played.append((solved, spent, runs))
    return _run(played)


class BetaBandit:
    """The online baseline: Beta posteriors, sampled ``p - cost / value``, priced escalation.

    Success at a first attempt is a Beta posterior per model and task type, started from
    the model's overall record (up to ``prior_runs`` pseudo-runs of it); success after
    another model failed is a separate Beta per model. Cost is the model's mean so far.
    Each attempt goes to the untried model with the highest sampled ``p - cost / value``;
    after a failure, only while that is positive.
    """

    def __init__(self, models: Sequence[str], value_usd: float, seed: int, prior_runs: float = 4):
        self.models, self.value, self.prior_runs = list(models), value_usd, prior_runs
        self.rng = np.random.default_rng(seed)
        self.first: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.overall: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.after: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.cost: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def _draw(self, model: str, kind: str, retry: bool) -> float:
        if retry:
            won, n = self.after[model]
            return float(self.rng.beta(1 + won, 1 + n - won))
        g_won, g_n = self.overall[model]
        mean, k = (g_won + 1) / (g_n + 2), min(self.prior_runs, g_n + 2)
        won, n = self.first[(model, kind)]
        return float(self.rng.beta(won + k * mean, n - won + k * (1 - mean)))

    def pick(self, kind: str, untried: Sequence[str], retry: bool) -> tuple[str, float]:
        def score(m: str) -> float:
            total, n = self.cost[m]
            return self._draw(m, kind, retry) - (total / n if n else 0.0) / self.value

        scores = {m: score(m) for m in untried}
        best = max(sorted(scores), key=lambda m: scores[m])
        return best, scores[best]

    def learn(self, model: str, kind: str, retry: bool, success: bool, usd: float) -> None:
        counts = [self.after[model]] if retry else [self.first[(model, kind)], self.overall[model]]
        for pair in counts:
            pair[0] += success
            pair[1] += 1
        self.cost[model][0] += usd
        self.cost[model][1] += 1


def bandit(
    outcomes: Outcomes,
    order: Sequence[str],
    task_type: Callable[[str], str],
    value_usd: float,
    max_attempts: int,
    seed: int,
) -> Run:
    """The online baseline over the stream (see :class:`BetaBandit`)."""
    models = sorted({m for per in outcomes.values() for m in per})
    b = BetaBandit(models, value_usd, seed)
    played = []
    for original in order:
        kind, tried, spent, solved = task_type(original), [], 0.0, False
        for attempt in range(1, max_attempts + 1):
            untried = [m for m in models if m not in tried]
            if not untried:
                break
            model, score = b.pick(kind, untried, attempt > 1)
            if attempt > 1 and score <= 0:
                break
            got = outcomes[original][model]
            b.learn(model, kind, attempt > 1, got.success, got.usd)
            spent += got.usd
            tried.append(model)
            if got.success:
                solved = True
                break
        played.append((solved, spent, len(tried)))
    return _run(played)


def fixed_order(outcomes: Outcomes, order: Sequence[str], models: Sequence[str]) -> Run:
    """Always ``models`` in this order, stopping at the first success."""
    played = []
    for original in order:
        spent, solved, n = 0.0, False, 0
        for m in models:
            got = outcomes[original][m]
            spent, n = spent + got.usd, n + 1
            if got.success:
                solved = True
                break
        played.append((solved, spent, n))
    return _run(played)


def best_fixed(
    outcomes: Outcomes, order: Sequence[str], value_usd: float
) -> tuple[tuple[str, ...], Run]:
    """In hindsight, the single model or ordered pair with the most value net of cost."""
    models = sorted({m for per in outcomes.values() for m in per})
    options = [(m,) for m in models] + list(itertools.permutations(models, 2))
    runs = {o: fixed_order(outcomes, order, o) for o in options}
    best = max(options, key=lambda o: (value_usd * runs[o].solved - runs[o].cost, -len(o)))
    return best, runs[best]


def orders(tasks: Sequence[str], n: int, first_seed: int = 0) -> list[list[str]]:
    """``n`` task orders, seeded ``first_seed`` .. ``first_seed + n - 1``."""
    out = []
    for seed in range(first_seed, first_seed + n):
        order = sorted(tasks)
        random.Random(seed).shuffle(order)
        out.append(order)
    return out


def median_run(runs: Sequence[Run]) -> tuple[Run, tuple[int, int], tuple[float, float]]:
    """Medians of each figure, with the spread (min, max) of solved and of cost."""
    med = Run(
        round(statistics.median(r.solved for r in runs)),
        statistics.median(r.cost for r in runs),
        statistics.median(r.first_half for r in runs),
        statistics.median(r.second_half for r in runs),
        round(statistics.median(r.runs for r in runs)),
    )
    solved, cost = [r.solved for r in runs], [r.cost for r in runs]
    return med, (min(solved), max(solved)), (min(cost), max(cost))


def cost_at(points: Sequence[tuple[int, float]], solved: float) -> float | None:
    """The frontier's cost at ``solved`` tasks, linear between its points (None beyond)."""
    pts = sorted(points)
    for (s0, c0), (s1, c1) in itertools.pairwise(pts):
        if s0 <= solved <= s1:
            return c0 if s1 == s0 else c0 + (c1 - c0) * (solved - s0) / (s1 - s0)
    if pts and solved == pts[-1][0]:
        return pts[-1][1]
    return None


#: Values of a solve the frontier is drawn at (dollars).
VALUES = (2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)


def frontier(
    outcomes: Outcomes,
    task_type: Callable[[str], str],
    *,
    default_value: float,
    max_attempts: int,
    n_orders: int = 5,
    first_seed: int = 0,
    unit: str = "USD",
    usd_per_unit: float = 1.0,
    values: Sequence[float] = VALUES,
) -> dict[str, object]:
    """Print the frontier table for one data file; return what the checks need."""
    models = sorted({m for per in outcomes.values() for m in per})
    streams = orders(list(outcomes), n_orders, first_seed)

    def per_task(usd: float) -> str:
        return f"${usd:,.2f}" if unit == "USD" else f"{usd / usd_per_unit:,.1f} {unit}"

    def money(usd: float) -> str:
        return f"${usd:,.0f}" if unit == "USD" else f"{usd / usd_per_unit:,.0f} {unit}"

    def line(name: str, runs: Sequence[Run]) -> tuple[int, float]:
        med, (s0, s1), (c0, c1) = median_run(runs)
        print(
            f"  {name[:44]:44s} {med.solved:5d} [{s0}-{s1}] {money(med.cost):>14s}"
            f" [{money(c0)}-{money(c1)}]  {per_task(med.first_half)} -> {per_task(med.second_half)}"
            f"  {med.runs}"
        )
        return med.solved, med.cost

    hindsight = {m: fixed_order(outcomes, streams[0], (m,)) for m in models}
    best = max(models, key=lambda m: (hindsight[m].solved, -hindsight[m].cost))
    cheap = min(models, key=lambda m: (hindsight[m].cost, -hindsight[m].solved))
    solved_oracle = cost_oracle = 0.0
    for per in outcomes.values():
        wins = [o.usd for o in per.values() if o.success]
        solved_oracle += bool(wins)
        cost_oracle += min(wins, default=0.0)
    print(
        f"  {'routing':44s} solved [spread]       cost [spread]"
        "           spend/task 1st half -> 2nd half  runs  (medians over"
        f" {n_orders} orders)"
    )
    line(f"best single: {best}", [hindsight[best]])
    line(f"cheapest: {cheap}", [hindsight[cheap]])
    print(f"  {'oracle':44s} {int(solved_oracle):5d} {money(cost_oracle):>20s}")
    mine: list[tuple[int, float]] = []
    theirs: list[tuple[int, float]] = []
    at_default: tuple[int, float, float, float] | None = None
    relative = (float("nan"), float("nan"))
    for v in sorted({*values, default_value}):
        tag = " (default)" if v == default_value else ""
        t_runs = [tally(outcomes, o, task_type, v, max_attempts) for o in streams]
        b_runs = [
            bandit(outcomes, o, task_type, v, max_attempts, first_seed + i)
            for i, o in enumerate(streams)
        ]
        mine.append(line(f"Tally at ${v:g} a solve{tag}", t_runs))
        theirs.append(line(f"  online Beta bandit at ${v:g}", b_runs))
        chosen, fixed = best_fixed(outcomes, streams[0], v)
        line(f"  best fixed order in hindsight: {' > '.join(chosen)}", [fixed])
        if v == default_value:
            med = median_run(t_runs)[0]
            at_default = (med.solved, med.cost, med.first_half, med.second_half)
            # The halves of a stream differ in how hard their tasks are: spend per task
            # as a share of what the fixed order spends on the same half of the same order.
            same = [fixed_order(outcomes, o, chosen) for o in streams]
            relative = (
                statistics.median(
                    t.first_half / f.first_half for t, f in zip(t_runs, same, strict=True)
                ),
                statistics.median(
                    t.second_half / f.second_half for t, f in zip(t_runs, same, strict=True)
                ),
            )
    worse = beaten(mine, theirs)
    print(
        "  frontier: Tally at or below the online baseline at every solved count: "
        + ("yes" if not worse else "no, at " + ", ".join(f"{s} solved" for s, _, _ in worse))
    )
    # Context: the task type (what precedes ``__`` in the id) against none at all, every
    # task in one class. The data carry no text, points or labels to try beyond it.
    blind: list[tuple[int, float]] = []
    for v in sorted({*values, default_value}):
        runs = [tally(outcomes, o, lambda _: "task", v, max_attempts) for o in streams]
        blind.append(median_run(runs)[0].solved_cost())
    lost = beaten(mine, blind)
    print(
        "  task type as context: Tally without it (one class) "
        + " ".join(f"{s}/{money(c)}" for s, c in blind)
        + "; with it at or below at "
        + f"{len(blind) - len(lost)} of {len(blind)} of those points"
    )
    assert at_default is not None
    s, c, h1, h2 = at_default
    b = hindsight[best]
    print(
        f"  at the default ${default_value:g} a solve: {s} solved for {money(c)} against"
        f" {b.solved} for {money(b.cost)} by {best}"
        f" ({'met' if s >= b.solved and c < b.cost else 'NOT met'});"
        f" spend per task {per_task(h1)} -> {per_task(h2)}"
        f" ({'falls' if h2 < h1 else 'does NOT fall'}); as a share of the best fixed order's"
        f" on the same tasks {relative[0]:.3f} -> {relative[1]:.3f}"
        f" ({'falls' if relative[1] < relative[0] else 'does NOT fall'})"
    )
    return {
        "tally": mine,
        "baseline": theirs,
        "worse": worse,
        "default": at_default,
        "relative_spend": relative,
        "without_context": blind,
    }


def beaten(
    mine: Sequence[tuple[int, float]], theirs: Sequence[tuple[int, float]]
) -> list[tuple[int, float, float | None]]:
    """``theirs``' points where ``mine`` (a frontier of (solved, cost)) costs more at the
    same solved count, or does not reach it; below ``mine``'s lowest solved count, its
    cheapest point stands in."""
    lowest = min(p[0] for p in mine)
    out = []
    for s, c in theirs:
        at = cost_at(mine, s) if s >= lowest else min(p[1] for p in mine)
        if at is None or at > c:
            out.append((s, c, at))
    return out
