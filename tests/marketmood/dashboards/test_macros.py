"""The macro expander produces what Grafana 11's PostgreSQL datasource sends (pure, no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from marketmood.dashboards.macros import (
    ALL,
    Fill,
    MacroError,
    QueryContext,
    Variable,
    expand,
    fill_of,
    format_interval,
    resample,
)

FROM = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)
TO = datetime(2026, 11, 22, 8, 30, 0, 250000, tzinfo=timezone.utc)


def _ctx(**variables: Variable) -> QueryContext:
    return QueryContext(FROM, TO, interval=timedelta(minutes=5), variables=variables)


def test_time_filter_and_bounds_are_rfc3339_utc() -> None:
    cet = timezone(timedelta(hours=1))
    ctx = QueryContext(FROM.astimezone(cet), TO, interval=timedelta(minutes=5))
    assert expand("WHERE $__timeFilter(a.event_time)", ctx) == (
        "WHERE a.event_time BETWEEN '2026-11-20T08:30:00Z' AND '2026-11-22T08:30:00.25Z'"
    )
    assert expand("$__timeFrom() < $__timeTo()", ctx) == "'2026-11-20T08:30:00Z' < '2026-11-22T08:30:00.25Z'"


def test_time_group_alias_uses_interval_seconds() -> None:
    assert expand("SELECT $__timeGroupAlias(s.event_time, $__interval)", _ctx()) == (
        'SELECT floor(extract(epoch from s.event_time)/300)*300 AS "time"'
    )
    assert expand("$__timeGroup(t, '1h', 0)", _ctx()) == "floor(extract(epoch from t)/3600)*3600"
    assert expand("$__timeGroup(t, 500ms)", _ctx()) == "floor(extract(epoch from t)/0.5)*0.5"


def test_builtin_interval_variables() -> None:
    assert expand("$__interval $__interval_ms $__range_s", _ctx()) == "5m 300000 172800"
    auto = QueryContext(FROM, FROM + timedelta(days=6))  # 518400 s / 1000 points, rounded up to 600 s
    assert expand("$__interval", auto) == "10m"
    assert format_interval(timedelta(hours=24)) == "1d"


def test_multi_value_variable_is_quoted_and_escaped() -> None:
    ctx = _ctx(ticker=Variable(values=["AAPL", "O'NEIL"], all_value="'__all'"))
    assert expand("IN (${ticker}) OR $ticker", ctx) == "IN ('AAPL','O''NEIL') OR 'AAPL','O''NEIL'"


def test_all_uses_custom_all_value_verbatim_else_every_option() -> None:
    custom = _ctx(ticker=Variable(values=[ALL], options=["AAPL"], all_value="'__all'"))
    assert expand("IN (${ticker})", custom) == "IN ('__all')"
    no_custom = _ctx(ticker=Variable(values=[ALL], options=["AAPL", "MSFT"]))
    assert expand("IN (${ticker})", no_custom) == "IN ('AAPL','MSFT')"


def test_single_value_variable_is_unquoted() -> None:
    ctx = _ctx(limit=Variable(values=["10"], multi=False, include_all=False))
    assert expand("LIMIT $limit", ctx) == "LIMIT 10"


def test_single_value_variable_has_its_quotes_doubled_like_grafana() -> None:
    """SqlDatasource.interpolateVariable doubles ' in a single value: '${tz}' stays one string literal."""
    ctx = _ctx(tz=Variable(values=["x' OR '1'='1"], multi=False, include_all=False))
    assert expand("'${tz}'", ctx) == "'x'' OR ''1''=''1'"


def test_variable_formats_sqlstring_raw_csv() -> None:
    """${var:format} replaces the datasource's formatting: sqlstring quotes every value, raw and csv join them."""
    single = _ctx(n=Variable(values=["1 OR pg_sleep(29) IS NULL"], multi=False, include_all=False))
    assert expand("${n:sqlstring}", single) == "'1 OR pg_sleep(29) IS NULL'"
    assert expand("${n:raw}", single) == "1 OR pg_sleep(29) IS NULL"
    multi = _ctx(t=Variable(values=["AAPL", "O'NEIL"]))
    assert expand("${t:sqlstring}", multi) == "'AAPL','O''NEIL'"
    assert expand("${t:csv}|${t:raw}", multi) == "AAPL,O'NEIL|AAPL,O'NEIL"
    assert expand("${__interval:sqlstring}", multi) == "'5m'"


def test_custom_all_value_is_verbatim_whatever_the_format() -> None:
    ctx = _ctx(t=Variable(values=[ALL], options=["AAPL"], all_value="'__all'"))
    assert expand("${t:sqlstring} ${t:csv}", ctx) == "'__all' '__all'"
    no_custom = _ctx(t=Variable(values=[ALL], options=["AAPL", "MSFT"]))
    assert expand("${t:csv}", no_custom) == "AAPL,MSFT"


def test_time_group_fill_leaves_the_sql_and_is_read_by_fill_of() -> None:
    """Grafana's backend fills the missing buckets after the query; the SQL itself does not change."""
    ctx = _ctx()
    assert expand("$__timeGroupAlias(t, $__interval, 0)", ctx) == 'floor(extract(epoch from t)/300)*300 AS "time"'
    assert fill_of("$__timeGroupAlias(t, $__interval, 0)", ctx) == Fill(timedelta(minutes=5), "value", 0.0)
    assert fill_of("$__timeGroup(t, '1h', NULL)", ctx) == Fill(timedelta(hours=1), "null")
    assert fill_of("$__timeGroup(t, 1h, previous)", ctx) == Fill(timedelta(hours=1), "previous")
    assert fill_of("$__timeGroupAlias(t, $__interval)", ctx) is None


def test_resample_fills_every_interval_of_the_range_like_grafana() -> None:
    """One row per interval from the range start (rounded down) to its end; gaps get the fill."""
    start = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
    ctx = QueryContext(start + timedelta(minutes=2), start + timedelta(minutes=20), interval=timedelta(minutes=5))
    rows = [{"time": (start + timedelta(minutes=5)).timestamp(), "v": 2},
            {"time": (start + timedelta(minutes=15)).timestamp(), "v": 3}]
    at = [start + timedelta(minutes=m) for m in (0, 5, 10, 15, 20)]
    zero = resample(rows, Fill(timedelta(minutes=5), "value", 0.0), ctx)
    assert zero == [{"time": t, "v": v} for t, v in zip(at, [0.0, 2.0, 0.0, 3.0, 0.0])]
    previous = resample(rows, Fill(timedelta(minutes=5), "previous"), ctx)
    assert [r["v"] for r in previous] == [None, 2.0, 2.0, 3.0, 3.0]
    empty = resample([], Fill(timedelta(minutes=5), "null"), ctx, columns=["time", "v"])
    assert [r["v"] for r in empty] == [None] * 5


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("WHERE $__timeFiltr(t)", "unknown macro"),
        ("WHERE t IN ($nope)", "not defined"),
        ("$__timeGroup(t)", "needs a column and an interval"),
        ("$__timeGroup(t, 5 minutes)", "invalid interval"),
        ("$__timeGroup(t, 1h, zero)", "error parsing fill value"),
        ("$__timeGroup(t, 1h, 0, 1)", "optional fill"),
        ("${x:lucene}", "format :lucene is not supported"),
    ],
)
def test_mistakes_raise(sql: str, message: str) -> None:
    with pytest.raises(MacroError, match=message):
        expand(sql, _ctx(x=Variable(values=["a"])))
