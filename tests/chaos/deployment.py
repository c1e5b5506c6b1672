"""A drill's Tally: the six services as their own processes in a namespace of their own,
and the row of the table a drill returns."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tally.client import TallyClient
from tally.db import create_engine
from tally.sandbox import sandbox
from tally.settings import TallySettings
from tests.chaos import workload
from tests.chaos.fleet import ROOT, Fleet, PrivatePostgres

#: Per-service settings that keep a drill to minutes: a killed consumer's messages come
#: back after 5 s instead of 30, and a finished run waits 10 s for late events.
FAST = {
    **{
        f"TALLY_{s}_ACK_WAIT_S": "5"
        for s in ("TRACKER", "QUOTA", "LEARNER", "REPORTER", "ASSIGNER", "ESTIMATOR")
    },
    "TALLY_TRACKER_SETTLE_WAIT_S": "10",
    "TALLY_QUOTA_SWEEP_INTERVAL_S": "5",
}


@dataclass
class Row:
    """One line of the table."""

    drill: str
    published: int
    stored: int
    lost: int
    duplicated: int
    wrong: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, then each drill's notes."""
    head = "| drill | published | stored | lost | duplicated | wrong totals | time |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.drill} | {r.published:,} | {r.stored:,} | {r.lost} | {r.duplicated} "
            f"| {r.wrong} | {r.seconds:.0f} s |"
        )
    for r in rows:
        lines.extend(f"- {r.drill}: {note}" for note in r.notes)
    return "\n".join(lines)


@dataclass
class Deployment:
    """A drill's running Tally: its settings, the fleet, a database engine."""

    settings: TallySettings
    fleet: Fleet
    engine: AsyncEngine

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[TallyClient]:
        s = self.settings
        async with TallyClient.connect(s.nats_url, namespace=s.namespace, source="drill") as c:
            yield c

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``tally ARGS`` against this deployment (exit status checked)."""
        return subprocess.run(
            [sys.executable, "-m", "tally.cli.main", *args],
            env=self.fleet.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    async def unhealthy(self) -> list[str]:
        """Services whose ``/healthz`` is not 200, with what they answered."""
        return [f"{n}={s}" for n, s in (await self.fleet.statuses()).items() if s != 200]


@contextlib.asynccontextmanager
async def deploy(
    base: TallySettings,
    workdir: Path,
    *,
    nats_url: str | None = None,
    pg: PrivatePostgres | None = None,
    redis_url: str | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """The six services, each its own process, in a fresh namespace (and database).

    Servers not given are the shared ones of ``base``; a private Postgres is migrated with
    ``tally db upgrade``.
    """
    urls = {"redis_url": redis_url or base.redis_url}
    if pg:
        urls["database_url"] = pg.url
    # The sandbox's own NATS connection stays on the shared server (it only provisions
    # and deletes the namespace's streams): a private server may be down for minutes.
    async with sandbox(base.model_copy(update=urls), prefix="ch", database=pg is None) as s:
        on = s.model_copy(update={"nats_url": nats_url}) if nats_url else s
        async with deploy_on(on, workdir, migrate=pg is not None, env=env) as d:
            yield d


@contextlib.asynccontextmanager
async def deploy_on(
    s: TallySettings, workdir: Path, *, migrate: bool = False, env: dict[str, str] | None = None
) -> AsyncIterator[Deployment]:
    """The six services, each its own process, on the servers and namespace of ``s``.

    Args:
        migrate: run ``tally db upgrade`` first (a database nobody has migrated yet).
        env: more ``TALLY_*`` settings for the services.
    """
    fleet_env = {
        "TALLY_NATS_URL": s.nats_url,
        "TALLY_DATABASE_URL": s.database_url,
        "TALLY_REDIS_URL": s.redis_url,
        "TALLY_NAMESPACE": s.namespace,
        "TALLY_QUOTA_SUBSCRIPTIONS_PATH": str(workload.subscriptions_file(workdir)),
        **FAST,
        **(env or {}),
    }
    fleet = Fleet(fleet_env, workdir / "logs")
    engine = create_engine(s.database_url)
    d = Deployment(s, fleet, engine)
    try:
        if migrate:
            d.cli("db", "upgrade")
        await fleet.start()
        yield d
    finally:
        fleet.stop()
        await engine.dispose()
