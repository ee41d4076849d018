"""``GET /sentiment``: the dashboards' sentiment series for notebooks, as JSON or CSV.

It runs ``storage.dashboards.sentiment_series`` with bind parameters: the same SQL text as the Grafana
panels and ``marketmood report`` (only the placeholders differ), so a notebook sees the numbers the
dashboard shows: current model's scores, novel articles, minimum article count, EMA, 95% band.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from marketmood.dashboards.macros import (
    MacroError,
    as_stored,
    is_unknown_time_zone,
    parse_interval,
    time_zone_problem,
)
from models.labels import TOPIC_LABELS, UnknownLabelError
from storage import dashboards as sql

router = APIRouter(tags=["sentiment"])

MAX_BUCKETS = 10_000
MAX_ROWS = 50_000  # buckets x series: what one response may hold
MAX_VALUES = 100  # tickers, topics or sources named in one request
MIN_INTERVAL = timedelta(minutes=1)
MAX_INTERVAL = timedelta(days=365 * 10_000)  # 10000y: far inside PostgreSQL's interval and timestamp ranges
_ORIGIN = datetime(2001, 1, 1, tzinfo=timezone.utc)  # storage.dashboards bins buckets from this (local) midnight


def _split(values: list[str] | None, kind: Literal["topic", "ticker"] | None = None) -> list[str] | None:
    """``?ticker=AAPL&ticker=MSFT`` or ``?ticker=AAPL,MSFT``; none = All. A ``kind`` of filter is spelled as
    stored (``macros.as_stored``)."""
    if not values:
        return None
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if any("\x00" in v for v in out):  # PostgreSQL text cannot hold it (the driver raises, a 500)
        raise _bad("a ticker, topic or source must not contain a NUL character")
    if len(out) > MAX_VALUES:
        raise _bad(f"{len(out)} values named: at most {MAX_VALUES} tickers, topics or sources per filter")
    if kind is None:
        return out or None
    try:
        return as_stored(kind, out) or None
    except UnknownLabelError as exc:
        raise _bad(str(exc)) from None


def _utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC (naive = UTC). Python accepts offsets up to ±23:59 and PostgreSQL only ±15:59 (a 500
    before), and the rows come back in UTC: an instant that is not a UTC date in years 1-9999 is refused."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    try:
        return aware.astimezone(timezone.utc)
    except OverflowError:
        raise _bad(f"{name} {moment.isoformat()} is outside years 1-9999 in UTC") from None


def _bad(message: str) -> HTTPException:
    return HTTPException(422, message)


@router.get("/sentiment", responses={200: {"content": {"text/csv": {}}}, 422: {"description": "Bad parameters"}})
def sentiment(
    request: Request,
    ticker: Annotated[list[str] | None, Query(description="Tickers (repeat or comma-separate); none = all.")] = None,
    topic: Annotated[list[str] | None, Query(description="Topics (repeat or comma-separate); none = all.")] = None,
    source: Annotated[list[str] | None, Query(description="Publishers; none = all.")] = None,
    from_: Annotated[datetime | None, Query(alias="from", description="Start (ISO 8601); default: to - 7 days.")] = None,
    to: Annotated[datetime | None, Query(description="End (ISO 8601); default: now.")] = None,
    interval: Annotated[str, Query(description="Bucket size: 15m, 1h, 1d, ...")] = "1h",
    by: Annotated[Literal["none", "topic", "ticker"], Query(description="One series, or one per topic/ticker.")] = "none",
    tz: Annotated[str, Query(description="Market time zone: buckets start at its local midnight.")] = "UTC",
    min_articles: Annotated[int, Query(ge=1, le=1000, description="Buckets with fewer novel articles get no mean.")] = (
        sql.DEFAULT_MIN_ARTICLES),
    span: Annotated[int, Query(ge=1, le=1000, description="EMA span in buckets (1 = raw means).")] = sql.DEFAULT_SPAN,
    format: Annotated[Literal["json", "csv"], Query(description="Response format.")] = "json",  # noqa: A002
) -> Any:
    """Sentiment index per bucket (EMA), bucket mean with its 95% band, negative share, articles and rate."""
    try:
        bucket = parse_interval(interval)
    except MacroError as exc:  # the message says what is wrong: no unit, or too large for a timedelta
        raise _bad(str(exc)) from None
    if bucket < MIN_INTERVAL:
        raise _bad(f"interval {interval!r} is below the minimum of 1m")
    if bucket > MAX_INTERVAL:  # PostgreSQL's interval ends near 292,000 years (a 500 before)
        raise _bad(f"interval {interval!r} is above the maximum of 10000y")
    if (problem := time_zone_problem(tz)) is not None:
        raise _bad(f"tz {problem}")
    t_to = _utc(to, "to") if to is not None else datetime.now(timezone.utc)
    try:
        t_from = _utc(from_, "from") if from_ is not None else t_to - timedelta(days=7)
    except OverflowError:  # to = 0001-01-01: a week earlier does not exist
        raise _bad(f"to {t_to.isoformat()} leaves no room for the default 7-day range: give from") from None
    if t_from >= t_to:
        raise _bad("from must be before to")
    if t_from < _ORIGIN + timedelta(days=1):
        # Buckets are binned from 2001-01-01 (local), so before it the first one starts up to a bucket (and a
        # zone's offset) before from: a start before year 1 comes back as an error of the driver (a 500 before).
        try:
            t_from - bucket - timedelta(days=1)
        except OverflowError:
            raise _bad(f"interval {interval!r} is too large for a range from {t_from.isoformat()}: its first "
                       "bucket would start before year 1") from None
    buckets = (t_to - t_from) / bucket
    if buckets > MAX_BUCKETS:
        raise _bad(f"{interval} buckets over this range would be more than {MAX_BUCKETS}: use a larger interval")
    tickers, topics = _split(ticker, "ticker"), _split(topic, "topic")
    series = {"none": 1, "topic": len(topics or TOPIC_LABELS), "ticker": len(tickers) if tickers else sql.TOP_TICKERS}[by]
    if buckets * series > MAX_ROWS:
        raise _bad(f"{series} series x {int(buckets)} {interval} buckets would be more than {MAX_ROWS} rows: use a "
                   f"larger interval, a shorter range or fewer {by}s")
    params = sql.params_for(t_from=t_from, t_to=t_to, bucket=bucket, topics=topics, tickers=tickers,
                            sources=_split(source), tz=tz, min_articles=min_articles, span=span)
    with request.app.state.deps.db.connect() as conn:
        try:
            result = conn.execute(text(sql.sentiment_series(sql.BIND, by)), params)
        except sa_exc.DataError as exc:
            if is_unknown_time_zone(exc):
                raise _bad(f"tz {tz!r} is not a time zone this database knows") from None
            raise
        columns = list(result.keys())
        rows = [dict(zip(columns, row)) for row in result]
    rows = [{k: (float(v) if k == "per_hour" and v is not None else v) for k, v in r.items()} for r in rows]
    if format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()})
        return Response(out.getvalue(), media_type="text/csv")
    return {
        "query": {"ticker": tickers, "topic": topics, "source": _split(source),
                  "from": t_from.isoformat(), "to": t_to.isoformat(), "interval": interval, "by": by, "tz": tz,
                  "min_articles": min_articles, "span": span},
        "columns": columns,
        "rows": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows],
    }
