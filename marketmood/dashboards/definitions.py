"""MarketMood's Grafana dashboards, defined in code with grafana-foundation-sdk.

Two dashboards: "News sentiment" for analysts (sentiment index and negative share per topic with alert
annotations, article volume, the latest negative headlines, a ticker drill-down) and "Pipeline health" for
operators (model version in use, throughput, latency from SQL; consumer lag, dead letters, batch latency from
the workers' Prometheus metrics). The SQL lives in ``storage.dashboards``; ``tests/dashboards`` runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from marketmood.dashboards.sqlquery import POSTGRES_TYPE, PostgresQueryBuilder, SqlAnnotationTargetBuilder
from storage import dashboards as sql

POSTGRES_UID = "marketmood-postgres"
PROMETHEUS_UID = "marketmood-prometheus"
POSTGRES = model.DataSourceRef(type_val=POSTGRES_TYPE, uid=POSTGRES_UID)
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)

SENTIMENT_UID = "marketmood-sentiment"
PIPELINE_UID = "marketmood-pipeline"
FOLDER = "MarketMood"

# Worker metrics scraped by Prometheus (streams/metrics.py; tests check these names against it).
METRIC_CONSUMED = "marketmood_worker_consumed_total"
METRIC_SCORED = "marketmood_worker_scored_total"
METRIC_DEADLETTERED = "marketmood_worker_deadlettered_total"
METRIC_LAG = "marketmood_worker_lag"
METRIC_INFERENCE_SECONDS = "marketmood_worker_inference_seconds"
METRIC_DB_SECONDS = "marketmood_worker_db_write_seconds"

# Panel ids the alert annotations are drawn on (the negative-share panel).
NEGATIVE_SHARE_PANEL_ID = 2


@dataclass(frozen=True, slots=True)
class SqlTarget:
    """A panel's SQL target, as the tests need it: what runs and which columns the panel reads."""

    panel: str
    sql: str
    format: str
    columns: tuple[str, ...]


def _sql(raw: str, fmt: str = "time_series", ref: str = "A") -> PostgresQueryBuilder:
    return PostgresQueryBuilder().raw_sql(raw).format(fmt).ref_id(ref).datasource(POSTGRES)  # type: ignore[arg-type]


def _prom(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS).range()


def _p95(histogram: str) -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket[$__rate_interval])))"


def _ticker_variable() -> dash.QueryVariable:
    return (
        dash.QueryVariable("ticker")
        .label("Ticker")
        .description("Drill down to articles that mention these tickers.")
        .datasource(POSTGRES)
        .query(sql.TICKER_VARIABLE)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(sql.TICKER_ALL_VALUE)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def _alert_annotation() -> dash.AnnotationQuery:
    return (
        dash.AnnotationQuery()
        .name("Alerts")
        .datasource(POSTGRES)
        .enable(True)
        .icon_color("red")
        .target(SqlAnnotationTargetBuilder(sql.ALERT_ANNOTATIONS))
        .filter(dash.AnnotationPanelFilter().ids([NEGATIVE_SHARE_PANEL_ID]))
    )


def _topic_timeseries(panel_id: int, title: str, description: str, raw: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(POSTGRES)
        .with_target(_sql(raw))
        .height(9)
        .span(12)
        .legend(VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.RIGHT).calcs(["mean", "lastNotNull"]))
    )


