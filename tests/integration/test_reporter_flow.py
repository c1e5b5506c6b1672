"""``GET /lanes``: cycle times, WIP and ETAs from status changes the tracker stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.types import ASGIApp

from tally.events import TaskCreated, TaskStatusChanged, new_id
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: Before every transition below: the whole story is inside the window.
SINCE = "2026-03-01"


def moves(workspace: str, task_id: str, *steps: tuple[str, float]) -> list[TaskStatusChanged]:
    """``task_id`` moving through ``(status, hours after 09:00)`` steps, from the backlog."""
    events, previous = [], "backlog"
    for status, hour in steps:
        events.append(
            TaskStatusChanged(
                task_id=task_id,
                workspace=workspace,
                from_status=previous,  # type: ignore[arg-type]
                to_status=status,  # type: ignore[arg-type]
                changed_at=T0 + timedelta(hours=hour),
            )
        )
        previous = status
    return events


async def get(app: ASGIApp, params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=ADMIN
    ) as http:
        return await http.get("/lanes", params=params)


async def test_lanes_report_cycle_times_wip_and_etas(harness: Harness, workspace: str) -> None:
    h, ws = harness, workspace
    await h.start("tracker")
    reporter = await h.start("reporter")
    a, b, c, d = (f"task-{new_id()}" for _ in range(4))
    flows = [
        # Done: work 2 h, review 1 h, QA 30 min.
        *moves(
            ws,
            a,
            ("in_progress", 0),
            ("ready_to_review", 2),
            ("ready_to_qa", 3),
            ("completed", 3.5),
        ),
        # Worked 3 h, in review since 13:00.
        *moves(ws, b, ("in_progress", 1), ("ready_to_review", 4)),
        # Blocked 4 h inside the work lane: work 1.5 h, review 30 min, QA 2 h.
        *moves(
            ws,
            c,
            ("in_progress", 0.5),
            ("blocked", 1),
            ("in_progress", 5),
            ("ready_to_review", 6),
            ("ready_to_qa", 6.5),
            ("completed", 8.5),
        ),
        # Worked 1 h, blocked since 17:00.
        *moves(ws, d, ("in_progress", 7), ("blocked", 8)),
    ]
    await h.client.publish(TaskCreated(task_id=b, workspace=ws, title="Review the lanes"))
    for event in reversed(flows):  # the order of arrival must not matter
        await h.client.publish(event)
    await h.drained("tracker", "task.created")
    await h.drained("tracker", "task.status_changed")

    response = await get(reporter, {"workspace": ws, "since": SINCE})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    lanes = body["lanes"]
    # B's and D's work is over (B moved on, D is blocked inside work but its lane counts
    # only when finished): work samples are A 2 h, B 3 h, C 1.5 h.
    assert lanes["work"] == {
        "count": 3,
        "mean_hours": 2.17,
        "p50_hours": 2.0,
        "p85_hours": 2.7,
        "total_hours": 6.5,
        "wip": 0,
        "wip_hours": 0.0,
    }
    assert (lanes["review"]["count"], lanes["review"]["p50_hours"]) == (2, 0.75)
    assert (lanes["review"]["wip"], lanes["qa"]["wip"]) == (1, 0)
    assert (lanes["qa"]["count"], lanes["qa"]["p50_hours"]) == (2, 1.25)
    assert lanes["qa"]["p85_hours"] == pytest.approx(0.5 + 0.85 * 1.5, abs=0.01)
    blocked = lanes["blocked"]
    assert (blocked["count"], blocked["total_hours"], blocked["wip"]) == (1, 4.0, 1)

    etas = {e["task_id"]: e for e in body["etas"]}
    assert set(etas) == {b, d}  # A and C are done
    # B has been in review far longer than any finished review: only QA is left.
    assert etas[b]["title"] == "Review the lanes"
    assert (etas[b]["lane"], etas[b]["overdue"], etas[b]["eta_hours"]) == ("review", True, 1.25)
    assert etas[b]["eta_at"] is not None
    # D worked 1 h before its block; finished work took 1.5-3 h (median of the longer
    # ones 2 h), then review 0.75 h and QA 1.25 h.
    assert (etas[d]["lane"], etas[d]["blocked"], etas[d]["spent_hours"]) == ("work", True, 1.0)
    assert etas[d]["eta_hours"] == 1.0 + 0.75 + 1.25

    # A later window leaves out A's work (finished at 11:00); open tasks keep their ETAs.
    later = (await get(reporter, {"workspace": ws, "since": "2026-03-02T12:00:00+00:00"})).json()
    assert later["lanes"]["work"]["count"] == 2
    assert {e["task_id"] for e in later["etas"]} == {b, d}
    # Another workspace sees none of it.
    other = (await get(reporter, {"workspace": f"ws-{new_id()[:8]}", "since": SINCE})).json()
    assert other["etas"] == [] and other["lanes"]["work"]["count"] == 0

    # ETAs come in pages, soonest first; the lanes are the same on every page.
    pages = [
        (await get(reporter, {"workspace": ws, "since": SINCE, "limit": "1", "offset": o})).json()
        for o in ("0", "1", "2")
    ]
    assert [p["etas_total"] for p in pages] == [2, 2, 2] and body["etas_total"] == 2
    # (each answer is computed at its own moment: times in a lane grow between them)
    assert [e["task_id"] for p in pages for e in p["etas"]] == [e["task_id"] for e in body["etas"]]
    assert all(p["lanes"]["work"]["count"] == 3 for p in pages)
    refused = await get(reporter, {"limit": "0"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "limit"


async def test_a_bad_since_is_refused_naming_it(harness: Harness) -> None:
    reporter = await harness.start("reporter")
    for since in ("yesterday", "30x", "2999-01-01"):
        response = await get(reporter, {"since": since})
        assert response.status_code == 400, since
        error = response.json()["error"]
        assert error["field"] == "since" and error["message"].startswith("since:")
