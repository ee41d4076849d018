"""SQL for analyst feedback: corrected labels kept with who/when, read back as training material.

Every function takes a SQLAlchemy ``Connection`` (or ``Session``) and runs inside the caller's transaction
(use ``engine.begin()``), so an API request or a CSV import commits all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from models.labels import UnknownLabelError, normalize_sentiment, normalize_topic
from storage.schema import Article, Feedback


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """One correction with the text it applies to (the article title/body when only an id was given)."""

    id: int
    text: str
    topic: str | None
    sentiment: str | None
    author: str
    origin: str
    created_at: datetime


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def validate_feedback(
    *, article_id: str | None, text: str | None, topic: str | None, sentiment: str | None, author: str
) -> dict[str, Any]:
    """Normalize one correction; raise ValueError (with the reason) for anything the table must not hold."""
    article_id, text, author_clean = _clean(article_id), _clean(text), _clean(author)
    topic_raw, sentiment_raw = _clean(topic), _clean(sentiment)
    if article_id is None and text is None:
        raise ValueError("feedback needs an article_id or a text")
    if topic_raw is None and sentiment_raw is None:
        raise ValueError("feedback needs a topic and/or a sentiment label")
    if author_clean is None:
        raise ValueError("feedback needs an author")
    try:
        topic_norm = normalize_topic(topic_raw) if topic_raw is not None else None
        sentiment_norm = normalize_sentiment(sentiment_raw) if sentiment_raw is not None else None
    except UnknownLabelError as exc:
        raise ValueError(str(exc)) from None
    return {
        "article_id": article_id,
        "text": text,
        "topic": topic_norm,
        "sentiment": sentiment_norm,
        "author": author_clean,
    }


def insert_feedback(
    conn: Any,
    *,
    article_id: str | None,
    text: str | None,
    topic: str | None,
    sentiment: str | None,
    author: str,
    origin: str = "api",
) -> int:
    """Store one analyst correction and return its id; labels are normalized (``Bearish`` -> negative)."""
    row = validate_feedback(article_id=article_id, text=text, topic=topic, sentiment=sentiment, author=author)
    stmt = insert(Feedback).values(**row, origin=origin).returning(Feedback.id)
    return int(conn.execute(stmt).scalar_one())


def insert_many(conn: Any, rows: Iterable[dict[str, Any]], *, origin: str) -> list[int]:
    """Store already-validated rows (see ``validate_feedback``) in one multi-row INSERT."""
    values = [{**row, "origin": origin} for row in rows]
    if not values:
        return []
    return [int(i) for i in conn.execute(insert(Feedback).values(values).returning(Feedback.id)).scalars()]


def count_feedback(conn: Any, *, since: datetime | None = None) -> int:
    """How many corrections arrived after ``since`` (all when None): the scheduler's "enough new?" test."""
    stmt = select(func.count()).select_from(Feedback)
    if since is not None:
        stmt = stmt.where(Feedback.created_at > since)
    return int(conn.execute(stmt).scalar_one())


def fetch_feedback(conn: Any, *, until: datetime | None = None) -> list[FeedbackRow]:
    """All usable corrections (created at or before ``until``), oldest first, with their text resolved
    (the article's headline when only an id was given).

    A correction that names an article id unknown to ``articles`` and carries no text cannot be trained on
    and is left out.
    """
    # The headline is what the worker scores and what the labeled sets look like.
    text_expr = func.coalesce(Feedback.text, Article.title)
    stmt = (
        select(
            Feedback.id,
            text_expr.label("text"),
            Feedback.topic,
            Feedback.sentiment,
            Feedback.author,
            Feedback.origin,
            Feedback.created_at,
        )
        .select_from(Feedback)
        .outerjoin(Article, Article.id == Feedback.article_id)
        .order_by(Feedback.created_at, Feedback.id)
    )
    if until is not None:
        stmt = stmt.where(Feedback.created_at <= until)
    return [FeedbackRow(**row._mapping) for row in conn.execute(stmt) if row.text]


def latest_feedback_time(conn: Any) -> datetime | None:
    return conn.execute(select(func.max(Feedback.created_at))).scalar_one()
