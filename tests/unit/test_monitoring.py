"""The shipped alert rules and Grafana dashboard read metrics the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tally import metrics
from tally.cli.ops import SERVICES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(tally_[a-z_]+)")


def families() -> list[Any]:
    """Every metric family the six services export."""
    return [f for name in SERVICES for f in metrics.registry_for(name).collect()]


def exported() -> set[str]:
    """Every sample name of Tally's own metrics (histograms add _bucket, _sum, _count)."""
    names = set()
    for family in families():
        if family.name.startswith("tally_"):
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "histogram":
                names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
            if family.type == "counter":
                names.add(f"{family.name}_total")
    return names


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def panel_expressions() -> dict[str, str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tally.json").read_text())
    return {p["title"]: t["expr"] for p in dashboard["panels"] for t in p["targets"]}


def test_alert_rules_use_exported_metrics() -> None:
    known = exported()
    expressions = alert_expressions()
    assert {"TallyServiceDown", "TallyDeadLetters", "TallyQuotaNearlySpent"} <= set(expressions)
    for alert, expr in expressions.items():
        for name in METRIC.findall(expr):
            assert name in known, f"alert {alert}: {name} is not exported"


def test_dashboard_panels_use_exported_metrics() -> None:
    known = exported()
    expressions = panel_expressions()
    assert len(expressions) >= 10
    used = set()
    for title, expr in expressions.items():
        for name in METRIC.findall(expr):
            assert name in known, f"panel {title!r}: {name} is not exported"
            used.add(name)
    # Every Tally metric family has a panel.
    names = {f.name for f in families() if f.name.startswith("tally_")}
    missing = {f for f in names if not any(u.startswith(f) for u in used)}
    assert not missing, f"no panel for {sorted(missing)}"


def test_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_the_dashboard_imports_anywhere_and_shows_tokens_and_dollars() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tally.json").read_text())
    assert [i["pluginId"] for i in dashboard["__inputs"]] == ["prometheus"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    expressions = panel_expressions().values()
    for metric in ("tally_tokens_total", "tally_cost_usd_total"):
        for label in ("model", "workspace"):
            assert any(metric in e and label in e.split("(")[1] for e in expressions), (
                f"no panel of {metric} by {label}"
            )
