"""Training the routing policy from recorded runs, and judging it on held-out tasks.

Runs arrive one at a time. Each adds to the policy's evidence at once; a
:class:`PolicyTrainer` also collects the runs of each task class (task type, complexity
band) until a group is full, then applies one group-relative update. The same trainer
replays a workspace's whole history for the daily recomputation, with multi-step credit
across a task's attempts.
Held-out tasks (a fixed hash share of task ids) never move the preferences: they measure
the policy against the baseline of sending everything to the single best model. Their
runs still count as evidence, which is what routing decides by.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from services.learner.abtest import is_held_out
from services.learner.policy import RoutingPolicy, credit


@dataclass(frozen=True)
class LearnedRun:
    """One recorded run as the policy sees it."""

    run_id: str
    task_id: str
    model: str
    task_type: str
    band: str
    reward: float  #: in [0, 1]
    cost_usd: float
    at: datetime
    attempt: int = 1


def policy_key(task_type: str, band: str) -> str:
    """The published key of a task class, ``"<task_type>|<band>"``."""
    return f"{task_type}|{band}"


@dataclass
class PolicyTrainer:
    """Feeds runs to a :class:`RoutingPolicy` in groups of ``group_size`` per task class.

    Args:
        policy: the policy to train (updated in place).
        group_size: runs of one class compared with each other in one update.
        held_out_share: share of task ids kept out of training for evaluation.
        version: updates applied so far (restored from a checkpoint on resume).
    """

    policy: RoutingPolicy
    group_size: int = 4
    held_out_share: float = 0.2
    version: int = 0
    pending: dict[tuple[str, str], list[LearnedRun]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2, got {self.group_size}")

    def observe(self, run: LearnedRun) -> dict[str, float] | None:
        """Add a run; when its class's group is full, update the policy and return the steps.

        Returns:
            The logit change per model of the update, or None when no update happened
            (the group is not full yet, or the run's task is held out).
        """
        if run.model not in self.policy.models:
            self.policy.models.append(run.model)
        # Evidence (what routing decides by) learns from every run at once; preferences
        # wait for a full group and leave the held-out tasks to judge them.
        self.policy.observe(
            run.task_type, run.band, run.model, run.reward, run.cost_usd, run.attempt
        )
        if is_held_out(run.task_id, self.held_out_share):
            return None
        key = (run.task_type, run.band)
        group = self.pending.setdefault(key, [])
        group.append(run)
        if len(group) < self.group_size:
            return None
        del self.pending[key]
        self.version += 1
        return self.policy.update(
            run.task_type, run.band, [(r.model, r.reward, r.cost_usd) for r in group]
        )

    def revise_cost(self, run: LearnedRun, cost_usd: float) -> None:
        """Take a re-totalled run's new cost: the policy's evidence, and the run itself if
        it still waits in a group (its outcome and reward were learned once and stay)."""
        self.policy.revise_cost(
            run.task_type, run.band, run.model, cost_usd - run.cost_usd, run.attempt
        )
        group = self.pending.get((run.task_type, run.band), [])
        for i, waiting in enumerate(group):
            if waiting.run_id == run.run_id:
                group[i] = replace(waiting, cost_usd=cost_usd)

    def posteriors(self) -> dict[str, dict[str, list[float | None]]]:
        """The policy's posteriors per class (see :meth:`RoutingPolicy.posteriors`)."""
        return self.policy.posteriors()

    def probabilities(self) -> dict[str, dict[str, float]]:
        """Routing probabilities of every class the policy knows, by ``"<type>|<band>"``."""
        return {policy_key(*k): self.policy.probabilities(*k) for k in self.policy.classes()}

    def to_state(self) -> dict[str, Any]:
        """The whole trainer as plain JSON: policy (with evidence), version, pending groups."""
        return {
            "version": self.version,
            "policy": self.policy.to_dict(),
            "pending": [
                {"task_type": tt, "band": band, "runs": [_run_dict(r) for r in runs]}
                for (tt, band), runs in sorted(self.pending.items())
            ],
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], *, group_size: int, held_out_share: float
    ) -> PolicyTrainer:
        """Restore a trainer saved with :meth:`to_state` (or from a checkpoint's policy,
        which has no pending groups)."""
        return cls(
            RoutingPolicy.from_dict(state["policy"]),
            group_size=group_size,
            held_out_share=held_out_share,
            version=int(state.get("version", 0)),
            pending={
                (g["task_type"], g["band"]): [_run_from(r) for r in g["runs"]]
                for g in state.get("pending", [])
            },
        )


def _run_dict(r: LearnedRun) -> dict[str, Any]:
    return {**asdict(r), "at": r.at.isoformat()}


