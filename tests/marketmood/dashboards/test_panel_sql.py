"""Every panel, annotation and variable query runs on real PostgreSQL, as Grafana's read-only role, with the
macros and variables expanded the way Grafana does, and returns the columns (and numbers) the panel expects."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from statistics import mean, stdev
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from marketmood.dashboards.definitions import EXPECTED_COLUMNS, all_dashboards, sql_targets, to_json_dict
from storage import dashboards as sql
from storage.db import make_engine
from tests.marketmood.dashboards.conftest import seed_one_per_instant

SELECTIONS: dict[str, dict[str, Any]] = {
    "all": {},
    "aapl": {"tickers": ["AAPL"]},
    "aapl+msft": {"tickers": ["AAPL", "MSFT"]},
    "energy": {"topics": ["Energy | Oil"], "min_articles": 3, "smoothing": 6},
    "newsdesk": {"sources": ["newsdesk", "wire"], "tz": "America/New_York", "interval": timedelta(days=1)},
}


def _all_targets():  # type: ignore[no-untyped-def]
    return [t for builder in all_dashboards().values() for t in sql_targets(to_json_dict(builder))]


def _by_time(rows: list[dict[str, Any]], column: str) -> list[float]:
    return [r[column] for r in rows if r[column] is not None]


def test_every_sql_target_is_covered() -> None:
    raws = {t.sql for t in _all_targets()}
    assert set(sql.ALERT_ANNOTATIONS.values()) <= raws and sql.TICKER_VARIABLE in raws
    assert {sql.TOP_MOVERS, sql.MOST_POSITIVE_HEADLINES, sql.MODEL_ANNOTATIONS, sql.SOURCE_VARIABLE} <= raws
    assert raws == set(EXPECTED_COLUMNS)  # and nothing listed there is left unused


def test_sentiment_panels_read_only_current_scores() -> None:
    """The one current-score definition: no panel about sentiment reads the scores table on its own."""
    dashboard = to_json_dict(all_dashboards()["marketmood-sentiment"])
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            raw = target["rawSql"]
            assert "FROM scores" not in raw and "JOIN scores" not in raw, panel["title"]
            if "s.score" in raw or "s.topic" in raw:
                assert "current_scores($__timeFrom()::timestamptz" in raw or "current_scores((" in raw, panel["title"]


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_each_query_runs_and_returns_the_panel_columns(run, selection: str) -> None:  # type: ignore[no-untyped-def]
    for target in _all_targets():
        columns, rows = run(target.sql, **SELECTIONS[selection])
        assert tuple(columns) == target.columns, target.panel
        if target.format == "time_series":
            times = [r["time"] for r in rows]
            assert times == sorted(times), f"{target.panel}: time series must be sorted by time"


def test_variables_list_what_is_in_range(run) -> None:  # type: ignore[no-untyped-def]
    assert [r["ticker"] for r in run(sql.TICKER_VARIABLE)[1]] == ["AAPL", "MSFT", "XOM"]  # OLD is before it
    assert [r["topic"] for r in run(sql.TOPIC_VARIABLE)[1]] == [
        "Company | Product News", "Earnings", "Energy | Oil", "Fed | Central Banks", "Legal | Regulation"]
    assert [r["source"] for r in run(sql.SOURCE_VARIABLE)[1]] == [
        "aggregator", "copycat", "energywire", "newsdesk", "wire"]


def _index_by_metric(run, raw: str, **kwargs: Any) -> dict[str, float]:  # type: ignore[no-untyped-def]
    _, rows = run(raw, interval=timedelta(days=7), **kwargs)
    return {r["metric"]: r["value"] for r in rows if r["value"] is not None}


def test_index_counts_novel_articles_once_with_the_active_models_score(run) -> None:  # type: ignore[no-untyped-def]
    by_topic = _index_by_metric(run, sql.SENTIMENT_INDEX_BY_TOPIC)
    assert set(by_topic) == {"Legal | Regulation", "Earnings", "Fed | Central Banks", "Company | Product News",
                             "Energy | Oil"}
    # a1 re-scored neutral by the active v2 (0.1 - 0.2); a2 and a2b are syndicated copies and left out.
    assert by_topic["Legal | Regulation"] == pytest.approx(0.1 - 0.2)
    assert by_topic["Earnings"] == pytest.approx(0.8 - 0.05)
    # a5: the rejected v3 scored it positive later; the chart keeps v1's negative score.
    assert by_topic["Company | Product News"] == pytest.approx(0.05 - 0.7)


def test_ticker_and_topic_drill_down(run) -> None:  # type: ignore[no-untyped-def]
    assert set(_index_by_metric(run, sql.SENTIMENT_INDEX_BY_TOPIC, tickers=["MSFT"])) == {"Earnings"}
    assert set(_index_by_metric(run, sql.SENTIMENT_INDEX_BY_TICKER)) == {"AAPL", "MSFT", "XOM"}
    assert set(_index_by_metric(run, sql.SENTIMENT_INDEX_BY_TICKER, tickers=["XOM", "MSFT"])) == {"XOM", "MSFT"}
    assert set(_index_by_metric(run, sql.SENTIMENT_INDEX_BY_TICKER, topics=["Earnings"])) == {"MSFT"}
    assert set(_index_by_metric(run, sql.SENTIMENT_INDEX_BY_TOPIC, sources=["newsdesk"])) == {"Earnings"}
    shares = _index_by_metric(run, sql.NEGATIVE_SHARE_BY_TOPIC, tickers=["AAPL"])
    assert shares == {"Legal | Regulation": 0, "Company | Product News": 1}


def test_selection_index_is_the_ema_of_bucket_means_with_a_95_percent_band(run, seeded) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.SENTIMENT_SELECTION, tickers=["XOM"], interval=timedelta(hours=1), smoothing=3)
    means = [(r["bucket mean"], r["index (EMA)"]) for r in rows]
    ema = None
    for bucket_mean, index in means:  # alpha = 2 / (3 + 1); empty buckets carry the average forward
        if bucket_mean is not None:
            ema = bucket_mean if ema is None else 0.5 * bucket_mean + 0.5 * ema
        assert (index is None and ema is None) or index == pytest.approx(ema)
    assert sum(r["articles"] for r in rows) == 6
    full = [r for r in rows if r["articles"] >= 2]
    assert full, "the XOM burst has buckets of several articles"
    for r in full:
        assert r["lower 95%"] <= r["bucket mean"] <= r["upper 95%"]
    # One bucket recomputed from the raw scores: mean +- 1.96 s / sqrt(n).
    scores = seeded.xom_recent
    _, daily = run(sql.SENTIMENT_SELECTION, tickers=["XOM"], interval=timedelta(days=7))
    (bucket,) = [r for r in daily if r["articles"]]
    half = 1.96 * stdev(scores) / math.sqrt(len(scores))
    assert (bucket["bucket mean"], bucket["upper 95%"]) == (pytest.approx(mean(scores)), pytest.approx(mean(scores) + half))


def test_buckets_below_the_minimum_article_count_have_no_mean(run) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.SENTIMENT_SELECTION, tickers=["XOM"], interval=timedelta(days=7), min_articles=7)
    assert [r["articles"] for r in rows if r["articles"]] == [6]
    assert all(r["bucket mean"] is None and r["upper 95%"] is None and r["index (EMA)"] is None for r in rows)
    _, rows = run(sql.SENTIMENT_INDEX_BY_TOPIC, interval=timedelta(days=7), min_articles=2)
    assert {r["metric"] for r in rows if r["value"] is not None} == {"Energy | Oil"}  # only it has 2+ articles


def test_volume_is_a_rate_per_hour_whatever_the_bucket(run, seeded) -> None:  # type: ignore[no-untyped-def]
    """Each bucket's rate times the hours of it in the range gives back the counts (the first bucket starts
    before the range when the range start is not on a bucket boundary). The range ends at the seeding time,
    in the past, so no bucket is cut by now()."""

    def articles(rows: list[dict[str, Any]], column: str, hours: int) -> float:
        def covered(start: Any) -> float:
            return (min(start + timedelta(hours=hours), seeded.now) - max(start, seeded.t0)) / timedelta(hours=1)
        return sum(float(r[column]) * covered(r["time"]) for r in rows)

    for hours in (1, 2, 6):
        _, rows = run(sql.ARTICLE_VOLUME, interval=timedelta(hours=hours), t_to=seeded.now)
        assert articles(rows, "novel per hour", hours) == pytest.approx(4 + 6)  # a1 a3 a4 a5 + 6 XOM
        assert articles(rows, "syndicated per hour", hours) == pytest.approx(3)
        _, rows = run(sql.ARTICLE_VOLUME, interval=timedelta(hours=hours), tickers=["AAPL"], t_to=seeded.now)
        assert articles(rows, "syndicated per hour", hours) == pytest.approx(2)


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Tokyo"])
def test_daily_buckets_start_at_local_midnight_of_the_market(run, tz: str) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.SENTIMENT_SELECTION, interval=timedelta(days=1), tz=tz)
    assert rows
    for r in rows:
        local = r["time"].astimezone(ZoneInfo(tz))
        assert (local.hour, local.minute) == (0, 0), (tz, r["time"])


def test_top_movers_rank_the_negative_day_of_xom(run, seeded) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.TOP_MOVERS, min_articles=5)
    assert [(r["scope_type"], r["scope"]) for r in rows] == [("ticker", "XOM"), ("topic", "Energy | Oil")]
    xom = rows[0]
    recent, base = seeded.xom_recent, seeded.xom_baseline
    assert xom["sentiment_24h"] == pytest.approx(mean(recent)) and xom["sentiment_30d"] == pytest.approx(mean(base))
    assert xom["z"] == pytest.approx((mean(recent) - mean(base)) / (stdev(base) / math.sqrt(len(recent))))
    assert xom["z"] < -5
    # Baseline days: from the oldest article in the window (x19, 27.7 days before seeding) to 24 h before the end.
    days = (seeded.t_to - timedelta(hours=24) - (seeded.now - timedelta(days=3 + 19 * 1.3))) / timedelta(days=1)
    assert float(xom["volume_ratio"]) == pytest.approx(6 / (20 / days), rel=1e-3)
    assert run(sql.TOP_MOVERS, min_articles=7)[1] == []  # too few articles in the last 24 h
    assert [r["scope"] for r in run(sql.TOP_MOVERS, min_articles=5, topics=["Earnings"])[1]] == ["XOM"]


def test_headlines_are_original_stories_with_copies_sources_and_working_links(run, seeded) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.MOST_NEGATIVE_HEADLINES, tickers=["AAPL"])
    assert [r["headline"] for r in rows] == [seeded.titles["a5"]]  # a1 is neutral now; a2, a2b are copies
    (a5,) = rows
    assert a5["link"] == ("https://news.google.com/search?q=Apple%20recalls%20devices%20over%20battery%20fires"
                          "%20%26%20smoke")  # no URL from the source: a news search for the headline
    assert a5["topic_confidence"] == pytest.approx(0.9) and a5["copies"] == 1 and a5["sources"] == "wire"
    _, rows = run(sql.MOST_NEGATIVE_HEADLINES)
    assert [r["headline"] for r in rows][:6] == [seeded.titles[f"r{i}"] for i in range(5, -1, -1)]  # p_negative desc
    _, rows = run(sql.MOST_POSITIVE_HEADLINES)
    assert [r["headline"] for r in rows] == [seeded.titles["a3"]]  # the copy a3c is counted, not listed
    (a3,) = rows
    assert a3["link"] == "https://news.example/a3" and a3["p_positive"] == pytest.approx(0.8)
    assert (a3["copies"], a3["sources"]) == (2, "copycat, newsdesk")
    _, rows = run(sql.MOST_NEGATIVE_HEADLINES, tickers=["AAPL"], topics=["Legal | Regulation"])
    assert rows == []  # the story a1 (3 copies) is neutral under the active model


def test_alert_annotations_follow_severity_and_the_scope_selection(run, seeded) -> None:  # type: ignore[no-untyped-def]
    _, warning = run(sql.ALERT_ANNOTATIONS["warning"])
    assert len(warning) == 1  # the OLD alert ended before the range
    assert "WARNING ticker AAPL: 80% negative vs 10% baseline (n=12) [resolved]" == warning[0]["text"]
    assert warning[0]["tags"].split(",") == ["marketmood", "alert", "warning", "resolved", "ticker:AAPL",
                                             "rule:negative_spike"]
    assert warning[0]["timeend"] > warning[0]["time"]
    _, critical = run(sql.ALERT_ANNOTATIONS["critical"])
    assert sorted(r["text"].split(" ")[2] for r in critical) == ["Company", "XOM:"]
    # A ticker alert shows when its ticker is selected, a topic alert when its topic is (All = every one).
    texts = [r["text"] for r in run(sql.ALERT_ANNOTATIONS["critical"], tickers=["XOM"], topics=["Earnings"])[1]]
    assert [t.split(":")[0] for t in texts] == ["CRITICAL ticker XOM"]
    assert [r["text"][:20] for r in run(sql.ALERT_ANNOTATIONS["critical"], topics=["Earnings"], tickers=["MSFT"])[1]] == []
    assert run(sql.ALERT_ANNOTATIONS["warning"], tickers=["MSFT"])[1] == []
    assert run(sql.ALERT_ANNOTATIONS["info"])[1] == []


def test_alerts_table_has_evidence_and_open_alerts_count_silenced_ones(run) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.ALERTS_TABLE)
    assert [(r["scope"], r["state"]) for r in rows] == [("XOM", "silenced"), ("Company | Product News", "firing"),
                                                        ("AAPL", "resolved")]
    assert rows[2]["negative_share"] == 0.8 and rows[2]["volume"] == 12
    assert rows[2]["top_headline_url"] == "https://news.example/a1"
    assert [r["scope"] for r in run(sql.ALERTS_TABLE, tickers=["AAPL"], topics=["Earnings"])[1]] == ["AAPL"]
    assert run(sql.OPEN_ALERTS)[1] == [{"open alerts": 2}]  # firing + silenced, as `alerts list --state open`


def test_model_changes_and_annotations(run) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.MODEL_CHANGES)
    assert [(r["version"], r["reason"]) for r in rows] == [("v1", "first"), ("v2", "seed")]
    _, notes = run(sql.MODEL_ANNOTATIONS)
    assert [n["text"] for n in notes] == ["model v1 active (first, by tests)", "model v2 active (seed, by tests)"]


def test_operator_panels(run) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.ACTIVE_MODEL)
    assert [(r["active model"], r["by"]) for r in rows] == [("v2", "tests")]
    _, rows = run(sql.MODEL_VERSIONS_IN_USE)
    assert {r["model_version"]: r["scored"] for r in rows} == {"v1": 8, "v2": 27, "v3": 1}
    _, rows = run(sql.SCORED_PER_MINUTE)
    assert float(sum(r["scored per minute"] for r in rows)) == pytest.approx(36 / 60)  # 36 scores, 1 h buckets


def test_latency_is_measured_from_the_kafka_timestamp(run, seeded) -> None:  # type: ignore[no-untyped-def]
    _, rows = run(sql.SCORING_LATENCY, interval=timedelta(days=30))
    assert len(rows) == 1
    # a3 has a Kafka timestamp 30 s before its score; every other first score falls back to published_at
    # (hours to days before), so p50 is large and a3 is the minimum, not ~0 as scored_at - ingested_at was.
    raw = sql.SCORING_LATENCY.replace("percentile_cont(0.5)", "percentile_cont(0.0)")
    _, low = run(raw, interval=timedelta(days=30))
    assert low[0]["p50"] == pytest.approx(30, abs=2)
    assert rows[0]["p50"] > 3600


# --- audited defects: knobs typed into the URL, a minimum of 0, edge buckets, a worker outage ------------


@pytest.mark.parametrize("knob", ["min_articles", "smoothing"])
@pytest.mark.parametrize("payload", ["1 OR pg_sleep(0) IS NULL", "1' OR pg_sleep(0) IS NULL OR '1"])
def test_a_knob_typed_into_the_url_is_a_value_not_sql(run, knob: str, payload: str) -> None:  # type: ignore[no-untyped-def]
    """``?var-min_articles=1 OR pg_sleep(29) IS NULL`` ran the payload as the reader role: the knob went into
    the SQL unquoted. Now it is a quoted string cast to integer, so anything but a number fails the cast."""
    for raw in (sql.SENTIMENT_SELECTION, sql.SENTIMENT_INDEX_BY_TOPIC, sql.TOP_MOVERS):
        if knob == "smoothing" and raw is sql.TOP_MOVERS:
            continue  # no EMA in the movers table
        with pytest.raises(DataError, match="invalid input syntax for type integer"):
            run(raw, **{knob: payload})


def test_a_minimum_below_one_counts_as_one(run, seeded) -> None:  # type: ignore[no-untyped-def]
    """min_articles=0 gave a bucket of syndicated copies only (a2b, hour 2) a band of 1.96 * sd / sqrt(0): the
    panel failed with a division by zero; so did the movers' z of a scope with no recent article."""
    for raw in (sql.SENTIMENT_SELECTION, sql.NEGATIVE_SHARE_BY_TOPIC, sql.TOP_MOVERS):
        assert run(raw, min_articles=0) == run(raw, min_articles=1)
    params = sql.params_for(t_from=seeded.t0, t_to=seeded.t_to, bucket=timedelta(hours=1), min_articles=0)
    engine = make_engine(seeded.reader_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(sql.sentiment_series(sql.BIND)), params).mappings().all()
    finally:
        engine.dispose()
    assert any(r["copies"] and not r["articles"] and r["mean"] is None for r in rows)


