"""Seeded data for the dashboard SQL tests, and helpers to run a panel's SQL the way Grafana does.

The news: a small two-day range with syndicated stories (copies from other publishers), an article
re-scored by the active model, a rejected model's score that must never show, an article without URL, an
article before the range, and an energy ticker (XOM) with 30 days of calm baseline and a negative last day
(the top mover). Model versions v1 -> v2 (active) and a rejected v3; alerts inside and outside the range, one
silenced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from marketmood.dashboards.macros import ALL, QueryContext, Variable
from marketmood.report.panels import query_like_grafana
from marketmood.settings import load_settings
from storage import dashboards as sql
from storage import registry
from storage.articles import ScoredArticle, upsert_scored_batch
from storage.db import make_engine
from storage.embedded import EmbeddedPostgres
from storage.schema import Alert
from tests.fixtures.postgres import clone_database, drop_database

_counter = itertools.count()
ENERGY = "Energy | Oil"


@dataclass(frozen=True)
class Seed:
    url: str
    reader_url: str  # the same database, logged in as Grafana's read-only role
    t0: datetime  # start of the dashboard range
    now: datetime  # database clock when seeding (scored_at of every score)
    titles: dict[str, str]
    xom_recent: list[float] = field(default_factory=list)  # scores of XOM's last 24 h
    xom_baseline: list[float] = field(default_factory=list)  # scores of XOM's previous 30 days

    @property
    def t_to(self) -> datetime:
        return self.now + timedelta(minutes=5)


def scored(aid: str, title: str, at: datetime, tickers: list[str], topic: str, sentiment: str,
           p_neg: float, version: str = "v1", story: str | None = None, source: str = "wire",
           url: str | None = "default") -> ScoredArticle:
    p_pos = {"positive": 0.8, "neutral": 0.1, "negative": 0.05}[sentiment]
    p_neu = round(1.0 - p_neg - p_pos, 6)
    return ScoredArticle(
        id=aid, title=title, model_version=version, topic=topic, topic_confidence=0.9, sentiment=sentiment,
        p_negative=p_neg, p_neutral=p_neu, p_positive=p_pos, score=round(p_pos - p_neg, 6), source=source,
        url=f"https://news.example/{aid}" if url == "default" else url, published_at=at, tickers=tickers,
        story_key=story,
    )


def seed_one_per_instant(db_url: str, make_scored, instants: list[datetime], *, sentiment: str = "negative",  # type: ignore[no-untyped-def]
                         score: float = 0.9, scored_after: timedelta | None = None) -> None:
    """One Earnings article about ACME at each instant, scored by the active model v1 (``scored_after`` its
    publication when given: the pipeline panels read ``scored_at``)."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            registry.insert_version(conn, version="v1", artifact=b"", artifact_sha256="0" * 64)
            registry.set_alias(conn, "v1", by="tests", reason="first")
            upsert_scored_batch(conn, [make_scored(f"e{i}", f"Acme note {i}", at, ["ACME"], "Earnings", sentiment,
                                                   score) for i, at in enumerate(instants)])
            if scored_after is not None:
                conn.execute(text("UPDATE scores SET scored_at = a.published_at + make_interval(secs => :s) "
                                  "FROM articles a WHERE a.id = scores.article_id"),
                             {"s": scored_after.total_seconds()})
    finally:
        engine.dispose()


