"""Learned routing policy: which model to send a task to, per task type and band.

Two things are learned per (task type, complexity band) and model:

- a preference (logit), moved by group-relative updates (GRPO-style): the runs of one
  task class are compared with each other, and models that beat their group's reward net
  of cost gain preference;
- evidence, updated by every run at once: runs, summed reward and summed cost. Each
  class's evidence is pooled with the model's evidence over all classes (hierarchical
  shrinkage: a class with few runs borrows the workspace-wide figures, one with many
  speaks for itself), giving a Beta posterior of the model's reward and a mean cost.

Routing probabilities are Thompson sampling over that posterior -- the share of posterior
draws in which a model has the best reward net of cost -- tilted by the softmax of the
logits and mixed with a uniform exploration floor, so no model is ever starved of the
runs that would show it has improved. Without evidence the Thompson share is uniform and
the policy is the plain softmax of the logits.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.learner.checkpoints import Checkpoint, Checkpointer, credit
from services.learner.rewards import group_advantages

__all__ = ["Checkpoint", "Checkpointer", "Evidence", "RoutingPolicy", "credit"]

Key = tuple[str, str]  #: (task_type, band)
#: Posterior draws per Thompson share: enough for shares within about ±0.02.
DRAWS = 512
#: Pseudo-runs of the workspace-wide success rate a model's own pooled figures start from.
BASE_STRENGTH = 2.0
#: Pooling before classes can be compared, and the most it may learn to be.
DEFAULT_POOLING = 10.0
MAX_POOLING = 200.0


@dataclass
class Evidence:
    """Runs, summed reward and summed cost of one model (in one class, or overall)."""

    runs: float = 0.0
    reward: float = 0.0
    cost: float = 0.0

    def add(self, reward: float, cost: float) -> None:
        self.runs += 1
        self.reward += reward
        self.cost += cost


class RoutingPolicy:
    """Softmax routing over models with an exploration floor and clipped updates.

    Args:
        models: the models every (task type, band) starts with, all equally preferred.
        floor: exploration share in [0, 1]; each model keeps at least ``floor / n``.
        learning_rate: logit change per unit of advantage.
        clip: largest logit change one update may make for a model. This is a simple
            clip of the logit step rather than PPO's ratio clip: it bounds how far one
            noisy group can move the policy, and the probability ratio it implies is at
            most ``exp(2 * clip)``.
        cost_weight: how much normalised cost is subtracted from reward.
        pool_strength: pseudo-runs of the model's workspace-wide figures each class's
            posterior starts from (at most the runs those figures rest on, plus two);
            None: learned from how much the classes differ (see :meth:`pooling`).
    """

    def __init__(
        self,
        models: Iterable[str],
        *,
        floor: float = 0.1,
        learning_rate: float = 0.5,
        clip: float = 0.2,
        cost_weight: float = 0.3,
        pool_strength: float | None = None,
    ) -> None:
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be within [0, 1], got {floor}")
        if learning_rate <= 0 or clip <= 0 or cost_weight < 0 or (pool_strength or 0) < 0:
            raise ValueError(
                "learning_rate and clip must be positive, cost_weight and pool_strength >= 0"
            )
        self.models = list(dict.fromkeys(models))
        self.floor = floor
        self.learning_rate = learning_rate
        self.clip = clip
        self.cost_weight = cost_weight
        self.pool_strength = pool_strength
        self._logits: dict[Key, dict[str, float]] = {}
        self._evidence: dict[Key, dict[str, Evidence]] = {}
        self._overall: dict[str, Evidence] = {}
        #: Attempts made after another model failed the task: a harder population.
        self._retry: dict[Key, dict[str, Evidence]] = {}
        self._retry_overall: dict[str, Evidence] = {}
        self._pooled: float | None = None

    def classes(self) -> list[Key]:
        """Every (task type, band) with preferences or evidence, sorted."""
        return sorted(set(self._logits) | set(self._evidence) | set(self._retry))

    def observe(
        self,
        task_type: str,
        band: str,
        model: str,
        reward: float,
        cost: float,
        attempt: int = 1,
    ) -> None:
        """Add one run's reward (in [0, 1]) and cost to the evidence, at once.

        A run after another model failed the task (``attempt`` > 1) goes to the evidence
        of later attempts, kept apart from first attempts.
        """
        if model not in self.models:
            self.models.append(model)
        by_class, overall = (
            (self._retry, self._retry_overall) if attempt > 1 else (self._evidence, self._overall)
        )
        by_class.setdefault((task_type, band), {}).setdefault(model, Evidence()).add(reward, cost)
        overall.setdefault(model, Evidence()).add(reward, cost)
        self._pooled = None

    def revise_cost(
        self, task_type: str, band: str, model: str, delta: float, attempt: int = 1
    ) -> None:
        """Add ``delta`` dollars to the cost of one run already observed (a run re-totalled
        after late events): its class's and the model's overall evidence; runs and reward
        stay as observed."""
        by_class, overall = (
            (self._retry, self._retry_overall) if attempt > 1 else (self._evidence, self._overall)
        )
        for evidence in (by_class.get((task_type, band), {}).get(model), overall.get(model)):
            if evidence is not None:
                evidence.cost += delta
        self._pooled = None

    def pooling(self) -> float:
        """Pseudo-runs of a model's overall record that each class's posterior starts from.

        ``pool_strength`` when set; else learned from the evidence (empirical Bayes, by the
        method of moments): how far the classes' first-attempt success rates spread
        around each model's overall rate beyond what their run counts explain by chance.
        Classes that differ little share one estimate (strong pooling: the task class
        tells nothing, and splitting by it would only multiply exploration); classes
        that differ a lot speak for themselves. Between 2 and ``MAX_POOLING``.
        """
        if self.pool_strength is not None:
            return self.pool_strength
        if self._pooled is None:  # once per change of evidence: every class's rows ask
            self._pooled = self._learned_pooling()
        return self._pooled

    def _learned_pooling(self) -> float:
        spread = noise = weight = 0.0
        for model, g in self._overall.items():
            if g.runs < 2:
                continue
            mean = g.reward / g.runs
            for table in self._evidence.values():
                e = table.get(model)
                if e is None or e.runs < 1:
                    continue
                spread += e.runs * (e.reward / e.runs - mean) ** 2
                noise += mean * (1.0 - mean)
                weight += e.runs
        if weight <= 0:
            return DEFAULT_POOLING
        between = (spread - noise) / weight  # variance of the classes' true rates
        if between <= 0:
            return MAX_POOLING
        rates = sum(e.reward for e in self._overall.values()) / max(
            1.0, sum(e.runs for e in self._overall.values())
        )
        k = rates * (1.0 - rates) / between - 1.0
        return min(MAX_POOLING, max(2.0, k))

    def class_runs(self, task_type: str, band: str) -> float:
        """Runs of every model in the class, first and later attempts."""
        key = (task_type, band)
        return sum(e.runs for t in (self._evidence, self._retry) for e in t.get(key, {}).values())

    def retry_posterior(self, task_type: str, band: str) -> dict[str, tuple[float, float]]:
        """Per model: Beta posterior ``(alpha, beta)`` of success after another model failed.

        Each model's overall rate after a failure starts from a uniform prior (one
        success and one failure): optimistic while unmeasured, so escalation is tried
        early and stops where the runs show it does not pay. The class's posterior is
        pooled toward that overall rate like :meth:`posterior`.
        """
        table = self._retry.get((task_type, band), {})
        pool = self.pooling()
        out = {}
        for model in self.models:
            g = self._retry_overall.get(model, Evidence())
            mean = (g.reward + 1.0) / (g.runs + 2.0)
            k = min(pool, g.runs + 2.0)
            e = table.get(model, Evidence())
            out[model] = (e.reward + k * mean, e.runs - e.reward + k * (1.0 - mean))
        return out

    def mean_cost(self, task_type: str, band: str) -> dict[str, float | None]:
        """Per model: the mean cost of its runs in the class, pooled toward its overall
        mean cost (None for a model with no runs yet: its list price stands in)."""
        out: dict[str, float | None] = {}
        key = (task_type, band)
        pool = self.pooling()
        for model in self.models:
            g = [t.get(model, Evidence()) for t in (self._overall, self._retry_overall)]
            runs, cost = sum(e.runs for e in g), sum(e.cost for e in g)
            if not runs:
                out[model] = None
                continue
            c = [t.get(key, {}).get(model, Evidence()) for t in (self._evidence, self._retry)]
            k = min(pool, runs)
            mine = sum(e.runs for e in c)
            out[model] = (sum(e.cost for e in c) + k * cost / runs) / (mine + k)
        return out

    def rows(self, task_type: str, band: str) -> dict[str, list[float | None]]:
        """Per model: ``[alpha, beta, alpha_after_failure, beta_after_failure, mean_cost]``."""
        first = self.posterior(task_type, band)
        retry = self.retry_posterior(task_type, band)
        cost = self.mean_cost(task_type, band)
        return {
            m: [
                round(first[m][0], 4),
                round(first[m][1], 4),
                round(retry[m][0], 4),
                round(retry[m][1], 4),
                None if cost[m] is None else round(float(cost[m] or 0.0), 6),
            ]
            for m in self.models
        }

    def posteriors(self) -> dict[str, dict[str, list[float | None]]]:
        """:meth:`rows` per ``"<type>|<band>"``, and ``"*|*"`` for a class not seen yet."""
        return {f"{t}|{b}": self.rows(t, b) for t, b in [*self.classes(), ("*", "*")]}

    def posterior(self, task_type: str, band: str) -> dict[str, tuple[float, float, float]]:
        """Per model: Beta posterior ``(alpha, beta)`` of its reward and its mean cost.

        The workspace-wide mean reward (two pseudo-runs of 1/2 to start) is the prior of
        each model's overall mean (``BASE_STRENGTH`` pseudo-runs), and that overall mean
        is the prior of the class's (``pool_strength`` pseudo-runs, never more than the
        overall figures rest on plus two). Costs are pooled the same way.
        """
        runs = sum(e.runs for e in self._overall.values())
        base = (sum(e.reward for e in self._overall.values()) + 1.0) / (runs + 2.0)
        base_cost = sum(e.cost for e in self._overall.values()) / runs if runs else 0.0
        table = self._evidence.get((task_type, band), {})
        pool = self.pooling()
        out = {}
        for model in self.models:
            g = self._overall.get(model, Evidence())
            mean = (g.reward + BASE_STRENGTH * base) / (g.runs + BASE_STRENGTH)
            cost = (g.cost + BASE_STRENGTH * base_cost) / (g.runs + BASE_STRENGTH)
            k = min(pool, g.runs + BASE_STRENGTH)
            e = table.get(model, Evidence())
            alpha = e.reward + k * mean
            beta = e.runs - e.reward + k * (1.0 - mean)
            out[model] = (alpha, beta, (e.cost + k * cost) / (e.runs + k) if e.runs + k else 0)
        return out

    def thompson(self, task_type: str, band: str) -> dict[str, float]:
        """Share of posterior draws in which each model has the best reward net of cost.

        Net reward is the drawn reward less ``cost_weight`` times the model's mean cost as
        a share of the costliest model's. Uniform while the workspace has no evidence.
        Draws are seeded by the class and its evidence, so a state always gives the same
        shares.
        """
        if not self.models:
            return {}
        if not self._overall:
            return {m: 1.0 / len(self.models) for m in self.models}
        post = self.posterior(task_type, band)
        top_cost = max(c for _, _, c in post.values())
        seen = sum(e.runs for e in self._evidence.get((task_type, band), {}).values())
        rng = np.random.default_rng(zlib.crc32(f"{task_type}|{band}|{seen}".encode()))
        alphas = np.array([max(a, 1e-6) for a, _, _ in post.values()])
        betas = np.array([max(b, 1e-6) for _, b, _ in post.values()])
        penalty = np.array(
            [self.cost_weight * c / top_cost if top_cost > 0 else 0.0 for *_, c in post.values()]
        )
        draws = rng.beta(alphas, betas, size=(DRAWS, len(post))) - penalty
        wins = np.bincount(draws.argmax(axis=1), minlength=len(post))
        return {m: float(w) / DRAWS for m, w in zip(post, wins, strict=True)}

    def logits(self, task_type: str, band: str) -> dict[str, float]:
        """Current preferences for (task type, band), created on first use."""
        table = self._logits.setdefault((task_type, band), {})
        for model in self.models:
            table.setdefault(model, 0.0)
        return table

    def probabilities(self, task_type: str, band: str) -> dict[str, float]:
        """Routing probabilities: ``(1 - floor) * tilted + floor / n``.

        ``tilted`` is the Thompson share times ``exp(logit)``, renormalised: the posterior
        says how likely each model is to be the best, the group-relative preferences lean
        on it. Mixing with the uniform share keeps every model at or above ``floor / n``
        while the probabilities still sum to 1.
        """
        table = self.logits(task_type, band)
        if not table:
            return {}
        top = max(table.values())
        share = self.thompson(task_type, band)
        weights = {m: share.get(m, 0.0) * math.exp(v - top) for m, v in table.items()}
        total = sum(weights.values())
        if total <= 0:  # no draw favoured any model the logits know: fall back on them
            weights = {m: math.exp(v - top) for m, v in table.items()}
            total = sum(weights.values())
        floor = self.exploration(task_type, band)
        uniform = floor / len(table)
        return {m: (1.0 - floor) * w / total + uniform for m, w in weights.items()}

    def exploration(self, task_type: str, band: str) -> float:
        """The exploration share of a class: ``floor`` at first, shrinking as
        ``floor / sqrt(1 + runs / models)`` as the class's evidence grows."""
        runs = self.class_runs(task_type, band)
        return self.floor / math.sqrt(1.0 + runs / max(1, len(self.models)))

    def choose(self, task_type: str, band: str, rng: np.random.Generator) -> str:
        """Sample a model from the routing probabilities."""
        probs = self.probabilities(task_type, band)
        if not probs:
            raise ValueError("the policy has no models to choose from")
        models = list(probs)
        return models[int(rng.choice(len(models), p=np.array(list(probs.values()))))]

    def best(self, task_type: str, band: str) -> str:
        """The most preferred model (ties go to the model registered first)."""
        table = self.logits(task_type, band)
        if not table:
            raise ValueError("the policy has no models to choose from")
        return max(table, key=lambda m: table[m])

    def update(
        self, task_type: str, band: str, group: Sequence[tuple[str, float, float]]
    ) -> dict[str, float]:
        """Learn from a group of runs of the same task or task class.

        Each run is ``(model, reward, cost)``. Its net reward is
        ``reward - cost_weight * cost / max_cost_in_group``; advantages are the group
        normalised net rewards (all 0 when every run did equally well). A model's logit
        moves by ``learning_rate`` times its mean advantage, clipped to ``±clip``.

        Returns:
            The logit change applied to each model in the group.
        """
        if not group:
            return {}
        table = self.logits(task_type, band)
        max_cost = max(cost for _, _, cost in group)
        net = [
            reward - (self.cost_weight * cost / max_cost if max_cost > 0 else 0.0)
            for _, reward, cost in group
        ]
        per_model: dict[str, list[float]] = {}
        for (model, _, _), advantage in zip(group, group_advantages(net), strict=True):
            per_model.setdefault(model, []).append(advantage)
        steps: dict[str, float] = {}
        for model, advantages in per_model.items():
            if model not in self.models:
                self.models.append(model)
            raw = self.learning_rate * sum(advantages) / len(advantages)
            steps[model] = max(-self.clip, min(self.clip, raw))
            table[model] = table.get(model, 0.0) + steps[model]
        return steps

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready checkpoint of the whole policy."""
        return {
            "models": list(self.models),
            "floor": self.floor,
            "learning_rate": self.learning_rate,
            "clip": self.clip,
            "cost_weight": self.cost_weight,
            "pool_strength": self.pool_strength,
            "tables": [
                {"task_type": tt, "band": band, "logits": dict(logits)}
                for (tt, band), logits in sorted(self._logits.items())
            ],
            "evidence": [
                {"task_type": tt, "band": band, "models": _plain(table)}
                for (tt, band), table in sorted(self._evidence.items())
            ],
            "overall": _plain(self._overall),
            "retry": [
                {"task_type": tt, "band": band, "models": _plain(table)}
                for (tt, band), table in sorted(self._retry.items())
            ],
            "retry_overall": _plain(self._retry_overall),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingPolicy:
        """Restore a policy saved with :meth:`to_dict`."""
        policy = cls(
            data["models"],
            floor=data["floor"],
            learning_rate=data["learning_rate"],
            clip=data["clip"],
            cost_weight=data["cost_weight"],
            pool_strength=data.get("pool_strength"),
        )
        for table in data.get("tables", []):
            key = (table["task_type"], table["band"])
            policy._logits[key] = {m: float(v) for m, v in table["logits"].items()}
        # Checkpoints saved before evidence was kept restore with none.
        for table in data.get("evidence", []):
            key = (table["task_type"], table["band"])
            policy._evidence[key] = {m: Evidence(*v) for m, v in table["models"].items()}
        policy._overall = {m: Evidence(*v) for m, v in data.get("overall", {}).items()}
        # Checkpoints saved before later attempts were kept apart restore with none.
        for table in data.get("retry", []):
            key = (table["task_type"], table["band"])
            policy._retry[key] = {m: Evidence(*v) for m, v in table["models"].items()}
        policy._retry_overall = {m: Evidence(*v) for m, v in data.get("retry_overall", {}).items()}
        return policy


def _plain(table: Mapping[str, Evidence]) -> dict[str, list[float]]:
    return {m: [e.runs, e.reward, e.cost] for m, e in sorted(table.items())}
