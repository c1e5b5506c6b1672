"""The tracker under volume: a 10,000-event replay, every message delivered more than once.

Each message is published twice with the same ``Nats-Msg-Id`` (JetStream drops the copy),
and one in seven once more under another message id, which only the tracker's keys in
Postgres can recognise. Exactly the distinct events must be stored, and each run's
``run.recorded`` must carry the totals computed here by hand from the payloads.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import func, select

from tally.db.tables import run_events, token_usage
from tally.events import Event, RunEvent, RunFinished, RunRecorded, RunStarted, new_id
from tally.settings import CONFIG_DIR

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

RUNS = 4
EVENTS_PER_RUN = 2_500
#: One event in this many is delivered a third time, under a new message id.
REDELIVER_EVERY = 7
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PRICES = {
    m["name"]: m["prices"]
    for m in yaml.safe_load((CONFIG_DIR / "models.yaml").read_text())["models"]
}
#: Token kinds of a run's totals, and the count of a call each one sums.
KINDS = {
    "input_tokens": "fresh",
    "output_tokens": "output",
    "cache_read_tokens": "cache_read",
    "cache_write_tokens": "cache_write",
    "reasoning_tokens": "reasoning",
}
#: model -> provider, one per usage convention: cached input inside the prompt count
#: (OpenAI chat, Gemini) or beside it with cache writes (Anthropic).
MODELS = {"gpt-5": "openai", "claude-sonnet-4": "anthropic", "gemini-2.5-flash": "google"}


@dataclass
class Expected:
    """A run's totals, summed from the token counts each payload was built from."""

    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: each call priced exactly, rounded half to even to micro-dollars, then summed
    cost_micros: int = 0
    worker_calls: int = 0


def usage_payload(
    model: str, *, fresh: int, cache_read: int, cache_write: int, output: int, reasoning: int
) -> dict[str, Any]:
    """The provider's own usage payload for these counts (``fresh``: uncached input)."""
    if model == "gpt-5":
        return {
            "prompt_tokens": fresh + cache_read,
            "completion_tokens": output,
            "total_tokens": fresh + cache_read + output,
            "prompt_tokens_details": {"cached_tokens": cache_read},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    if model == "claude-sonnet-4":
        return {
            "input_tokens": fresh,
            "output_tokens": output,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        }
    return {  # Gemini reports thinking beside the candidates it extends
        "promptTokenCount": fresh + cache_read,
        "candidatesTokenCount": output - reasoning,
        "thoughtsTokenCount": reasoning,
        "cachedContentTokenCount": cache_read,
        "totalTokenCount": fresh + cache_read + output,
    }


def worker_call(rnd: random.Random, expected: Expected, at: datetime) -> dict[str, Any]:
    model = rnd.choice(list(MODELS))
    counts = {
        "fresh": rnd.randint(0, 20_000),
        "cache_read": rnd.randint(0, 50_000),
        "cache_write": rnd.randint(0, 4_000) if model == "claude-sonnet-4" else 0,
        "output": rnd.randint(1, 3_000),
    }
    counts["reasoning"] = 0 if model == "claude-sonnet-4" else rnd.randint(0, counts["output"])
    p = PRICES[model]
    expected.worker_calls += 1
    for kind, count_name in KINDS.items():
        expected.tokens[kind] += counts[count_name]
    exact = (
        counts["fresh"] * Decimal(str(p["input"]))
        + counts["output"] * Decimal(str(p["output"]))
        + counts["cache_read"] * Decimal(str(p["cached_input"]))
        + counts["cache_write"] * Decimal(str(p.get("cache_write", p["input"])))
    )  # a price per million tokens is micro-dollars per token
    expected.cost_micros += int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))
    return {
        "kind": "worker_call",
        "worker": rnd.choice(("coder", "reviewer")),
        "model": model,
        "provider": MODELS[model],
        "usage": usage_payload(model, **counts),
        "started_at": (at - timedelta(seconds=rnd.uniform(1, 30))).isoformat(),
        "finished_at": at.isoformat(),
        "phase": "implement",
    }


