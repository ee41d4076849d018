"""Seeded data for the dashboard SQL tests: a small news day with a syndicated copy, a re-scored article,
an article outside the range, two model versions and alerts inside and outside the range."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from marketmood.settings import load_settings
from storage import registry
from storage.articles import ScoredArticle, upsert_scored_batch
from storage.db import make_engine
from storage.embedded import EmbeddedPostgres
from storage.schema import Alert
from tests.fixtures.postgres import clone_database, drop_database

_counter = itertools.count()


@dataclass(frozen=True)
class Seed:
    url: str
    reader_url: str  # the same database, logged in as Grafana's read-only role
    t0: datetime  # start of the dashboard range
    now: datetime  # database clock when seeding (scored_at of every score)
    titles: dict[str, str]


def _scored(aid: str, title: str, at: datetime, tickers: list[str], topic: str, sentiment: str,
            p_neg: float, version: str = "v1", story: str | None = None) -> ScoredArticle:
    p_pos = {"positive": 0.8, "neutral": 0.1, "negative": 0.05}[sentiment]
    p_neu = round(1.0 - p_neg - p_pos, 6)
    return ScoredArticle(
        id=aid, title=title, model_version=version, topic=topic, topic_confidence=0.9, sentiment=sentiment,
        p_negative=p_neg, p_neutral=p_neu, p_positive=p_pos, score=p_pos - p_neg, source="wire",
        url=f"https://news.example/{aid}", published_at=at, tickers=tickers, story_key=story,
    )


def reader_url(url: str) -> str:
    grafana = load_settings().grafana
    return (
        make_url(url)
        .set(username=grafana.reader_role, password=grafana.reader_password)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="module")
def seeded(pg_server: EmbeddedPostgres, pg_template_url: str) -> Iterator[Seed]:
    """One seeded database per test module (the dashboard tests only read it)."""
    name = f"dash_{next(_counter)}"
    db_url = clone_database(pg_server, name)
    try:
        yield _seed(db_url)
    finally:
        drop_database(pg_server, name)


def _seed(db_url: str) -> Seed:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            now = conn.execute(select(func.now())).scalar_one()
            t0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
            h = lambda n: t0 + timedelta(hours=n)  # noqa: E731
            items = [
                _scored("a1", "Apple shares plunge on antitrust probe", h(1), ["AAPL"], "Legal | Regulation",
                        "negative", 0.9, story="apple-probe"),
                _scored("a2", "Apple shares plunge on antitrust probe (wire copy)", h(1.5), ["AAPL"],
                        "Legal | Regulation", "negative", 0.85, story="apple-probe"),
                _scored("a3", "Microsoft beats earnings estimates", h(3), ["MSFT"], "Earnings", "positive", 0.05),
                _scored("a4", "Fed holds rates steady", h(5), [], "Fed | Central Banks", "neutral", 0.1),
                _scored("a5", "Apple recalls devices over battery fires", h(26), ["AAPL"],
                        "Company | Product News", "negative", 0.7),
                _scored("a6", "Old Apple lawsuit news", t0 - timedelta(days=2), ["AAPL", "OLD"],
                        "Legal | Regulation", "negative", 0.95),
            ]
            upsert_scored_batch(conn, items)
            for version in ("v1", "v2"):
                registry.insert_version(conn, version=version, artifact=b"", artifact_sha256="0" * 64)
            registry.set_alias(conn, "v2", by="tests", reason="seed")
            conn.execute(
                insert(Alert),
                [
                    dict(rule="negative_spike", scope_type="ticker", scope="AAPL", severity="warning",
                         state="resolved", dedup_key="k1", started_at=h(1), resolved_at=h(4)),
                    dict(rule="negative_spike", scope_type="topic", scope="Company | Product News",
                         severity="critical", state="firing", dedup_key="k2", started_at=h(25), resolved_at=None),
                    dict(rule="negative_spike", scope_type="ticker", scope="OLD", severity="warning",
                         state="resolved", dedup_key="k0", started_at=t0 - timedelta(days=3),
                         resolved_at=t0 - timedelta(days=2)),
                ],
            )
        # A later model re-scores a1 as neutral (its own transaction: a later scored_at).
        with engine.begin() as conn:
            upsert_scored_batch(conn, [_scored("a1", items[0].title, h(1), ["AAPL"], "Legal | Regulation",
                                               "neutral", 0.2, version="v2", story="apple-probe")])
            now = conn.execute(select(func.now())).scalar_one()
    finally:
        engine.dispose()
    return Seed(url=db_url, reader_url=reader_url(db_url), t0=t0, now=now,
                titles={i.id: i.title for i in items})
