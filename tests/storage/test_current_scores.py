"""One definition of "the current score of an article": alerts, dashboards and the demo agree (real PostgreSQL).

A crafted set: six articles scored by v1 (promoted, then retired), three of them re-scored by v2 (active),
all scored by a shadow candidate v3 and one by a rejected v0, and the whole batch replayed. Whatever reads
it (the alert aggregation, the dashboard series, the demo's topic summary) must count each article once,
by v2 where v2 scored it and by v1 otherwise, and never by v3 or v0.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from storage import alerts as alerts_db
from storage.articles import ScoredArticle, topic_summary, write_scored_batch
from storage.dashboards import BIND, params_for, sentiment_series
from storage.db import make_engine
from storage.scores import current_scores

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
TOPICS = {1: "Energy | Oil", 2: "Energy | Oil", 3: "Fed | Central Banks", 4: "Fed | Central Banks",
          5: "Markets", 6: "Markets"}
V1 = {1: "negative", 2: "neutral", 3: "negative", 4: "positive", 5: "neutral", 6: "negative"}
V2 = {1: "positive", 2: "negative", 3: "neutral"}  # v2 re-scored articles 1-3 (and moved 3 to Markets)
V2_TOPICS = {1: "Energy | Oil", 2: "Energy | Oil", 3: "Markets"}


def _item(i: int, version: str, sentiment: str, topic: str) -> ScoredArticle:
    p = {"negative": (0.8, 0.1, 0.1), "neutral": (0.1, 0.8, 0.1), "positive": (0.1, 0.1, 0.8)}[sentiment]
    return ScoredArticle(
        id=f"c{i}", title=f"Distinct headline number {i} about {topic}", model_version=version, topic=topic,
        topic_confidence=0.9, sentiment=sentiment, p_negative=p[0], p_neutral=p[1], p_positive=p[2],
        score=p[2] - p[0], published_at=T0 + timedelta(minutes=i), tickers=("XOM",), story_key=f"story-{i}",
        content_sha256=f"sha-{i}",
    )


def _crafted(conn) -> None:
    for version, status in (("v0", "rejected"), ("v1", "retired"), ("v2", "promoted"), ("v3", "candidate")):
        conn.execute(text("INSERT INTO model_versions (version, status) VALUES (:v, :s)"), {"v": version, "s": status})
    conn.execute(text("INSERT INTO model_aliases (alias, version) VALUES ('active', 'v2')"))
    batch = [_item(i, "v1", V1[i], TOPICS[i]) for i in TOPICS]
    batch += [_item(i, "v2", V2[i], V2_TOPICS[i]) for i in V2]
    batch += [_item(i, "v3", "positive", "Markets") for i in TOPICS]
    batch += [_item(4, "v0", "negative", "Energy | Oil")]
    write_scored_batch(conn, batch)
    write_scored_batch(conn, batch)  # a replay (rebalance): no new rows, no change of meaning


def _expected() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for i in TOPICS:
        topic, sentiment = (V2_TOPICS[i], V2[i]) if i in V2 else (TOPICS[i], V1[i])
        counts.setdefault(topic, {"negative": 0, "neutral": 0, "positive": 0})[sentiment] += 1
    return counts


def test_alerts_dashboards_and_the_demo_count_each_article_once_by_its_current_score(db_url) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            _crafted(conn)
        start, end = T0, T0 + timedelta(hours=1)
        with engine.connect() as conn:
            rows = current_scores(conn, start, end)
            versions = {r["article_id"]: r["model_version"] for r in rows}
            demo = {r.topic: {"negative": r.negative, "neutral": r.neutral, "positive": r.positive}
                    for r in topic_summary(conn, start)}
            windows = alerts_db.window_counts(conn, "topic", start, end, 3600)
            alerts_view = {topic: dict(zip(("negative", "neutral", "positive"), list(by_window.values())[0][:3]))
                           for topic, by_window in windows.items()}
            series = conn.execute(
                text(sentiment_series(BIND, "topic")),
                params_for(t_from=start, t_to=end, bucket=timedelta(hours=1), min_articles=1),
            ).mappings().all()
            dashboard = {r["metric"]: int(r["articles"]) for r in series if r["articles"]}
            n_scores = conn.execute(text("SELECT count(*) FROM scores")).scalar_one()
    finally:
        engine.dispose()
    assert versions == {"c1": "v2", "c2": "v2", "c3": "v2", "c4": "v1", "c5": "v1", "c6": "v1"}
    assert n_scores == 6 + 3 + 6 + 1  # the replay added nothing
    expected = _expected()
    assert demo == expected
    assert alerts_view == expected
    assert dashboard == {topic: sum(c.values()) for topic, c in expected.items()}


def test_after_a_rollback_the_rolled_back_versions_scores_leave_every_view(db_url) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            _crafted(conn)
            conn.execute(text("UPDATE model_versions SET status = 'rejected' WHERE version = 'v2'"))
            conn.execute(text("UPDATE model_aliases SET version = 'v1' WHERE alias = 'active'"))
        with engine.connect() as conn:
            versions = {r["article_id"]: r["model_version"] for r in current_scores(conn, T0, T0 + timedelta(hours=1))}
    finally:
        engine.dispose()
    assert versions == {f"c{i}": "v1" for i in TOPICS}