def run_timeline(
    rnd: random.Random, ws: str, run_id: str, started: datetime
) -> tuple[list[RunEvent], Expected]:
    """One run's events: half worker calls, the rest phases, verifications and notes."""
    expected = Expected()
    events = []
    at = started
    for _ in range(EVENTS_PER_RUN):
        at += timedelta(seconds=rnd.uniform(0.5, 3))
        roll = rnd.random()
        if roll < 0.5:
            detail = worker_call(rnd, expected, at)
        elif roll < 0.7:
            detail = {"kind": rnd.choice(("phase_start", "phase_end")), "phase": "implement"}
        elif roll < 0.85:
            detail = {"kind": "verification", "command": "pytest -q", "passed": rnd.random() < 0.8}
        else:
            detail = {"kind": "note", "text": f"step {rnd.randint(1, 10_000)} done"}
        events.append(RunEvent(run_id=run_id, workspace=ws, at=at, detail=detail))
    return events, expected


async def publish_all(h: Harness, events: list[Event]) -> int:
    """Publish each event twice under its id, every REDELIVER_EVERY-th once more under a
    new id. Returns how many copies JetStream reported as duplicates."""
    js = h.client.js
    acks = []
    for i, e in enumerate(events):
        subject, body = h.catalog.subject(type(e).subject), e.to_json()
        for _ in range(2):
            acks.append(await js.publish_async(subject, body, headers={"Nats-Msg-Id": e.event_id}))
        if i % REDELIVER_EVERY == 0:
            acks.append(await js.publish_async(subject, body, headers={"Nats-Msg-Id": new_id()}))
    return sum(bool(ack.duplicate) for ack in await asyncio.gather(*acks))


async def test_a_replayed_timeline_is_stored_once_with_exact_totals(
    harness: Harness, workspace: str
) -> None:
    h, rnd = harness, random.Random(20260302)
    starts: list[RunStarted] = []
    finishes: list[RunFinished] = []
    timeline: list[Event] = []
    expected: dict[str, Expected] = {}
    hours: dict[str, float] = {}
    for n in range(RUNS):
        run_id = f"vol-{n}-{new_id()[:8]}"
        started = T0 + timedelta(hours=n)
        events, expected[run_id] = run_timeline(rnd, workspace, run_id, started)
        finished = events[-1].at + timedelta(minutes=5)
        hours[run_id] = (finished - started).total_seconds() / 3600
        starts.append(
            RunStarted(
                run_id=run_id, task_id=f"task-{run_id}", workspace=workspace, started_at=started
            )
        )
        finishes.append(
            RunFinished(
                run_id=run_id,
                task_id=f"task-{run_id}",
                workspace=workspace,
                outcome="complete",
                success=True,
                finished_at=finished,
                event_count=EVENTS_PER_RUN,
            )
        )
        timeline.extend(events)
    await h.start("tracker")

    async with h.client.watch(RunRecorded, lambda r: r.run_id in expected) as recorded:
        # Runs start, their events arrive, runs finish: the order an agent publishes in.
        duplicates = await publish_all(h, [*starts, *timeline, *finishes])
        records = [await h.next_item(recorded, timeout=25, what="run.recorded") for _ in starts]

    distinct = len(starts) + len(timeline) + len(finishes)
    assert duplicates == distinct  # JetStream dropped every same-id copy
    stored = await h.scalar(count(run_events, workspace))
    assert stored == RUNS * EVENTS_PER_RUN
    calls = sum(e.worker_calls for e in expected.values())
    assert await h.scalar(count(token_usage, workspace)) == calls
    for r in records:
        want = expected[r.run_id]
        assert r.tokens.model_dump() == want.tokens
        assert r.cost_micros == want.cost_micros  # exactly: integers all the way
        assert r.worker_calls == want.worker_calls
        assert r.event_count == EVENTS_PER_RUN
        assert r.actual_hours == pytest.approx(hours[r.run_id], abs=1e-6)
    assert sorted(r.run_id for r in records) == sorted(expected)


def count(table: Any, workspace: str) -> Any:
    return select(func.count()).select_from(table).where(table.c.workspace == workspace)
