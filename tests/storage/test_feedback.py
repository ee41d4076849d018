"""Analyst feedback in a real PostgreSQL: storage stores (validation lives in the caller), texts resolve,
the retrain trigger counts distinct texts."""

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


def _add(conn, text_=None, *, article_id=None, topic=None, sentiment="positive", author="ana", origin="api"):
    return feedback.insert_feedback(conn, article_id=article_id, text=text_, topic=topic, sentiment=sentiment,
                                    author=author, origin=origin)


def test_insert_keeps_who_how_and_when_verbatim(engine):
    with engine.begin() as conn:
        fid = _add(conn, "Oil slumps on demand fears", topic="Energy | Oil", sentiment="negative")
    with engine.connect() as conn:
        row = conn.execute(select(Feedback).where(Feedback.id == fid)).one()
        now = conn.execute(text("SELECT now()")).scalar_one()
    assert (row.topic, row.sentiment, row.author, row.origin) == ("Energy | Oil", "negative", "ana", "api")
    assert abs((now - row.created_at).total_seconds()) < 60


def test_the_table_still_refuses_rows_without_subject_or_label(engine):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), engine.begin() as conn:
        _add(conn, None, sentiment="positive")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _add(conn, "x", sentiment=None)


def test_fetch_resolves_article_headlines_and_skips_unknown_articles(engine):
    with engine.begin() as conn:
        conn.execute(insert(Article).values(id="a1", title="Bank posts record profit", event_time=text("now()")))
        _add(conn, article_id="a1", author="bo")
        _add(conn, article_id="missing", topic="Macro", sentiment=None, author="bo")
        _add(conn, "Own text wins", article_id="missing", topic="Macro", sentiment=None, author="bo", origin="csv")
    with engine.connect() as conn:
        rows = feedback.fetch_feedback(conn)
        assert feedback.count_rows(conn) == 3
        latest = feedback.latest_feedback_time(conn)
        assert feedback.count_feedback(conn, since=latest) == 0
    assert [(r.text, r.sentiment, r.topic, r.origin) for r in rows] == [
        ("Bank posts record profit", "positive", None, "api"),
        ("Own text wins", None, "Macro", "csv"),
    ]


def test_trigger_counts_distinct_texts_not_rows(engine):
    with engine.begin() as conn:
        conn.execute(insert(Article).values(id="a9", title="Bank posts record profit", event_time=text("now()")))
        for author in ("ana", "bo", "cy"):
            _add(conn, "Shares  tumble", author=author)
        _add(conn, "shares tumble ", author="ana", topic="Markets", sentiment=None)  # same text, folded
        for _ in range(5):
            _add(conn, article_id="a9", author="ana")
        _add(conn, "Another headline", author="ana")
    with engine.connect() as conn:
        assert feedback.count_rows(conn) == 10
        assert feedback.count_feedback(conn) == 3


def test_insert_many_is_one_transaction(engine):
    rows = [{"article_id": None, "text": f"t{i}", "topic": None, "sentiment": "neutral", "author": "csv"}
            for i in range(3)]
    from sqlalchemy import event

    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.begin() as conn:
            ids = feedback.insert_many(conn, rows, origin="csv")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(ids) == 3 and len(set(ids)) == 3
    assert sum(s.lstrip().upper().startswith("INSERT") for s in statements) == 1  # one multi-row INSERT
    with engine.connect() as conn:
        assert feedback.count_feedback(conn) == 3
    # all or nothing: a file whose last row the database refuses stores none of its rows
    bad = rows + [{"article_id": None, "text": "t3", "topic": None, "sentiment": None, "author": "csv"}]  # no label
    with pytest.raises(Exception, match="ck_feedback_has_label"), engine.begin() as conn:
        feedback.insert_many(conn, [{**r, "text": r["text"] + "-again"} for r in bad], origin="csv")
    with engine.connect() as conn:
        assert feedback.count_feedback(conn) == 3


def test_trigger_counts_texts_a_retrain_can_read_not_unknown_article_ids(engine):
    """Labels naming an article that is not stored (and no text) are left out by ``fetch_feedback``; counted, fifty of
    them started a scheduled retrain with nothing new to learn. A label by article id and one by the same headline's
    text are one text, as the retrain merges them."""
    with engine.begin() as conn:
        conn.execute(insert(Article).values(id="a1", title="Bank posts  record profit", event_time=text("now()")))
        for i in range(5):
            _add(conn, article_id=f"not-ingested-{i}", author="ana")
        _add(conn, article_id="a1", author="ana")
        _add(conn, "bank posts record profit", author="bo")
    with engine.connect() as conn:
        assert len(feedback.fetch_feedback(conn)) == 2
        assert feedback.count_feedback(conn) == 1


def test_unknown_article_ids_are_the_textless_rows_naming_no_article(engine):
    with engine.begin() as conn:
        conn.execute(insert(Article).values(id="a1", title="Bank posts record profit", event_time=text("now()")))
    rows = [{"article_id": "a1", "text": None}, {"article_id": "gone", "text": None},
            {"article_id": "gone-too", "text": "Own text"}, {"article_id": None, "text": "No id"}]
    with engine.connect() as conn:
        assert feedback.unknown_article_ids(conn, rows) == {"gone"}
        assert feedback.unknown_article_ids(conn, []) == set()
