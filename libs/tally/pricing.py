"""What a model call cost, in micro-dollars: the registry's prices first, then a catalogue.

The registry (``deploy/config/models.yaml``) is the override: private and self-hosted
models, negotiated prices. Every other model is priced from `genai-prices`, a maintained
catalogue (MIT, by Pydantic) that knows dated ids, cache read and write prices, context
tiers and price changes over time. It works offline from the snapshot bundled in the
wheel; newer prices arrive by upgrading the package (its opt-in live updater is not used:
services need no internet access). Model ids are normalised first
(`tally.modelids.parse_model_id`), so ``anthropic/claude-sonnet-4`` and
``claude-sonnet-4-20250514`` find the same entry.

A call whose model neither knows is *unpriced*: its cost is ``None``, never 0, and the
caller stores it with ``cost_known = false``, counts it and warns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol

from tally.modelids import parse_model_id
from tally.money import MICROS_PER_USD, round_micros
from tally.registry import ModelSpec
from tally.usage import TokenUsage

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, Provider

#: where a price came from
Source = Literal["caller", "registry", "catalogue", "unknown"]
#: Tally's provider names that the catalogue spells otherwise
_CATALOGUE_PROVIDERS = {"gemini": "google", "vertex": "google", "vertex_ai": "google"}


class Models(Protocol):
    """What pricing needs of a model registry."""

    def resolve(self, model_id: str) -> ModelSpec | None: ...


@dataclass(frozen=True, slots=True)
class Price:
    """A call's cost: ``micros`` is None when no price is known for its model."""

    micros: int | None
    source: Source
    #: the registry entry or catalogue model the id resolved to
    model: str | None = None

    @property
    def known(self) -> bool:
        return self.micros is not None


class Pricer:
    """Prices usages; model lookups are cached (build one per batch, or keep one)."""

    def __init__(self, registry: Models | None, *, catalogue: bool = True) -> None:
        self._registry = registry
        self._catalogue = catalogue
        self._specs: dict[str, ModelSpec | None] = {}
        self._refs: dict[tuple[str, str | None], _Ref | None] = {}

    def spec(self, model: str) -> ModelSpec | None:
        """The registry entry ``model`` belongs to, or None."""
        if self._registry is None:
            return None
        try:
            return self._specs[model]
        except KeyError:
            spec = self._specs[model] = self._registry.resolve(model)
            return spec

    def price(
        self,
        usage: TokenUsage,
        model: str | None,
        *,
        provider: str | None = None,
        at: datetime | None = None,
    ) -> Price:
        """The cost of ``usage`` on ``model`` at the time ``at`` (prices change)."""
        if not model:
            return Price(None, "unknown")
        spec = self.spec(model)
        if spec is not None:
            return Price(spec.cost_micros(usage), "registry", spec.name)
        ref = self._ref(model, provider) if self._catalogue else None
        if ref is None:
            return Price(None, "unknown")
        micros = ref.micros(usage, at)
        return (
            Price(micros, "catalogue", ref.model.id)
            if micros is not None
            else Price(None, "unknown")
        )

    def _ref(self, model: str, provider: str | None) -> _Ref | None:
        key = (model, provider)
        if key not in self._refs:
            self._refs[key] = _find(model, provider)
        return self._refs[key]


#: a catalogue price of only these flat (untiered) per-Mtok prices is applied directly
_FLAT = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_Rates = tuple[Decimal, Decimal, Decimal, Decimal]


@dataclass(slots=True)
class _Ref:
    provider: Provider
    model: ModelInfo
    #: flat rates (input, output, cache read, cache write) by UTC day; None: not flat
    _rates: dict[date, _Rates | None] = field(default_factory=dict)

    def micros(self, usage: TokenUsage, at: datetime | None) -> int | None:
        """The catalogue's price of ``usage`` at ``at``, in micro-dollars.

        Flat prices (most models) are applied like the registry's, exactly: a price per
        million tokens is micro-dollars per token. Anything else (context tiers, other
        units) goes through the catalogue's own calculation.
        """
        when = at or datetime.now(UTC)
        day = when.date()
        if day not in self._rates:
            self._rates[day] = self._flat(when)
        rates = self._rates[day]
        if rates is not None:
            inp, out, read, write = rates
            return round_micros(
                usage.input_tokens * inp
                + usage.output_tokens * out
                + usage.cache_read_tokens * read
                + usage.cache_write_tokens * write
            )
        return self._calculated(usage, when)

    def _flat(self, when: datetime) -> _Rates | None:
        try:
            price = self.model.get_prices(when)
        except (LookupError, ValueError):
            return None
        prices = {k: v for k, v in vars(price).items() if v is not None}
        if any("request" in k for k in prices):  # a price per call: the catalogue counts it
            return None
        # Prices of what a token usage never has (web searches, audio, images) do not apply.
        given = {k: v for k, v in prices.items() if k in _FLAT}
        if not all(isinstance(v, Decimal) for v in given.values()):
            return None
        inp = given.get("input_mtok", Decimal(0))
        return (
            inp,
            given.get("output_mtok", Decimal(0)),
            given.get("cache_read_mtok", inp),
            given.get("cache_write_mtok", inp),
        )

    def _calculated(self, usage: TokenUsage, when: datetime) -> int | None:
        from genai_prices import Usage

        counted = Usage(
            input_tokens=usage.total_input_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
        )
        try:
            calc = self.model.calc_price(counted, self.provider, genai_request_timestamp=when)
        except (LookupError, ValueError):  # no price in force at ``at``
            return None
        return round_micros(Decimal(calc.total_price) * MICROS_PER_USD)


@functools.lru_cache(maxsize=4096)
def _find(model: str, provider: str | None) -> _Ref | None:
    """The catalogue's entry for ``model``: by the given or prefixed provider, then any.

    Kept per process: the bundled catalogue does not change while it runs.
    """
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    parsed = parse_model_id(model)
    hints = [p for p in (provider, parsed.provider) if p]
    providers = [_CATALOGUE_PROVIDERS.get(p.lower(), p.lower()) for p in hints]
    for ref in dict.fromkeys((parsed.name, parsed.base)):
        for provider_id in (*dict.fromkeys(providers), None):
            try:
                found = snapshot.find_provider_model(ref, None, provider_id, None)
            except LookupError:
                continue
            return _Ref(*found)
    return None
