"""Judging a candidate policy on held-out tasks: off-policy estimates and a t-test.

Held-out runs were routed by the assigner, which logged the probability of each choice
(its propensity). A policy that would route a held-out task to the model that ran it
with probability ``pi`` gets that run's outcome with weight ``w = pi / propensity``:
the inverse propensity score (IPS) estimate is the mean of ``w * y``, the self-normalised
one (SNIPS) ``sum(w * y) / sum(w)``. Runs logged without a propensity are left out and
counted. The candidate is compared with the live policy and two baselines (the best
single model on the training runs, uniform routing) on reward, success and cost, and with
the live policy by Welch's t-test on the per-run weighted rewards. With no propensity
logged at all the direct estimate (each model's mean outcome per class, weighted by the
policy's probabilities) stands in, and the report says so.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.learner.abtest import welch_t_test
from services.learner.jobs.engine import JobRun, net_rewards
from services.learner.policy import RoutingPolicy

#: A routing policy as evaluation sees it: class -> model -> probability.
Router = Callable[[str, str], Mapping[str, float]]


@dataclass(frozen=True)
class Estimate:
    """A policy's estimated reward, success rate and cost per run on held-out tasks."""

    reward: float | None
    success: float | None
    cost_usd: float | None
    reward_ips: float | None
    runs: int  #: held-out runs the estimate rests on
    method: str  #: ``snips`` (logged propensities) or ``direct``
    values: tuple[float, ...] = ()  #: per-run weighted rewards (for the t-test)


def _r(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def off_policy(route: Router, logged: Sequence[JobRun]) -> Estimate:
    """IPS and SNIPS estimates of ``route`` from runs with a logged propensity."""
    weights: list[float] = []
    for r in logged:
        pi = route(r.run.task_type, r.run.band).get(r.run.model, 0.0)
        weights.append(pi / float(r.propensity or 1.0))
    total = sum(weights)
    n = len(logged)

    def snips(ys: Sequence[float]) -> float | None:
        return sum(w * y for w, y in zip(weights, ys, strict=True)) / total if total > 0 else None

    rewards = [r.run.reward for r in logged]
    values = tuple(w * y for w, y in zip(weights, rewards, strict=True))
    return Estimate(
        reward=_r(snips(rewards)),
        success=_r(snips([float(r.success) for r in logged])),
        cost_usd=_r(snips([r.run.cost_usd for r in logged])),
        reward_ips=_r(sum(values) / n) if n else None,
        runs=n,
        method="snips",
        values=values,
    )


def direct(route: Router, held: Sequence[JobRun]) -> Estimate:
    """The direct estimate: per class, each model's mean outcome weighted by ``route``."""
    classes: dict[tuple[str, str], dict[str, list[JobRun]]] = defaultdict(lambda: defaultdict(list))
    for r in held:
        classes[(r.run.task_type, r.run.band)][r.run.model].append(r)
    sums = [0.0, 0.0, 0.0]
    weight = 0
    values: list[float] = []
    for (task_type, band), per_model in classes.items():
        probs = route(task_type, band)
        mass = sum(probs.get(m, 0.0) for m in per_model)
        if mass <= 0:
            continue
        n = sum(len(v) for v in per_model.values())
        outcomes: tuple[Callable[[JobRun], float], ...] = (
            lambda r: r.run.reward,
            lambda r: float(r.success),
            lambda r: r.run.cost_usd,
        )
        for i, get in enumerate(outcomes):
            sums[i] += n * sum(
                probs.get(m, 0.0) / mass * statistics.fmean([get(r) for r in runs])
                for m, runs in per_model.items()
            )
        weight += n
        for m, runs in per_model.items():
            values.extend(probs.get(m, 0.0) / mass * len(per_model) * r.run.reward for r in runs)
    if not weight:
        return Estimate(None, None, None, None, 0, "direct")
    reward, success, cost = (s / weight for s in sums)
    return Estimate(_r(reward), _r(success), _r(cost), None, weight, "direct", tuple(values))


def best_single(runs: Sequence[JobRun], cost_weight: float) -> str | None:
    """The model with the best mean net reward on the training runs."""
    train = [r.run for r in runs if not r.held_out]
    if not train:
        return None
    by_model: dict[str, list[float]] = defaultdict(list)
    for run, net in zip(train, net_rewards(train, cost_weight), strict=True):
        by_model[run.model].append(net)
    return max(sorted(by_model), key=lambda m: statistics.fmean(by_model[m]))


def evaluate(
    candidate: RoutingPolicy,
    live: RoutingPolicy | None,
    runs: Sequence[JobRun],
    *,
    alpha: float,
) -> dict[str, Any]:
    """The candidate against the live policy and the baselines on the held-out runs.

    Returns:
        ``policies`` (name -> estimate), ``comparison`` (Welch's t-test, candidate vs
        live, on weighted rewards), ``score`` (the candidate's estimated reward, used to
        rank checkpoints), and the counts behind them.
    """
    held = [r for r in runs if r.held_out]
    logged = [r for r in held if r.propensity is not None and r.propensity > 0]
    models = sorted({r.run.model for r in runs} | set(candidate.models))
    best = best_single(runs, candidate.cost_weight)
    routers: dict[str, Router] = {
        "candidate": candidate.probabilities,
        "live": live.probabilities if live is not None else (lambda t, b: _uniform(models)),
        "uniform": lambda t, b: _uniform(models),
    }
    if best is not None:
        routers["best_single"] = lambda t, b: {best: 1.0}
    estimates = {
        name: off_policy(route, logged) if logged else direct(route, held)
        for name, route in routers.items()
    }
    cand, live_est = estimates["candidate"], estimates["live"]
    comparison: dict[str, Any] = {"metric": "reward", "t": None, "df": None, "p_value": None}
    if len(cand.values) >= 2 and len(live_est.values) >= 2:
        test = welch_t_test(cand.values, live_est.values)
        comparison = {
            "metric": "reward",
            "t": _r(test.t),
            "df": _r(test.df),
            "p_value": _r(test.p_value),
        }
    better = (
        comparison["p_value"] is not None
        and comparison["p_value"] < alpha
        and (cand.reward or 0.0) > (live_est.reward or 0.0)
    )
    comparison["significantly_better"] = better
    comparison["alpha"] = alpha
    return {
        "held_out_runs": len(held),
        "logged_runs": len(logged),
        "without_propensity": len(held) - len(logged),
        "method": "snips" if logged else "direct",
        "live_policy": live is not None,
        "best_model": best,
        "policies": {
            name: {k: v for k, v in asdict(e).items() if k != "values"}
            for name, e in estimates.items()
        },
        "comparison": comparison,
        "score": cand.reward,
    }


def _uniform(models: Sequence[str]) -> dict[str, float]:
    return {m: 1.0 / len(models) for m in models} if models else {}


def summary(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Candidate vs live on reward, success and cost, with the p-value (the report's head)."""
    policies = evaluation.get("policies", {})
    cand, live = policies.get("candidate", {}), policies.get("live", {})
    return {
        metric: {"candidate": cand.get(metric), "live": live.get(metric)}
        for metric in ("reward", "success", "cost_usd")
    } | {
        "p_value": evaluation.get("comparison", {}).get("p_value"),
        "significantly_better": evaluation.get("comparison", {}).get("significantly_better"),
        "method": evaluation.get("method"),
    }
