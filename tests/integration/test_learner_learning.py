"""The learner learning from a sequence of runs: scores, calibration and policy move the
right way, the estimator takes the calibration without a restart, and the policy resumes
from its checkpoint after the learner restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import typer
from sqlalchemy import insert, select
from typer.testing import CliRunner

from tally.cli import learning
from tally.db.tables import estimates, model_scores, policy_checkpoints
from tally.events import (
    CalibrationUpdated,
    Estimate,
    EstimateRequest,
    PolicyUpdated,
    RunRecorded,
    ScoresUpdated,
    TokenTotals,
    new_id,
    utcnow,
)
from tally.events.learning import LearnerReport, LearnerReportRequest

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Small groups, a checkpoint per update, no held-out share: every run trains.
FAST = {
    "calibration_debounce_s": 0.2,
    "group_size": 2,
    "checkpoint_every": 1,
    "held_out_share": 0.0,
    "velocity_min_samples": 3,
    "token_min_samples": 2,
    "daily_enabled": False,
}


def recorded(workspace: str, model: str, *, success: bool, hours: float, **kw: Any) -> RunRecorded:
    finished = utcnow()
    values: dict[str, Any] = {
        "run_id": f"run-{new_id()}",
        "task_id": f"task-{new_id()}",
        "workspace": workspace,
        "model": model,
        "task_type": "feature",
        "band": "medium",
        "outcome": "complete" if success else "error",
        "success": success,
        "started_at": finished - timedelta(hours=hours),
        "finished_at": finished,
        "actual_hours": hours,
        "story_points": 5,
        "estimated_hours": 4.0,
        "estimation_error": (hours - 4.0) / 4.0,
        "velocity": 5 / hours if success else None,
        "tokens": TokenTotals(input_tokens=3_000, output_tokens=1_000),
        "cost_usd": 0.05 if model == "cheap" else 1.0,
    }
    return RunRecorded(**{**values, **kw})


async def estimated(h: Harness, workspace: str, task_id: str, tokens: int) -> None:
    """An estimate row as the estimator writes it, so the learner can compare tokens."""
    est = Estimate(
        task_id=task_id,
        title="t",
        priority="P2",
        task_type="feature",
        story_points=5,
        band="medium",
        hours_p50=4.0,
        hours_p90=8.0,
        tokens={"input_tokens": tokens, "output_tokens": 0},
        value_score=50,
    )
    await h.execute(
        insert(estimates),
        {
            "task_id": task_id,
            "workspace": workspace,
            "event_id": new_id(),
            "story_points": 5,
            "band": "medium",
            "hours_p50": 4.0,
            "hours_p90": 8.0,
            "value_score": 50.0,
            "estimate": est.model_dump(mode="json"),
        },
    )


async def test_runs_move_scores_calibration_and_policy(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("learner", **FAST)
    ours = lambda e: e.workspace == workspace  # noqa: E731
    async with (
        h.client.watch(ScoresUpdated, ours) as scores,
        h.client.watch(CalibrationUpdated, ours) as calibrations,
        h.client.watch(PolicyUpdated, ours) as policies,
    ):
        for _ in range(6):
            good = recorded(workspace, "cheap", success=True, hours=2.0)
            bad = recorded(workspace, "pricey", success=False, hours=3.0)
            await estimated(h, workspace, good.task_id, tokens=2_000)  # used 4,000: x2
            await estimated(h, workspace, bad.task_id, tokens=2_000)
            await h.client.publish(good)
            await h.client.publish(bad)
        await h.drained("learner", "run.recorded")
        score_updates = [await h.next_item(scores, what="scores") for _ in range(12)]
        policy = [await h.next_item(policies, what="policy") for _ in range(6)][-1]
        # Calibration is debounced: an early pass may predate the last runs, so wait for
        # the one that has seen all of them.
        # (The last "cheap" run comes before the last "pricey" one: a pass between them
        # has all six of one and eleven estimates.)
        calibration = await h.next_item(calibrations, what="calibration")
        while (
            calibration.velocity.get("cheap|feature", (0, 0, 0))[2] < 6
            or calibration.error_trend is None
            or calibration.error_trend.samples < 12
        ):
            calibration = await h.next_item(calibrations, what="the calibration of all runs")

    last = {r.model: r for r in score_updates[-1].scores}
    assert last["cheap"].samples == 6 and last["cheap"].success_rate == 1.0
    assert last["cheap"].velocity_mean == pytest.approx(2.5)
    assert last["pricey"].success_rate == 0.0

    assert policy.version == 6
    probs = policy.probabilities["feature|medium"]
    # Every registry model starts at 1/n; the winner rose above it and the loser fell below.
    uniform = 1 / len(policy.models)
    assert probs["cheap"] > 1.5 * uniform and probs["pricey"] < uniform / 1.5

    mu, sigma, n = calibration.velocity["cheap|feature"]
    assert n == 6 and mu == pytest.approx(0.916, abs=0.01) and sigma == pytest.approx(0, abs=1e-6)
    assert calibration.token_factors["feature"] == pytest.approx(2.0)
    assert calibration.error_trend is not None and calibration.error_trend.samples == 12

    report = await h.client.request(
        LearnerReportRequest(kind="models", workspace=workspace), LearnerReport, step="learner"
    )
    assert report.data["policy"]["version"] == 6
    # One checkpoint per update; the best five are kept (unscored: the newest five).
    assert [c["version"] for c in report.data["checkpoints"]] == [2, 3, 4, 5, 6]
    velocity = await h.client.request(
        LearnerReportRequest(kind="velocity", workspace=workspace), LearnerReport, step="learner"
    )
    assert velocity.data["models"][0]["model"] == "cheap"
    assert velocity.data["accuracy"]["tasks"] == 12


async def test_concurrent_runs_of_one_model_are_all_counted(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner", **FAST)
    runs = [recorded(workspace, "cheap", success=True, hours=2.0) for _ in range(24)]
    # Published before the handlers start pulling, so they are handled 16 at a time.
    await asyncio.gather(*(h.client.publish(r) for r in runs))
    await h.drained("learner", "run.recorded")
    stored = await h.scalar(
        select(model_scores.c.samples).where(
            model_scores.c.workspace == workspace, model_scores.c.model == "cheap"
        )
    )
    assert stored == len(runs)


async def test_estimator_takes_calibration_without_restart(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner", **FAST)
    await h.start("estimator")
    ask = EstimateRequest(workspace=workspace, title="Add a login page", task_type="feature")
    before = await h.client.request(ask, Estimate, step="estimator")
    assert before.velocity_source == "prior"

    async with h.client.watch(CalibrationUpdated, lambda e: e.workspace == workspace) as cal:
        # Enough runs for the estimator's own threshold (five in scoring.yaml).
        for hours in (0.5, 0.6, 0.55, 0.5, 0.65, 0.6):
            await h.client.publish(recorded(workspace, "cheap", success=True, hours=hours))
        event = await h.next_item(cal, what="calibration")
        while event.velocity.get("*|feature", (0, 0, 0))[2] < 6:
            event = await h.next_item(cal, what="a calibration with every run")

    async def measured() -> Estimate | None:
        est = await h.client.request(
            ask.model_copy(update={"event_id": new_id()}), Estimate, step="estimator"
        )
        return est if est.velocity_source == "measured" else None

    after = await h.eventually(measured, what="a measured estimate")
    # About 9 points an hour measured against the prior's 0.5: far fewer hours now.
    assert after.hours_p50 < before.hours_p50 / 5


async def test_policy_resumes_from_checkpoint_after_restart(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner", **FAST)
    async with h.client.watch(PolicyUpdated, lambda e: e.workspace == workspace) as policies:
        for _ in range(3):
            await h.client.publish(recorded(workspace, "cheap", success=True, hours=2.0))
            await h.client.publish(recorded(workspace, "pricey", success=False, hours=2.0))
        learned = [await h.next_item(policies, what="policy") for _ in range(3)][-1]
    await h.stop_all()
    saved = await h.rows(
        select(policy_checkpoints.c.version).where(policy_checkpoints.c.workspace == workspace)
    )
    assert max(r.version for r in saved) == 3

    await h.start("learner", **FAST)
    report = await h.client.request(
        LearnerReportRequest(kind="models", workspace=workspace), LearnerReport, step="learner"
    )
    assert report.data["policy"]["version"] == 3
    resumed_probs = report.data["policy"]["probabilities"]["feature|medium"]
    assert resumed_probs == pytest.approx(learned.probabilities["feature|medium"])
    async with h.client.watch(PolicyUpdated, lambda e: e.workspace == workspace) as policies:
        await h.client.publish(recorded(workspace, "cheap", success=True, hours=2.0))
        await h.client.publish(recorded(workspace, "pricey", success=False, hours=2.0))
        resumed = await h.next_item(policies, what="policy after restart")
    assert resumed.version == 4
    assert (
        resumed.probabilities["feature|medium"]["cheap"]
        >= learned.probabilities["feature|medium"]["cheap"]
    )


async def test_cli_prints_velocity_and_models(
    harness: Harness, workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await h.start("learner", **FAST)
    async with h.client.watch(PolicyUpdated, lambda e: e.workspace == workspace) as policies:
        await h.client.publish(recorded(workspace, "cheap", success=True, hours=2.0))
        await h.client.publish(recorded(workspace, "pricey", success=False, hours=2.0))
        await h.next_item(policies, what="policy")
    monkeypatch.setenv("TALLY_NAMESPACE", h.settings.namespace)
    monkeypatch.setenv("TALLY_NATS_URL", h.settings.nats_url)
    monkeypatch.setenv("TALLY_WORKSPACE", workspace)
    cli = typer.Typer()
    cli.command("velocity")(learning.velocity)
    cli.command("models")(learning.models)
    runner = CliRunner()

    shown = await asyncio.to_thread(runner.invoke, cli, ["velocity", "--days", "7"])
    assert shown.exit_code == 0, shown.output
    assert "cheap" in shown.output and "estimation accuracy, last 2 tasks" in shown.output
    as_json = await asyncio.to_thread(runner.invoke, cli, ["models", "--json"])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert body["policy"]["version"] == 1
    assert {s["model"] for s in body["scores"]} == {"cheap", "pricey"}
    bad = await asyncio.to_thread(runner.invoke, cli, ["velocity", "--days", "0"])
    assert bad.exit_code == 2 and "--days" in bad.output


async def test_daily_pass_relearns_and_writes_a_report(harness: Harness, workspace: str) -> None:
    h = harness
    soon = (utcnow() + timedelta(seconds=3)).time().replace(microsecond=0)
    await h.start("learner", **{**FAST, "daily_enabled": True, "daily_at": soon})
    for _ in range(3):
        await h.client.publish(recorded(workspace, "cheap", success=True, hours=2.0))
        await h.client.publish(recorded(workspace, "pricey", success=False, hours=2.0))
    await h.drained("learner", "run.recorded")

    async def report() -> dict[str, Any] | None:
        answer = await h.client.request(
            LearnerReportRequest(kind="learning", workspace=workspace),
            LearnerReport,
            step="learner",
        )
        return answer.data or None

    data = await h.eventually(report, what="the daily learning report")
    assert data["runs"] == 6
    assert data["policy"]["version_after"] == data["policy"]["version_before"] + 1
    moved = data["policy"]["changes"]["feature|medium"]
    assert moved["favourite_after"] == "cheap"
    assert "cheap|feature" in data["calibration"]["velocity_after"]
