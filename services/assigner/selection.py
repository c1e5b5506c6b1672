"""Choosing a model for a task: filters, then a strategy that orders the candidates.

Pure functions over the registry's :class:`~tally.registry.ModelSpec` and the task's
:class:`~tally.events.Estimate`. The assigner reserves quota for the first candidate and
falls back down the list when a reservation is refused.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tally.events import Estimate
from tally.registry import ModelSpec
from tally.usage import TokenUsage

#: Minimum capability a model needs for a task of each complexity band.
MIN_CAPABILITY = {"simple": 0.0, "medium": 0.6, "complex": 0.8}
#: Under ``maximize_value``, tasks at or above this value score prefer premium models ...
HIGH_VALUE = 60.0
#: ... and tasks below this one never get a premium model.
LOW_VALUE = 30.0


@dataclass(frozen=True)
class Candidate:
    """A model that can do the task, with what it would cost."""

    model: ModelSpec
    capability: float
    expected_cost: float
    tokens: int


@dataclass(frozen=True)
class LearnedScore:
    """What the learner measured for a model on this kind of task (all in 0..1 or raw)."""

    quality: float
    velocity: float
    cost: float


@dataclass(frozen=True)
class RoutingTable:
    """The learner's routing policy for one workspace, as last published.

    Args:
        version: the policy's update count; a lower one never replaces a higher one.
        probabilities: ``"<task_type>|<band>"`` → model → probability.
        models: the models the policy knows; one it has no row for gets ``1 / len(models)``.
    """

    version: int
    probabilities: Mapping[str, Mapping[str, float]]
    models: tuple[str, ...] = ()
    #: ``"<task_type>|<band>"`` (or ``"*|*"``) → model → ``[alpha, beta, alpha after a
    #: failure, beta after a failure, mean cost or None]`` (see ``PolicyUpdated``).
    posteriors: Mapping[str, Mapping[str, Sequence[float | None]]] = field(default_factory=dict)

    def table(self, estimate: Estimate) -> Mapping[str, float] | None:
        """The probabilities for the estimate's task class, or None if it has none yet."""
        return self.probabilities.get(f"{estimate.task_type}|{estimate.band}") or None

    def posterior(self, estimate: Estimate) -> Mapping[str, Sequence[float | None]] | None:
        """The posteriors of the estimate's class, else of an unseen class; None without."""
        key = f"{estimate.task_type}|{estimate.band}"
        return self.posteriors.get(key) or self.posteriors.get("*|*") or None


#: How far a posterior draw strays from the posterior mean, as a share of the posterior's
#: own spread (1: plain Thompson sampling). Plain Thompson sampling explores as if the
#: stream were endless; routing a few hundred tasks a class, the cost of that exploration
#: is not repaid. Exploration still shrinks as evidence grows (the spread does), and a
#: posterior on few runs keeps most of its spread (see ``FULL_SPREAD_RUNS``). Both chosen
#: on task orders 100-109 of the routing benchmark, not the orders it reports
#: (``benchmarks/route.py --first-order``).
EXPLORATION = 0.35
#: Runs (pseudo-runs included) a posterior rests on before its draws are pulled in much.
FULL_SPREAD_RUNS = 20.0

Row = tuple[float, float, float, float, float]


def _row(row: Sequence[float | None] | None, c: Candidate) -> Row:
    """``(alpha, beta, alpha after a failure, beta after a failure, cost)`` of a
    candidate: a uniform prior and its list price for a model the policy has not met."""
    if row is None:
        return 1.0, 1.0, 1.0, 1.0, c.expected_cost
    cost = c.expected_cost if row[4] is None else float(row[4])
    a, b, ra, rb = (float(v or 0.0) for v in row[:4])
    return a, b, ra, rb, cost


