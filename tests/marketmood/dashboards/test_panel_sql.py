"""Every panel, annotation and variable query runs on real PostgreSQL, as Grafana's read-only role, with the
macros and variables expanded the way Grafana does, and returns the columns (and numbers) the panel expects."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from marketmood.dashboards.definitions import all_dashboards, sql_targets, to_json_dict
from marketmood.dashboards.macros import ALL, QueryContext, Variable, expand
from storage import dashboards as sql
from storage.db import make_engine
from tests.dashboards.conftest import Seed

SELECTIONS = {"all": [ALL], "aapl": ["AAPL"], "aapl+msft": ["AAPL", "MSFT"]}


def _ctx(seed: Seed, tickers: list[str], interval: timedelta = timedelta(hours=1)) -> QueryContext:
    ticker = Variable(values=tickers, options=["AAPL", "MSFT"], all_value=sql.TICKER_ALL_VALUE)
    return QueryContext(seed.t0, seed.now + timedelta(minutes=5), interval=interval, variables={"ticker": ticker})


def _run(seed: Seed, raw: str, ctx: QueryContext) -> tuple[list[str], list[dict[str, Any]]]:
    engine = make_engine(seed.reader_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(text(expand(raw, ctx).replace(":", r"\:")))
            keys = list(result.keys())
            return keys, [dict(zip(keys, row)) for row in result]
    finally:
        engine.dispose()


def _all_targets():  # type: ignore[no-untyped-def]
    return [t for builder in all_dashboards().values() for t in sql_targets(to_json_dict(builder))]


def test_every_sql_target_is_covered() -> None:
    raws = {t.sql for t in _all_targets()}
    assert sql.ALERT_ANNOTATIONS in raws and sql.TICKER_VARIABLE in raws
    assert len(raws) >= 11


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_each_query_runs_and_returns_the_panel_columns(seeded: Seed, selection: str) -> None:
    ctx = _ctx(seeded, SELECTIONS[selection])
    for target in _all_targets():
        columns, rows = _run(seeded, target.sql, ctx)
        assert tuple(columns) == target.columns, target.panel
        if target.format == "time_series":
            times = [r["time"] for r in rows]
            assert times == sorted(times), f"{target.panel}: time series must be sorted by time"


def test_ticker_variable_lists_tickers_in_range(seeded: Seed) -> None:
    _, rows = _run(seeded, sql.TICKER_VARIABLE, _ctx(seeded, [ALL]))
    assert [r["ticker"] for r in rows] == ["AAPL", "MSFT"]  # OLD only appears before the range


def test_sentiment_index_counts_novel_articles_once_with_the_newest_score(seeded: Seed) -> None:
    _, rows = _run(seeded, sql.SENTIMENT_INDEX_BY_TOPIC, _ctx(seeded, [ALL], timedelta(days=7)))
    by_topic = {r["metric"]: r["value"] for r in rows}
    assert set(by_topic) == {"Legal | Regulation", "Earnings", "Fed | Central Banks", "Company | Product News"}
    # a1 re-scored neutral by v2 (score 0.1 - 0.2); a2 is a syndicated copy and is left out.
    assert by_topic["Legal | Regulation"] == pytest.approx(0.1 - 0.2)
    assert by_topic["Earnings"] == pytest.approx(0.8 - 0.05)


def test_ticker_drill_down_filters_articles(seeded: Seed) -> None:
    _, rows = _run(seeded, sql.SENTIMENT_INDEX_BY_TOPIC, _ctx(seeded, ["MSFT"], timedelta(days=7)))
    assert {r["metric"] for r in rows} == {"Earnings"}
    _, rows = _run(seeded, sql.NEGATIVE_SHARE_BY_TOPIC, _ctx(seeded, ["AAPL"], timedelta(days=7)))
    assert {r["metric"]: r["value"] for r in rows} == {"Legal | Regulation": 0, "Company | Product News": 1}


def test_article_volume_splits_novel_and_syndicated(seeded: Seed) -> None:
    _, rows = _run(seeded, sql.ARTICLE_VOLUME, _ctx(seeded, [ALL]))
    assert sum(r["novel"] for r in rows) == 4
    assert sum(r["syndicated"] for r in rows) == 1
    _, rows = _run(seeded, sql.ARTICLE_VOLUME, _ctx(seeded, ["AAPL"]))
    assert (sum(r["novel"] for r in rows), sum(r["syndicated"] for r in rows)) == (2, 1)
    # Buckets follow $__interval: hourly buckets are epoch seconds on hour boundaries.
    assert all(float(r["time"]) % 3600 == 0 for r in rows)


def test_negative_headlines_newest_first_with_links(seeded: Seed) -> None:
    _, rows = _run(seeded, sql.MOST_NEGATIVE_HEADLINES, _ctx(seeded, [ALL]))
    assert [r["headline"] for r in rows] == [seeded.titles["a5"], seeded.titles["a2"]]  # a1 is neutral now
    assert rows[0]["url"] == "https://news.example/a5"
    assert rows[0]["tickers"] == "AAPL"


def test_alert_annotations_overlap_the_range(seeded: Seed) -> None:
    ctx = _ctx(seeded, [ALL])
    _, rows = _run(seeded, sql.ALERT_ANNOTATIONS, ctx)
    assert len(rows) == 2  # the old alert ended before the range
    resolved, firing = rows
    assert "ticker AAPL (resolved)" in resolved["text"] and resolved["timeend"] > resolved["time"]
    assert firing["tags"] == "critical,topic,Company | Product News,firing"
    assert firing["timeend"] == ctx.time_to  # still firing: drawn to the end of the range


def test_model_panels(seeded: Seed) -> None:
    ctx = _ctx(seeded, [ALL])
    _, rows = _run(seeded, sql.ACTIVE_MODEL, ctx)
    assert [(r["active model"], r["by"]) for r in rows] == [("v2", "tests")]
    _, rows = _run(seeded, sql.MODEL_VERSIONS_IN_USE, ctx)
    assert {r["model_version"]: r["scored"] for r in rows} == {"v1": 6, "v2": 1}
    _, rows = _run(seeded, sql.SCORED_PER_MINUTE, ctx)
    assert float(sum(r["scored per minute"] for r in rows)) == pytest.approx(7 / 60)  # 7 scores, 1 h buckets
    _, rows = _run(seeded, sql.OPEN_ALERTS, ctx)
    assert rows == [{"open alerts": 1}]
