"""Reporter settings (``TALLY_REPORTER_*``)."""

from typing import Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from tally.settings import ServiceSettings


class ReporterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_REPORTER_", extra="ignore")

    http_port: int = 8106
    #: Where reports, exports and the API's reads come from: a read replica of the
    #: database (``TALLY_REPORTER_DATABASE_URL``); empty reads ``database_url``. API
    #: tokens are always read and written on ``database_url`` (a new token works at once).
    read_database_url: str = Field(
        "", validation_alias=AliasChoices("TALLY_REPORTER_DATABASE_URL", "read_database_url")
    )
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
    #: A token that acts as an operator's admin token (workspace ``*``), never stored: set
    #: it to create the first tokens (``tally token create``), then unset it.
    bootstrap_token: str | None = None
    #: Per API token: requests a second on average, and the largest burst.
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 100
    #: The largest request body the API reads (the OTLP receiver has ``otlp_max_bytes``).
    max_body_bytes: int = 1024 * 1024
    #: Optional: JWTs of an external identity provider (see services/reporter/idp.py),
    #: accepted when all three are set.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_workspace_claim: str = "tally_workspace"
    jwt_scope_claim: str = "scope"
    #: Postgres connections the API keeps open (16 concurrent clients each get one; the
    #: engine adds up to 5 more under bursts).
    db_pool_size: int = 20
    #: Seconds a ``/lanes`` answer (which reads every move of the window) is served again
    #: to the same question; its ``now`` says when it was computed. 0: requests asking at
    #: the same time share one answer, and no answer is older than its request (a move
    #: made just before shows), which a dashboard polled by many may trade for a few s.
    lanes_fresh_s: float = 0.0
    #: Ask ``/metrics`` for a token with ``reports:read`` (off: keep the port private).
    metrics_token_required: bool = False

    @model_validator(mode="after")
    def _jwt_whole(self) -> Self:
        given = [self.jwt_issuer, self.jwt_audience, self.jwt_jwks_url]
        if any(given) and not all(given):
            raise ValueError(
                "jwt_issuer, jwt_audience and jwt_jwks_url: set all three (or none) to accept "
                "an identity provider's JWTs"
            )
        return self
