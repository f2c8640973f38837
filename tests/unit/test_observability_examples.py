"""The Prometheus alert rules and the Grafana dashboard in examples/ speak our real metrics: every
series they query is one a scrape of the operator has, the rules pass `promtool check rules` and
their own `promtool test rules`, and every dashboard query parses as PromQL (checked by promtool
as a recording rule)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_metrics import every_series, scrape

EXAMPLES = Path(__file__).parents[2] / "examples"
RULES = EXAMPLES / "prometheus" / "runscaler-alerts.yml"
RULES_TEST = EXAMPLES / "prometheus" / "runscaler-alerts.test.yml"
DASHBOARD = EXAMPLES / "grafana" / "runscaler-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)

# Names in PromQL that are functions, keywords or Prometheus's own series, not our metrics.
_NOT_METRICS = {
    "sum", "max", "min", "by", "and", "on", "rate", "increase", "histogram_quantile", "up",
    "le", "humanize", "or", "unless", "without", "count", "avg",
}  # fmt: skip


def scraped_names() -> set[str]:
    text = scrape(every_series())
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects (label names and functions left out)."""
    without_matchers = re.sub(r"\{[^}]*\}", "{}", expr)
    without_groupings = re.sub(r"\b(by|on|without)\s*\([^)]*\)", "", without_matchers)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    return {
        name
        for name in re.findall(r"[a-z_][a-z0-9_]*", without_ranges)
        if name not in _NOT_METRICS and "_" in name
    }


def rule_exprs() -> list[str]:
    from ruamel.yaml import YAML

    rules = YAML(typ="safe").load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _promtool(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_the_metric_name_finder_finds_names_and_skips_labels() -> None:
    expr = 'sum by (le, name) (rate(gha_x_bucket{name=~"a"}[5m])) and on (name) runscaler_y == 1'

    assert metric_names(expr) == {"gha_x_bucket", "runscaler_y"}


@pytest.mark.parametrize("source", ["alert rules", "dashboard"])
def test_every_queried_series_is_one_the_operator_exports(source: str) -> None:
    exprs = rule_exprs() if source == "alert rules" else dashboard_exprs()
    used = set().union(*(metric_names(e) for e in exprs))

    assert used, "no metric found in the expressions"
    assert used <= scraped_names(), f"not exported: {sorted(used - scraped_names())}"


def test_the_alerts_cover_what_an_operator_must_hear_about() -> None:
    used = set().union(*(metric_names(e) for e in rule_exprs()))

    assert {
        "runscaler_scale_sets",  # a scale set not listening
        "runscaler_runner_failures_total",  # runners failing
        "runscaler_manifest_last_reload_successful",  # reload rejected
    } <= used


@needs_promtool
def test_promtool_accepts_the_alert_rules_and_their_tests_pass() -> None:
    checked = _promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout

    tested = _promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("== 0", "== == 0", 1))

    assert _promtool("check", "rules", broken).returncode != 0


def _as_recording_rules(exprs: list[str]) -> dict[str, Any]:
    """Dashboard queries with Grafana's variables filled in, as rules promtool parses."""
    filled = [
        e.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$scale_set", ".*")
        for e in exprs
    ]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(filled)]
    return {"groups": [{"name": "dashboard", "rules": rules}]}


@needs_promtool
def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(json.dumps(_as_recording_rules(dashboard_exprs())))

    checked = _promtool("check", "rules", rules)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_is_importable_with_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())

    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Job pickup latency", "Runners by state", "Runner failures", "Manifest reloads"} <= (
        titles
    )
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