def sentiment_dashboard() -> dash.Dashboard:
    """Analysts' dashboard: what the news says, per topic, with alerts and the worst headlines."""
    headline_link = [{"title": "Open article", "url": "${__data.fields.url}", "targetBlank": True}]
    return (
        dash.Dashboard("MarketMood — News sentiment")
        .uid(SENTIMENT_UID)
        .description("Sentiment of financial news per topic, with negative-spike alerts. Source: MarketMood.")
        .tags(["marketmood", "sentiment"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone("utc")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(_ticker_variable())
        .annotation(_alert_annotation())
        .with_panel(
            _topic_timeseries(
                1,
                "Sentiment index per topic",
                "Mean of p(positive) - p(negative) over novel articles, newest model's score per article.",
                sql.SENTIMENT_INDEX_BY_TOPIC,
            )
            .min(-1)
            .max(1)
            .decimals(2)
        )
        .with_panel(
            _topic_timeseries(
                NEGATIVE_SHARE_PANEL_ID,
                "Negative share per topic",
                "Share of novel articles scored negative. Red regions: alerts (start to resolution).",
                sql.NEGATIVE_SHARE_BY_TOPIC,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
        )
        .with_panel(
            timeseries.Panel()
            .id(3)
            .title("Article volume")
            .description("Articles per interval; syndicated copies of a story are counted apart.")
            .datasource(POSTGRES)
            .with_target(_sql(sql.ARTICLE_VOLUME))
            .draw_style(common.GraphDrawStyle.BARS)
            .fill_opacity(60)
            .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
            .height(8)
            .span(8)
        )
        .with_panel(
            table.Panel()
            .id(4)
            .title("Latest negative headlines")
            .description("Newest articles scored negative, with p(negative); click a headline to open it.")
            .datasource(POSTGRES)
            .with_target(_sql(sql.MOST_NEGATIVE_HEADLINES, "table"))
            .height(8)
            .span(16)
            .override_by_name("headline", [model.DynamicConfigValue(id_val="links", value=headline_link)])
            .override_by_name("url", [model.DynamicConfigValue(id_val="custom.hidden", value=True)])
            .override_by_name(
                "p_negative",
                [
                    model.DynamicConfigValue(id_val="unit", value="percentunit"),
                    model.DynamicConfigValue(
                        id_val="custom.cellOptions", value={"type": "color-background", "mode": "gradient"}
                    ),
                    model.DynamicConfigValue(id_val="color", value={"mode": "continuous-YlRd"}),
                ],
            )
        )
    )


def _text_stat(panel_id: int, title: str, raw: str, span: int) -> stat.Panel:
    return (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .datasource(POSTGRES)
        .with_target(_sql(raw, "table"))
        .reduce_options(ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields("/.*/"))
        .text_mode(common.BigValueTextMode.VALUE)
        .color_mode(common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(4)
        .span(span)
    )


def pipeline_dashboard() -> dash.Dashboard:
    """Operators' dashboard: which model scores, how fast, and whether the stream keeps up."""
    return (
        dash.Dashboard("MarketMood — Pipeline health")
        .uid(PIPELINE_UID)
        .description("Model in use, scoring throughput and latency, Kafka consumer lag and dead letters.")
        .tags(["marketmood", "operations"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("utc")
        .with_panel(
            _text_stat(11, "Active model version", sql.ACTIVE_MODEL, 8)
            .reduce_options(ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields("/^active model$/"))
        )
        .with_panel(
            stat.Panel()
            .id(12)
            .title("Open alerts")
            .datasource(POSTGRES)
            .with_target(_sql(sql.OPEN_ALERTS, "table"))
            .height(4)
            .span(4)
            .thresholds(
                dash.ThresholdsConfig()
                .mode(model.ThresholdsMode.ABSOLUTE)
                .steps([model.Threshold(value=None, color="green"), model.Threshold(value=1, color="red")])
            )
        )
        .with_panel(
            stat.Panel()
            .id(13)
            .title("Dead-lettered (range)")
            .description("Messages the workers could not score, sent to the dead-letter topic.")
            .datasource(PROMETHEUS)
            .with_target(
                prometheus.Dataquery()
                .expr(f"sum(increase({METRIC_DEADLETTERED}[$__range]))")
                .instant()
                .legend_format("dead-lettered")
                .ref_id("A")
                .datasource(PROMETHEUS)
            )
            .height(4)
            .span(4)
            .thresholds(
                dash.ThresholdsConfig()
                .mode(model.ThresholdsMode.ABSOLUTE)
                .steps([model.Threshold(value=None, color="green"), model.Threshold(value=1, color="orange")])
            )
        )
        .with_panel(
            table.Panel()
            .id(14)
            .title("Model versions scoring")
            .description("Which versions wrote scores in the range: a promotion or rollback shows as a switch.")
            .datasource(POSTGRES)
            .with_target(_sql(sql.MODEL_VERSIONS_IN_USE, "table"))
            .height(4)
            .span(8)
        )
        .with_panel(
            timeseries.Panel()
            .id(15)
            .title("Scored per minute (database)")
            .datasource(POSTGRES)
            .with_target(_sql(sql.SCORED_PER_MINUTE))
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .id(16)
            .title("Ingest-to-score latency (database)")
            .datasource(POSTGRES)
            .with_target(_sql(sql.SCORING_LATENCY))
            .unit("s")
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .id(17)
            .title("Throughput per second (workers)")
            .datasource(PROMETHEUS)
            .with_target(_prom(f"sum(rate({METRIC_CONSUMED}[$__rate_interval]))", "consumed"))
            .with_target(_prom(f"sum(rate({METRIC_SCORED}[$__rate_interval]))", "scored", "B"))
            .with_target(_prom(f"sum(rate({METRIC_DEADLETTERED}[$__rate_interval]))", "dead-lettered", "C"))
            .unit("ops")
            .height(8)
            .span(8)
        )
        .with_panel(
            timeseries.Panel()
            .id(18)
            .title("Consumer lag (messages)")
            .description("Messages in news.raw not yet consumed, per partition; rising lag = add workers.")
            .datasource(PROMETHEUS)
            .with_target(_prom(f"max by (partition) ({METRIC_LAG})", "partition {{partition}}"))
            .height(8)
            .span(8)
        )
        .with_panel(
            timeseries.Panel()
            .id(19)
            .title("Batch latency p95 (workers)")
            .datasource(PROMETHEUS)
            .with_target(_prom(_p95(METRIC_INFERENCE_SECONDS), "inference"))
            .with_target(_prom(_p95(METRIC_DB_SECONDS), "database write", "B"))
            .unit("s")
            .height(8)
            .span(8)
        )
    )


def all_dashboards() -> dict[str, dash.Dashboard]:
    """Every dashboard by uid (the file name they are rendered to)."""
    return {SENTIMENT_UID: sentiment_dashboard(), PIPELINE_UID: pipeline_dashboard()}


def to_json_dict(builder: dash.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (plain dicts, stable for diffing)."""
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


# Columns each SQL target must return (what the panel reads); tests run every SQL target against PostgreSQL.
EXPECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    sql.SENTIMENT_INDEX_BY_TOPIC: ("time", "metric", "value"),
    sql.NEGATIVE_SHARE_BY_TOPIC: ("time", "metric", "value"),
    sql.ARTICLE_VOLUME: ("time", "novel", "syndicated"),
    sql.MOST_NEGATIVE_HEADLINES: ("time", "headline", "source", "tickers", "topic", "p_negative", "model_version", "url"),
    sql.ACTIVE_MODEL: ("active model", "since", "by"),
    sql.OPEN_ALERTS: ("open alerts",),
    sql.MODEL_VERSIONS_IN_USE: ("model_version", "scored", "first_scored", "last_scored"),
    sql.SCORED_PER_MINUTE: ("time", "scored per minute"),
    sql.SCORING_LATENCY: ("time", "p50", "p95"),
    sql.ALERT_ANNOTATIONS: ("time", "timeend", "text", "tags"),
    sql.TICKER_VARIABLE: ("ticker",),
}


def sql_targets(rendered: dict[str, Any]) -> list[SqlTarget]:
    """Every SQL query in a rendered dashboard (panels, annotations, variables) with its expected columns."""
    found: list[SqlTarget] = []
    for panel in rendered.get("panels", []):
        for target in panel.get("targets", []):
            if "rawSql" in target:
                found.append(_target(panel["title"], target["rawSql"], target["format"]))
    for annotation in rendered.get("annotations", {}).get("list", []):
        target = annotation.get("target") or {}
        if "rawSql" in target:
            found.append(_target(f"annotation {annotation['name']}", target["rawSql"], "table"))
    for variable in rendered.get("templating", {}).get("list", []):
        if variable.get("datasource", {}).get("type") == POSTGRES_TYPE:
            found.append(_target(f"variable {variable['name']}", variable["query"], "table"))
    return found


def _target(panel: str, raw: str, fmt: str) -> SqlTarget:
    if raw not in EXPECTED_COLUMNS:
        raise KeyError(f"{panel}: SQL not listed in EXPECTED_COLUMNS")
    return SqlTarget(panel=panel, sql=raw, format=fmt, columns=EXPECTED_COLUMNS[raw])
