"""MarketMood's Grafana dashboards, defined in code with grafana-foundation-sdk.

"News sentiment" for analysts: variables topic / ticker / source / market time zone / min articles per
bucket / EMA span; the sentiment index of the selection with its 95% band, per topic and per ticker (EMA,
zero line, fixed thresholds), negative share, volume in articles per hour, top movers (24 h vs 30 days) with
drill-down, alerts with evidence, model changes, and the most negative and most positive original stories;
alert annotations per severity and model changes on every time series. "Pipeline health" for operators
(model in use, throughput, latency and open alerts from SQL; consumer lag, dead letters, batch latency from
the workers' Prometheus metrics). The SQL lives in ``storage.dashboards``; ``tests/marketmood/dashboards``
runs every query on PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from marketmood.dashboards.sqlquery import (
    POSTGRES_TYPE,
    PostgresQueryBuilder,
    SqlAnnotationTargetBuilder,
)
from storage import dashboards as sql

POSTGRES_UID = "marketmood-postgres"
PROMETHEUS_UID = "marketmood-prometheus"
POSTGRES = model.DataSourceRef(type_val=POSTGRES_TYPE, uid=POSTGRES_UID)
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)

SENTIMENT_UID = "marketmood-sentiment"
PIPELINE_UID = "marketmood-pipeline"
FOLDER = "MarketMood"
FOLDER_UID = "marketmood"  # the folder's uid for both file provisioning and `grafana push`

# Worker metrics scraped by Prometheus (streams/metrics.py; tests check these names against it).
METRIC_CONSUMED = "marketmood_worker_consumed_total"
METRIC_SCORED = "marketmood_worker_scored_total"
METRIC_DEADLETTERED = "marketmood_worker_deadlettered_total"
METRIC_LAG = "marketmood_worker_lag"
METRIC_INFERENCE_SECONDS = "marketmood_worker_inference_seconds"
METRIC_DB_SECONDS = "marketmood_worker_db_write_seconds"
METRIC_CALL_STARTED = "marketmood_worker_call_started_timestamp_seconds"


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


def _query_variable(name: str, label: str, description: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(POSTGRES)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(sql.ALL_VALUE)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def _custom_variable(name: str, label: str, description: str, values: tuple[str, ...],
                     default: str, *, custom_values: bool = True) -> dash.CustomVariable:
    """A single-value choice; ``custom_values=False`` keeps a value typed into the URL out of the panels' SQL
    (Grafana then falls back to a listed value)."""
    return (
        dash.CustomVariable(name)
        .label(label)
        .description(description)
        .values(",".join(values))
        .multi(False)
        .include_all(False)
        .allow_custom_value(custom_values)
        .current(model.VariableOption(selected=True, text=default, value=default))
    )


def sentiment_variables() -> list[dash.QueryVariable | dash.CustomVariable]:
    """Topic, ticker and source filters (multi-value, All), the market's time zone and the two index knobs."""
    return [
        _query_variable("topic", "Topic", "Topics to show (the model's 20 topics).", sql.TOPIC_VARIABLE),
        _query_variable("ticker", "Ticker", "Only articles that mention these tickers.", sql.TICKER_VARIABLE),
        _query_variable("source", "Source", "Only articles from these publishers.", sql.SOURCE_VARIABLE),
        # Any IANA zone may be typed in: the SQL quotes it ('${tz}', Grafana doubles the quotes of the value).
        _custom_variable("tz", "Market time zone", "Buckets start at local midnight here; local times in tables.",
                         sql.TIME_ZONES, sql.TIME_ZONES[0]),
        _custom_variable("min_articles", "Min articles / bucket",
                         "A bucket with fewer novel articles shows no mean and no band.",
                         sql.MIN_ARTICLES_CHOICES, str(sql.DEFAULT_MIN_ARTICLES), custom_values=False),
        _custom_variable("smoothing", "EMA span (buckets)", "Exponential moving average span; 1 = raw means.",
                         sql.SMOOTHING_CHOICES, str(sql.DEFAULT_SPAN), custom_values=False),
    ]


SEVERITY_COLORS = {"critical": "red", "error": "orange", "warning": "yellow", "info": "blue"}