def _draws(
    alpha: np.ndarray, beta: np.ndarray, rng: np.random.Generator, size: int, scale: float
) -> np.ndarray:
    """``size`` rows of Beta draws, pulled toward their means by ``scale`` once a posterior
    rests on more than ``FULL_SPREAD_RUNS`` runs (a thinner one keeps most of its spread:
    a model unlucky in its first runs is tried again)."""
    alpha, beta = np.maximum(alpha, 1e-6), np.maximum(beta, 1e-6)
    mean = alpha / (alpha + beta)
    shrink = np.maximum(scale, 1.0 / np.sqrt(1.0 + (alpha + beta) / FULL_SPREAD_RUNS))
    draws: np.ndarray = mean + shrink * (rng.beta(alpha, beta, size=(size, len(alpha))) - mean)
    return draws


def drawn_values(
    rows: Sequence[Row],
    *,
    value_usd: float,
    after_failure: bool,
    attempts_left: int,
    rng: np.random.Generator,
    size: int = 1,
    exploration: float = EXPLORATION,
) -> np.ndarray:
    """``size`` draws of each row's expected value in dollars, shape ``(size, len(rows))``.

    A value is ``value_usd * p - cost`` with ``p`` drawn from the success posterior (after
    a failure when ``after_failure``). With ``attempts_left`` > 0 it adds what a failure
    would still be worth: ``(1 - p)`` times the best positive value of another row's
    attempt after a failure, drawn the same way.
    """
    table = np.array(rows, dtype=float).reshape(len(rows), 5)
    a, b = (table[:, 2], table[:, 3]) if after_failure else (table[:, 0], table[:, 1])
    cost = table[:, 4]
    p = _draws(a, b, rng, size, exploration)
    values: np.ndarray = value_usd * p - cost
    if attempts_left <= 0 or len(rows) < 2:
        return values
    then = value_usd * _draws(table[:, 2], table[:, 3], rng, size, exploration) - cost
    order = np.argsort(-then, axis=1, kind="stable")
    top, second = order[:, :1], order[:, 1:2]
    best = np.take_along_axis(then, top, axis=1)
    runner_up = np.take_along_axis(then, second, axis=1)
    # Another model's best: the runner-up's where this model is the best itself.
    others = np.where(np.arange(len(rows))[None, :] == top, runner_up, best)
    with_fallback: np.ndarray = values + (1.0 - p) * np.maximum(0.0, others)
    return with_fallback


def expected_values(
    cands: Sequence[Candidate],
    posterior: Mapping[str, Sequence[float | None]],
    *,
    value_usd: float,
    after_failure: bool,
    seed: int,
    attempts_left: int = 0,
    exploration: float = EXPLORATION,
) -> dict[str, float]:
    """Per candidate: ``value_usd * p - cost``, with ``p`` drawn from its Beta posterior.

    ``p`` is the chance of success at a first attempt, or after another model failed
    when ``after_failure``; ``cost`` is the cost measured per attempt, or the candidate's
    list-price estimate before it has runs. One draw per model, seeded (replicas and
    redeliveries agree): Thompson sampling, so an uncertain model is sometimes tried and
    a well-measured one is judged by what it does; ``exploration`` scales the draws'
    spread (see :data:`EXPLORATION`).

    With ``attempts_left`` > 0 another attempt may follow a failure, and each value adds
    what that escalation would be worth (see :func:`drawn_values`): a cheap model that
    leaves a strong one to fall back on beats a costly one that solves a little more
    often, as the fixed order "cheap, then strong" does.
    """
    by_name = {c.model.name: c for c in cands}
    names = sorted(by_name)
    values = drawn_values(
        [_row(posterior.get(n), by_name[n]) for n in names],
        value_usd=value_usd,
        after_failure=after_failure,
        attempts_left=attempts_left,
        rng=np.random.default_rng(seed),
        exploration=exploration,
    )
    return {n: float(v) for n, v in zip(names, values[0], strict=True)}


#: Posterior draws behind the propensity of a Thompson-sampled first choice (within ±0.03).
PROPENSITY_DRAWS = 1024


