"""Assigner settings (``TALLY_ASSIGNER_*``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.assigner.selection import EXPLORATION
from tally.settings import CONFIG_DIR, ServiceSettings


class AssignerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_ASSIGNER_", extra="ignore")

    http_port: int = 8102
    models_path: Path = CONFIG_DIR / "models.yaml"
    #: What a solved task is worth per workspace (the learned routing's exchange rate).
    routing_path: Path = CONFIG_DIR / "routing.yaml"
    strategy: str = "maximize_value"
    #: How long a reservation is held before the quota service releases it unused.
    reservation_ttl_s: int = 4 * 3600
    quota_timeout_s: float = 2.0
    #: Runs of a task (the first plus escalations) before the assigner gives up on it: a
    #: safety cap. Under the learned policy escalation stops sooner, once no untried
    #: model's expected value (value of a solve x chance of success - cost) is positive.
    max_attempts: int = 3
    #: Spread of the learned strategy's posterior draws, as a share of the posterior's
    #: own (1: plain Thompson sampling; see ``selection.EXPLORATION``).
    exploration: float = Field(default=EXPLORATION, ge=0.0, le=1.0)
    #: How often deferred tasks are retried without a quota-freed notice, and how many
    #: one round may retry (bounded work however long the backlog grows).
    retry_interval_s: float = 30.0
    #: False: deferred tasks wait for ``tally assign --pending`` instead.
    retry_deferred: bool = True
    retry_batch: int = 50
    experiments_refresh_s: float = 10.0
    #: Redelivery delay while a failed run's reservation waits to be settled.
    settle_wait_s: float = 0.5
