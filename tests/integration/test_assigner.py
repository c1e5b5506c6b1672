"""The assigner with the quota service, against real NATS, Postgres and Redis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from sqlalchemy import func, select

from tally.db.tables import assignments, quota_ledger
from tally.events import (
    TaskAssigned,
    TaskDeferred,
    utcnow,
)
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

from tests.integration.builders import estimated

pytestmark = pytest.mark.integration

REGISTRY = ModelRegistry(CONFIG_DIR / "models.yaml")


async def test_an_estimated_task_gets_a_model_and_a_reservation(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner")
    task = estimated(workspace)
    assigned: TaskAssigned = await h.answer_to(task, TaskAssigned)

    model = REGISTRY.get(assigned.model)
    assert model is not None
    assert (assigned.provider, assigned.subscription) == (model.provider, model.subscription)
    assert assigned.strategy == "maximize_value"
    assert assigned.reservation.tokens == 48_000
    assert assigned.reservation.subscription == model.subscription
    assert assigned.reservation.expires_at > utcnow()

    row = (await h.rows(select(assignments).where(assignments.c.task_id == task.task_id)))[0]
    assert (row.model, row.reservation_id) == (
        assigned.model,
        assigned.reservation.reservation_id,
    )
    reserved = select(quota_ledger.c.tokens).where(
        quota_ledger.c.reservation_id == assigned.reservation.reservation_id,
        quota_ledger.c.op == "reserve",
    )
    assert await h.scalar(reserved) == 48_000


async def test_value_decides_between_premium_and_cheaper_models(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner")
    urgent = estimated(workspace, priority="P0", value=92.0, points=13, band="complex")
    minor = estimated(workspace, priority="P4", value=8.0, points=1, band="simple")

    first: TaskAssigned = await h.answer_to(urgent, TaskAssigned)
    second: TaskAssigned = await h.answer_to(minor, TaskAssigned)

    assert REGISTRY.get(first.model).tier == "premium"  # type: ignore[union-attr]
    assert REGISTRY.get(second.model).tier != "premium"  # type: ignore[union-attr]


async def test_a_task_is_deferred_when_no_subscription_has_room(
    harness: Harness, workspace: str, tmp_path: Path
) -> None:
    h = harness
    names = sorted({m.subscription for m in REGISTRY.models()})
    tiny = tmp_path / "subscriptions.yaml"
    tiny.write_text(
        yaml.safe_dump(
            {
                "subscriptions": [
                    {"name": n, "kind": "payg", "limits": {"day": {"tokens": 10}}} for n in names
                ]
            }
        )
    )
    await h.start("quota", subscriptions_path=tiny)
    await h.start("assigner")
    # Worth a lot and simple: every model in the registry is a candidate, and each is refused.
    task = estimated(workspace, priority="P0", value=95.0, points=2, band="simple")
    deferred: TaskDeferred = await h.answer_to(task, TaskDeferred)

    for name in names:
        assert name in deferred.reason
    assert "over_limit" in deferred.reason
    assert deferred.retry_after > utcnow()
    count = select(func.count()).select_from(assignments)
    assert await h.scalar(count.where(assignments.c.task_id == task.task_id)) == 0


async def test_a_repeated_estimate_is_assigned_once(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner")
    task = estimated(workspace)
    assigned: TaskAssigned = await h.answer_to(task, TaskAssigned)
    assert not await h.client.publish(task)  # JetStream drops a same-id republish ...
    await h.redeliver(task)  # ... so deliver a copy under another message id too
    await h.drained("assigner", "task.estimated")

    count = select(func.count()).select_from(assignments)
    assert await h.scalar(count.where(assignments.c.task_id == task.task_id)) == 1
    ledger = select(func.count()).select_from(quota_ledger)
    reserve_rows = ledger.where(
        quota_ledger.c.reservation_id == assigned.reservation.reservation_id
    )
    assert await h.scalar(reserve_rows) == 1
