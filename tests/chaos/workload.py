"""Runs as agents report them, and the drill's own sums to check Tally's figures against.

Each run is reserved through ``quota.reserve`` first, started, fed worker calls whose
usage comes in the shapes providers really send (Anthropic, OpenAI chat and responses,
Gemini), a verification and phase marks, and finished with its ``event_count``. The drill
keeps, per run, what it put in: tokens by kind and the number of events
(:mod:`tests.chaos.checks` compares what Tally stored with them).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tally.client import TallyClient
from tally.errors import PermanentError, StepTimeout
from tally.events import (
    ReserveReply,
    ReserveRequest,
    RunEvent,
    RunFinished,
    RunStarted,
    new_id,
)
from tally.settings import CONFIG_DIR
from tests.chaos.fleet import eventually

#: The subscription the drills reserve on: counted, never limited.
SUBSCRIPTION = "drill"
KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def subscriptions_file(workdir: Path) -> Path:
    """The shipped subscriptions plus the drills' own, for ``TALLY_QUOTA_SUBSCRIPTIONS_PATH``."""
    shipped = yaml.safe_load((CONFIG_DIR / "subscriptions.yaml").read_text())
    drill = {"name": SUBSCRIPTION, "kind": "payg", "enforcement": "soft", "limits": {}}
    shipped["subscriptions"].append(drill)
    path = workdir / "subscriptions.yaml"
    path.write_text(yaml.safe_dump(shipped))
    return path


def usage_payload(rng: random.Random) -> tuple[str, str, dict[str, Any], dict[str, int]]:
    """A worker call's model, provider, usage payload and its counts as Tally should read
    them (``input_tokens`` without cache reads or writes)."""
    n = {
        "input_tokens": rng.randint(50, 4000),
        "output_tokens": rng.randint(10, 2000),
        "cache_read_tokens": rng.choice((0, rng.randint(1, 8000))),
        "cache_write_tokens": 0,
    }
    shape = rng.randrange(4)
    if shape == 0:  # Anthropic: cache reads and writes beside the input
        n["cache_write_tokens"] = rng.choice((0, rng.randint(1, 3000)))
        payload = {
            "input_tokens": n["input_tokens"],
            "output_tokens": n["output_tokens"],
            "cache_read_input_tokens": n["cache_read_tokens"],
            "cache_creation_input_tokens": n["cache_write_tokens"],
        }
        return "claude-sonnet-4", "anthropic", payload, n
    prompt = n["input_tokens"] + n["cache_read_tokens"]  # the others count cache inside
    if shape == 1:
        payload = {
            "prompt_tokens": prompt,
            "completion_tokens": n["output_tokens"],
            "total_tokens": prompt + n["output_tokens"],
            "prompt_tokens_details": {"cached_tokens": n["cache_read_tokens"]},
        }
        return "gpt-5", "openai", payload, n
    if shape == 2:
        payload = {
            "input_tokens": prompt,
            "output_tokens": n["output_tokens"],
            "total_tokens": prompt + n["output_tokens"],
            "input_tokens_details": {"cached_tokens": n["cache_read_tokens"]},
            "output_tokens_details": {"reasoning_tokens": n["output_tokens"] // 3},
        }
        return "gpt-5-mini", "openai", payload, n
    payload = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": n["output_tokens"],
        "cachedContentTokenCount": n["cache_read_tokens"],
        "totalTokenCount": prompt + n["output_tokens"],
    }
    return "gemini-2.5-flash", "google", payload, n


@dataclass
class PlannedRun:
    """One run's messages and the drill's own sums of what they carry."""

    run_id: str
    task_id: str
    reservation_id: str
    workspace: str
    events: list[RunEvent]
    sums: dict[str, int]
    calls: int

    @property
    def total_tokens(self) -> int:
        return sum(self.sums.values())


