"""GET /alerts, POST /alerts/{id}/ack and POST /feedback on real PostgreSQL, with bearer-token auth."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from storage.alerts import insert_alert
from storage.db import make_engine
from storage.feedback import fetch_feedback


@pytest.fixture
def alert_ids(db_url: str) -> list[int]:
    start = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            return [
                insert_alert(conn, rule="negative_spike", scope_type=scope_type, scope=scope, severity="warning",
                             state=state, dedup_key=f"k{i}", started_at=start + timedelta(hours=i),
                             evidence={"current_share": 0.6})["id"]
                for i, (scope_type, scope, state) in enumerate(
                    [("topic", "Earnings", "resolved"), ("ticker", "AAPL", "firing")]
                )
            ]
    finally:
        engine.dispose()


def test_list_alerts_newest_first_and_by_state(db_client: TestClient, alert_ids: list[int]) -> None:
    response = db_client.get("/alerts")
    assert response.status_code == 200
    assert [a["id"] for a in response.json()] == alert_ids[::-1]
    assert response.json()[0]["evidence"] == {"current_share": 0.6}
    assert [a["scope"] for a in db_client.get("/alerts", params={"state": "open"}).json()] == ["AAPL"]
    assert db_client.get("/alerts", params={"limit": 1}).json()[0]["id"] == alert_ids[1]
    assert db_client.get("/alerts", params={"state": "bogus"}).status_code == 422


def test_acknowledge_needs_a_valid_token(db_client: TestClient, alert_ids: list[int], alice: dict[str, str]) -> None:
    url = f"/alerts/{alert_ids[1]}/ack"
    assert db_client.post(url).status_code == 401
    response = db_client.post(url, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert db_client.get("/alerts", params={"state": "firing"}).json()[0]["id"] == alert_ids[1]  # unchanged

    response = db_client.post(url, headers=alice)
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["acknowledged_by"]) == ("acknowledged", "alice")
    assert db_client.post("/alerts/999999/ack", headers=alice).status_code == 404


def test_writes_refused_when_no_tokens_configured(make_db_client: Callable[..., TestClient],
                                                   alert_ids: list[int], alice: dict[str, str]) -> None:
    db_client = make_db_client(tokens=())
    response = db_client.post(f"/alerts/{alert_ids[1]}/ack", headers=alice)
    assert response.status_code == 401 and "no API tokens configured" in response.json()["detail"]


def test_feedback_is_stored_with_the_token_identity(db_client: TestClient, db_url: str, alice: dict[str, str],
                                                    shared: dict[str, str]) -> None:
    response = db_client.post("/feedback", headers=alice,
                           json={"text": "Shares tumble", "sentiment": "Bearish", "author": "mallory"})
    assert response.status_code == 201, response.text
    assert response.json()["author"] == "alice"  # a named token wins over the body
    response = db_client.post("/feedback", headers=shared,  # bare tokens may not write feedback (issue 13)
                           json={"text": "Dividend raised", "topic": "dividend", "author": "bob"})
    assert response.status_code == 403
    response = db_client.post("/feedback", headers=alice, json={"text": "Dividend raised", "topic": "dividend"})
    assert response.status_code == 201

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = fetch_feedback(conn)
    finally:
        engine.dispose()
    assert [(r.text, r.topic, r.sentiment, r.author, r.origin) for r in rows] == [
        ("Shares tumble", None, "negative", "alice", "api"),
        ("Dividend raised", "Dividend", None, "alice", "api"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": "x", "sentiment": "angry"}, "unknown sentiment label 'angry'"),
        ({"text": "x"}, "needs a topic and/or a sentiment"),
        ({"topic": "Earnings"}, "needs an article_id or a text"),
        ({"text": "Shares\u0000 tumble", "sentiment": "negative"}, "contains a NUL character"),
        ({"article_id": "a\ud800", "sentiment": "negative"}, "not valid Unicode"),
    ],
)
def test_invalid_feedback_is_422_with_the_reason(db_client: TestClient, body: dict, message: str,
                                                 alice: dict[str, str]) -> None:
    # Serialised with ASCII escapes, as browsers and most clients send them ("\ud800" stays an escape).
    response = db_client.post("/feedback", headers={**alice, "content-type": "application/json"},
                              content=json.dumps(body).encode())
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_feedback_needs_a_token(db_client: TestClient) -> None:
    assert db_client.post("/feedback", json={"text": "x", "topic": "Earnings"}).status_code == 401
