"""POST /feedback on real PostgreSQL: only named tokens write, the author is the token's owner."""

from __future__ import annotations

from fastapi.testclient import TestClient

from storage.db import make_engine
from storage.feedback import count_rows, fetch_feedback


def _rows(db_url: str):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return fetch_feedback(conn), count_rows(conn)
    finally:
        engine.dispose()


def test_named_token_writes_as_its_owner_and_a_bare_token_cannot_write(db_client: TestClient, db_url: str,
                                                                        alice: dict[str, str],
                                                                        shared: dict[str, str]) -> None:
    ok = db_client.post("/feedback", headers=alice, json={"text": "Shares tumble", "sentiment": "Bearish"})
    assert ok.status_code == 201 and ok.json()["author"] == "alice"
    same = db_client.post("/feedback", headers=alice, json={"text": "Dividend raised", "topic": "dividend",
                                                             "author": "alice"})
    assert same.status_code == 201
    impersonate = db_client.post("/feedback", headers=alice, json={"text": "Fed holds", "sentiment": "neutral",
                                                                    "author": "bob"})
    assert impersonate.status_code == 201 and impersonate.json()["author"] == "alice"  # the body cannot rename
    bare = db_client.post("/feedback", headers=shared, json={"text": "x", "sentiment": "positive", "author": "bob"})
    assert bare.status_code == 403 and "named token" in bare.json()["detail"]
    rows, n = _rows(db_url)
    assert n == 3 and {r.author for r in rows} == {"alice"}
    assert [(r.text, r.topic, r.sentiment) for r in rows] == [
        ("Shares tumble", None, "negative"), ("Dividend raised", "Dividend", None), ("Fed holds", None, "neutral")]


def test_invalid_labels_are_422_and_nothing_is_stored(db_client: TestClient, db_url: str,
                                                      alice: dict[str, str]) -> None:
    response = db_client.post("/feedback", headers=alice, json={"text": "x", "sentiment": "angry"})
    assert response.status_code == 422 and "unknown sentiment label 'angry'" in response.json()["detail"]
    assert _rows(db_url)[1] == 0


def test_one_author_is_rate_limited_with_retry_after_and_another_is_not(make_db_client, db_url: str,
                                                                         alice: dict[str, str]) -> None:
    client = make_db_client(tokens=("alice:alice-secret", "bob:bob-secret"), feedback_per_minute=1,
                            feedback_burst=3)
    bob = {"Authorization": "Bearer bob-secret"}
    codes = [client.post("/feedback", headers=alice, json={"text": f"Stocks slide {i}", "sentiment": "negative"})
             for i in range(5)]
    assert [r.status_code for r in codes] == [201, 201, 201, 429, 429]
    assert int(codes[3].headers["Retry-After"]) >= 1 and "alice" in codes[3].json()["detail"]
    assert client.post("/feedback", headers=bob, json={"text": "Stocks slide", "sentiment": "negative"}).status_code == 201
    _, n = _rows(db_url)
    assert n == 4  # refused rows are not stored


def test_a_text_over_the_api_limit_is_413_and_nothing_is_stored(make_db_client, db_url: str,
                                                                 alice: dict[str, str]) -> None:
    """/classify refuses texts over ``max_text_chars``; feedback stored any text the 2 MB body could carry (and
    the retrain reads every stored text into memory)."""
    client = make_db_client(max_text_chars=100)
    long_text = client.post("/feedback", headers=alice, json={"text": "Shares slide " * 10, "sentiment": "negative"})
    assert long_text.status_code == 413 and "text has 130 characters; the limit is 100" in long_text.json()["detail"]
    long_id = client.post("/feedback", headers=alice, json={"article_id": "a" * 101, "sentiment": "negative"})
    assert long_id.status_code == 413 and "article_id" in long_id.json()["detail"]
    assert client.post("/feedback", headers=alice, json={"text": "x" * 100, "sentiment": "negative"}).status_code == 201
    assert _rows(db_url)[1] == 1


def test_an_article_id_without_text_must_name_a_stored_article(db_client: TestClient, db_url: str,
                                                              alice: dict[str, str]) -> None:
    """A label naming an unknown article (a typo, another environment's id) was stored with 201 and never
    trained on: the retrain resolves its text from the article. Now it is a 422 with the reason."""
    from sqlalchemy import insert, text

    from storage.schema import Article

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Article).values(id="rtr-1", title="Bank posts record profit", event_time=text("now()")))
    finally:
        engine.dispose()
    unknown = db_client.post("/feedback", headers=alice, json={"article_id": "rtr-2", "sentiment": "positive"})
    assert unknown.status_code == 422 and "'rtr-2' names no stored article" in unknown.json()["detail"]
    assert db_client.post("/feedback", headers=alice,
                          json={"article_id": "rtr-1", "sentiment": "positive"}).status_code == 201
    with_text = db_client.post("/feedback", headers=alice,
                               json={"article_id": "rtr-2", "text": "Oil slumps", "sentiment": "negative"})
    assert with_text.status_code == 201  # its own text is what is trained on
    rows, n = _rows(db_url)
    assert n == 2 and [(r.text, r.sentiment) for r in rows] == [("Bank posts record profit", "positive"),
                                                               ("Oil slumps", "negative")]
