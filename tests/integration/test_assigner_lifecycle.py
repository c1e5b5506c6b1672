"""The assigner over a task's life: deferral and retry, escalation, A/B arms, batch plans,
recommendations. Against real NATS, Postgres and Redis, with the quota service running."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import typer
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from services.assigner.experiments import pick_arm
from tally.cli.assign import assign as assign_cmd
from tally.cli.assign import experiment as experiment_cli
from tally.db.tables import assigner_tasks, assignments, quota_ledger
from tally.events import (
    Estimate,
    EstimateRequest,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    RunRecorded,
    TaskAssigned,
    TaskDeferred,
    TaskEstimated,
    new_id,
)
from tally.events.assign import Experiment, RecommendReply, RecommendRequest
from tally.registry import TIER_ORDER, ModelRegistry
from tally.settings import CONFIG_DIR

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

from tests.integration import builders as build

pytestmark = pytest.mark.integration

REGISTRY = ModelRegistry(CONFIG_DIR / "models.yaml")
SUBSCRIPTIONS = sorted({m.subscription for m in REGISTRY.models()})
#: Each subscription's daily tokens; a task below needs 48,000.
DAY_TOKENS = 60_000


@pytest.fixture
def tight(tmp_path: Path) -> Path:
    """Every subscription of the registry, hard-limited to DAY_TOKENS a day."""
    path = tmp_path / "subscriptions.yaml"
    subs = [
        {"name": n, "kind": "payg", "limits": {"day": {"tokens": DAY_TOKENS}}}
        for n in SUBSCRIPTIONS
    ]
    path.write_text(yaml.safe_dump({"subscriptions": subs}))
    return path


async def block_every_subscription(h: Harness, tokens: int = 30_000) -> list[str]:
    """Reserve ``tokens`` in each subscription, leaving too little for one task."""
    ids = []
    for name in SUBSCRIPTIONS:
        reply = await h.client.request(
            ReserveRequest(subscription=name, tokens=tokens, cost_usd=0, reservation_id=new_id()),
            ReserveReply,
            step="quota",
        )
        assert reply.ok
        ids.append(reply.reservation_id)
    return ids


async def release(h: Harness, ids: list[str]) -> None:
    for rid in ids:
        await h.client.request(ReleaseRequest(reservation_id=rid), ReleaseReply, step="quota")


async def task_status(h: Harness, task_id: str) -> str | None:
    t = assigner_tasks.c
    stmt = select(t.status).where(t.namespace == h.settings.namespace, t.task_id == task_id)
    return await h.scalar(stmt)  # type: ignore[no-any-return]


async def test_a_deferred_task_is_assigned_once_quota_frees(
    harness: Harness, workspace: str, tight: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=tight)
    # A long timer: only the quota-freed notice can bring the retry in time.
    await h.start("assigner", retry_interval_s=600)
    blockers = await block_every_subscription(h)
    task = estimated(workspace)
    deferred: TaskDeferred = await h.answer_to(task, TaskDeferred)
    assert "over_limit" in deferred.reason
    assert await task_status(h, task.task_id) == "deferred"

    async with h.client.watch(TaskAssigned, lambda e: e.task_id == task.task_id) as q:
        await release(h, blockers)
        assigned = await h.next_item(q, timeout=10, what="the retried assignment")
    assert assigned.attempt == 1 and assigned.reservation.tokens == 48_000
    assert await task_status(h, task.task_id) == "assigned"


async def test_a_deferred_task_that_fails_its_retry_holds_up_no_other_and_is_counted(
    harness: Harness, workspace: str, tight: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.assigner.assigner import Assigner
    from tally import metrics

    h = harness
    await h.start("quota", subscriptions_path=tight)
    await h.start("assigner", retry_interval_s=600)
    blockers = await block_every_subscription(h)
    broken, fine = estimated(workspace), estimated(workspace)
    for task in (broken, fine):
        await h.answer_to(task, TaskDeferred)
    real_assign = Assigner.assign

    async def assign(self: Assigner, e: TaskEstimated, *args: Any, **kw: Any) -> Any:
        if e.task_id == broken.task_id:
            raise RuntimeError("simulated failure retrying one task")
        return await real_assign(self, e, *args, **kw)

    monkeypatch.setattr(Assigner, "assign", assign)
    crashes = metrics.CONSUMER_RESTARTS.labels("assigner", "deferred-retrier")
    before = crashes._value.get()
    async with h.client.watch(TaskAssigned, lambda e: e.task_id == fine.task_id) as q:
        await release(h, blockers)
        await h.next_item(q, timeout=10, what="the other deferred task's assignment")

    async def counted() -> bool:
        return crashes._value.get() > before

    await h.eventually(counted, what="the failed retry counted as a crash of the retrier")
    assert await task_status(h, broken.task_id) == "deferred"


async def test_deferred_tasks_survive_an_assigner_restart(
    harness: Harness, workspace: str, tight: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=tight)
    assigner = await h.start("assigner", retry_interval_s=600)
    blockers = await block_every_subscription(h)
    task = estimated(workspace)
    await h.answer_to(task, TaskDeferred)

    await assigner.stop()
    h.apps.remove(assigner)
    await release(h, blockers)  # nobody hears this notice

    async with h.client.watch(TaskAssigned, lambda e: e.task_id == task.task_id) as q:
        await h.start("assigner", retry_interval_s=600)
        assigned = await h.next_item(q, timeout=10, what="the assignment after restart")
    assert assigned.task_id == task.task_id


async def test_a_failed_run_escalates_to_a_stronger_model_until_attempts_run_out(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner", strategy="cheapest_capable", max_attempts=3)
    task = estimated(workspace)
    first: TaskAssigned = await h.answer_to(task, TaskAssigned)
    seen = [first]
    for attempt in (2, 3):
        async with h.client.watch(
            TaskAssigned, lambda e, n=attempt: e.task_id == task.task_id and e.attempt == n
        ) as q:
            await h.client.publish(failed_run(seen[-1]))
            seen.append(await h.next_item(q, what=f"attempt {attempt}"))

    first_tier, second_tier = (TIER_ORDER.index(REGISTRY.get(a.model).tier) for a in seen[:2])  # type: ignore[union-attr]
    assert second_tier < first_tier  # a stronger tier
    assert len({a.model for a in seen}) == 3  # a model that failed is never tried again
    assert "escalated after" in seen[1].reason

    # The failed attempt's reservation was settled before the next one was reserved.
    q = quota_ledger.c
    for failed, nxt in itertools.pairwise(seen):
        settled = await h.scalar(
            select(q.id).where(
                q.reservation_id == failed.reservation.reservation_id, q.op == "settle"
            )
        )
        reserved = await h.scalar(
            select(q.id).where(
                q.reservation_id == nxt.reservation.reservation_id, q.op == "reserve"
            )
        )
        assert settled is not None and settled < reserved

    await h.client.publish(failed_run(seen[-1]))
    await h.drained("assigner", "run.recorded")
    assert await task_status(h, task.task_id) == "exhausted"
    count = (
        select(func.count()).select_from(assignments).where(assignments.c.task_id == task.task_id)
    )
    assert await h.scalar(count) == 3


async def test_recommend_names_the_pick_without_reserving(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner")
    await h.start("estimator")
    urgent = estimated(workspace, value=92, band="complex").estimate
    reply = await h.client.request(
        RecommendRequest(estimate=urgent, workspace=workspace), RecommendReply, step="assigner"
    )
    assert REGISTRY.get(reply.model).tier == "premium"  # type: ignore[arg-type,union-attr]
    assert reply.runner_up and reply.runner_up != reply.model
    assert reply.strategy == "maximize_value" and "capability" in reply.reason
    ledger = select(func.count()).select_from(quota_ledger)
    assert await h.scalar(ledger.where(quota_ledger.c.reservation_id.like(f"%{new_id()}%"))) == 0

    est = await h.client.request(
        EstimateRequest(title="Fix the login redirect", workspace=workspace),
        Estimate,
        step="estimator",
    )
    assert est.recommended_model in {m.name for m in REGISTRY.models()}


def json_out(result: Result) -> Any:
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


async def cli(h: Harness, app: Any, *args: str) -> Result:
    env = {
        "TALLY_NATS_URL": h.settings.nats_url,
        "TALLY_NAMESPACE": h.settings.namespace,
        "TALLY_TIMEOUT_S": "5",
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_an_experiment_splits_tasks_by_id_and_records_the_arm(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner")
    created = await cli(
        h,
        experiment_cli,
        "create",
        "cheap-vs-best",
        "--variant",
        "A:strategy=quality_first",
        "--variant",
        "B:strategy=cheapest_capable",
        "--split",
        "50/50",
        "--json",
    )
    assert created.exit_code == 0, created.output
    exp = Experiment.model_validate(json_out(created)["experiments"][0])

    arms = set()
    for _ in range(6):
        task = estimated(workspace)
        assigned: TaskAssigned = await h.answer_to(task, TaskAssigned)
        variant = pick_arm(exp, task.task_id)
        assert assigned.arm == f"cheap-vs-best:{variant.name}"
        assert assigned.strategy == variant.strategy
        row = select(assignments.c.arm).where(assignments.c.task_id == task.task_id)
        assert await h.scalar(row) == assigned.arm
        arms.add(variant.name)

    bad = await cli(
        h,
        experiment_cli,
        "create",
        "x",
        "--variant",
        "A:strategy=nope",
        "--variant",
        "B:strategy=learned",
    )
    assert bad.exit_code == 2 and "nope" in bad.output


async def test_batch_assignment_prints_the_plan_then_publishes_it(
    harness: Harness, workspace: str, tight: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=tight)
    # Deferred tasks wait for the batch: no background retries.
    await h.start("assigner", retry_deferred=False)
    blockers = await block_every_subscription(h, tokens=DAY_TOKENS)
    valuable, minor = estimated(workspace, value=80.0), estimated(workspace, value=20.0)
    for t in (valuable, minor):
        await h.answer_to(t, TaskDeferred)
    await release(h, blockers[:1])  # room for exactly one task in one subscription

    app = typer.Typer()
    app.command()(assign_cmd)
    dry = await cli(h, app, "--pending", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    out = json_out(dry)
    assert out["committed"] is None
    plan = {i["task_id"]: i for i in out["plan"]["items"]}
    assert plan[valuable.task_id]["model"] is not None
    assert plan[valuable.task_id]["subscription"] == SUBSCRIPTIONS[0]
    assert plan[minor.task_id]["model"] is None
    assert out["plan"]["method"] == "milp" and out["plan"]["total_value"] == 80
    assert await task_status(h, valuable.task_id) == "deferred"  # a dry run publishes nothing

    async with h.client.watch(TaskAssigned, lambda e: e.task_id == valuable.task_id) as q:
        shown = await cli(h, app, "--pending")
        assert shown.exit_code == 0, shown.output
        assert "plan (milp)" in shown.stdout and "published" in shown.stdout
        assigned = await h.next_item(q, what="the batch assignment")
    assert assigned.model == plan[valuable.task_id]["model"]
    assert await task_status(h, valuable.task_id) == "assigned"
    assert await task_status(h, minor.task_id) == "deferred"


def estimated(workspace: str, *, value: float = 45.0, band: str = "medium") -> TaskEstimated:
    return build.estimated(workspace, priority="P1", value=value, band=band)


def failed_run(a: TaskAssigned) -> RunRecorded:
    return build.run_of(a, success=False, minutes=12, tokens=(20_000, 1_000))
