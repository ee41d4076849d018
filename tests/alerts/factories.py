"""Build scored articles for DB-level alert tests (inserted with the real idempotent upsert), and rules
that route to all four notifiers at the tests' local recording servers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine

from streams.novelty import story_key
from storage.articles import ScoredArticle, upsert_scored_batch

BASE = datetime(2024, 1, 2, 0, 0, tzinfo=timezone.utc)
W = 300


def article(i: str, t: datetime, topic: str, sentiment: str, *, title: str | None = None,
            tickers: tuple[str, ...] = ()) -> ScoredArticle:
    p = {"negative": (0.9, 0.05, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.05, 0.9)}[sentiment]
    title = title or f"{topic} story {i} ({sentiment})"
    return ScoredArticle(
        id=i, title=title, model_version="v1", topic=topic, topic_confidence=0.9, sentiment=sentiment,
        p_negative=p[0], p_neutral=p[1], p_positive=p[2], score=p[2] - p[0], source="test",
        url=f"https://news.example.com/{i}", published_at=t, tickers=tickers, story_key=story_key(title),
    )


def steady(topic: str, start: datetime, windows: int, per_window: int, neg_every: int, prefix: str,
           tickers: tuple[str, ...] = ()) -> list[ScoredArticle]:
    """``per_window`` articles per window; every ``neg_every``-th one negative, the rest neutral."""
    out, k = [], 0
    for w in range(windows):
        for j in range(per_window):
            t = start + timedelta(seconds=w * W + (j + 0.5) * W / per_window)
            out.append(article(f"{prefix}-{w}-{j}", t, topic, "negative" if k % neg_every == 0 else "neutral",
                               tickers=tickers))
            k += 1
    return out


def insert(engine: Engine, items: list[ScoredArticle]) -> None:
    with engine.begin() as conn:
        for i in range(0, len(items), 500):
            upsert_scored_batch(conn, items[i:i + 500])


def all_notifiers(http_recorder, smtp_recorder, *, secret: str, routing_key: str, to: str) -> dict:
    """Rules-file ``notifiers`` + ``routing``: webhook, Slack, PagerDuty and email, all for ``critical``."""
    return {
        "notifiers": {
            "hook": {"type": "webhook", "url": http_recorder.url("/hook"), "secret": secret},
            "slack": {"type": "slack", "url": http_recorder.url("/slack")},
            "pd": {"type": "pagerduty", "routing_key": routing_key, "events_url": http_recorder.url("/pd")},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp_recorder.port, "from": "mm@example.com",
                     "to": [to]},
        },
        "routing": {"critical": ["hook", "slack", "pd", "mail"]},
    }
