"""Run the analysts' dashboard panels without Grafana: the same SQL, expanded the way Grafana does.

The panels come from the dashboard definition itself (``marketmood.dashboards.definitions``), so the report
can never show a panel the dashboard does not have or run a query it does not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, text

from marketmood.dashboards.definitions import sentiment_dashboard, to_json_dict
from marketmood.dashboards.macros import ALL, QueryContext, Variable, expand, fill_of, resample
from storage import dashboards as sql

MIN_INTERVAL = timedelta(hours=1)  # the panels' minimum interval
POINTS = 56  # buckets per chart (7 days: 3 h): enough articles per topic bucket at demo volumes


@dataclass(frozen=True, slots=True)
class Selection:
    """The dashboard variables for a report (empty lists = All)."""

    topics: Sequence[str] = ()
    tickers: Sequence[str] = ()
    sources: Sequence[str] = ()
    tz: str = sql.TIME_ZONES[0]
    min_articles: int = sql.DEFAULT_MIN_ARTICLES
    smoothing: int = sql.DEFAULT_SPAN


@dataclass(slots=True)
class PanelData:
    """One panel's rows as the SQL returned them."""

    panel_id: int
    title: str
    description: str
    kind: str  # timeseries | table
    columns: list[str]
    rows: list[dict[str, Any]]
    unit: str | None = None


@dataclass(slots=True)
class Annotation:
    kind: str  # alert severity, or "model"
    start: datetime
    end: datetime | None
    text: str


@dataclass(slots=True)
class DashboardData:
    t_from: datetime
    t_to: datetime
    interval: timedelta
    selection: Selection
    panels: list[PanelData] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)


def bucket_for(t_from: datetime, t_to: datetime) -> timedelta:
    """About :data:`POINTS` buckets over the range, rounded up to whole hours, at least an hour."""
    hours = max(1, -(-int((t_to - t_from).total_seconds()) // (3600 * POINTS)))
    return max(MIN_INTERVAL, timedelta(hours=hours))


def context(t_from: datetime, t_to: datetime, selection: Selection, interval: timedelta) -> QueryContext:
    def multi(values: Sequence[str]) -> Variable:
        return Variable(values=list(values) or [ALL], all_value=sql.ALL_VALUE)

    def single(value: object) -> Variable:
        return Variable(values=[str(value)], multi=False, include_all=False)

    return QueryContext(t_from, t_to, interval=interval, variables={
        "topic": multi(selection.topics), "ticker": multi(selection.tickers), "source": multi(selection.sources),
        "tz": single(selection.tz), "min_articles": single(selection.min_articles),
        "smoothing": single(selection.smoothing),
    })


def query_like_grafana(conn: Connection, raw: str, ctx: QueryContext) -> tuple[list[str], list[dict[str, Any]]]:
    """Expand a panel's SQL the way Grafana does, run it, and fill the missing buckets as Grafana's backend does
    when the query asks (``$__timeGroup(col, interval, fill)``): (columns, rows)."""
    result = conn.execute(text(expand(raw, ctx).replace(":", r"\:")))  # colons of the expanded time literals
    columns = list(result.keys())
    rows = [dict(zip(columns, row)) for row in result]
    fill = fill_of(raw, ctx)
    return columns, (rows if fill is None else resample(rows, fill, ctx, columns))


def _epoch_ms(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value) / 1000, tz=timezone.utc)


def load(conn: Connection, t_from: datetime, t_to: datetime, selection: Selection = Selection(),
         interval: timedelta | None = None) -> DashboardData:
    """Every SQL panel and annotation of the sentiment dashboard, run for ``[t_from, t_to)``."""
    interval = interval or bucket_for(t_from, t_to)
    ctx = context(t_from, t_to, selection, interval)
    dashboard = to_json_dict(sentiment_dashboard())
    data = DashboardData(t_from=t_from, t_to=t_to, interval=interval, selection=selection)
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        for target in panel.get("targets", []):
            if "rawSql" not in target:
                continue
            columns, rows = query_like_grafana(conn, target["rawSql"], ctx)
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            data.panels.append(PanelData(panel["id"], panel["title"], panel.get("description", ""), panel["type"],
                                         columns, rows, unit))
    for annotation in dashboard["annotations"]["list"]:
        if not annotation.get("enable", True):
            continue
        _, rows = query_like_grafana(conn, annotation["target"]["rawSql"], ctx)
        kind = annotation["name"].removeprefix("Alerts: ") if annotation["name"].startswith("Alerts") else "model"
        for r in rows:
            end = _epoch_ms(r["timeend"]) if r.get("timeend") is not None else None
            data.annotations.append(Annotation(kind, _epoch_ms(r["time"]), end, r["text"]))
    return data
