"""Tracker settings (``TALLY_TRACKER_*``)."""

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from tally.settings import CONFIG_DIR, ServiceSettings


class TrackerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_TRACKER_", extra="ignore")

    http_port: int = 8104
    models_path: Path = CONFIG_DIR / "models.yaml"
    #: How long run.finished waits (by delayed redelivery) for the events it announced
    #: before recording what is stored: longer than ``ack_wait_s``, so events a crashed
    #: tracker had fetched are back in time. Later events re-total the run anyway.
    settle_wait_s: float = 45.0
