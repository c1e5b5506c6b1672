"""What a solved task is worth, per workspace: the exchange rate of routing decisions.

Users edit ``deploy/config/routing.yaml``. Each entry gives either ``value_usd`` (what a
solved task is worth, in dollars) or ``target_cost_per_solve`` (the most one solve may
cost on average). The two are the same number: another attempt with success chance ``p``
and expected cost ``c`` is worth making while ``value * p - c > 0``, i.e. while its
expected cost per solve ``c / p`` stays under the target.

Example (``deploy/config/routing.yaml``)::

    default:
      value_usd: 100.0           # a solved task is worth $100 unless a workspace says
    workspaces:
      payments:
        value_usd: 60.0          # outages cost money: pay up to $60 per solved task
      docs:
        target_cost_per_solve: 0.5
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from tally.errors import ConfigError

#: A solved task is worth this much when no file or entry says otherwise.
DEFAULT_VALUE_USD = 100.0


class SolveValue(BaseModel):
    """The dollar value of one solved task, given one of two ways."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value_usd: PositiveFloat | None = None
    target_cost_per_solve: PositiveFloat | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SolveValue:
        if (self.value_usd is None) == (self.target_cost_per_solve is None):
            raise ValueError("give exactly one of value_usd and target_cost_per_solve")
        return self

    @property
    def usd(self) -> float:
        """The value of a solve in dollars (a target cost per solve is that value)."""
        return float(self.value_usd or self.target_cost_per_solve or 0.0)


class RoutingValues(BaseModel):
    """The workspace default and per-workspace values of a solved task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: SolveValue = SolveValue(value_usd=DEFAULT_VALUE_USD)
    workspaces: dict[str, SolveValue] = Field(default_factory=dict)

    def for_workspace(self, workspace: str) -> float:
        """Dollars a solved task of ``workspace`` is worth."""
        return self.workspaces.get(workspace, self.default).usd


def load_routing_values(path: str | Path | None) -> RoutingValues:
    """Read ``routing.yaml``; a missing file means the defaults.

    Raises:
        ConfigError: the file is not valid (the message names the field).
    """
    if path is None or not Path(path).exists():
        return RoutingValues()
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    try:
        return RoutingValues.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {field}: {first['msg']}") from exc
