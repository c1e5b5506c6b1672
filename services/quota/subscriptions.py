"""Subscriptions and their limits, as users write them in ``subscriptions.yaml``.

The file holds either a list under ``subscriptions:`` or a mapping from name to body::

    subscriptions:
      - name: api-payg
        kind: payg
        enforcement: hard
        limits:
          day: {usd: 50}
          month: {usd: 1000}
        alert_thresholds: [75, 90, 100]

A limit left out is unlimited. ``hard`` subscriptions refuse reservations that would go
over a limit; ``soft`` ones accept them and alert.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.quota.windows import Period, usd_to_micro
from tally.registry import Prices

#: Names end up inside Redis hash tags, so braces and spaces are not allowed.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DEFAULT_THRESHOLDS: tuple[int, ...] = (75, 90, 100)


class UnknownSubscriptionError(LookupError):
    """A subscription name that the loaded configuration does not define."""


class WindowLimits(BaseModel):
    """Limits of one window; ``None`` is unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int | None = Field(default=None, ge=0)
    usd: Decimal | None = Field(default=None, ge=0)

    @property
    def micro_usd(self) -> int | None:
        """The dollar limit in micro-dollars, as the counters hold it."""
        return None if self.usd is None else usd_to_micro(self.usd)


class Limits(BaseModel):
    """Day and month limits of a subscription."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: WindowLimits = WindowLimits()
    month: WindowLimits = WindowLimits()

    def of(self, period: Period) -> WindowLimits:
        """The limits of ``period``."""
        return self.day if period == "day" else self.month


class Subscription(BaseModel):
    """One subscription: a prepaid plan or pay-per-token API account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["prepaid", "payg"]
    enforcement: Literal["hard", "soft"] = "hard"
    limits: Limits = Limits()
    alert_thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    #: USD per million tokens charged for tokens whose model had no known price; by
    #: default the highest prices among the registry's models on this subscription
    fallback_prices: Prices | None = None

    @field_validator("alert_thresholds")
    @classmethod
    def _sorted_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(t <= 0 for t in value):
            raise ValueError("alert thresholds are positive percentages")
        return tuple(sorted(set(value)))

    @property
    def hard(self) -> bool:
        return self.enforcement == "hard"

    @property
    def effective_thresholds(self) -> tuple[int, ...]:
        """Alert thresholds in force: a soft subscription always alerts at 100%.

        Soft subscriptions accept reservations past their limit, so the 100% alert is the
        only signal that a limit was overrun; it cannot be configured away.
        """
        if self.hard or 100 in self.alert_thresholds:
            return self.alert_thresholds
        return tuple(sorted((*self.alert_thresholds, 100)))


class SubscriptionsConfig(BaseModel):
    """All subscriptions, looked up by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscriptions: tuple[Subscription, ...]

    @model_validator(mode="before")
    @classmethod
    def _accept_mapping(cls, data: Any) -> Any:
        # Users may write `subscriptions: {name: {...}}`; normalise it to the list form.
        if isinstance(data, dict) and isinstance(data.get("subscriptions"), dict):
            items = data["subscriptions"].items()
            return {
                **data,
                "subscriptions": [{"name": name, **(body or {})} for name, body in items],
            }
        return data

    @field_validator("subscriptions")
    @classmethod
    def _unique_names(cls, value: tuple[Subscription, ...]) -> tuple[Subscription, ...]:
        names = [s.name for s in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate subscription names: {', '.join(duplicates)}")
        return value

    def get(self, name: str) -> Subscription:
        """The subscription called ``name``.

        Raises:
            UnknownSubscriptionError: no subscription has that name.
        """
        for subscription in self.subscriptions:
            if subscription.name == name:
                return subscription
        raise UnknownSubscriptionError(name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.subscriptions]


def load_subscriptions(path: str | Path) -> SubscriptionsConfig:
    """Reads and validates a subscriptions YAML file.

    Raises:
        pydantic.ValidationError: the file does not describe valid subscriptions.
    """
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return SubscriptionsConfig.model_validate(data)
