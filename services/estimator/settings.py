"""Estimator settings (``TALLY_ESTIMATOR_*``)."""

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from tally.settings import CONFIG_DIR, ServiceSettings


class EstimatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_ESTIMATOR_", extra="ignore")

    http_port: int = 8101
    scoring_path: Path = CONFIG_DIR / "scoring.yaml"
    #: How often, at most, a warm workspace checks (one cheap query) whether its history
    #: changed elsewhere; a change rebuilds its model, nothing else does.
    history_check_interval_s: float = 1.0
