"""Estimator settings (``TALLY_ESTIMATOR_*``)."""

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from tally.settings import CONFIG_DIR, ServiceSettings


class EstimatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_ESTIMATOR_", extra="ignore")

    http_port: int = 8101
    scoring_path: Path = CONFIG_DIR / "scoring.yaml"
    #: How long a workspace's history index is reused before it is rebuilt from Postgres.
    history_ttl_s: float = 30.0
