"""The price quota charges for tokens no price was known for, so no budget is bypassed.

A worker call whose model neither the registry nor the price catalogue knows is stored
unpriced (``cost_known = false``) and reported in ``run.recorded`` as ``unpriced_tokens``.
Settling it at $0 would let an unknown model id spend a dollar budget for free, so quota
charges those tokens at the subscription's fallback price: its ``fallback_prices`` from
``subscriptions.yaml`` when given, otherwise, per kind of token, the highest price among
the registry's models on that subscription (or among all models, if none is on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.quota.subscriptions import Subscription
from tally.events import TokenTotals
from tally.registry import ModelSpec, Prices
from tally.usage import TokenUsage


def fallback_prices(
    subscriptions: Iterable[Subscription], models: Iterable[ModelSpec]
) -> dict[str, Prices]:
    """Each subscription's fallback price (see the module docstring)."""
    models = list(models)
    overall = Prices.highest(m.prices for m in models)
    out: dict[str, Prices] = {}
    for sub in subscriptions:
        price = sub.fallback_prices or Prices.highest(
            m.prices for m in models if m.subscription == sub.name
        )
        price = price or overall
        if price is not None:
            out[sub.name] = price
    return out


def fallback_micros(prices: Mapping[str, Prices], subscription: str, unpriced: TokenTotals) -> int:
    """What ``unpriced`` tokens cost at ``subscription``'s fallback price, in micro-dollars."""
    price = prices.get(subscription)
    if price is None or unpriced.total == 0:
        return 0
    return int(price.micros(TokenUsage(**unpriced.model_dump())))