def _seed_at(db_url: str, make_scored, instants: list[datetime]) -> None:  # type: ignore[no-untyped-def]
    """One Earnings article at each instant, scored by the active v1 ten seconds after it was published."""
    seed_one_per_instant(db_url, make_scored, instants, sentiment="neutral", score=0.1,
                         scored_after=timedelta(seconds=10))


def test_volume_of_the_first_bucket_is_a_rate_over_its_part_in_the_range(db_url: str, make_scored, run_on) -> None:  # type: ignore[no-untyped-def]
    """now-7d is rarely on a bucket boundary: the first bucket holds only the articles after the range start, so
    its rate is over that part (two articles in the half hour from 10:30 are 4 per hour, not 2)."""
    t_from = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    _seed_at(db_url, make_scored, [t_from + timedelta(minutes=10), t_from + timedelta(minutes=20),
                                   datetime(2026, 11, 20, 12, 15, tzinfo=UTC)])
    _, rows = run_on(db_url, sql.ARTICLE_VOLUME, t_from, datetime(2026, 11, 20, 14, tzinfo=UTC),
                     interval=timedelta(hours=1))
    assert {r["time"].hour: float(r["novel per hour"]) for r in rows} == {10: 4.0, 11: 0.0, 12: 1.0, 13: 0.0}