def annotations() -> list[dash.AnnotationQuery]:
    """Alert regions, one toggle and colour per severity, filtered by the topic/ticker selection, and model
    changes; no panel filter, so Grafana draws them on every time series panel."""
    found = [
        dash.AnnotationQuery()
        .name(f"Alerts: {severity}")
        .datasource(POSTGRES)
        .enable(severity != "info")
        .icon_color(SEVERITY_COLORS[severity])
        .target(SqlAnnotationTargetBuilder(sql.ALERT_ANNOTATIONS[severity]))
        for severity in sql.SEVERITIES
    ]
    found.append(
        dash.AnnotationQuery()
        .name("Model changes")
        .datasource(POSTGRES)
        .enable(True)
        .icon_color("purple")
        .target(SqlAnnotationTargetBuilder(sql.MODEL_ANNOTATIONS))
    )
    return found


def _index_thresholds() -> dash.ThresholdsConfig:
    """Fixed thresholds: red area below -0.2, green above +0.2, a line at zero."""
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([
            model.Threshold(value=None, color="red"),
            model.Threshold(value=-sql.THRESHOLD, color="transparent"),
            model.Threshold(value=0, color="#8e8e8e"),
            model.Threshold(value=sql.THRESHOLD, color="green"),
        ])
    )


def _series_panel(panel_id: int, title: str, description: str, raw: str, span: int = 12, *,
                  span_nulls: bool = True) -> timeseries.Panel:
    """A time series of sentiment SQL. ``span_nulls``: connect across NULL buckets, right for the EMA (it
    carries its value through empty buckets), wrong for a bucket statistic the SQL hides on purpose (a bucket
    below the minimum article count has no mean, band or share: a line across it would draw one)."""
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(POSTGRES)
        .with_target(_sql(raw))
        .interval("1h")  # minimum bucket: fewer than an hour of news is too few articles per bucket
        .span_nulls(span_nulls)
        .height(9)
        .span(span)
        .legend(VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.RIGHT).calcs(["mean", "lastNotNull"]))
    )


def _index_panel(panel: timeseries.Panel) -> timeseries.Panel:
    return (
        panel.min(-1).max(1).decimals(2)
        .thresholds(_index_thresholds())
        .thresholds_style(GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA))
    )


def _table(panel_id: int, title: str, description: str, raw: str, span: int, height: int = 9) -> table.Panel:
    return (
        table.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(POSTGRES)
        .with_target(_sql(raw, "table"))
        .height(height)
        .span(span)
    )


def _percent(field: str) -> tuple[str, list[model.DynamicConfigValue]]:
    return field, [model.DynamicConfigValue(id_val="unit", value="percentunit")]


def _headlines_table(panel_id: int, tone: str, raw: str) -> table.Panel:
    prob = f"p_{tone}"
    scheme = "continuous-YlRd" if tone == "negative" else "continuous-BlYlRd"
    return (
        _table(panel_id, f"Most {tone} stories",
               f"Original stories only (syndicated copies counted in 'copies', their publishers in 'sources'), "
               f"most {tone} first; click a column to sort, a headline to open it (a news search where the "
               f"source gave no URL).", raw, 12, 10)
        .sort_by([TableSortByFieldState().display_name(prob).desc(True)])
        .override_by_name("headline", [model.DynamicConfigValue(
            id_val="links", value=[{"title": "Open article", "url": "${__data.fields.link}", "targetBlank": True}])])
        .override_by_name("link", [model.DynamicConfigValue(id_val="custom.hidden", value=True)])
        .override_by_name("time", [model.DynamicConfigValue(id_val="custom.hidden", value=True)])
        .override_by_name(*_percent("topic_confidence"))
        .override_by_name(prob, [
            model.DynamicConfigValue(id_val="unit", value="percentunit"),
            model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background", "mode": "gradient"}),
            model.DynamicConfigValue(id_val="color", value={"mode": scheme}),
        ])
    )


# A mover's row opens this dashboard filtered to its topic or ticker, keeping the range and the knobs.
DRILL_DOWN_URL = (
    "/d/" + SENTIMENT_UID + "?var-${__data.fields.scope_type}=${__data.fields.scope:percentencode}"
    "&${tz:queryparam}&${min_articles:queryparam}&${smoothing:queryparam}&${__url_time_range}"
)


