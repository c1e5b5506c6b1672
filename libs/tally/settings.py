"""Settings shared by every Tally process, read from ``TALLY_*`` environment variables.

Each service subclasses :class:`TallySettings` with its own ``env_prefix`` for its own
tunables; the connection URLs and namespace are always read from the shared names
(``TALLY_NATS_URL``, ``TALLY_DATABASE_URL``, ``TALLY_REDIS_URL``, ``TALLY_NAMESPACE``).

Credentials: a process logs in to NATS as ``TALLY_NATS_USER`` with ``TALLY_NATS_PASSWORD``
(one user per service and client role, see ``deploy/nats/`` and docs/security.md), with
TLS when ``TALLY_NATS_TLS_CA`` (and, for mutual TLS, ``TALLY_NATS_TLS_CERT``/``_KEY``) are
set. Postgres and Redis carry their password and TLS in their URLs:
``postgresql+asyncpg://tally:PW@host/tally?ssl=verify-full`` and
``rediss://:PW@host:6379/0?ssl_ca_certs=/path/ca.pem``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
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
    #: Copies of each stream's messages in a NATS cluster: 3 in production (a node may
    #: fail), 1 on a single server. Every process provisions with the same number.
    stream_replicas: int = Field(1, ge=1, le=5, validation_alias=_shared("STREAM_REPLICAS"))
    log_level: str = Field("INFO", validation_alias=_shared("LOG_LEVEL"))
    #: NATS user and password; empty for a server without authentication (development).
    nats_user: str = Field("", validation_alias=_shared("NATS_USER"))
    nats_password: SecretStr = Field(SecretStr(""), validation_alias=_shared("NATS_PASSWORD"))
    #: CA bundle that signs the NATS server's certificate (turns TLS on), and this
    #: process's own certificate and key when the server asks for mutual TLS.
    nats_tls_ca: str = Field("", validation_alias=_shared("NATS_TLS_CA"))
    nats_tls_cert: str = Field("", validation_alias=_shared("NATS_TLS_CERT"))
    nats_tls_key: str = Field("", validation_alias=_shared("NATS_TLS_KEY"))

    def nats_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (and FastStream's broker): credentials,
        TLS and a reply inbox of this user's own (``_INBOX_<user>``), the only one the
        shipped server configuration lets it read."""
        return nats_options(
            self.nats_user,
            self.nats_password.get_secret_value(),
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )


def nats_options(
    user: str = "",
    password: str = "",
    *,
    tls_ca: str = "",
    tls_cert: str = "",
    tls_key: str = "",
) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for a user (none for an anonymous one)."""
    options: dict[str, Any] = {}
    if user:
        options.update(user=user, password=password, inbox_prefix=f"_INBOX_{user}")
    if tls_ca or tls_cert:
        context = ssl.create_default_context(cafile=tls_ca or None)
        if tls_cert:
            context.load_cert_chain(tls_cert, tls_key or None)
        options["tls"] = context
    return options


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
