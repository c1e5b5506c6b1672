"""The bus's users and permissions, derived from the contract, and the committed copy."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tally.cli.main import app
from tally.cli.security import read_env
from tally.contract import CHANNELS
from tally.natsconfig import ROLES, SERVICES, password_variable, permissions, server_config
from tally.settings import REPO_ROOT, TallySettings
from tally.subjects import QUOTA_FREEZE, QUOTA_REBUILD, RUN_RECORDED, UNSTREAMED, Catalog

COMMITTED = REPO_ROOT / "deploy" / "nats" / "nats-server.conf"


def test_the_committed_server_configuration_matches_the_generator() -> None:
    assert COMMITTED.read_text() == server_config(""), (
        "deploy/nats/nats-server.conf is stale: run "
        "`uv run tally nats config -o deploy/nats/nats-server.conf`"
    )


def test_only_the_tracker_publishes_run_recorded() -> None:
    may = [role for role in ROLES if RUN_RECORDED in permissions(role).publish]
    assert may == ["tracker"]
    for role in ROLES:
        if role != "tracker":
            assert RUN_RECORDED in permissions(role).deny_publish, role


def test_only_the_quota_service_answers_quota_requests() -> None:
    quota_requests = [s for s in UNSTREAMED if s.startswith("quota.") and s != "quota.freed"]
    for subject in quota_requests:
        readers = [role for role in ROLES if subject in permissions(role).subscribe]
        assert readers == ["quota"], subject
    assert permissions("quota").allow_responses


def test_an_agent_publishes_its_work_and_reads_its_assignments_only() -> None:
    agent = permissions("agent")
    assert set(agent.publish) == {
        "task.created",
        "task.status_changed",
        "run.started",
        "run.event",
        "run.finished",
        "task.estimate",
        "quota.release",
    }
    assert set(agent.subscribe) == {
        "task.estimated",
        "task.assigned",
        "task.deferred",
        "quota.alert",
        "_INBOX_agent.>",
    }
    assert not any(s.startswith("$JS") for s in agent.publish)  # no stream or consumer access
    for admin in (QUOTA_FREEZE, QUOTA_REBUILD):
        assert admin not in agent.publish


def test_every_channel_has_a_permitted_publisher_and_reader() -> None:
    for channel in CHANNELS:
        if "{service}" in channel.subject:
            continue
        assert any(channel.subject in permissions(r).publish for r in ROLES), channel.subject
        assert any(channel.subject in permissions(r).subscribe for r in ROLES) or all(
            c in SERVICES
            for c in channel.consumers  # pulled through the JetStream API
        ), channel.subject


def test_services_cannot_delete_or_purge_streams_and_each_reads_its_own_inbox() -> None:
    for service in SERVICES:
        p = permissions(service)
        assert "$JS.API.STREAM.DELETE.>" in p.deny_publish
        assert [s for s in p.subscribe if s.startswith("_INBOX")] == [f"_INBOX_{service}.>"]
        assert f"dlq.{service}" in p.publish


def test_a_namespace_prefixes_every_tally_subject() -> None:
    p = permissions("tracker", Catalog("acme"))
    assert "acme.run.recorded" in p.publish and "run.recorded" not in p.publish
    assert "$JS.API.>" in p.publish  # the server's own subjects keep their names


def test_settings_log_in_with_a_user_and_its_own_inbox() -> None:
    s = TallySettings(nats_user="tracker", nats_password="pw")
    options = s.nats_options()
    assert (options["user"], options["password"], options["inbox_prefix"]) == (
        "tracker",
        "pw",
        "_INBOX_tracker",
    )
    assert "pw" not in repr(s)  # a secret, shown as **********
    assert TallySettings().nats_options() == {}


def test_secrets_init_writes_every_password_once(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    runner = CliRunner()
    assert runner.invoke(app, ["secrets", "init", "--env-file", str(env)]).exit_code == 0
    values = read_env(env)
    for role in ROLES:
        assert values[password_variable(role)][0].isalpha()
    assert {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "REDIS_PASSWORD"} <= set(values)
    assert len(set(values.values())) == len(values)  # no password shared
    assert env.stat().st_mode & 0o077 == 0
    again = runner.invoke(app, ["secrets", "init", "--env-file", str(env)])
    assert again.exit_code == 2 and read_env(env) == values  # never overwritten silently
    creds = runner.invoke(app, ["nats", "creds", "agent", "--env-file", str(env)])
    assert creds.stdout.splitlines() == [
        "TALLY_NATS_USER=agent",
        f"TALLY_NATS_PASSWORD={values['TALLY_NATS_PASSWORD_AGENT']}",
    ]


def test_the_committed_authorization_block_matches_the_generator() -> None:
    committed = REPO_ROOT / "deploy" / "nats" / "auth.conf"
    assert committed.read_text() == server_config("", auth_only=True), (
        "deploy/nats/auth.conf is stale: run "
        "`uv run tally nats config --auth-only -o deploy/nats/auth.conf`"
    )
    assert "jetstream" not in committed.read_text()