def first_choice_propensity(
    chosen: str,
    cands: Sequence[Candidate],
    estimate: Estimate,
    *,
    policy: RoutingTable | None,
    value_usd: float | None,
    after_failure: bool = False,
    attempts_left: int = 0,
    exploration: float = EXPLORATION,
) -> float:
    """The probability the ``learned`` strategy had of putting ``chosen`` first.

    With posteriors it is the share of posterior draws in which ``chosen`` has the best
    expected value (what :func:`expected_values` draws once per task), never below one
    draw in ``PROPENSITY_DRAWS``: the model was chosen, so its chance was not 0. With
    only probabilities it is ``chosen``'s probability among the candidates. A ranking
    without randomness (scores, or another strategy) chose with probability 1.
    """
    names = sorted(c.model.name for c in cands)
    if chosen not in names or policy is None:
        return 1.0
    post = policy.posterior(estimate)
    if post is not None and value_usd is not None:
        by_name = {c.model.name: c for c in cands}
        draws = drawn_values(
            [_row(post.get(n), by_name[n]) for n in names],
            value_usd=value_usd,
            after_failure=after_failure,
            attempts_left=attempts_left,
            rng=np.random.default_rng(zlib_seed(chosen, names)),
            size=PROPENSITY_DRAWS,
            exploration=exploration,
        )
        wins = np.argmax(draws, axis=1)  # ties go to the first name, as sorted
        share = float(np.mean(wins == names.index(chosen)))
        return max(share, 1.0 / PROPENSITY_DRAWS)
    table = policy.table(estimate)
    if table is not None:
        return restricted(table, names, len(policy.models)).get(chosen, 0.0)
    return 1.0


def zlib_seed(*parts: object) -> int:
    """A repeatable seed from ``parts`` (the same in every process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def route_seed(task_id: str, attempt: int) -> int:
    """A seed from the task and attempt alone: replicas and redeliveries draw the same model."""
    digest = hashlib.sha256(f"{task_id}{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def restricted(
    probabilities: Mapping[str, float], names: Sequence[str], known: int
) -> dict[str, float]:
    """The policy's probabilities over ``names`` only, renormalised to sum to 1.

    A name the policy has no probability for gets ``1 / known`` (what a model starts with
    in a policy of ``known`` models) before renormalising, so a new model is still tried.
    """
    default = 1.0 / max(known, len(names), 1)
    raw = {n: max(0.0, float(probabilities.get(n, default))) for n in names}
    total = sum(raw.values())
    if total <= 0:
        return {n: 1.0 / len(names) for n in names} if names else {}
    return {n: p / total for n, p in raw.items()}


def sampled_order(probabilities: Mapping[str, float], seed: int) -> list[str]:
    """One name drawn from ``probabilities`` with ``seed`` first, then the rest by probability.

    Deterministic for a given seed, so the same task and attempt always get the same model;
    across tasks the first choices follow the policy's probabilities.
    """
    names = sorted(probabilities)
    if not names:
        return []
    draw = random.Random(seed).random()
    first, cumulative = names[-1], 0.0
    for name in names:
        cumulative += probabilities[name]
        if draw < cumulative:
            first = name
            break
    rest = sorted((n for n in names if n != first), key=lambda n: (-probabilities[n], n))
    return [first, *rest]


def candidates(models: Sequence[ModelSpec], estimate: Estimate) -> list[Candidate]:
    """Models whose context window holds the task's input and whose capability fits its band."""
    tokens = estimate.tokens
    usage = TokenUsage(
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_read_tokens=tokens.cached_input_tokens,
    )
    needed_context = tokens.input_tokens + tokens.cached_input_tokens
    floor = MIN_CAPABILITY.get(estimate.band, 0.0)
    out = []
    for m in models:
        capability = m.capability(estimate.task_type, *estimate.labels)
        if m.context_window >= needed_context and capability >= floor:
            out.append(Candidate(m, capability, m.cost(usage), usage.total_tokens))
    return out


def _cheapest(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: (c.expected_cost, -c.capability, c.model.name))


def _best(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: (-c.capability, c.expected_cost, c.model.name))


def maximize_value(cands: Sequence[Candidate], estimate: Estimate, **_: object) -> list[Candidate]:
    """High-value tasks to the strongest models, low-value tasks never to premium ones."""
    if estimate.value_score >= HIGH_VALUE:
        return _best(cands)
    allowed = [c for c in cands if estimate.value_score >= LOW_VALUE or c.model.tier != "premium"]
    return _cheapest(allowed)


