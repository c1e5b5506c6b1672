"""Escalation: after a failed run, which models to try next, strongest-needed first.

Pure functions over the strategy's ranking. A model that failed the task is never tried
again. Models stronger than the one that failed come first, nearest tier first (economy
escalates to standard before premium), the strategy's order breaking ties; when nothing
stronger passes the filters, the rest follow in the strategy's order.

Under the ``learned`` strategy with a routing policy for the task's class, the assigner
leaves the failed models out before the policy draws, and keeps the policy's order: the
policy has measured which models succeed where, which the registry's tiers only guess.
With the policy's posteriors, escalation is priced: only untried models whose expected
value (value of a solve x drawn chance of success after a failure - cost) is positive
are tried, and none at all when the best is not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from services.assigner.selection import EXPLORATION, Candidate, expected_values, route_seed
from tally.registry import TIER_ORDER, ModelSpec


def is_stronger(c: Candidate, failed: ModelSpec, failed_capability: float) -> bool:
    """A higher tier, or the same tier with a higher capability for this task."""
    tier, failed_tier = TIER_ORDER.index(c.model.tier), TIER_ORDER.index(failed.tier)
    return tier < failed_tier or (tier == failed_tier and c.capability > failed_capability)


def escalation_order(
    ranked: Sequence[Candidate],
    failed: ModelSpec | None,
    failed_models: Collection[str],
    failed_capability: float = 0.0,
) -> list[Candidate]:
    """Candidates for the next attempt, in the order to try them.

    Args:
        ranked: the strategy's order for the task.
        failed: the model of the attempt that failed (``None``: unknown to the registry).
        failed_models: every model that failed this task so far (excluded).
        failed_capability: the failed model's capability for this task.
    """
    fresh = [c for c in ranked if c.model.name not in failed_models]
    if failed is None:
        return fresh
    position = {c.model.name: i for i, c in enumerate(fresh)}
    stronger = [c for c in fresh if is_stronger(c, failed, failed_capability)]
    # Nearest tier first: the highest tier index among the stronger ones.
    stronger.sort(key=lambda c: (-TIER_ORDER.index(c.model.tier), position[c.model.name]))
    rest = [c for c in fresh if c not in stronger]
    return stronger + rest


def priced(
    untried: Sequence[Candidate],
    posterior: Mapping[str, Sequence[float | None]],
    *,
    value_usd: float,
    task_id: str,
    attempt: int,
    attempts_left: int = 0,
    exploration: float = EXPLORATION,
) -> dict[str, float]:
    """Each untried candidate's expected value for ``attempt``, in dollars: the same draws
    the ``learned`` strategy ranks that attempt by (``attempts_left``: attempts the cap
    still allows after this one)."""
    return expected_values(
        untried,
        posterior,
        value_usd=value_usd,
        after_failure=True,
        seed=route_seed(task_id, attempt),
        attempts_left=attempts_left,
        exploration=exploration,
    )
