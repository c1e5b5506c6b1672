"""The console's shell and assets are served without a token; its series' buckets and the
lanes tasks are filtered by."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from services.reporter.app import create_app
from services.reporter.console import ASSETS
from services.reporter.listings import LANE_STATUSES, lane_of
from services.reporter.routing import policy_of
from services.reporter.series import bucket_starts
from services.reporter.settings import ReporterSettings
from tally.events.learning import LearnerReport


@pytest.fixture
async def http() -> httpx.AsyncClient:
    # The API app alone: serving the shell and assets connects to nothing.
    api = create_app(ReporterSettings()).api  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t")


async def test_the_shell_and_its_assets_need_no_token_and_load_nothing_foreign(
    http: httpx.AsyncClient,
) -> None:
    async with http:
        shell = await http.get("/console")
        script = await http.get("/console/assets/app.js")
        style = await http.get("/console/assets/app.css")
        root = await http.get("/", follow_redirects=False)
        missing = await http.get("/console/assets/nope.js")
        data = await http.get("/runs")
    assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
    policy = shell.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "http" not in shell.text.replace("http-equiv", "")  # no CDN: every asset is ours
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert (root.status_code, root.headers["location"]) == (307, "/console")
    assert missing.status_code == 404
    assert data.status_code == 401  # the data itself still needs a token


def test_the_committed_build_is_what_the_shell_loads() -> None:
    html = (ASSETS / "index.html").read_text()
    for asset in ("app.js", "app.css"):
        assert f"/console/assets/{asset}" in html
        assert (ASSETS / "assets" / asset).stat().st_size > 0


def test_buckets_cover_the_window_from_the_start_of_its_first_hour_or_day() -> None:
    since = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    now = datetime(2026, 1, 3, 1, 5, tzinfo=UTC)
    hours = bucket_starts(since, now, "hour")
    assert hours[0] == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert hours[-1] == datetime(2026, 1, 3, 1, tzinfo=UTC)
    assert len(hours) == 41
    days = bucket_starts(since, now, "day")
    assert [d.day for d in days] == [1, 2, 3]
    assert bucket_starts(now, now, "hour") == [datetime(2026, 1, 3, 1, tzinfo=UTC)]


def test_every_status_of_the_flow_has_one_lane() -> None:
    assert lane_of("in_progress") == "work"
    assert lane_of("ready_to_review") == "review"
    assert lane_of("ready_to_qa") == "qa"
    assert lane_of("completed") == "done"
    assert lane_of("backlog") == "backlog"
    assert lane_of("blocked") == "blocked"
    assert lane_of("no-such-status") is None
    statuses = [s for held in LANE_STATUSES.values() for s in held]
    assert len(statuses) == len(set(statuses))


def test_the_learners_policy_is_answered_class_by_class_most_likely_model_first() -> None:
    report = LearnerReport(
        kind="models",
        workspace="acme",
        data={
            "policy": {
                "version": 4,
                "probabilities": {
                    "feature|medium": {"gpt-5-mini": 0.25, "claude-sonnet-4": 0.75},
                    "bug|simple": {"gpt-5-mini": 1.0},
                },
            },
            "checkpoints": [{"id": 7, "version": 4, "score": 0.61}],
        },
    )
    policy = policy_of(report)
    assert (policy.workspace, policy.version) == ("acme", 4)
    assert [(c.task_type, c.band) for c in policy.classes] == [
        ("bug", "simple"),
        ("feature", "medium"),
    ]
    assert [m.model for m in policy.classes[1].models] == ["claude-sonnet-4", "gpt-5-mini"]
    assert policy.checkpoints[0].score == 0.61
    assert policy_of(LearnerReport(kind="models", workspace="new")).classes == []
