"""Every token priced: real model ids, unknown models never $0, money exact in micros.

The tracker prices worker calls by the registry, then the genai-prices catalogue; a call
whose model neither knows is stored with ``cost_known = false`` and quota charges it at the
subscription's fallback price. The quota ledger settles exactly what ``token_usage`` sums.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from tally import metrics
from tally.db.tables import quota_ledger, runs, token_usage
from tally.events import (
    QuotaSettled,
    ReserveReply,
    ReserveRequest,
    RunEvent,
    RunFinished,
    RunRecorded,
    RunStarted,
    new_id,
)
from tally.settings import CONFIG_DIR
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
#: An Anthropic usage: 500 uncached, 2,000 cache reads, 100 cache writes, 200 out.
ANTHROPIC_USAGE = {
    "input_tokens": 500,
    "output_tokens": 200,
    "cache_read_input_tokens": 2_000,
    "cache_creation_input_tokens": 100,
}
OPENAI_USAGE = {"prompt_tokens": 1_000, "completion_tokens": 300, "total_tokens": 1_300}
#: a model no registry or catalogue knows
UNKNOWN = "acme-inhouse-coder-7b"


def registry_prices(model: str) -> dict[str, float]:
    registry = yaml.safe_load((CONFIG_DIR / "models.yaml").read_text())
    return next(m["prices"] for m in registry["models"] if m["name"] == model)


def call(run_id: str, ws: str, minutes: int, model: str, usage: dict[str, Any]) -> RunEvent:
    return RunEvent(
        run_id=run_id,
        workspace=ws,
        at=T0 + timedelta(minutes=minutes),
        detail={"kind": "worker_call", "model": model, "usage": usage},
    )


async def run_to_record(
    h: Harness, ws: str, calls: list[tuple[str, dict[str, Any]]], reservation_id: str | None = None
) -> RunRecorded:
    """Publish a run with ``calls`` (model, usage) and return its run.recorded."""
    run_id, task_id = f"run-{new_id()}", f"task-{new_id()}"
    started = RunStarted(
        run_id=run_id, task_id=task_id, workspace=ws, started_at=T0, reservation_id=reservation_id
    )
    events = [call(run_id, ws, i + 1, model, usage) for i, (model, usage) in enumerate(calls)]
    finished = RunFinished(
        run_id=run_id,
        task_id=task_id,
        workspace=ws,
        outcome="complete",
        success=True,
        finished_at=T0 + timedelta(hours=1),
        event_count=len(events),
        reservation_id=reservation_id,
    )
    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as q:
        for e in (started, *events, finished):
            await h.client.publish(e)
        return await h.next_item(q, what="run.recorded")


async def test_provider_ids_are_priced_and_an_unknown_model_is_never_zero(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    await h.start("tracker")
    unpriced_before = metrics.UNPRICED_USAGE.of("tracker")._value.get()
    recorded = await run_to_record(
        h,
        ws,
        [
            ("claude-sonnet-4-20250514", ANTHROPIC_USAGE),  # what Anthropic's API answers
            ("anthropic/claude-sonnet-4", ANTHROPIC_USAGE),  # LiteLLM / OpenRouter style
            ("gpt-4o-2024-08-06", OPENAI_USAGE),  # not in the registry: the catalogue
            (UNKNOWN, OPENAI_USAGE),
        ],
    )
    rows = {
        r.model: r
        for r in await h.rows(select(token_usage).where(token_usage.c.run_id == recorded.run_id))
    }
    p = registry_prices("claude-sonnet-4")
    sonnet = round(
        500 * p["input"] + 2_000 * p["cached_input"] + 100 * p["cache_write"] + 200 * p["output"]
    )
    assert rows["claude-sonnet-4-20250514"].cost_micros == sonnet
    assert rows["anthropic/claude-sonnet-4"].cost_micros == sonnet
    gpt4o = rows["gpt-4o-2024-08-06"]
    assert gpt4o.cost_known and gpt4o.cost_micros == 1_000 * 2.5 + 300 * 10  # $2.50 / $10
    unknown = rows[UNKNOWN]
    assert unknown.cost_known is False and unknown.cost_micros is None
    assert metrics.UNPRICED_USAGE.of("tracker")._value.get() == unpriced_before + 1

    assert recorded.cost_micros == 2 * sonnet + 5_500
    assert recorded.cost_usd == recorded.cost_micros / 1e6
    assert recorded.unpriced_tokens.input_tokens == 1_000
    assert recorded.unpriced_tokens.output_tokens == 300


async def test_a_usage_nobody_can_read_is_dead_lettered_with_its_keys(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    await h.start("tracker")
    run_id = f"run-{new_id()}"
    unreadable = call(run_id, ws, 1, "gpt-5", {"tokens_in": 10, "tokens_out": 2})
    async with h.dead_letters("tracker") as letters:
        await h.client.publish(unreadable)
        letter = await h.next_item(letters, what="a dead letter")

    assert json.loads(letter.payload)["event_id"] == unreadable.event_id
    assert "no token count recognised" in letter.error
    assert "tokens_in" in letter.error and "tokens_out" in letter.error
    await h.drained("tracker", "run.event")
    stored = await h.scalar(
        select(func.count()).select_from(token_usage).where(token_usage.c.run_id == run_id)
    )
    assert stored == 0  # never a row of zero tokens


@pytest.fixture
def payg(tmp_path: Path) -> Path:
    """The shipped api-payg subscription (a dollar limit) on its own."""
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "subscriptions": [
                    {
                        "name": "api-payg",
                        "kind": "payg",
                        "limits": {"day": {"usd": 50}, "month": {"usd": 1000}},
                    }
                ]
            }
        )
    )
    return path


async def test_quota_charges_unpriced_tokens_at_the_fallback_and_matches_token_usage(
    harness: Harness, workspace: str, payg: Path
) -> None:
    h, ws = harness, workspace
    await h.start("tracker")
    await h.start("quota", subscriptions_path=payg)
    held = await h.client.request(
        ReserveRequest(
            subscription="api-payg", tokens=10_000, cost_usd=0.5, reservation_id=f"res-{new_id()}"
        ),
        ReserveReply,
        step="quota",
    )
    assert held.ok
    async with h.client.watch(
        QuotaSettled, lambda s: s.reservation_id == held.reservation_id
    ) as settled_q:
        recorded = await run_to_record(
            h,
            ws,
            [("gpt-5-mini", OPENAI_USAGE), (UNKNOWN, OPENAI_USAGE), ("gpt-5-mini", OPENAI_USAGE)],
            reservation_id=held.reservation_id,
        )
        settled = await h.next_item(settled_q, what="quota.settled")

    # api-payg's models are gpt-5-mini ($0.25/$2) and gemini-2.5-flash ($0.30/$2.50): the
    # unknown model's tokens cost the higher of each.
    fallback = round(1_000 * 0.30 + 300 * 2.50)
    known = 2 * round(1_000 * 0.25 + 300 * 2.0)
    assert recorded.cost_micros == known
    assert settled.fallback_cost_micros == fallback > 0
    assert settled.actual_cost_micros == known + fallback
    assert settled.actual_tokens == 3 * 1_300

    # The ledger settles, in integer micros, exactly what token_usage sums plus the fallback.
    row = (
        await h.rows(
            select(quota_ledger).where(
                quota_ledger.c.reservation_id == held.reservation_id, quota_ledger.c.op == "settle"
            )
        )
    )[0]
    stored = await h.scalar(
        select(func.sum(token_usage.c.cost_micros)).where(token_usage.c.run_id == recorded.run_id)
    )
    assert row.cost_micros - row.fallback_micros == int(stored) == known
    assert row.fallback_micros == fallback


async def test_reports_show_exact_money_never_a_float_artefact(
    harness: Harness, workspace: str
) -> None:
    """Three calls of $0.0195 each: floats sum to 0.058499999999999996, micros to 58,500."""
    h, ws = harness, workspace
    await h.start("tracker")
    reporter = await h.start("reporter")
    run_id, task_id = f"run-{new_id()}", f"task-{new_id()}"
    calls = [
        RunEvent(
            run_id=run_id,
            workspace=ws,
            at=T0 + timedelta(minutes=i + 1),
            detail={
                "kind": "worker_call",
                "model": "gpt-5",
                "usage": OPENAI_USAGE,
                "cost_usd": 0.0195,
            },
        )
        for i in range(3)
    ]
    finished = RunFinished(
        run_id=run_id,
        task_id=task_id,
        workspace=ws,
        outcome="complete",
        success=True,
        finished_at=T0 + timedelta(hours=1),
        event_count=3,
    )
    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as q:
        await h.client.publish(
            RunStarted(run_id=run_id, task_id=task_id, workspace=ws, started_at=T0)
        )
        for e in (*calls, finished):
            await h.client.publish(e)
        recorded = await h.next_item(q, what="run.recorded")
    assert (recorded.cost_micros, recorded.cost_usd) == (58_500, 0.0585)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        kpi = (await http.get(f"/runs/{run_id}/kpi")).json()
        tokens = (
            await http.get("/tokens", params={"since": "3000d", "by": "task", "workspace": ws})
        ).json()

    assert kpi["kpi"]["cost_micros"] == 58_500
    assert kpi["kpi"]["cost_usd"] == "0.0585"
    assert "($0.0585; tokens" in kpi["summary"][3]
    row = next(r for r in tokens["rows"] if r["key"] == task_id)
    assert (row["cost_micros"], row["cost_usd"], row["unpriced_calls"]) == (58_500, "0.0585", 0)
    assert "0.058499999999999996" not in json.dumps([kpi, tokens])


async def test_a_call_that_names_no_model_is_priced_as_its_runs(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    await h.start("tracker")
    run_id = f"run-{new_id()}"
    await h.client.publish(
        RunStarted(
            run_id=run_id,
            task_id=f"task-{new_id()}",
            workspace=ws,
            started_at=T0,
            model="claude-sonnet-4-20250514",
            provider="anthropic",
        )
    )
    await h.eventually(
        lambda: h.scalar(select(func.count()).select_from(runs).where(runs.c.run_id == run_id)),
        what="the run's row",
    )
    await h.client.publish(call(run_id, ws, 1, "", ANTHROPIC_USAGE))  # as the SDK used to
    row = await h.eventually(
        lambda: h.scalar(select(token_usage).where(token_usage.c.run_id == run_id)),
        what="the call's row",
    )
    rows = await h.rows(select(token_usage).where(token_usage.c.run_id == run_id))
    assert row and rows[0].model == "claude-sonnet-4-20250514"
    assert rows[0].cost_known and rows[0].cost_micros > 0
