"""``GET /sentiment`` on the seeded database: the same numbers as the Grafana panel, as JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from marketmood.api import ApiDependencies, create_app
from marketmood.api.schemas import ComponentHealth
from marketmood.settings import ApiSettings
from models.prediction import StaticProvider
from storage import dashboards as sql
from storage.db import make_engine


@pytest.fixture(scope="module")
def client(seeded) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from models import load_engine

    db = make_engine(seeded.reader_url)  # the API only reads here: Grafana's read-only role is enough
    # this module checks the content (dozens of requests in a few seconds); test_abuse checks the rate limit
    deps = ApiDependencies(settings=ApiSettings(sentiment_per_minute=0), provider=StaticProvider(load_engine()), db=db,
                           broker_check=lambda: ComponentHealth(status="ok", detail="not checked"))
    with TestClient(create_app(deps)) as test_client:
        yield test_client
    db.dispose()


def _params(seed, **extra: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"from": seed.t0.isoformat(), "to": seed.t_to.isoformat(), **extra}


def test_json_rows_equal_the_panel_rows(client: TestClient, seeded, run) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/sentiment", params=_params(seeded, ticker="XOM", interval="1h", span=3, min_articles=1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["time", "index", "mean", "lower", "upper", "negative_share", "articles", "copies",
                               "per_hour"]
    _, panel = run(sql.SENTIMENT_SELECTION, tickers=["XOM"], interval=timedelta(hours=1), smoothing=3)
    assert [r["time"] for r in body["rows"]] == [r["time"].isoformat() for r in panel]
    assert [r["index"] for r in body["rows"]] == pytest.approx([r["index (EMA)"] for r in panel], nan_ok=True)
    assert [r["upper"] for r in body["rows"]] == [r["upper 95%"] for r in panel]
    assert sum(r["articles"] for r in body["rows"]) == 6


def test_per_topic_series_and_filters(client: TestClient, seeded) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/sentiment", params=_params(seeded, by="topic", interval="7d", min_articles=1)).json()
    by_topic = {r["metric"]: r["index"] for r in body["rows"] if r["index"] is not None}
    assert by_topic["Company | Product News"] == pytest.approx(0.05 - 0.7)  # not the rejected v3's score
    body = client.get("/sentiment", params=[*_params(seeded, by="ticker", interval="7d").items(),
                                            ("ticker", "MSFT,XOM"), ("min_articles", 1)]).json()
    assert {r["metric"] for r in body["rows"]} == {"MSFT", "XOM"}
    assert body["query"]["ticker"] == ["MSFT", "XOM"]


def test_filters_are_spelled_as_stored(client: TestClient, seeded) -> None:  # type: ignore[no-untyped-def]
    """Tickers are stored upper-case and topics canonically: ``ticker=xom`` returned an empty 200 before."""
    def articles(**filters: str) -> int:
        response = client.get("/sentiment", params=_params(seeded, interval="7d", min_articles=1, **filters))
        assert response.status_code == 200, response.text
        return sum(r["articles"] for r in response.json()["rows"])

    assert articles(ticker="xom") == articles(ticker="XOM") == 6
    assert articles(topic="energy | oil") == articles(topic="Energy | Oil") == 6


def test_csv(client: TestClient, seeded) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/sentiment", params=_params(seeded, topic="Energy | Oil", interval="1d", format="csv",
                                                        tz="America/New_York"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows and sum(int(r["articles"]) for r in rows) == 6
    # New York midnight, in UTC (the API's sessions run in UTC whatever the server's zone).
    assert all(r["time"].endswith("+00:00") and r["time"][10:16] in ("T04:00", "T05:00") for r in rows), rows


@pytest.mark.parametrize(("params", "message"), [
    ({"interval": "5 minutes"}, "expected a number and a unit"),
    ({"interval": "10s"}, "below the minimum"),
    ({"tz": "Mars/Olympus"}, "not an IANA time zone"),
    # Python loads these, PostgreSQL does not: a 500 before
    ({"tz": "posixrules"}, "not an IANA time zone"),
    ({"tz": "right/UTC"}, "not an IANA time zone"),
    ({"tz": "localtime"}, "time zone"),
    ({"interval": "1m", "from": "2020-01-01T00:00:00Z"}, "more than 10000"),
    ({"from": "2030-01-01T00:00:00Z", "to": "2029-01-01T00:00:00Z"}, "from must be before to"),
    ({"interval": "99999999999d"}, "too large"),
    ({"to": "0001-01-01T00:00:00Z"}, "give from"),
    ({"ticker": "AAPL,\x00"}, "NUL character"),
    # rows = buckets x series: 60 named tickers x 9,000 one-minute buckets was half a million rows, built in memory
    ({"by": "ticker", "ticker": ",".join(f"T{i}" for i in range(60)), "interval": "1m",
      "from": "2024-01-01T00:00:00Z", "to": "2024-01-07T06:00:00Z"}, "would be more than 50000 rows"),
    ({"by": "topic", "interval": "1m", "from": "2024-01-01T00:00:00Z", "to": "2024-01-03T00:00:00Z"}, "20 series"),
    ({"ticker": ",".join(f"T{i}" for i in range(101))}, "at most 100"),
    ({"topic": "Sports"}, "unknown topic label 'Sports'"),
    # PostgreSQL's interval ends near 292,000 years; a bucket starting before year 1 came back as the driver's
    # ValueError: each was a 500 before
    ({"interval": "300000y"}, "above the maximum of 10000y"),
    ({"interval": "100y", "from": "0001-01-01T00:00:00Z", "tz": "Pacific/Kiritimati"}, "before year 1"),
    ({"interval": "100d", "from": "0001-01-01T00:00:00Z"}, "before year 1"),
    # ranges are bound and answered in UTC: an end past 9999 there is refused by name
    ({"from": "9999-12-01T00:00:00Z", "to": "9999-12-31T23:00:00-14:00", "interval": "1w"}, "outside years 1-9999"),
])
def test_bad_parameters_are_a_clear_422(client: TestClient, params: dict[str, str], message: str) -> None:
    response = client.get("/sentiment", params=params)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_offsets_postgresql_refuses_are_read_as_utc(client: TestClient, seeded) -> None:  # type: ignore[no-untyped-def]
    """ISO 8601 allows offsets up to ±23:59, PostgreSQL only ±15:59: such a range was a 500 before."""
    far = {"from": seeded.t0.astimezone(timezone(timedelta(hours=23, minutes=59))).isoformat(),
           "to": seeded.t_to.astimezone(timezone(-timedelta(hours=23, minutes=59))).isoformat()}
    response = client.get("/sentiment", params={**far, "interval": "7d", "min_articles": 1, "ticker": "XOM"})
    assert response.status_code == 200, response.text
    assert response.json()["query"]["from"].endswith("+00:00")
    assert sum(r["articles"] for r in response.json()["rows"]) == 6


def test_a_query_past_the_statement_timeout_is_a_503_that_says_so(seeded) -> None:  # type: ignore[no-untyped-def]
    """The API's pool now bounds every statement (api.db_statement_timeout_s): one heavy request cannot hold
    a pooled connection for ever. The cancellation is named, not reported as a database outage."""
    from models import load_engine

    db = make_engine(seeded.reader_url, statement_timeout_ms=1, pool_size=1)
    deps = ApiDependencies(settings=ApiSettings(), provider=StaticProvider(load_engine()), db=db,
                           broker_check=lambda: ComponentHealth(status="ok", detail="not checked"))
    try:
        with TestClient(create_app(deps)) as test_client:
            # ~9,400 one-minute buckets: far more than 1 ms of work on any machine
            response = test_client.get("/sentiment", params={"from": "2024-01-01T00:00:00Z", "interval": "1m",
                                                             "to": "2024-01-07T12:00:00Z"})
    finally:
        db.dispose()
    assert response.status_code == 503 and "statement timeout" in response.json()["detail"], response.text
    assert ApiSettings().db_statement_timeout_s == 30.0
