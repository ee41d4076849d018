"""Analyst feedback in a real PostgreSQL: validation, who/when, text resolution for training."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text

from storage import feedback
from storage.db import make_engine
from storage.schema import Article, Feedback


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_insert_normalizes_labels_and_keeps_who_and_when(engine):
    with engine.begin() as conn:
        fid = feedback.insert_feedback(conn, article_id=None, text="Oil slumps on demand fears",
                                       topic="energy | oil", sentiment="Bearish", author="ana")
    with engine.connect() as conn:
        row = conn.execute(select(Feedback).where(Feedback.id == fid)).one()
        now = conn.execute(text("SELECT now()")).scalar_one()
    assert (row.topic, row.sentiment, row.author, row.origin) == ("Energy | Oil", "negative", "ana", "api")
    assert abs((now - row.created_at).total_seconds()) < 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"article_id": None, "text": "  ", "topic": None, "sentiment": "positive"}, "article_id or a text"),
        ({"article_id": "a1", "text": None, "topic": None, "sentiment": " "}, "topic and/or a sentiment"),
        ({"article_id": "a1", "text": None, "topic": None, "sentiment": "happy"}, "unknown sentiment label 'happy'"),
        ({"article_id": "a1", "text": None, "topic": "Sports", "sentiment": None}, "unknown topic label 'Sports'"),
    ],
)
def test_insert_rejects_bad_feedback_with_a_clear_message(engine, kwargs, message):
    with engine.begin() as conn, pytest.raises(ValueError, match=message):
        feedback.insert_feedback(conn, author="ana", **kwargs)
    with engine.connect() as conn:
        assert feedback.count_feedback(conn) == 0


def test_fetch_resolves_article_headlines_and_skips_unknown_articles(engine):
    with engine.begin() as conn:
        conn.execute(insert(Article).values(id="a1", title="Bank posts record profit", event_time=text("now()")))
        feedback.insert_feedback(conn, article_id="a1", text=None, topic=None, sentiment="positive", author="bo")
        feedback.insert_feedback(conn, article_id="missing", text=None, topic="Macro", sentiment=None, author="bo")
        feedback.insert_feedback(conn, article_id="missing", text="Own text wins", topic="Macro", sentiment=None,
                                 author="bo", origin="csv")
    with engine.connect() as conn:
        rows = feedback.fetch_feedback(conn)
        assert feedback.count_feedback(conn) == 3
        latest = feedback.latest_feedback_time(conn)
        assert feedback.count_feedback(conn, since=latest) == 0
    assert [(r.text, r.sentiment, r.topic, r.origin) for r in rows] == [
        ("Bank posts record profit", "positive", None, "api"),
        ("Own text wins", None, "Macro", "csv"),
    ]


def test_insert_many_is_one_transaction(engine):
    rows = [feedback.validate_feedback(article_id=None, text=f"t{i}", topic=None, sentiment="neutral", author="csv")
            for i in range(3)]
    with engine.begin() as conn:
        ids = feedback.insert_many(conn, rows, origin="csv")
    assert len(ids) == 3 and len(set(ids)) == 3
    with engine.connect() as conn:
        assert feedback.count_feedback(conn) == 3
