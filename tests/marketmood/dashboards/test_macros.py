"""The macro expander produces what Grafana 11's PostgreSQL datasource sends (pure, no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from marketmood.dashboards.macros import ALL, MacroError, QueryContext, Variable, expand, format_interval

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


def test_single_value_variable_is_raw() -> None:
    ctx = _ctx(limit=Variable(values=["10"], multi=False, include_all=False))
    assert expand("LIMIT $limit", ctx) == "LIMIT 10"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("WHERE $__timeFiltr(t)", "unknown macro"),
        ("WHERE t IN ($nope)", "not defined"),
        ("$__timeGroup(t)", "needs a column and an interval"),
        ("$__timeGroup(t, 5 minutes)", "invalid interval"),
    ],
)
def test_mistakes_raise(sql: str, message: str) -> None:
    with pytest.raises(MacroError, match=message):
        expand(sql, _ctx())
