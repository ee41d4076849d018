"""The one definition of "the current score of an article" (SQL function ``current_scores``, migration 0003).

Every reader (alerts, dashboards, demo, read API, report) selects from ``current_scores(from, to)`` joined
to ``articles``; nobody writes its own DISTINCT ON. ``CURRENT_SCORES_FROM`` is the FROM clause to embed:
it exposes the score columns as ``s.*`` and the article columns as ``a.*``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text


def current_scores_from(t_from: str = ":start", t_to: str = ":end") -> str:
    """``FROM current_scores(...) s JOIN articles a`` with the given SQL expressions as the time bounds
    (bind parameters by default; Grafana panels pass ``$__timeFrom()`` / ``$__timeTo()``)."""
    return f"current_scores({t_from}, {t_to}) s JOIN articles a ON a.id = s.article_id"


CURRENT_SCORES_FROM = current_scores_from()


def current_scores(conn: Connection, start: datetime, end: datetime, *, novel_only: bool = False) -> list[dict[str, Any]]:
    """Rows (article + its current score) with event time in ``[start, end)``, oldest first."""
    where = "WHERE a.novel" if novel_only else ""
    rows = conn.execute(
        text(
            f"""SELECT s.article_id, s.model_version, s.topic, s.topic_confidence, s.sentiment,
                       s.p_negative, s.p_neutral, s.p_positive, s.score, s.event_time, s.scored_at,
                       a.title, a.source, a.url, a.tickers, a.novel, a.story_key
                FROM {CURRENT_SCORES_FROM} {where}
                ORDER BY s.event_time, s.article_id"""
        ),
        {"start": start, "end": end},
    )
    return [dict(r._mapping) for r in rows]
