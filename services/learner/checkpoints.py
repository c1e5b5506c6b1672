"""Checkpoints of the routing policy (which to keep, which to resume from), and the
discounted credit an escalated task's attempts share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


def credit(attempt_rewards: Sequence[float], gamma: float = 0.9) -> list[float]:
    """Discounted return per attempt of an escalated task, clipped into [0, 1].

    Attempt ``i`` earns ``r_i + gamma * G_{i+1}``: an early attempt that failed but whose
    work a later attempt finished receives a discounted share of that later reward.

    Example:
        >>> credit([0.0, 0.0, 1.0], gamma=0.5)
        [0.25, 0.5, 1.0]
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be within [0, 1], got {gamma}")
    returns: list[float] = []
    following = 0.0
    for reward in reversed(attempt_rewards):
        following = min(1.0, max(0.0, reward + gamma * following))
        returns.append(following)
    return returns[::-1]


@dataclass(frozen=True)
class Checkpoint:
    """A saved policy: its id, when it was saved, and its evaluation score if known."""

    id: str
    created_at: datetime
    score: float | None = None  #: held-out evaluation score, higher is better


@dataclass(frozen=True)
class Checkpointer:
    """Which checkpoints to keep and which to resume from (pure decisions, no storage).

    ``protect_latest`` also keeps the newest checkpoint when it is not among the best, so
    a restarted learner resumes where it stopped rather than from an older state.
    """

    keep: int = 5
    protect_latest: bool = True

    def retain(
        self, checkpoints: Iterable[Checkpoint], keep: int | None = None
    ) -> list[Checkpoint]:
        """The checkpoints to keep: the best ``keep`` by score (newer wins ties), best first.

        Unevaluated checkpoints rank below every evaluated one.
        """
        limit = self.keep if keep is None else keep
        if limit < 1:
            raise ValueError(f"keep must be at least 1, got {limit}")
        items = list(checkpoints)
        ranked = sorted(
            items,
            key=lambda c: (c.score is not None, c.score or 0.0, c.created_at),
            reverse=True,
        )
        kept = ranked[:limit]
        latest = self.resume_from(items)
        if self.protect_latest and latest is not None and latest not in kept:
            kept.append(latest)
        return kept

    def pruned(self, checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
        """The checkpoints :meth:`retain` would drop."""
        items = list(checkpoints)
        kept = {c.id for c in self.retain(items)}
        return [c for c in items if c.id not in kept]

    @staticmethod
    def resume_from(checkpoints: Iterable[Checkpoint]) -> Checkpoint | None:
        """The newest checkpoint, or None when there is none."""
        return max(checkpoints, key=lambda c: c.created_at, default=None)
