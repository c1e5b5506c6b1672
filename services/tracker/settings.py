"""Tracker settings (``TALLY_TRACKER_*``)."""

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from tally.settings import CONFIG_DIR, ServiceSettings


class TrackerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_TRACKER_", extra="ignore")

    http_port: int = 8104
    models_path: Path = CONFIG_DIR / "models.yaml"
    #: How long run.finished waits for its run's events to be persisted before recording
    #: what it has (events can arrive after the finish message).
    settle_wait_s: float = 10.0
