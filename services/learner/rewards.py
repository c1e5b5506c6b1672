"""Rewards in [0, 1] for finished runs, and group-relative advantages.

A reward says how good one run was. Which reward applies is configurable per agent and
per task type through a :class:`RewardRegistry`; every reward it hands out is checked to
lie in [0, 1], so a badly written reward function fails loudly instead of skewing the
routing policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class RunSignals:
    """What a reward function may look at for one run."""

    success: bool
    tool_calls: int = 0
    verification_passed: bool = False
    steps: int = 0
    quality: float | None = None  #: grade in [0, 1] when a reviewer or verifier gave one


@dataclass(frozen=True)
class ShapingConfig:
    """Weights of the shaped terms added to the outcome reward."""

    tool_use_bonus: float = 0.1  #: added once when the run used at least one tool
    verification_bonus: float = 0.05  #: added when a verification passed
    step_penalty: float = 0.01  #: subtracted per step beyond ``step_budget``
    step_budget: int = 20


def clip_unit(value: float) -> float:
    """Clamp ``value`` into [0, 1]."""
    return min(1.0, max(0.0, value))


def shaped_reward(signals: RunSignals, config: ShapingConfig | None = None) -> float:
    """Outcome reward (success 1, failure 0) plus shaping terms, clipped into [0, 1].

    Shaping only grades successes: a failed run earns 0 whatever tools it used.

    Example:
        >>> shaped_reward(RunSignals(success=False, tool_calls=2))
        0.0
        >>> shaped_reward(RunSignals(success=True, steps=30))
        0.9
    """
    cfg = config or ShapingConfig()
    if not signals.success:
        return 0.0  # a failure earns nothing, however busy it was
    reward = 1.0
    if signals.tool_calls > 0:
        reward += cfg.tool_use_bonus
    if signals.verification_passed:
        reward += cfg.verification_bonus
    reward -= cfg.step_penalty * max(0, signals.steps - cfg.step_budget)
    return clip_unit(reward)


RewardFn = Callable[[RunSignals], float]


class RewardRangeError(ValueError):
    """A reward function returned something outside [0, 1]."""


class UnknownRewardError(KeyError):
    """No reward function is registered under the requested name."""


class RewardSelection(BaseModel):
    """Which reward applies where; agent-specific choices win over task-type ones."""

    default: str = "shaped"
    by_agent: dict[str, str] = Field(default_factory=dict)
    by_task_type: dict[str, str] = Field(default_factory=dict)


class RewardRegistry:
    """Named reward functions, chosen per agent or task type.

    Example:
        >>> registry = RewardRegistry()
        >>> @registry.register("binary")
        ... def binary(signals: RunSignals) -> float:
        ...     return float(signals.success)
        >>> registry.get("binary")(RunSignals(success=True))
        1.0
    """

    def __init__(self, selection: RewardSelection | None = None) -> None:
        self._functions: dict[str, RewardFn] = {}
        self.selection = selection or RewardSelection()

    def register(self, name: str) -> Callable[[RewardFn], RewardFn]:
        """Decorator registering a reward function under ``name``.

        Raises:
            ValueError: if ``name`` is already taken.
        """

        def decorator(fn: RewardFn) -> RewardFn:
            if name in self._functions:
                raise ValueError(f"reward {name!r} is already registered")
            self._functions[name] = fn
            return fn

        return decorator

    def names(self) -> list[str]:
        return sorted(self._functions)

    def get(self, name: str) -> RewardFn:
        """The reward function ``name``, wrapped so its output is checked to lie in [0, 1].

        Raises:
            UnknownRewardError: if nothing is registered under ``name``.
        """
        try:
            fn = self._functions[name]
        except KeyError:
            raise UnknownRewardError(
                f"no reward named {name!r}; registered: {', '.join(self.names()) or 'none'}"
            ) from None

        def checked(signals: RunSignals) -> float:
            value = fn(signals)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise RewardRangeError(f"reward {name!r} returned {value!r}, outside [0, 1]")
            return float(value)

        return checked

    def for_context(self, agent: str | None = None, task_type: str | None = None) -> RewardFn:
        """The reward configured for this agent, else this task type, else the default."""
        sel = self.selection
        if agent is not None and agent in sel.by_agent:
            return self.get(sel.by_agent[agent])
        if task_type is not None and task_type in sel.by_task_type:
            return self.get(sel.by_task_type[task_type])
        return self.get(sel.default)


def default_registry(
    selection: RewardSelection | None = None, shaping: ShapingConfig | None = None
) -> RewardRegistry:
    """A registry with the built-in rewards ``shaped`` (also named ``outcome_shaped``:
    the outcome plus shaped terms), ``binary`` and ``quality``."""
    registry = RewardRegistry(selection)
    registry.register("shaped")(lambda s: shaped_reward(s, shaping))
    registry.register("outcome_shaped")(lambda s: shaped_reward(s, shaping))
    registry.register("binary")(lambda s: 1.0 if s.success else 0.0)
    # A success without a grade counts as full quality: nobody marked it down.
    registry.register("quality")(
        lambda s: (1.0 if s.quality is None else clip_unit(s.quality)) if s.success else 0.0
    )
    return registry


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """Group-normalised advantages ``(r - mean) / std`` over runs of one task (class).

    Uses the population standard deviation of the group. When every run earned the same
    reward (std 0, including a group of one) no run did better than another, so every
    advantage is 0.

    Example:
        >>> group_advantages([1.0, 0.0])
        [1.0, -1.0]
    """
    n = len(rewards)
    if n == 0:
        return []
    mean = math.fsum(rewards) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / n)
    if std < 1e-12:
        return [0.0] * n
    return [(r - mean) / std for r in rewards]