def _reader_url(url: str) -> str:
    grafana = load_settings().grafana
    return (
        make_url(url)
        .set(username=grafana.reader_role, password=grafana.reader_password)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
def reader_url() -> Callable[[str], str]:
    """``reader_url(db_url)``: the same database as Grafana's read-only role."""
    return _reader_url


@pytest.fixture(scope="module")
def seeded(pg_server: EmbeddedPostgres, pg_template_url: str) -> Iterator[Seed]:
    """One seeded database per test module (the dashboard tests only read it)."""
    name = f"dash_{next(_counter)}"
    db_url = clone_database(pg_server, name)
    try:
        yield _seed(db_url)
    finally:
        drop_database(pg_server, name)


def _xom(now: datetime) -> tuple[list[ScoredArticle], list[float], list[float]]:
    """XOM in Energy: 20 calm articles over the previous 30 days, 6 negative ones in the last 24 h."""
    items, base, recent = [], [], []
    for i in range(20):
        sentiment, p_neg = ("neutral", 0.2) if i % 2 else ("positive", 0.05)
        item = scored(f"x{i}", f"Exxon routine update number {i}", now - timedelta(days=3 + i * 1.3), ["XOM"],
                      ENERGY, sentiment, p_neg, version="v2", source="energywire")
        items.append(item)
        base.append(item.score)
    # The burst (2.5 h, ending 2 h ago) must sit in one day and one week: the daily and weekly buckets start at
    # midnight (weeks on Monday), and a burst straddling one would be split across buckets (seen on a Monday at 03:00).
    end = now - timedelta(hours=2)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if end - timedelta(hours=2.5) <= midnight <= end:
        end = midnight - timedelta(minutes=5)
    for i in range(6):
        item = scored(f"r{i}", f"Exxon refinery fire number {i} hits output", end - timedelta(hours=i * 0.5),
                      ["XOM"], ENERGY, "negative", 0.85 + i * 0.01, version="v2", source="energywire")
        items.append(item)
        recent.append(item.score)
    return items, recent, base


def _seed(db_url: str) -> Seed:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            now = conn.execute(select(func.now())).scalar_one()
            t0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
            h = lambda n: t0 + timedelta(hours=n)  # noqa: E731
            items = [
                scored("a1", "Apple shares plunge on antitrust probe", h(1), ["AAPL"], "Legal | Regulation",
                       "negative", 0.9, story="apple-probe"),
                scored("a2", "Apple shares plunge on antitrust probe (wire copy)", h(1.5), ["AAPL"],
                       "Legal | Regulation", "negative", 0.85, story="apple-probe", source="copycat"),
                scored("a2b", "APPLE SHARES PLUNGE ON ANTITRUST PROBE", h(2), ["AAPL"],
                       "Legal | Regulation", "negative", 0.85, story="apple-probe", source="aggregator"),
                scored("a3", "Microsoft beats earnings estimates", h(3), ["MSFT"], "Earnings", "positive", 0.05,
                       source="newsdesk", story="msft-beats"),
                scored("a3c", "Microsoft beats earnings estimates - copy", h(3.5), ["MSFT"], "Earnings", "positive",
                       0.05, source="copycat", story="msft-beats"),
                scored("a4", "Fed holds rates steady", h(5), [], "Fed | Central Banks", "neutral", 0.1),
                scored("a5", "Apple recalls devices over battery fires & smoke", h(26), ["AAPL"],
                       "Company | Product News", "negative", 0.7, url=None),
                scored("a6", "Old Apple lawsuit news", t0 - timedelta(days=2), ["AAPL", "OLD"],
                       "Legal | Regulation", "negative", 0.95),
            ]
            xom, xom_recent, xom_baseline = _xom(now)
            upsert_scored_batch(conn, items + xom)
            for version in ("v1", "v2", "v3"):
                registry.insert_version(conn, version=version, artifact=b"", artifact_sha256="0" * 64)
            registry.set_alias(conn, "v1", by="tests", reason="first")
            registry.set_alias(conn, "v2", by="tests", reason="seed")
            registry.set_status(conn, "v3", "rejected")
            # Kafka timestamps: a3 entered Kafka 30 s before it was scored; the others fall back to published_at.
            conn.execute(text("UPDATE articles SET kafka_timestamp = :ts WHERE id = 'a3'"),
                         {"ts": now - timedelta(seconds=30)})
            evidence = {"current_share": 0.8, "baseline_share": 0.1, "volume": 12, "p_value": 0.001,
                        "headlines": [{"title": "Apple shares plunge on antitrust probe",
                                       "url": "https://news.example/a1"}]}
            conn.execute(
                insert(Alert),
                [
                    dict(rule="negative_spike", scope_type="ticker", scope="AAPL", severity="warning",
                         state="resolved", dedup_key="k1", started_at=h(1), resolved_at=h(4), evidence=evidence),
                    dict(rule="negative_spike", scope_type="topic", scope="Company | Product News",
                         severity="critical", state="firing", dedup_key="k2", started_at=h(25), resolved_at=None,
                         evidence={**evidence, "current_share": 0.6}),
                    dict(rule="negative_spike", scope_type="ticker", scope="XOM", severity="critical",
                         state="silenced", dedup_key="k3", started_at=now - timedelta(hours=2), resolved_at=None,
                         evidence=evidence),
                    dict(rule="negative_spike", scope_type="ticker", scope="OLD", severity="warning",
                         state="resolved", dedup_key="k0", started_at=t0 - timedelta(days=3),
                         resolved_at=t0 - timedelta(days=2), evidence=evidence),
                ],
            )
        # Later scores (their own transaction, so a later scored_at): the active v2 re-scores a1 as neutral;
        # the rejected v3 re-scores a5 as positive, which no panel may show.
        with engine.begin() as conn:
            upsert_scored_batch(conn, [
                scored("a1", items[0].title, h(1), ["AAPL"], "Legal | Regulation", "neutral", 0.2, version="v2",
                       story="apple-probe"),
                scored("a5", items[5].title, h(26), ["AAPL"], "Company | Product News", "positive", 0.05,
                       version="v3", url=None),
            ])
            now = conn.execute(select(func.now())).scalar_one()
    finally:
        engine.dispose()
    return Seed(url=db_url, reader_url=_reader_url(db_url), t0=t0, now=now,
                titles={i.id: i.title for i in items + xom}, xom_recent=xom_recent, xom_baseline=xom_baseline)


def context(seed: Seed, *, tickers: list[str] | None = None, topics: list[str] | None = None,
            sources: list[str] | None = None, interval: timedelta = timedelta(hours=1), tz: str = "UTC",
            min_articles: int | str = 1, smoothing: int | str = 1, t_to: datetime | None = None) -> QueryContext:
    """What Grafana knows when it runs a panel of the seeded range (``None`` = All; ``t_to``: another end)."""

    def multi(values: list[str] | None, options: list[str]) -> Variable:
        return Variable(values=values or [ALL], options=options, all_value=sql.ALL_VALUE)

    def single(value: object) -> Variable:
        return Variable(values=[str(value)], multi=False, include_all=False)

    return QueryContext(seed.t0, t_to or seed.t_to, interval=interval, variables={
        "ticker": multi(tickers, ["AAPL", "MSFT", "XOM"]),
        "topic": multi(topics, [ENERGY, "Earnings"]),
        "source": multi(sources, ["wire", "newsdesk"]),
        "tz": single(tz), "min_articles": single(min_articles), "smoothing": single(smoothing),
    })


def run_panel_sql(url: str, raw: str, ctx: QueryContext) -> tuple[list[str], list[dict[str, Any]]]:
    """Expand ``raw`` like Grafana and run it on ``url``; (columns, rows), with the missing buckets filled as
    Grafana fills them when the query asks (``$__timeGroup(col, interval, fill)``)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return query_like_grafana(conn, raw, ctx)
    finally:
        engine.dispose()


@pytest.fixture
def run(seeded: Seed) -> Callable[..., tuple[list[str], list[dict[str, Any]]]]:
    """``run(raw_sql, **context_kwargs)`` on the seeded database as Grafana's reader."""

    def _run(raw: str, **kwargs: Any) -> tuple[list[str], list[dict[str, Any]]]:
        return run_panel_sql(seeded.reader_url, raw, context(seeded, **kwargs))

    return _run


@pytest.fixture(scope="session")
def make_scored() -> Callable[..., ScoredArticle]:
    """``make_scored(id, title, at, tickers, topic, sentiment, p_negative, version=..., ...)``."""
    return scored


@pytest.fixture(scope="session")
def run_on() -> Callable[..., tuple[list[str], list[dict[str, Any]]]]:
    """``run_on(db_url, raw_sql, t_from, t_to, **context_kwargs)`` as Grafana's reader on any database."""

    def _run(url: str, raw: str, t_from: datetime, t_to: datetime, **kwargs: Any) -> tuple[list[str], list[dict[str, Any]]]:
        seed = Seed(url=url, reader_url=_reader_url(url), t0=t_from, now=t_to - timedelta(minutes=5), titles={})
        return run_panel_sql(seed.reader_url, raw, context(seed, **kwargs))

    return _run
