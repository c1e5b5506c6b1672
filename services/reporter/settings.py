"""Reporter settings (``TALLY_REPORTER_*``)."""

from pydantic_settings import SettingsConfigDict

from tally.settings import ServiceSettings


class ReporterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_REPORTER_", extra="ignore")

    http_port: int = 8106
    #: A run whose events are this old with no run.started is reported as an orphan.
    orphan_after_s: float = 600.0
    #: How often the orphan count (``tally_orphan_runs``) is refreshed.
    orphan_check_s: float = 60.0
    #: OTLP receiver: the span or resource attributes that name a run, a task and a
    #: workspace (see services/reporter/otlp.py), and the largest body it reads (inflated).
    otlp_run_attribute: str = "tally.run_id"
    otlp_task_attribute: str = "tally.task_id"
    otlp_workspace_attribute: str = "tally.workspace"
    otlp_max_bytes: int = 8 * 1024 * 1024
    #: The longest an API request waits for another service's answer on the bus.
    api_max_wait_s: float = 30.0