def plan(runs_n: int, events_per_run: int, *, workspace: str, seed: int = 9) -> list[PlannedRun]:
    """``runs_n`` runs of ``events_per_run`` events each (phase marks, a verification,
    the rest worker calls)."""
    rng = random.Random(seed)
    out = []
    tag = new_id()[:8]
    for r in range(runs_n):
        run_id = f"drill-{tag}-{r:04d}"
        sums = dict.fromkeys(KINDS, 0)
        at = T0 + timedelta(minutes=r)
        events = [
            RunEvent(
                run_id=run_id,
                workspace=workspace,
                at=at,
                detail={"kind": "phase_start", "phase": "implement"},
            )
        ]
        calls = events_per_run - 3
        for i in range(calls):
            model, provider, payload, counts = usage_payload(rng)
            for k in KINDS:
                sums[k] += counts[k]
            detail = {
                "kind": "worker_call",
                "worker": "coder",
                "model": model,
                "provider": provider,
                "usage": payload,
                "latency_ms": rng.randint(100, 9000),
            }
            events.append(
                RunEvent(
                    run_id=run_id,
                    workspace=workspace,
                    at=at + timedelta(seconds=i + 1),
                    detail=detail,
                )
            )
        end = at + timedelta(seconds=calls + 2)
        events.append(
            RunEvent(
                run_id=run_id,
                workspace=workspace,
                at=end,
                detail={"kind": "verification", "command": "pytest -q", "passed": True},
            )
        )
        events.append(
            RunEvent(
                run_id=run_id,
                workspace=workspace,
                at=end,
                detail={"kind": "phase_end", "phase": "implement"},
            )
        )
        out.append(
            PlannedRun(run_id, f"task-{run_id}", f"res-{run_id}", workspace, events, sums, calls)
        )
    return out


@dataclass
class Publisher:
    """Publishes planned runs, a few at a time; ``events`` counts run events sent so far."""

    client: TallyClient
    lanes: int = 6
    events: int = 0
    done: list[str] = field(default_factory=list)
    finished: bool = False
    #: error replies to reservations (asked again)
    errors: list[str] = field(default_factory=list)
    #: run events per second at most (agents report over time, not in one burst)
    rate: float | None = None
    _t0: float = 0.0

    async def reserve(self, run: PlannedRun) -> None:
        """Reserve the run's quota, asking again (same id: idempotent) while quota is down."""
        request = ReserveRequest(
            subscription=SUBSCRIPTION,
            tokens=run.total_tokens,
            cost_usd=0.0,
            reservation_id=run.reservation_id,
            task_id=run.task_id,
            ttl_s=4 * 3600,
        )
        for _ in range(240):
            try:
                reply = await self.client.request(request, ReserveReply, step="quota", timeout=2.0)
            except StepTimeout:
                await asyncio.sleep(0.5)
                continue
            except PermanentError as exc:
                # Quota answers a failed ledger write (Postgres down) with an error reply;
                # the reservation id makes asking again safe.
                self.errors.append(str(exc))
                await asyncio.sleep(0.5)
                continue
            if not reply.ok:
                raise AssertionError(f"reservation refused: {reply.reason}")
            return
        raise AssertionError(f"quota never answered the reservation of {run.run_id}")

    async def publish_run(self, run: PlannedRun) -> None:
        await self.reserve(run)
        c = self.client
        await c.publish(
            RunStarted(
                run_id=run.run_id,
                task_id=run.task_id,
                workspace=run.workspace,
                model="claude-sonnet-4",
                reservation_id=run.reservation_id,
                started_at=run.events[0].at,
            )
        )
        for i in range(0, len(run.events), 25):
            chunk = run.events[i : i + 25]
            if self.rate:
                ahead = self.events - self.rate * (time.monotonic() - self._t0)
                if ahead > 0:
                    await asyncio.sleep(ahead / self.rate)
            await asyncio.gather(*(c.publish(e) for e in chunk))
            self.events += len(chunk)
        await c.publish(
            RunFinished(
                run_id=run.run_id,
                task_id=run.task_id,
                workspace=run.workspace,
                outcome="complete",
                success=True,
                finished_at=run.events[-1].at + timedelta(seconds=1),
                reservation_id=run.reservation_id,
                event_count=len(run.events),
            )
        )
        self.done.append(run.run_id)

    async def reached(self, events: float) -> None:
        """Return once ``events`` run events have been published (or all of them)."""
        await eventually(
            lambda: self._reached(events), timeout=3600, what=f"{events:.0f} events", every=0.05
        )

    async def _reached(self, events: float) -> bool:
        return self.events >= events or self.finished

    async def publish(self, planned: list[PlannedRun]) -> None:
        self._t0 = time.monotonic() - self.events / self.rate if self.rate else 0.0
        queue: asyncio.Queue[PlannedRun] = asyncio.Queue()
        for run in planned:
            queue.put_nowait(run)

        async def lane() -> None:
            while not queue.empty():
                await self.publish_run(queue.get_nowait())

        try:
            await asyncio.gather(*(lane() for _ in range(self.lanes)))
        finally:
            self.finished = True
