"""SQL for analyst feedback: labels kept with who/how/when, read back for the retrain's merge.

Storage only stores: labels are validated and normalized by the caller (``training.feedback_policy``)
against the label maps, and which labels are trusted (agreement, reviewers, per-author caps) is decided
when a retrain merges them. Every function takes a ``Connection`` and runs in the caller's transaction
(use ``engine.begin()``), so an API request or a CSV import commits all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from storage.schema import Article, Feedback

_COLUMNS = ("article_id", "text", "topic", "sentiment", "author")


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """One stored label with the text it applies to (the article headline when only an id was given)."""

    id: int
    text: str
    topic: str | None
    sentiment: str | None
    author: str
    origin: str
    created_at: datetime


def insert_feedback(
    conn: Any, *, article_id: str | None, text: str | None, topic: str | None, sentiment: str | None,
    author: str, origin: str = "api",
) -> int:
    """Store one (already validated) label row and return its id."""
    stmt = insert(Feedback).values(article_id=article_id, text=text, topic=topic, sentiment=sentiment,
                                   author=author, origin=origin).returning(Feedback.id)
    return int(conn.execute(stmt).scalar_one())


def insert_many(conn: Any, rows: Iterable[dict[str, Any]], *, origin: str) -> list[int]:
    """Store already-validated rows in one multi-row INSERT."""
    values = [{**{k: row.get(k) for k in _COLUMNS}, "origin": origin} for row in rows]
    if not values:
        return []
    return [int(i) for i in conn.execute(insert(Feedback).values(values).returning(Feedback.id)).scalars()]


def unknown_article_ids(conn: Any, rows: Iterable[dict[str, Any]]) -> set[str]:
    """The article ids of label rows that name an article and give no text, for which no article is stored.

    Such a label can never be trained on (``fetch_feedback`` resolves its text from the article), so callers
    refuse it with its reason instead of storing a row that is silently ignored (a typo, another environment's
    ids)."""
    wanted = {row["article_id"] for row in rows if row.get("article_id") and not row.get("text")}
    if not wanted:
        return set()
    found = conn.execute(select(Article.id).where(Article.id.in_(sorted(wanted)))).scalars()
    return wanted - set(found)


def _subject_key() -> Any:
    """One key per labelled text, resolved as ``fetch_feedback`` resolves it (the row's text, else its article's
    headline), case and whitespace folded; NULL for a label naming an unknown article and no text, which no retrain
    can train on. Needs ``Article`` outer-joined."""
    resolved = func.coalesce(Feedback.text, Article.title)
    return func.nullif(func.lower(func.regexp_replace(func.btrim(resolved), r"\s+", " ", "g")), "")


def count_feedback(conn: Any, *, since: datetime | None = None) -> int:
    """Distinct texts labelled after ``since`` (all when None): the scheduler's "enough new?" test.

    Texts, not rows: ten people (or one person ten times) labelling one headline is one new example, whether they
    named it by article id or by its text. Labels of unknown articles are not counted: ``fetch_feedback`` leaves
    them out, so fifty of them (a CSV of another environment's ids) would start a retrain with nothing new to learn.
    """
    stmt = (select(func.count(func.distinct(_subject_key()))).select_from(Feedback)
            .outerjoin(Article, Article.id == Feedback.article_id))
    if since is not None:
        stmt = stmt.where(Feedback.created_at > since)
    return int(conn.execute(stmt).scalar_one())


def count_rows(conn: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(Feedback)).scalar_one())


def fetch_feedback(conn: Any, *, until: datetime | None = None) -> list[FeedbackRow]:
    """All labels (created at or before ``until``), oldest first, with their text resolved (the article's
    headline when only an id was given). A row naming an unknown article and no text is left out."""
    text_expr = func.coalesce(Feedback.text, Article.title)
    stmt = (
        select(Feedback.id, text_expr.label("text"), Feedback.topic, Feedback.sentiment, Feedback.author,
               Feedback.origin, Feedback.created_at)
        .select_from(Feedback)
        .outerjoin(Article, Article.id == Feedback.article_id)
        .order_by(Feedback.created_at, Feedback.id)
    )
    if until is not None:
        stmt = stmt.where(Feedback.created_at <= until)
    return [FeedbackRow(**row._mapping) for row in conn.execute(stmt) if row.text]


def latest_feedback_time(conn: Any) -> datetime | None:
    return conn.execute(select(func.max(Feedback.created_at))).scalar_one()
