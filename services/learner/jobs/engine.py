"""What one learning job computes, without I/O: rewards, groups, iterations.

A job replays the recorded runs of its window. Each run is rewarded by the job's reward
function (with multi-step credit across a task's attempts), and filed as training or
held-out data by a hash of its task id. The candidate policy starts from the evidence of
the training runs; each iteration then draws one group of runs per task class (seeded by
the job's seed and the iteration number, so a resumed job draws what the first worker
would have drawn), turns their rewards net of cost into group-relative advantages, and
moves the class's preferences by a clipped step.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from services.learner.abtest import is_held_out
from services.learner.policy import RoutingPolicy
from services.learner.rewards import RewardFn, RunSignals, group_advantages
from services.learner.training import LearnedRun, PolicyTrainer, credited
from tally.events.jobs import JobConfig

Key = tuple[str, str]  #: (task_type, band)


@dataclass(frozen=True)
class RecordedRun:
    """A recorded run as stored by the learner, with what the assigner logged."""

    run: LearnedRun  #: reward here is the learner's own
    success: bool
    tokens: int
    quality: float
    signals: Mapping[str, Any] | None  #: None for runs recorded before signals were kept
    propensity: float | None  #: the assigner's probability of this choice, if logged


@dataclass(frozen=True)
class JobRun:
    """A run as a job uses it: rewarded by the job, training or held out."""

    run: LearnedRun  #: reward is the job's (with credit)
    success: bool
    tokens: int
    propensity: float | None
    held_out: bool


def matches(run: LearnedRun, config: JobConfig) -> bool:
    """Whether a run is within the job's task classes and models (all when none given)."""
    if config.models and run.model not in config.models:
        return False
    if not config.task_classes:
        return True
    return any(
        c == run.task_type or c == f"{run.task_type}|{run.band}" for c in config.task_classes
    )


def signals_of(r: RecordedRun) -> RunSignals:
    """What the reward function sees; runs stored without signals show only the outcome."""
    s = r.signals or {}
    return RunSignals(
        success=r.success,
        tool_calls=int(s.get("tool_calls", 0)),
        verification_passed=bool(s.get("verification_passed", False)),
        steps=int(s.get("steps", 0)),
        quality=s.get("quality", r.quality),
    )


def job_runs(recorded: Iterable[RecordedRun], config: JobConfig, reward: RewardFn) -> list[JobRun]:
    """The job's data: matching runs rewarded by ``reward`` with credit ``gamma``, split."""
    kept = [r for r in recorded if matches(r.run, config)]
    rewarded = [replace(r.run, reward=reward(signals_of(r))) for r in kept]
    out = []
    for r, run in zip(kept, credited(rewarded, config.gamma), strict=True):
        held = is_held_out(run.task_id, config.eval_share)
        out.append(JobRun(run, r.success, r.tokens, r.propensity, held))
    return out


def by_class(runs: Iterable[JobRun]) -> dict[Key, list[LearnedRun]]:
    """Training runs per task class, oldest first."""
    out: dict[Key, list[LearnedRun]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: (r.run.at, r.run.run_id)):
        if not r.held_out:
            out[(r.run.task_type, r.run.band)].append(r.run)
    return dict(out)


def net_rewards(group: Sequence[LearnedRun], cost_weight: float) -> list[float]:
    """Reward less ``cost_weight`` times cost as a share of the group's costliest run."""
    top = max((r.cost_usd for r in group), default=0.0)
    return [r.reward - (cost_weight * r.cost_usd / top if top > 0 else 0.0) for r in group]


def advantages(runs: Sequence[JobRun], cost_weight: float) -> dict[str, float]:
    """Each run's group-relative advantage within its task class (the whole window)."""
    classes: dict[Key, list[LearnedRun]] = defaultdict(list)
    for r in runs:
        classes[(r.run.task_type, r.run.band)].append(r.run)
    out: dict[str, float] = {}
    for group in classes.values():
        for run, adv in zip(group, group_advantages(net_rewards(group, cost_weight)), strict=True):
            out[run.run_id] = adv
    return out


def candidate(models: Sequence[str], config: JobConfig, runs: Sequence[JobRun]) -> PolicyTrainer:
    """A fresh candidate policy with the job's settings and its training runs' evidence."""
    policy = RoutingPolicy(
        models,
        floor=config.exploration,
        learning_rate=config.lr,
        clip=config.clip,
        cost_weight=config.cost_weight,
    )
    for r in runs:
        if not r.held_out:
            run = r.run
            policy.observe(
                run.task_type, run.band, run.model, run.reward, run.cost_usd, run.attempt
            )
    return PolicyTrainer(policy, group_size=config.group_size, held_out_share=config.eval_share)


@dataclass(frozen=True)
class IterationStats:
    """What one iteration did: its objective, the rewards and advantages it saw."""

    iteration: int
    objective: float | None  #: expected net reward of the policy on the training runs
    reward_mean: float | None
    advantage_mean: float | None
    advantage_std: float | None
    step_mean: float | None  #: mean absolute logit step
    groups: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def expected_net(
    policy: RoutingPolicy, classes: Mapping[Key, Sequence[LearnedRun]]
) -> float | None:
    """The policy's expected net reward on ``classes``: per class, its probabilities
    times each model's mean net reward, weighted by the class's runs."""
    total, weight = 0.0, 0
    for (task_type, band), runs in classes.items():
        per_model: dict[str, list[float]] = defaultdict(list)
        for run, net in zip(runs, net_rewards(runs, policy.cost_weight), strict=True):
            per_model[run.model].append(net)
        probs = policy.probabilities(task_type, band)
        mass = sum(probs.get(m, 0.0) for m in per_model)
        if mass <= 0:
            continue
        value = sum(probs.get(m, 0.0) * statistics.fmean(v) for m, v in per_model.items())
        total += len(runs) * value / mass
        weight += len(runs)
    return total / weight if weight else None


def iterate(
    trainer: PolicyTrainer,
    classes: Mapping[Key, Sequence[LearnedRun]],
    config: JobConfig,
    iteration: int,
) -> IterationStats:
    """One iteration: a group per class with two runs or more, a clipped update each."""
    rng = np.random.default_rng([config.seed, iteration])
    rewards: list[float] = []
    advs: list[float] = []
    steps: list[float] = []
    groups = 0
    for (task_type, band), runs in sorted(classes.items()):
        if len(runs) < 2:
            continue
        size = min(config.group_size, len(runs))
        group = [runs[int(i)] for i in rng.choice(len(runs), size=size, replace=False)]
        rewards.extend(r.reward for r in group)
        advs.extend(group_advantages(net_rewards(group, config.cost_weight)))
        moved = trainer.policy.update(
            task_type, band, [(r.model, r.reward, r.cost_usd) for r in group]
        )
        steps.extend(abs(v) for v in moved.values())
        groups += 1
    trainer.version += 1
    return IterationStats(
        iteration=iteration,
        objective=expected_net(trainer.policy, classes),
        reward_mean=statistics.fmean(rewards) if rewards else None,
        advantage_mean=statistics.fmean(advs) if advs else None,
        advantage_std=statistics.pstdev(advs) if advs else None,
        step_mean=statistics.fmean(steps) if steps else None,
        groups=groups,
    )
