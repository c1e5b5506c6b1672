"""Each service's metrics stay its own, and the product's numbers are labelled boundedly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.tracker import rows
from tally import metrics
from tally.cli.ops import SERVICES
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR


def value(registry_of: str, name: str, **labels: str) -> float:
    return metrics.registry_for(registry_of).get_sample_value(name, labels) or 0.0


def sample_names(service: str) -> set[str]:
    return {
        s.name for f in metrics.registry_for(service).collect() for s in f.samples if s.labels
    } | {f.name for f in metrics.registry_for(service).collect()}


def test_a_service_label_picks_the_registry_and_no_other_service_sees_the_sample() -> None:
    before = {
        s: value(s, "tally_events_published_total", service="estimator", subject="x.y")
        for s in SERVICES
    }
    metrics.EVENTS_PUBLISHED.labels("estimator", "x.y").inc()
    after = {
        s: value(s, "tally_events_published_total", service="estimator", subject="x.y")
        for s in SERVICES
    }
    assert after["estimator"] == before["estimator"] + 1
    assert {s: after[s] - before[s] for s in SERVICES if s != "estimator"} == dict.fromkeys(
        set(SERVICES) - {"estimator"}, 0.0
    )


def test_a_metric_one_service_owns_is_exported_by_that_service_alone() -> None:
    metrics.RUNS_RECORDED.labels("complete").inc()
    exporting = [s for s in SERVICES if "tally_runs_recorded" in sample_names(s)]
    assert exporting == ["tracker"]


def test_process_metrics_and_build_info_are_not_repeated_across_services() -> None:
    with_process = [s for s in SERVICES if "process_cpu_seconds" in sample_names(s)]
    assert len(with_process) <= 1
    for service in SERVICES:
        infos = [
            s
            for f in metrics.registry_for(service).collect()
            if f.name == "tally_build_info"
            for s in f.samples
        ]
        assert [s.labels["service"] for s in infos] == [service]
        assert infos[0].value == 1


def test_usage_is_counted_by_registry_model_and_unknown_models_fold_into_other() -> None:
    registry = ModelRegistry(CONFIG_DIR / "models.yaml")
    ws = "metrics-unit"
    base = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_micros": 0,
        "workspace": ws,
    }
    metrics.count_usage(
        [
            {
                **base,
                "model": "claude-sonnet-4",
                "provider": "anthropic",
                "input_tokens": 500,
                "output_tokens": 200,
                "cache_read_tokens": 2_000,
                "cost_micros": 500_000,
            },
            # A dated id is the registry's model, not "other".
            {
                **base,
                "model": "claude-sonnet-4-20250514",
                "provider": "anthropic",
                "output_tokens": 5,
            },
            {**base, "model": "my-private-llm-7b", "provider": "anthropic", "input_tokens": 7},
            {**base, "model": "another-unknown", "provider": "made-up-co", "output_tokens": 3},
            {**base, "model": None, "provider": None, "output_tokens": 1},
        ],
        registry,
    )

    def tokens(kind: str, model: str, provider: str) -> float:
        return value(
            "tracker", "tally_tokens_total", kind=kind, model=model, provider=provider, workspace=ws
        )

    assert tokens("input", "claude-sonnet-4", "anthropic") == 500
    assert tokens("cache_read", "claude-sonnet-4", "anthropic") == 2_000
    assert tokens("output", "claude-sonnet-4", "anthropic") == 200 + 5
    assert tokens("input", "other", "anthropic") == 7
    assert tokens("output", "other", "other") == 3 + 1
    cost = value(
        "tracker",
        "tally_cost_usd_total",
        model="claude-sonnet-4",
        provider="anthropic",
        workspace=ws,
    )
    assert cost == pytest.approx(0.5)


def test_the_tracker_stores_every_column_the_usage_counters_read() -> None:
    assert set(metrics.USAGE_KEYS) <= set(rows.USAGE_COLUMNS)


def test_workspaces_past_the_cap_share_one_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_workspaces", set())
    monkeypatch.setattr(metrics, "MAX_WORKSPACES", 2)
    labels = [metrics._workspace_label(w) for w in ("a", "b", "c", "a", "d")]
    assert labels == ["a", "b", "other", "a", "other"]


class FakeJetStream:
    def __init__(self, infos: dict[str, Any]) -> None:
        self.infos = infos

    async def consumer_info(self, stream: str, durable: str) -> Any:
        info = self.infos[durable]
        if isinstance(info, Exception):
            raise info
        return info


async def test_consumer_lag_is_read_on_scrape_and_a_failure_drops_the_series() -> None:
    consumers = [
        SimpleNamespace(stream="S", durable="lagging"),
        SimpleNamespace(stream="S", durable="broken"),
    ]
    js = FakeJetStream(
        {
            "lagging": SimpleNamespace(num_pending=42, num_ack_pending=7),
            "broken": SimpleNamespace(num_pending=1, num_ack_pending=1),
        }
    )
    await metrics.observe_consumers("learner", js, consumers)
    labels = {"service": "learner", "stream": "S"}
    assert value("learner", "tally_consumer_pending", **labels, consumer="lagging") == 42
    assert value("learner", "tally_consumer_ack_pending", **labels, consumer="lagging") == 7

    errors = value(
        "learner", "tally_consumer_info_errors_total", service="learner", consumer="broken"
    )
    js.infos["broken"] = TimeoutError()
    await metrics.observe_consumers("learner", js, consumers)
    registry = metrics.registry_for("learner")
    assert (
        registry.get_sample_value("tally_consumer_pending", {**labels, "consumer": "broken"})
        is None
    )
    assert (
        value("learner", "tally_consumer_info_errors_total", service="learner", consumer="broken")
        == errors + 1
    )
    assert value("learner", "tally_consumer_pending", **labels, consumer="lagging") == 42


async def test_reporter_requests_are_timed_by_route_template() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["run_id"])

    app = Starlette(routes=[Route("/runs/{run_id}", hello)])
    app.add_middleware(metrics.TimedHttp)

    def count(route: str, status: str) -> float:
        return value(
            "reporter", "tally_http_request_seconds_count", route=route, method="GET", status=status
        )

    before = count("/runs/{run_id}", "200"), count("unmatched", "404")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/runs/a")).text == "a"
        assert (await client.get("/runs/b")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
    assert count("/runs/{run_id}", "200") == before[0] + 2
    assert count("unmatched", "404") == before[1] + 1


def test_a_batch_counted_by_its_totals_moves_the_counters_as_row_by_row() -> None:
    registry = ModelRegistry(CONFIG_DIR / "models.yaml")
    calls = [
        ("claude-sonnet-4", "anthropic", 500, 200, 2_000, 100, 12_345),
        ("claude-sonnet-4-20250514", "anthropic", 7, 0, 0, 0, 3),
        ("my-private-llm-7b", "made-up-co", 40, 2, 0, 0, None),
        ("gpt-5", "openai", 1_000, 50, 300, 0, 2_000),
        ("gpt-5", "openai", 10, 5, 0, 0, None),
        (None, None, 0, 1, 0, 0, None),
    ]

    def record(ws: str, call: tuple[Any, ...]) -> tuple[Any, ...]:
        model, provider, inp, out, read, write, cost = call
        values = dict.fromkeys(rows.USAGE_COLUMNS) | {
            "workspace": ws,
            "model": model,
            "provider": provider,
            "input_tokens": inp,
            "output_tokens": out,
            "cache_read_tokens": read,
            "cache_write_tokens": write,
            "cost_micros": cost,
        }
        return tuple(values[c] for c in rows.USAGE_COLUMNS)

    one_by_one, summed = "metrics-rows", "metrics-totals"
    metrics.count_usage(
        [dict(zip(rows.USAGE_COLUMNS, record(one_by_one, c), strict=True)) for c in calls],
        registry,
    )
    metrics.count_usage(rows.usage_totals([record(summed, c) for c in calls]), registry)

    def series(ws: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (
                s.name,
                tuple(sorted((k, v) for k, v in s.labels.items() if k != "workspace")),
            ): s.value
            for f in metrics.registry_for("tracker").collect()
            for s in f.samples
            if s.labels.get("workspace") == ws and not s.name.endswith("_created")
        }

    assert series(summed) == series(one_by_one) != {}