def _run_from(d: Mapping[str, Any]) -> LearnedRun:
    return LearnedRun(**{**d, "at": datetime.fromisoformat(d["at"])})


def credited(runs: Iterable[LearnedRun], gamma: float = 0.9) -> list[LearnedRun]:
    """Runs with multi-step credit: earlier attempts of a task share later rewards.

    Attempts of one task are ordered by ``attempt`` then time; attempt ``i`` gets
    ``r_i + gamma * G_{i+1}`` (clipped to [0, 1]), so the model that failed first on a
    task a later attempt solved is not judged as if nothing came of its work. The result
    keeps the input's order.
    """
    items = list(runs)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(items):
        by_task[r.task_id].append(i)
    out = list(items)
    for indices in by_task.values():
        if len(indices) < 2:
            continue
        ordered = sorted(indices, key=lambda i: (items[i].attempt, items[i].at))
        returns = credit([items[i].reward for i in ordered], gamma)
        for i, value in zip(ordered, returns, strict=True):
            out[i] = replace(items[i], reward=value)
    return out


def retrain(
    runs: Sequence[LearnedRun],
    template: RoutingPolicy,
    *,
    group_size: int,
    held_out_share: float,
    gamma: float,
) -> PolicyTrainer:
    """A fresh policy with ``template``'s settings, trained on ``runs`` in time order."""
    policy = RoutingPolicy(
        template.models,
        floor=template.floor,
        learning_rate=template.learning_rate,
        clip=template.clip,
        cost_weight=template.cost_weight,
        pool_strength=template.pool_strength,
    )
    trainer = PolicyTrainer(policy, group_size=group_size, held_out_share=held_out_share)
    for run in sorted(credited(runs, gamma), key=lambda r: r.at):
        trainer.observe(run)
    return trainer


@dataclass(frozen=True)
class HeldOutEvaluation:
    """Expected reward net of cost on held-out runs: the policy against two baselines.

    Each figure is, per task class, the routing probability of each model times that
    model's mean net reward on the class's held-out runs, averaged over classes weighted
    by their runs. ``best_single`` sends everything to the model with the best net
    reward on the training runs; ``uniform`` picks models at random.
    """

    policy: float | None
    best_single: float | None
    uniform: float | None
    best_model: str | None
    runs: int


def net_reward(run: LearnedRun, max_cost: float, cost_weight: float) -> float:
    """Reward less ``cost_weight`` times cost as a share of the costliest run considered."""
    return run.reward - (cost_weight * run.cost_usd / max_cost if max_cost > 0 else 0.0)


def evaluate(
    policy: RoutingPolicy, runs: Sequence[LearnedRun], held_out_share: float = 0.2
) -> HeldOutEvaluation:
    """Compare ``policy`` with the best single model and uniform routing on held-out runs."""
    held = [r for r in runs if is_held_out(r.task_id, held_out_share)]
    train = [r for r in runs if not is_held_out(r.task_id, held_out_share)]
    max_cost = max((r.cost_usd for r in runs), default=0.0)
    best_model = None
    if train:
        by_model: dict[str, list[float]] = defaultdict(list)
        for r in train:
            by_model[r.model].append(net_reward(r, max_cost, policy.cost_weight))
        best_model = max(sorted(by_model), key=lambda m: statistics.fmean(by_model[m]))
    if not held:
        return HeldOutEvaluation(None, None, None, best_model, 0)
    classes: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in held:
        classes[(r.task_type, r.band)][r.model].append(net_reward(r, max_cost, policy.cost_weight))
    totals = {"policy": 0.0, "best_single": 0.0, "uniform": 0.0}
    weights = {"policy": 0, "best_single": 0, "uniform": 0}
    for (task_type, band), per_model in classes.items():
        means = {m: statistics.fmean(v) for m, v in per_model.items()}
        n = sum(len(v) for v in per_model.values())
        probs = policy.probabilities(task_type, band)
        mass = sum(probs.get(m, 0.0) for m in means)
        if mass > 0:
            totals["policy"] += n * sum(probs.get(m, 0.0) * v for m, v in means.items()) / mass
            weights["policy"] += n
        totals["uniform"] += n * statistics.fmean(means.values())
        weights["uniform"] += n
        if best_model in means:
            totals["best_single"] += n * means[best_model]
            weights["best_single"] += n

    def mean(name: str) -> float | None:
        return round(totals[name] / weights[name], 4) if weights[name] else None

    return HeldOutEvaluation(
        mean("policy"), mean("best_single"), mean("uniform"), best_model, len(held)
    )