def test_volume_of_the_current_bucket_is_a_rate_over_its_past_part(db_url: str, make_scored, run_on) -> None:  # type: ignore[no-untyped-def]
    """The current bucket has only its past to hold articles: its rate is over that part, not over the whole
    hour (which showed every live hour's volume falling); a bucket wholly ahead has no rate (0 on the panel)."""
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 50:  # the query's now() must stay in this hour: wait for the next
        time.sleep(61 - now.second)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if datetime.now(UTC) - hour < timedelta(seconds=2):
        time.sleep(2)
    _seed_at(db_url, make_scored, [hour])
    before = datetime.now(UTC)
    _, rows = run_on(db_url, sql.ARTICLE_VOLUME, hour - timedelta(hours=2), hour + timedelta(hours=3),
                     interval=timedelta(hours=1))
    after = datetime.now(UTC)
    rates = {r["time"]: float(r["novel per hour"]) for r in rows}
    assert 3600 / (after - hour).total_seconds() <= rates[hour] <= 3600 / (before - hour).total_seconds()
    assert rates[hour + timedelta(hours=2)] == 0.0


def test_scored_per_minute_draws_a_worker_outage_as_zero(db_url: str, make_scored, run_on) -> None:  # type: ignore[no-untyped-def]
    """Minutes without a score are 0 (Grafana fills them: ``$__timeGroupAlias(..., 0)``); without the fill the
    panel had no point there and drew a straight line across the outage."""
    start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    _seed_at(db_url, make_scored, [start + timedelta(minutes=m) for m in (0, 1, 2, 7, 8)])  # down 09:03-09:07
    _, rows = run_on(db_url, sql.SCORED_PER_MINUTE, start, start + timedelta(minutes=9),
                     interval=timedelta(minutes=1))
    assert len(rows) == 10, rows
    assert [r["time"] for r in rows] == [start + timedelta(minutes=m) for m in range(10)]
    assert [r["scored per minute"] for r in rows] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
