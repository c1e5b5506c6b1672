"""docker-compose.yml is safe by default (``docker compose config`` cannot run here, so the
file itself is read): loopback ports only, passwords from ``.env``, NATS with its users."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tally.cli.security import DEPLOY_SECRETS
from tally.natsconfig import ROLES, SERVICES, password_variable
from tally.settings import REPO_ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES_IN_COMPOSE: dict[str, Any] = COMPOSE["services"]
#: ``${NAME:?message}``: compose refuses to start when NAME is not set.
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z_]+):\?[^}]+\}")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize("name", sorted(SERVICES_IN_COMPOSE))
def test_every_published_port_binds_to_loopback_only(name: str) -> None:
    for port in SERVICES_IN_COMPOSE[name].get("ports", []):
        spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
        assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} beyond 127.0.0.1"


def test_no_password_is_written_in_the_file() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    # Every URL's password and every *PASSWORD* setting is a required variable from .env.
    for match in re.finditer(r"://[^:/@\s\"]*:(?P<secret>[^@\s\"]+)@", text):
        assert REQUIRED.fullmatch(match["secret"]), f"literal password in a URL: {match[0]}"
    for name, service in SERVICES_IN_COMPOSE.items():
        for key, value in _environment(service).items():
            if "PASSWORD" in key:
                assert REQUIRED.fullmatch(value), f"{name}: {key} is not taken from .env"
    assert ":tally@" not in text and "POSTGRES_PASSWORD: tally" not in text


def test_every_variable_it_needs_is_one_tally_secrets_init_writes() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    needed = {m["name"] for m in REQUIRED.finditer(text)}
    written = {*DEPLOY_SECRETS, *(password_variable(role) for role in ROLES)}
    assert needed and needed <= written, needed - written


def test_nats_runs_the_shipped_users_and_each_service_logs_in_as_itself() -> None:
    nats = SERVICES_IN_COMPOSE["nats"]
    assert "-c" in nats["command"]
    assert any("deploy/nats/nats-server.conf" in v for v in nats["volumes"])
    for name in SERVICES:
        env = _environment(SERVICES_IN_COMPOSE[name])
        assert env["TALLY_NATS_USER"] == name
        assert f"${{{password_variable(name)}:?" in env["TALLY_NATS_PASSWORD"]


def test_grafana_has_no_anonymous_access_and_redis_a_password() -> None:
    grafana = _environment(SERVICES_IN_COMPOSE["grafana"])
    assert grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false"
    assert REQUIRED.fullmatch(grafana["GF_SECURITY_ADMIN_PASSWORD"])
    assert "--requirepass" in SERVICES_IN_COMPOSE["redis"]["command"]
