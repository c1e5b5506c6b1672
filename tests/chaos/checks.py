"""What a drill checks after the fault: Tally's figures against the drill's own sums.

Postgres (``run_events``, ``token_usage``, ``runs.totals``, ``quota_ledger``) and the quota
service's counter are compared with what the planned runs carried
(:mod:`tests.chaos.workload`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.client import TallyClient
from tally.db.tables import quota_ledger, run_events, runs, token_usage
from tally.events import UsageReply, UsageRequest
from tests.chaos.workload import KINDS, SUBSCRIPTION, PlannedRun


@dataclass
class Outcome:
    """What a drill's runs came to: the table's figures and the details behind them."""

    published: int
    stored: int
    lost: int
    duplicated: int
    wrong: int
    notes: list[str]

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0


async def _facts(engine: AsyncEngine, planned: list[PlannedRun]) -> dict[str, Any]:
    ids = [r.run_id for r in planned]
    res_ids = [r.reservation_id for r in planned]
    async with engine.connect() as conn:
        events = await conn.execute(
            select(run_events.c.run_id, run_events.c.event_id).where(run_events.c.run_id.in_(ids))
        )
        usage = await conn.execute(
            select(
                token_usage.c.run_id,
                func.count(),
                *(func.sum(getattr(token_usage.c, k)) for k in KINDS),
                func.sum(token_usage.c.cost_micros),
            )
            .where(token_usage.c.run_id.in_(ids))
            .group_by(token_usage.c.run_id)
        )
        totals = await conn.execute(
            select(runs.c.run_id, runs.c.totals).where(runs.c.run_id.in_(ids))
        )
        ledger = await conn.execute(
            select(quota_ledger.c.reservation_id, quota_ledger.c.tokens, quota_ledger.c.cost_micros)
            .where(quota_ledger.c.reservation_id.in_(res_ids))
            .where(quota_ledger.c.op.in_(("settle", "resettle")))
        )
        stored: dict[str, list[str]] = {}
        for run_id, event_id in events:
            stored.setdefault(run_id, []).append(event_id)
        settled: dict[str, tuple[int, int]] = {}
        for rid, tokens, micros in ledger:  # per reservation: the largest cumulative settle
            settled[rid] = max(settled.get(rid, (0, 0)), (int(tokens), int(micros or 0)))
        return {
            "stored": stored,
            "usage": {row[0]: row[1:] for row in usage},
            "totals": {run_id: t for run_id, t in totals},
            "settled": settled,
        }


def _run_errors(run: PlannedRun, f: dict[str, Any]) -> list[str]:
    """What is wrong with one run's figures (empty when everything matches)."""
    errors = []
    usage = f["usage"].get(run.run_id)
    if usage is None:
        return ["no token_usage rows"]
    calls, *kinds, cost = usage
    if calls != run.calls or dict(zip(KINDS, map(int, kinds), strict=True)) != run.sums:
        errors.append(f"token_usage {calls} calls {kinds} != {run.calls} {run.sums}")
    totals = f["totals"].get(run.run_id) or {}
    tokens = totals.get("tokens") or {}
    if {k: tokens.get(k) for k in KINDS} != run.sums:
        errors.append(f"runs.totals tokens {tokens} != {run.sums}")
    if (totals.get("worker_calls"), totals.get("event_count")) != (run.calls, len(run.events)):
        errors.append(
            f"runs.totals counts {totals.get('worker_calls')}/{totals.get('event_count')}"
        )
    cost = int(cost or 0)  # money is integer micro-dollars: compared exactly
    if totals.get("cost_micros") != cost:
        errors.append(f"runs.totals cost {totals.get('cost_micros')} != token_usage {cost}")
    tokens_settled, micro_settled = f["settled"].get(run.reservation_id, (None, None))
    if tokens_settled != run.total_tokens:
        errors.append(f"ledger settled {tokens_settled} tokens != {run.total_tokens}")
    elif micro_settled != cost:
        errors.append(f"ledger settled {micro_settled} micro-USD != token_usage {cost}")
    return errors


async def converged(engine: AsyncEngine, planned: list[PlannedRun]) -> bool:
    """Whether every run's figures already match the drill's sums."""
    f = await _facts(engine, planned)
    return all(not _run_errors(r, f) for r in planned)


async def check(
    engine: AsyncEngine, planned: list[PlannedRun], client: TallyClient | None = None
) -> Outcome:
    """Compare what is stored with what was published.

    Returns:
        published/stored/lost/duplicated count run events (rows of ``run_events`` and
        ``token_usage``); ``wrong`` counts runs whose totals, token rows or quota
        settlement differ from the drill's sums, plus one if the quota service's counter
        for the drill subscription differs from the ledger.
    """
    f = await _facts(engine, planned)
    published = {e.event_id for r in planned for e in r.events}
    rows = [i for ids in f["stored"].values() for i in ids]
    stored = published & set(rows)
    extra_usage = sum(
        max(0, int(u[0]) - r.calls) for r in planned if (u := f["usage"].get(r.run_id))
    )
    duplicated = (len(rows) - len(stored)) + extra_usage
    notes: list[str] = []
    wrong = 0
    for run in planned:
        errors = _run_errors(run, f)
        if errors:
            wrong += 1
            if len(notes) < 5:
                notes.append(f"{run.run_id}: {'; '.join(errors)}")
    ledger_tokens = sum(t for t, _ in f["settled"].values())
    ledger_micro = sum(m for _, m in f["settled"].values())
    usage_tokens = sum(sum(int(x) for x in u[1:5]) for u in f["usage"].values())
    usage_micro = sum(int(u[5] or 0) for u in f["usage"].values())
    notes.append(
        f"ledger settled {ledger_tokens:,} tokens / {ledger_micro:,} micro-USD; "
        f"token_usage {usage_tokens:,} tokens / {usage_micro:,} micro-USD"
    )
    if client is not None:
        reply = await client.request(UsageRequest(), UsageReply, step="quota")
        sub = next(s for s in reply.subscriptions if s["subscription"] == SUBSCRIPTION)
        used = sub["day"]["used_tokens"]
        notes.append(f"quota counter: {used:,} tokens used")
        if used != ledger_tokens:
            wrong += 1
            notes.append(f"quota counter {used:,} != ledger {ledger_tokens:,}")
    return Outcome(len(published), len(stored), len(published - stored), duplicated, wrong, notes)