def sentiment_dashboard() -> dash.Dashboard:
    """Analysts' dashboard: the index with its band, per topic and ticker, movers, events, the stories."""
    builder = (
        dash.Dashboard("MarketMood — News sentiment")
        .uid(SENTIMENT_UID)
        .description("Sentiment of financial news per topic and ticker, with alerts and model changes. "
                     "Source: MarketMood (current model's scores only).")
        .tags(["marketmood", "sentiment"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone("utc")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for variable in sentiment_variables():
        builder = builder.with_variable(variable)
    for annotation in annotations():
        builder = builder.annotation(annotation)
    return (
        builder
        .with_panel(
            _index_panel(_series_panel(
                1, "Sentiment index (selection)",
                "EMA of the bucket mean of p(positive) - p(negative) over novel articles of the selection, "
                "with the bucket mean and its 95% band (hidden below the minimum article count); bars: novel "
                "articles per bucket (right axis).", sql.SENTIMENT_SELECTION, 24, span_nulls=False))
            .override_by_name("index (EMA)", [model.DynamicConfigValue(id_val="custom.spanNulls", value=True)])
            .override_by_name("upper 95%", [
                model.DynamicConfigValue(id_val="custom.fillBelowTo", value="lower 95%"),
                model.DynamicConfigValue(id_val="custom.lineWidth", value=0),
                model.DynamicConfigValue(id_val="custom.fillOpacity", value=20),
                model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"}),
            ])
            .override_by_name("lower 95%", [
                model.DynamicConfigValue(id_val="custom.lineWidth", value=0),
                model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"}),
            ])
            .override_by_name("bucket mean", [
                model.DynamicConfigValue(id_val="custom.drawStyle", value="points"),
                model.DynamicConfigValue(id_val="custom.pointSize", value=4),
            ])
            .override_by_name("articles", [
                model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                model.DynamicConfigValue(id_val="custom.drawStyle", value="bars"),
                model.DynamicConfigValue(id_val="custom.fillOpacity", value=25),
                model.DynamicConfigValue(id_val="min", value=0),
                model.DynamicConfigValue(id_val="max", value=None),
                model.DynamicConfigValue(id_val="custom.thresholdsStyle", value={"mode": "off"}),
                model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "#8e8e8e"}),
            ])
        )
        .with_panel(_index_panel(_series_panel(
            2, "Sentiment index per topic", "EMA of the bucket mean per topic (novel articles, current model).",
            sql.SENTIMENT_INDEX_BY_TOPIC)))
        .with_panel(_index_panel(_series_panel(
            3, "Sentiment index per ticker",
            "EMA of the bucket mean per ticker: the selected tickers, or with All the 10 busiest.",
            sql.SENTIMENT_INDEX_BY_TICKER)))
        .with_panel(
            _series_panel(4, "Negative share per topic",
                          "Share of novel articles scored negative (buckets above the minimum article count).",
                          sql.NEGATIVE_SHARE_BY_TOPIC, span_nulls=False)
            .unit("percentunit").min(0).max(1)
        )
        .with_panel(
            _series_panel(5, "Article volume (articles per hour)",
                          "Articles per hour, whatever the bucket size; syndicated copies apart.",
                          sql.ARTICLE_VOLUME)
            .draw_style(common.GraphDrawStyle.BARS)
            .fill_opacity(60)
            .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
            .unit("short")
        )
        .with_panel(
            _table(6, "Top movers (24 h vs previous 30 days)",
                   "Topics and tickers whose last 24 h of sentiment moved most from their previous 30 days "
                   "(z of the 24 h mean against the baseline articles), with the volume ratio (24 h articles "
                   "over baseline articles per day). Click a scope to drill down.", sql.TOP_MOVERS, 12, 10)
            .override_by_name("scope", [model.DynamicConfigValue(id_val="links", value=[
                {"title": "Drill down", "url": DRILL_DOWN_URL}])])
            .override_by_name("z", [
                model.DynamicConfigValue(id_val="decimals", value=1),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
                model.DynamicConfigValue(id_val="thresholds", value={"mode": "absolute", "steps": [
                    {"value": None, "color": "red"}, {"value": -2, "color": "text"}, {"value": 2, "color": "green"}]}),
            ])
            .override_by_name("volume_ratio", [model.DynamicConfigValue(id_val="decimals", value=2)])
        )
        .with_panel(
            _table(7, "Alerts with evidence",
                   "Alerts overlapping the range (silenced ones too): negative share vs baseline, volume, "
                   "p-value and the top negative headline.", sql.ALERTS_TABLE, 12, 10)
            .override_by_name(*_percent("negative_share"))
            .override_by_name(*_percent("baseline_share"))
            .override_by_name("top_headline", [model.DynamicConfigValue(
                id_val="links", value=[{"title": "Open", "url": "${__data.fields.top_headline_url}",
                                        "targetBlank": True}])])
            .override_by_name("top_headline_url", [model.DynamicConfigValue(id_val="custom.hidden", value=True)])
            .override_by_name("severity", [model.DynamicConfigValue(id_val="mappings", value=[
                {"type": "value", "options": {s: {"color": c, "index": i}
                                              for i, (s, c) in enumerate(SEVERITY_COLORS.items())}}]),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"})])
        )
        .with_panel(_headlines_table(9, "negative", sql.MOST_NEGATIVE_HEADLINES))
        .with_panel(_headlines_table(10, "positive", sql.MOST_POSITIVE_HEADLINES))
        .with_panel(_table(8, "Model changes", "Moves of the active model (promotions and rollbacks) in the range.",
                           sql.MODEL_CHANGES, 24, 5))
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
            .description("Alerts not resolved: firing, acknowledged and silenced (as `alerts list --state open`).")
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
            .description("From the Kafka record timestamp (else the publish time) to the article's first score.")
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
        .with_panel(
            timeseries.Panel()
            .id(20)
            .title("Call in progress for (workers)")
            .description("How long each worker's current classifier call or database write (retries included) has "
                         "run. A call that hangs rather than fails (a wedged model, a frozen PostgreSQL) raises no "
                         "error: it shows here as a line that keeps climbing. Restarting that worker loses nothing.")
            .datasource(PROMETHEUS)
            .with_target(_prom(f"max by (stage) (time() - ({METRIC_CALL_STARTED} > 0))", "{{stage}}"))
            .unit("s")
            .height(8)
            .span(24)
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
    sql.SENTIMENT_SELECTION: ("time", "index (EMA)", "bucket mean", "lower 95%", "upper 95%", "articles"),
    sql.SENTIMENT_INDEX_BY_TOPIC: ("time", "metric", "value"),
    sql.SENTIMENT_INDEX_BY_TICKER: ("time", "metric", "value"),
    sql.NEGATIVE_SHARE_BY_TOPIC: ("time", "metric", "value"),
    sql.ARTICLE_VOLUME: ("time", "novel per hour", "syndicated per hour"),
    sql.TOP_MOVERS: ("scope_type", "scope", "sentiment_24h", "sentiment_30d", "change", "z", "articles_24h",
                     "volume_ratio"),
    sql.ALERTS_TABLE: ("time", "resolved", "severity", "state", "scope_type", "scope", "rule", "negative_share",
                       "baseline_share", "volume", "p_value", "top_headline", "top_headline_url"),
    sql.MODEL_CHANGES: ("time", "version", "by", "reason"),
    sql.MOST_NEGATIVE_HEADLINES: ("time", "local_time", "headline", "score", "p_negative", "topic",
                                  "topic_confidence", "tickers", "copies", "sources", "link"),
    sql.MOST_POSITIVE_HEADLINES: ("time", "local_time", "headline", "score", "p_positive", "topic",
                                  "topic_confidence", "tickers", "copies", "sources", "link"),
    sql.ACTIVE_MODEL: ("active model", "since", "by"),
    sql.OPEN_ALERTS: ("open alerts",),
    sql.MODEL_VERSIONS_IN_USE: ("model_version", "scored", "first_scored", "last_scored"),
    sql.SCORED_PER_MINUTE: ("time", "scored per minute"),
    sql.SCORING_LATENCY: ("time", "p50", "p95"),
    **{raw: ("time", "timeend", "text", "tags") for raw in sql.ALERT_ANNOTATIONS.values()},
    sql.MODEL_ANNOTATIONS: ("time", "text", "tags"),
    sql.TOPIC_VARIABLE: ("topic",),
    sql.TICKER_VARIABLE: ("ticker",),
    sql.SOURCE_VARIABLE: ("source",),
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
