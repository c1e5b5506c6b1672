"""Quota settings (``TALLY_QUOTA_*``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tally.settings import CONFIG_DIR, ServiceSettings


class QuotaSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_QUOTA_", extra="ignore")

    http_port: int = 8103
    subscriptions_path: Path = CONFIG_DIR / "subscriptions.yaml"
    #: The model registry: the default fallback price of a subscription is the highest
    #: price among its models (see `services.quota.fallback`).
    models_path: Path = CONFIG_DIR / "models.yaml"
    #: How often expired reservations are released.
    sweep_interval_s: float = 30.0
    #: Reserve and release requests answered at once (their ledger rows share commits).
    responder_concurrency: int = Field(64, ge=1)
    #: Expiry given to a live reservation restored from a ledger row that has none.
    rebuild_default_ttl_s: int = 4 * 3600
