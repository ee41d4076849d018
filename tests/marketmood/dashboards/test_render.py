"""Generated Grafana files: committed copies match the code, and the dashboards have what analysts need."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.dashboards import render
from marketmood.dashboards.definitions import (
    NEGATIVE_SHARE_PANEL_ID,
    POSTGRES_UID,
    PROMETHEUS_UID,
    all_dashboards,
    to_json_dict,
)


def test_committed_files_are_up_to_date_with_the_code() -> None:
    assert render.stale() == [], "run `marketmood grafana render` and commit docker/grafana"


def test_render_writes_then_check_passes_and_detects_edits(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["grafana", "render", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dashboards" / "marketmood-sentiment.json").is_file()
    assert runner.invoke(cli, ["grafana", "render", "--out", str(tmp_path), "--check"]).exit_code == 0

    (tmp_path / "dashboards" / "marketmood-pipeline.json").write_text("{}")
    (tmp_path / "dashboards" / "leftover.json").write_text("{}")
    result = runner.invoke(cli, ["grafana", "render", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "dashboards/marketmood-pipeline.json" in result.output and "leftover.json" in result.output


def test_sentiment_dashboard_has_the_analyst_panels() -> None:
    dashboard = to_json_dict(all_dashboards()["marketmood-sentiment"])
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Sentiment index per topic", "Negative share per topic", "Article volume",
            "Latest negative headlines"} <= titles
    ticker = dashboard["templating"]["list"][0]
    assert (ticker["name"], ticker["includeAll"], ticker["multi"], ticker["refresh"]) == ("ticker", True, True, 2)
    annotation = dashboard["annotations"]["list"][0]
    assert annotation["filter"]["ids"] == [NEGATIVE_SHARE_PANEL_ID]
    assert "FROM alerts" in annotation["target"]["rawSql"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == POSTGRES_UID
            assert "$__timeFilter" in target["rawSql"], f"{panel['title']} ignores the time picker"
            assert "${ticker}" in target["rawSql"], f"{panel['title']} ignores the ticker drill-down"
    headlines = next(p for p in dashboard["panels"] if p["title"] == "Latest negative headlines")
    link = headlines["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]
    assert link["url"] == "${__data.fields.url}"


def test_pipeline_dashboard_reports_model_and_health() -> None:
    dashboard = to_json_dict(all_dashboards()["marketmood-pipeline"])
    by_source: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        by_source.setdefault(panel["datasource"]["uid"], []).append(panel["title"])
    assert "Active model version" in by_source[POSTGRES_UID]
    prom_exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t)
    assert {"Consumer lag (messages)", "Dead-lettered (range)"} <= set(by_source[PROMETHEUS_UID])
    assert "rate(" in prom_exprs and "increase(" in prom_exprs


def test_provisioning_points_at_the_rendered_dashboards_and_read_only_role() -> None:
    root = render.GRAFANA_DIR
    datasources = yaml.safe_load((root / "provisioning/datasources/marketmood.yaml").read_text())["datasources"]
    uids = {d["uid"]: d for d in datasources}
    assert set(uids) == {POSTGRES_UID, PROMETHEUS_UID}
    assert uids[POSTGRES_UID]["user"] == "marketmood_grafana"
    assert uids[POSTGRES_UID]["secureJsonData"]["password"] == "${MARKETMOOD_GRAFANA__READER_PASSWORD}"
    provider = yaml.safe_load((root / "provisioning/dashboards/marketmood.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/marketmood"


def test_prometheus_panels_use_metrics_the_workers_export() -> None:
    import re

    from prometheus_client import generate_latest

    from streams.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    metrics.deadlettered.labels(reason="invalid").inc()
    metrics.lag.labels(partition="0").set(3)
    exported = generate_latest(metrics.registry).decode()
    dashboard = to_json_dict(all_dashboards()["marketmood-pipeline"])
    names = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"marketmood_\w+", target.get("expr", ""))
    }
    assert len(names) >= 5
    missing = [n for n in names if not re.search(rf"^{n}[{{ ]", exported, re.MULTILINE)]
    assert missing == [], f"dashboard queries metrics the worker does not export: {missing}"
