"""The model registry: which models exist, what they cost, what they are good at.

Loaded from YAML (``deploy/config/models.yaml`` by default), validated by pydantic, and
reloaded when the file changes. The assigner chooses from it; the tracker and the quota
service price usage with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tally.errors import ConfigError
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
