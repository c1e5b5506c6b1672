"""Reporter settings (``TALLY_REPORTER_*``)."""

from pydantic_settings import SettingsConfigDict

from tally.settings import ServiceSettings


class ReporterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_REPORTER_", extra="ignore")

    http_port: int = 8106
