"""Score rows for the drift and scheduler tests, written straight into the real tables."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert

from storage.schema import Article, Score

CALM = {"negative": 60, "neutral": 180, "positive": 60}


def insert_scores(engine, *, start: datetime, hours: float, mix: dict[str, int], confidence: float,
                  version: str = "v1", prefix: str = "a") -> None:
    """Spread sum(mix) scores evenly over [start, start + hours) with the given sentiment mix."""
    labels = [label for label, n in mix.items() for _ in range(n)]
    step = timedelta(hours=hours) / len(labels)
    articles, scores = [], []
    for i, label in enumerate(labels):
        t = start + step * i
        conf = confidence - 0.001 * (i % 50)  # distinct uncertainties
        rest = (1 - conf) / 2
        p = {"negative": rest, "neutral": rest, "positive": rest} | {label: conf}
        articles.append({"id": f"{prefix}{i}", "title": f"headline {prefix}{i}", "event_time": t})
        scores.append({"article_id": f"{prefix}{i}", "model_version": version, "topic": "Markets",
                       "topic_confidence": 0.9, "sentiment": label, "p_negative": p["negative"],
                       "p_neutral": p["neutral"], "p_positive": p["positive"],
                       "score": p["positive"] - p["negative"], "event_time": t})
    with engine.begin() as conn:
        conn.execute(insert(Article), articles)
        conn.execute(insert(Score), scores)
