"""The web console in Chromium: every page loads without console errors, shows what was
published through the bus, follows live runs, and keeps its history across a reload."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import Page, expect

from tally.events import QuotaAlert, utcnow
from tests.integration.conftest import ADMIN_TOKEN

if TYPE_CHECKING:
    from tests.browser.conftest import Console

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: Longest a test waits for the page to show something (the services answer in well under).
WAIT_MS = 20_000


def no_errors(page: Page) -> None:
    errors: list[str] = page.errors  # type: ignore[attr-defined]
    assert not errors, "\n".join(errors)


async def stat(page: Page, name: str) -> str:
    return (await page.locator(f'[data-stat="{name}"] b').inner_text()).strip()


async def test_sign_in_shows_the_overview_and_a_new_run_arrives_live(console: Console) -> None:
    data = console.data
    page = await console.page(token=None)
    await page.goto(f"{console.url}/console")
    dialog = page.get_by_role("dialog", name="Sign in")
    await expect(dialog).to_be_visible()
    await page.get_by_label("API token").fill(ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await page.select_option("#workspace", data.workspace)
    latest = page.locator("#latest-runs")
    for run_id in data.runs:
        await expect(latest).to_contain_text(run_id, timeout=WAIT_MS)
    assert await stat(page, "runs_finished") == str(len(data.runs))
    assert await stat(page, "tasks_created") == str(len(data.tasks))
    assert await stat(page, "success_rate") == "50%"
    await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    for kind in ("input", "output", "cache read", "cache write"):
        await expect(page.locator("figure.chart").first).to_contain_text(kind)
    await console.shot(page, "01-overview")

    first = next(iter(data.tasks))
    new_run = await console.run(first)
    await expect(page.locator(".live-note")).to_contain_text(new_run, timeout=WAIT_MS)
    await expect(latest).to_contain_text(new_run, timeout=WAIT_MS)
    await expect(page.locator('[data-stat="runs_finished"] b')).to_have_text(
        str(len(data.runs)), timeout=WAIT_MS
    )
    # History comes from the API: a reload keeps everything, the live run included.
    await page.reload()
    await expect(latest).to_contain_text(new_run, timeout=WAIT_MS)
    assert await stat(page, "runs_finished") == str(len(data.runs))
    await console.shot(page, "02-overview-after-live-run")
    # The window: the last day in hours, or from a start of one's choosing.
    await page.select_option("#window", "24h")
    await expect(page.locator("figcaption").first).to_have_text("Tokens per hour")
    assert await stat(page, "runs_finished") == str(len(data.runs))
    await page.select_option("#window", "custom")
    start = await page.evaluate(
        "new Date(Date.now() - 3 * 864e5 - new Date().getTimezoneOffset() * 6e4)"
        ".toISOString().slice(0, 16)"
    )
    await page.locator("#since").fill(start)
    await expect(page.locator("figcaption").first).to_have_text("Tokens per day")
    assert await stat(page, "runs_finished") == str(len(data.runs))
    no_errors(page)


async def test_tasks_are_searchable_and_a_task_page_links_its_runs(console: Console) -> None:
    data = console.data
    page = await console.page()
    await page.goto(f"{console.url}/console#/tasks")
    await page.select_option("#workspace", data.workspace)
    table = page.locator("#tasks-table")
    for title in data.tasks.values():
        await expect(table).to_contain_text(title, timeout=WAIT_MS)
    await console.shot(page, "03-tasks")

    await page.keyboard.press("/")
    await page.keyboard.type("billing")
    await page.keyboard.press("Enter")
    await expect(table.locator("tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await expect(table).to_contain_text("Write the billing export")

    first, title = next(iter(data.tasks.items()))
    await page.goto(f"{console.url}/console#/task/{first}")
    await expect(page.locator("h1")).to_contain_text(title, timeout=WAIT_MS)
    await expect(page.get_by_role("heading", name="Estimate")).to_be_visible()
    await expect(page.locator("body")).to_contain_text("story points")
    await expect(page.locator("body")).to_contain_text(data.assigned[first].model)
    runs_of_first = [r for r, t in data.runs.items() if t == first]
    runs = page.get_by_role("region", name="Runs")
    for run_id in runs_of_first:
        await expect(runs.get_by_role("link", name=run_id)).to_be_visible()
    await expect(page.locator("body")).to_contain_text("in_progress")
    await console.shot(page, "04-task")
    await runs.get_by_role("link", name=runs_of_first[-1]).click()
    await expect(page).to_have_url(re.compile(f"#/run/{runs_of_first[-1]}$"))
    no_errors(page)


async def test_a_run_page_draws_its_waterfall_and_compares(console: Console) -> None:
    failed, succeeded = list(console.data.runs)[:2]
    page = await console.page()
    await page.goto(f"{console.url}/console#/run/{succeeded}")
    rows = page.locator(".waterfall li")
    await expect(rows.first).to_be_visible(timeout=WAIT_MS)
    kinds = await rows.evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds.count("phase") == 2
    assert kinds.count("worker_call") == 2
    assert {"subtask", "verification", "checkpoint", "milestone", "changes"} <= set(kinds)
    await expect(page.locator(".waterfall")).to_contain_text("coder")
    await expect(page.locator(".waterfall")).to_contain_text("5,000 cache read")
    await expect(page.locator(".kpi-lines li")).to_have_count(10)
    await console.shot(page, "05-run")

    await page.select_option("#compare-with", failed)
    await page.get_by_role("button", name="Compare").click()
    await expect(page.locator("#compare-table")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("h1")).to_contain_text(failed)
    await console.shot(page, "06-compare")
    no_errors(page)


async def test_models_flow_and_budgets_show_what_was_learned_and_planned(
    console: Console,
) -> None:
    data = console.data
    model = data.assigned[next(iter(data.tasks))].model
    page = await console.page()
    await page.goto(f"{console.url}/console#/models")
    await page.select_option("#workspace", data.workspace)
    await expect(page.locator("#models-table")).to_contain_text(model, timeout=WAIT_MS)
    chosen = page.get_by_role("region", name=re.compile("^Routing: what the assigner chose"))
    await expect(chosen).to_contain_text(model)
    learned = page.get_by_role("region", name="Routing policy (learned)")
    await expect(learned).to_contain_text("feature", timeout=WAIT_MS)
    await expect(learned).to_contain_text(model)
    await console.shot(page, "07-models")

    await page.keyboard.press("5")
    await expect(page).to_have_url(re.compile("#/flow$"))
    forecast = page.get_by_role("region", name="Plan forecast")
    await expect(forecast).to_contain_text("P85", timeout=WAIT_MS)
    await expect(forecast).to_contain_text(data.plan_id)
    for title in data.tasks.values():
        await expect(forecast).to_contain_text(title)
    await expect(page.locator("#etas-table")).to_contain_text(next(iter(data.tasks)))
    await console.shot(page, "08-flow")

    subscription = data.assigned[next(iter(data.tasks))].subscription
    await page.keyboard.press("6")
    panel = page.locator(f'[data-subscription="{subscription}"]')
    await expect(panel).to_contain_text("open", timeout=WAIT_MS)
    await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    # An alert as the quota service fires one (at a subscription's own 60 % threshold),
    # while the page is open: the reporter keeps it and Budgets shows it, live.
    alert = QuotaAlert(
        subscription=subscription,
        window="day",
        window_id=f"d:{utcnow():%Y-%m-%d}",
        metric="usd",
        threshold_pct=60,
        used=6.5,
        limit=10.0,
        workspace=data.workspace,
    )
    await console.harness.client.publish(alert)
    alerts = page.locator("#alerts-table")
    await expect(alerts).to_contain_text("60%", timeout=WAIT_MS)
    await expect(alerts).to_contain_text("$6.50 of $10.00")
    await expect(alerts).to_contain_text(subscription)
    # Today's window says which thresholds fired, as the quota service applied them.
    await expect(panel.locator(".hint").first).to_contain_text("alerts fired at 60%")
    await console.shot(page, "09-budgets")
    # The switch works from the page (an admin token), and is put back.
    await panel.get_by_role("button", name=f"Freeze {subscription}").click()
    await expect(panel.locator(".badge").first).to_have_text("frozen", timeout=WAIT_MS)
    await panel.get_by_role("button", name=f"Unfreeze {subscription}").click()
    await expect(panel.locator(".badge").first).to_have_text("open", timeout=WAIT_MS)
    no_errors(page)


async def test_a_workspace_token_sees_its_own_empty_workspace_with_what_to_do(
    console: Console,
) -> None:
    made = await console.http.post(
        "/auth/tokens",
        json={"name": "viewer", "workspace": "ws-empty", "scopes": ["runs:read", "reports:read"]},
    )
    assert made.status_code == 201, made.text
    page = await console.page(token=made.json()["token"])
    await page.goto(f"{console.url}/console#/overview")
    await expect(page.locator(".empty").first).to_contain_text(
        "Nothing in this window yet", timeout=WAIT_MS
    )
    await expect(page.locator("#workspace")).to_have_value("ws-empty")
    # Its stream carries only its own workspace (the reporter filters it): live too.
    await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    await page.keyboard.press("3")
    await expect(page.locator(".empty", has_text="No runs in this window")).to_be_visible()
    await page.keyboard.press("6")
    await expect(page.locator(".empty", has_text="operator token (workspace *)")).to_be_visible()
    await expect(page.get_by_role("button", name=re.compile("^Freeze"))).to_have_count(0)
    await console.shot(page, "10-empty-workspace")
    no_errors(page)


async def test_pages_fit_a_narrow_screen(console: Console) -> None:
    first = next(iter(console.data.tasks))
    run_id = list(console.data.runs)[1]
    page = await console.page(viewport={"width": 390, "height": 844})
    for name, hash_ in (
        ("overview", "#/overview"),
        ("task", f"#/task/{first}"),
        ("run", f"#/run/{run_id}"),
    ):
        await page.goto(f"{console.url}/console{hash_}")
        await expect(page.locator("main h1")).to_be_visible(timeout=WAIT_MS)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"the {name} page is {overflow}px wider than the screen"
        await console.shot(page, f"11-narrow-{name}")
    no_errors(page)
