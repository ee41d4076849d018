"""Generated Grafana files: committed copies match the code, and the dashboards have what analysts need."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.dashboards import render
from marketmood.dashboards.definitions import (
    DRILL_DOWN_URL,
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
    panels = {p["title"]: p for p in dashboard["panels"]}
    assert {"Sentiment index (selection)", "Sentiment index per topic", "Sentiment index per ticker",
            "Negative share per topic", "Article volume (articles per hour)", "Top movers (24 h vs previous 30 days)",
            "Alerts with evidence", "Most negative stories", "Most positive stories", "Model changes"} <= set(panels)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["topic", "ticker", "source", "tz", "min_articles", "smoothing"]
    for name in ("topic", "ticker", "source"):
        v = variables[name]
        assert (v["includeAll"], v["multi"], v["refresh"], v["allValue"]) == (True, True, 2, "'__all'")
    assert variables["tz"]["current"]["value"] == "America/New_York" and "UTC" in variables["tz"]["query"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == POSTGRES_UID
            raw = target["rawSql"]
            assert "$__timeFrom()" in raw or "$__timeTo()" in raw, f"{panel['title']} ignores the time picker"
            if panel["title"] != "Model changes":
                assert "${ticker}" in raw and "${topic}" in raw, f"{panel['title']} ignores the drill-down"
    # Index panels: fixed thresholds (red below -0.2, zero line, green above +0.2), a confidence band.
    index = panels["Sentiment index (selection)"]
    steps = index["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [(None, "red"), (-0.2, "transparent"), (0, "#8e8e8e"),
                                                         (0.2, "green")]
    assert index["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
    band = {o["matcher"]["options"]: o["properties"] for o in index["fieldConfig"]["overrides"]}
    assert {"id": "custom.fillBelowTo", "value": "lower 95%"} in band["upper 95%"]
    assert all(p["interval"] == "1h" for p in dashboard["panels"] if p["type"] == "timeseries")


def test_alert_annotations_are_on_every_time_series_and_coloured_by_severity() -> None:
    dashboard = to_json_dict(all_dashboards()["marketmood-sentiment"])
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"]}
    assert {n: a["iconColor"] for n, a in annotations.items() if n.startswith("Alerts")} == {
        "Alerts: critical": "red", "Alerts: error": "orange", "Alerts: warning": "yellow", "Alerts: info": "blue"}
    assert "model_alias_history" in annotations["Model changes"]["target"]["rawSql"]
    for annotation in annotations.values():
        assert "filter" not in annotation  # no panel filter: drawn on every time series panel
        assert "FROM alerts" in annotation["target"]["rawSql"] or annotation["name"] == "Model changes"


def test_drill_down_and_headline_links() -> None:
    dashboard = to_json_dict(all_dashboards()["marketmood-sentiment"])
    panels = {p["title"]: p for p in dashboard["panels"]}

    def links(panel: str, field: str) -> list[dict[str, object]]:
        overrides = panels[panel]["fieldConfig"]["overrides"]
        props = next(o["properties"] for o in overrides if o["matcher"]["options"] == field)
        return next(p["value"] for p in props if p["id"] == "links")

    movers = links("Top movers (24 h vs previous 30 days)", "scope")
    assert movers[0]["url"] == DRILL_DOWN_URL
    assert DRILL_DOWN_URL.startswith("/d/marketmood-sentiment?var-${__data.fields.scope_type}=")
    for tone in ("negative", "positive"):
        assert links(f"Most {tone} stories", "headline")[0]["url"] == "${__data.fields.link}"
        assert panels[f"Most {tone} stories"]["options"]["sortBy"] == [{"displayName": f"p_{tone}", "desc": True}]


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


def test_numeric_knobs_take_no_custom_value_and_reach_the_sql_as_a_cast_string() -> None:
    """A custom value of min_articles / smoothing went into the panels' SQL unquoted (SQL injection from a
    viewer's URL): only the listed values are offered, and the SQL casts a quoted string anyway."""
    import re

    from marketmood.dashboards.definitions import sql_targets

    dashboard = to_json_dict(all_dashboards()["marketmood-sentiment"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["min_articles"]["allowCustomValue"], variables["smoothing"]["allowCustomValue"]) == (False, False)
    for target in sql_targets(dashboard):
        uses = re.findall(r"\$\{?(?:min_articles|smoothing)\b", target.sql)
        cast = re.findall(r"CAST\(\$\{(?:min_articles|smoothing):sqlstring\} AS integer\)", target.sql)
        assert len(uses) == len(cast), f"{target.panel}: a knob outside CAST(${{knob:sqlstring}} AS integer)"
        tz = (len(re.findall(r"\$\{?tz\b", target.sql)), len(re.findall(r"'\$\{tz\}'", target.sql)))
        assert tz[0] == tz[1], f"{target.panel}: tz outside quotes (only there are its quotes doubled)"


def test_only_the_ema_connects_across_hidden_buckets() -> None:
    """A bucket below the minimum article count has no mean, band or negative share on purpose: spanNulls drew a
    line across it anyway. The EMA carries its value through empty buckets and may connect."""
    panels = {p["title"]: p for p in to_json_dict(all_dashboards()["marketmood-sentiment"])["panels"]}

    def span_nulls(title: str, field: str | None = None) -> bool:
        config = panels[title]["fieldConfig"]
        for override in config["overrides"] if field else []:
            if override["matcher"]["options"] == field:
                for prop in override["properties"]:
                    if prop["id"] == "custom.spanNulls":
                        return bool(prop["value"])
        return bool(config["defaults"]["custom"]["spanNulls"])

    selection = "Sentiment index (selection)"
    assert [span_nulls(selection, f) for f in ("bucket mean", "lower 95%", "upper 95%")] == [False] * 3
    assert span_nulls(selection, "index (EMA)")
    assert not span_nulls("Negative share per topic")
    assert span_nulls("Sentiment index per topic") and span_nulls("Sentiment index per ticker")


def test_scored_per_minute_fills_empty_minutes_with_zero() -> None:
    """A worker outage must read as 0, not as a line drawn across the gap (Grafana's fill argument)."""
    from storage import dashboards as sql

    assert "$__timeGroupAlias(scored_at, $__interval, 0)" in sql.SCORED_PER_MINUTE
