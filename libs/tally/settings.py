"""Settings shared by every Tally process, read from ``TALLY_*`` environment variables.

Each service subclasses :class:`TallySettings` with its own ``env_prefix`` for its own
tunables; the connection URLs and namespace are always read from the shared names
(``TALLY_NATS_URL``, ``TALLY_DATABASE_URL``, ``TALLY_REDIS_URL``, ``TALLY_NAMESPACE``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Root of the repository checkout; shipped YAML defaults live under ``deploy/config``.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "deploy" / "config"


def _shared(name: str) -> AliasChoices:
    return AliasChoices(f"TALLY_{name}", name.lower())


class TallySettings(BaseSettings):
    """Connection URLs and the namespace every process shares."""

    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore", populate_by_name=True)

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=_shared("NATS_URL"))
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/tally",
        validation_alias=_shared("DATABASE_URL"),
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_shared("REDIS_URL"))
    #: Prefix for subjects, stream names and Redis keys; empty in production, unique per test.
    namespace: str = Field("", validation_alias=_shared("NAMESPACE"))
    workspace: str = Field("default", validation_alias=_shared("WORKSPACE"))
    log_level: str = Field("INFO", validation_alias=_shared("LOG_LEVEL"))


class ServiceSettings(TallySettings):
    """Base of every service's settings: where its health and metrics endpoints listen."""

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: Messages a batch consumer pulls at once, and how long it waits to fill a batch.
    batch_size: int = 256
    batch_timeout_s: float = 0.05
    #: Deliveries before a message that keeps failing transiently is dead-lettered.
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    #: Pause between attempts to reconnect to NATS (attempts never stop).
    nats_reconnect_wait_s: int = 2
    #: A consumer with no server answer and no finished handler for this long is stalled
    #: (``/healthz`` answers 503).
    health_stale_s: float = 60.0