def cheapest_capable(
    cands: Sequence[Candidate], estimate: Estimate, **_: object
) -> list[Candidate]:
    """The cheapest model that passes the filters first."""
    return _cheapest(cands)


def quality_first(cands: Sequence[Candidate], estimate: Estimate, **_: object) -> list[Candidate]:
    """The most capable model first; cost breaks ties."""
    return _best(cands)


def maximize_subscription_usage(
    cands: Sequence[Candidate],
    estimate: Estimate,
    *,
    prepaid: frozenset[str] = frozenset(),
    **_: object,
) -> list[Candidate]:
    """Prepaid allowances first (strongest first), then pay-per-token models by cost."""
    paid_for = _best([c for c in cands if c.model.subscription in prepaid])
    return paid_for + _cheapest([c for c in cands if c.model.subscription not in prepaid])


def learned(
    cands: Sequence[Candidate],
    estimate: Estimate,
    *,
    scores: Mapping[str, LearnedScore] | None = None,
    policy: RoutingTable | None = None,
    seed: int = 0,
    weights: tuple[float, float, float] = (0.4, 0.3, 0.3),
    value_usd: float | None = None,
    after_failure: bool = False,
    attempts_left: int = 0,
    exploration: float = EXPLORATION,
    **_: object,
) -> list[Candidate]:
    """Follow the learner's routing policy; without one, rank by the learner's scores.

    With the policy's posteriors and the value of a solve (``value_usd``), candidates
    rank by expected value net of expected cost (:func:`expected_values`; after a
    failure, by the posterior of success after a failure), counting what a fallback is
    worth while ``attempts_left`` allows one.

    When the policy has a table for the task's class (task type and band), the first
    candidate is drawn from its probabilities restricted to the candidates (``seed``
    makes the draw repeatable), the rest follow by probability. Otherwise candidates rank
    by quality, velocity and (low) cost, weighted; models without a score yet rank by
    registry capability in place of quality, at the median velocity and their expected
    cost, so new models still get tried.
    """
    post = policy.posterior(estimate) if policy is not None else None
    if post is not None and cands and value_usd is not None:
        ev = expected_values(
            cands,
            post,
            value_usd=value_usd,
            after_failure=after_failure,
            seed=seed,
            attempts_left=attempts_left,
            exploration=exploration,
        )
        return sorted(cands, key=lambda c: (-ev[c.model.name], c.model.name))
    table = policy.table(estimate) if policy is not None else None
    if table is not None and cands:
        by_name = {c.model.name: c for c in cands}
        probs = restricted(table, list(by_name), len(policy.models) if policy else 0)
        return [by_name[n] for n in sampled_order(probs, seed)]
    scores = scores or {}
    if not scores:
        return _best(cands)
    velocities = sorted(s.velocity for s in scores.values())
    median_v = velocities[len(velocities) // 2]
    rows = []
    for c in cands:
        s = scores.get(c.model.name, LearnedScore(c.capability, median_v, c.expected_cost))
        rows.append((c, s))
    top_v = max(s.velocity for _, s in rows) or 1.0
    top_cost = max(s.cost for _, s in rows) or 1.0
    wq, wv, wc = weights

    def utility(row: tuple[Candidate, LearnedScore]) -> float:
        _, s = row
        return wq * s.quality + wv * s.velocity / top_v + wc * (1 - s.cost / top_cost)

    return [c for c, _ in sorted(rows, key=lambda r: (-utility(r), r[0].model.name))]


Strategy = Callable[..., list[Candidate]]
STRATEGIES: dict[str, Strategy] = {
    "maximize_value": maximize_value,
    "cheapest_capable": cheapest_capable,
    "quality_first": quality_first,
    "maximize_subscription_usage": maximize_subscription_usage,
    "learned": learned,
}


def rank(
    strategy: str, models: Sequence[ModelSpec], estimate: Estimate, **context: object
) -> list[Candidate]:
    """Candidates for ``estimate`` in the order ``strategy`` prefers.

    Raises:
        KeyError: the strategy is unknown (the message lists the known ones).
    """
    if strategy not in STRATEGIES:
        raise KeyError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](candidates(models, estimate), estimate, **context)
