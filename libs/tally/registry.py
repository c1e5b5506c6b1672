"""The model registry: which models exist, what they cost, what they are good at.

Loaded from YAML (``deploy/config/models.yaml`` by default), validated by pydantic, and
reloaded when the file changes. The assigner chooses from it; the tracker and the quota
service price usage with it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Literal

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tally.errors import ConfigError
from tally.modelids import parse_model_id
from tally.money import round_micros
from tally.usage import TokenUsage, cost_usd

log = structlog.get_logger(__name__)

Tier = Literal["premium", "standard", "economy", "local"]
#: Tiers from strongest to weakest, for escalation.
TIER_ORDER: tuple[Tier, ...] = ("premium", "standard", "economy", "local")


class Prices(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)

    def micros(self, usage: TokenUsage) -> int:
        """The cost of ``usage`` in micro-dollars, computed exactly and rounded once.

        A price per million tokens is a price in micro-dollars per token. Cache reads
        without their own price cost the input price, and so do cache writes.
        """
        rate = _decimal
        read = rate(self.input if self.cached_input is None else self.cached_input)
        write = rate(self.input if self.cache_write is None else self.cache_write)
        exact = (
            usage.input_tokens * rate(self.input)
            + usage.output_tokens * rate(self.output)
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
        )
        return round_micros(exact)

    @classmethod
    def highest(cls, prices: Iterable[Prices]) -> Prices | None:
        """Per kind of token, the highest price among ``prices`` (None if there are none)."""
        items = list(prices)
        if not items:
            return None

        def top(kind: str) -> float:
            return max(getattr(p, kind) if getattr(p, kind) is not None else p.input for p in items)

        return cls(
            input=top("input"),
            output=top("output"),
            cached_input=top("cached_input"),
            cache_write=top("cache_write"),
        )


@functools.lru_cache(maxsize=4096)
def _decimal(value: float) -> Decimal:
    # A registry holds a few dozen prices; every priced call needs four of them.
    return Decimal(str(value))


class ModelSpec(BaseModel):
    """One model as the registry describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    provider: str
    tier: Tier
    prices: Prices
    context_window: int = Field(gt=0)
    capabilities: dict[str, float] = Field(default_factory=lambda: {"default": 0.5})
    subscription: str
    #: other ids this model is reported under (matched like the name, see `resolve`)
    aliases: tuple[str, ...] = ()

    def capability(self, *keys: str | None) -> float:
        """The best score among the given task types/domains, else the default."""
        scores = [self.capabilities[k] for k in keys if k and k in self.capabilities]
        return max(scores) if scores else self.capabilities.get("default", 0.5)

    def cost(self, usage: TokenUsage) -> float:
        """Price a usage in USD: cache reads and writes at their own prices."""
        p = self.prices
        return cost_usd(
            usage,
            input_per_mtok=p.input,
            output_per_mtok=p.output,
            cached_input_per_mtok=p.cached_input if p.cached_input is not None else p.input,
            cache_write_per_mtok=p.cache_write,
        )

    def cost_micros(self, usage: TokenUsage) -> int:
        """Price a usage exactly in integer micro-dollars (see `tally.money`)."""
        return self.prices.micros(usage)


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)


class ModelRegistry:
    """Models by name, reloaded from ``path`` whenever the file's modification time changes.

    A reload that fails validation is logged with the file and field, and the previous
    models stay in use, so a typo never empties the registry.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._models: dict[str, ModelSpec] = {}
        self._keys: dict[str, ModelSpec] = {}
        self.reload()

    def reload(self) -> bool:
        """Reload if the file changed. Returns True if it did.

        Raises:
            ConfigError: the first load failed. A later edit that fails is logged and
                the previous models stay in use until the file is fixed.
        """
        mtime = os.stat(self.path).st_mtime
        if mtime == self._mtime:
            return False
        try:
            models = load_models(self.path)
        except ConfigError as exc:
            if not self._models:
                raise
            log.error("registry_reload_failed", path=str(self.path), error=str(exc))
            self._mtime = mtime
            return False
        self._models = {m.name: m for m in models}
        self._keys = {key.lower(): m for m in reversed(models) for key in (*m.aliases, m.name)}
        self._mtime = mtime
        return True

    def models(self) -> list[ModelSpec]:
        """Every model, after reloading the file if it changed."""
        self.reload()
        return list(self._models.values())

    def get(self, name: str) -> ModelSpec | None:
        """The model called ``name``, or None."""
        self.reload()
        return self._models.get(name)

    def resolve(self, model_id: str) -> ModelSpec | None:
        """The model ``model_id`` belongs to, however a provider or gateway spelled it.

        Tries the exact name, then the id without case, provider prefix or version suffix
        (`tally.modelids.parse_model_id`), then without its date or ``-latest`` suffix;
        names and ``aliases`` match alike. ``claude-sonnet-4-20250514``,
        ``anthropic/claude-sonnet-4`` and ``Claude-Sonnet-4`` all resolve to
        ``claude-sonnet-4``.
        """
        self.reload()
        exact = self._models.get(model_id)
        if exact is not None:
            return exact
        keys = self._keys
        for key in (model_id.strip().lower(), *parse_model_id(model_id).candidates()):
            if key in keys:
                return keys[key]
        return None


def load_models(path: Path) -> list[ModelSpec]:
    """Read and validate a registry file.

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid (named).
    """
    try:
        raw = yaml.safe_load(path.read_text())
        return RegistryFile.model_validate(raw).models
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{path}: {fields}") from exc
