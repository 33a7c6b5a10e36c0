"""deploy/prometheus's alert rules and deploy/grafana's dashboard: every query parses as
PromQL (promtool is not installable from a package registry here, so promql-parser, the
Rust PromQL parser, checks them) and names only metrics this worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from worker import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "pg-llm-worker-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pg-llm-worker-dashboard.json"
DURATION = re.compile(r"^[0-9]+[smhd]$")
METRIC = re.compile(r"\bworker_[a-z_]+\b")


def _exported() -> set[str]:
    """The sample names a scrape of /metrics or /metrics/queue can carry."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    families = [*metrics.PROCESS.collect(), *metrics.queue_families([], [], []),
                metrics.queue_up(1)]
    return {f.name + suffix for f in families for suffix in suffixes[f.type]}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@pytest.mark.parametrize("expr", [r["expr"] for r in _rules()] + _dashboard_exprs())
def test_each_query_parses_and_names_only_exported_metrics(expr: str) -> None:
    promql_parser.parse(expr)  # raises on a syntax error
    named = set(METRIC.findall(expr))
    assert named, expr
    assert named <= _exported(), named - _exported()


def test_the_alert_rules_are_complete() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert DURATION.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    # the three the on-call needs first: an aging backlog, failures by code, a kind unserved
    exprs = " ".join(r["expr"] for r in rules)
    for needed in ("worker_queue_oldest_pending_seconds", "error_code",
                   "worker_queue_live_workers"):
        assert needed in exprs


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert dashboard["uid"] and len(set(ids)) == len(ids)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"].strip("${}") in variables, panel["title"]
        assert panel["targets"], panel["title"]
