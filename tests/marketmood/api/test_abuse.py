"""The API under abuse: a real uvicorn server, 200 concurrent unauthenticated requests, a real broker and database.

The storm must leave the database alone: the API never holds more connections than its bounded pool, the
broker is probed once per cache period, the worker's write goes through at its usual speed meanwhile, and
/classify answers the excess with 429 + Retry-After instead of queueing it on the model.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from marketmood.api import ApiDependencies, create_app
from marketmood.api.health import kafka_health
from marketmood.api.limits import RateLimiter, client_key
from marketmood.api.schemas import ComponentHealth
from marketmood.api.server import api_engine
from marketmood.settings import ApiSettings, TopicSettings
from models.prediction import StaticProvider
from storage.articles import ScoredArticle, upsert_scored_batch
from storage.db import make_engine

POOL_SIZE, MAX_OVERFLOW = 2, 1


@pytest.fixture
def broker_probes(kafka_bootstrap: str, topic_names: TopicSettings) -> tuple[list[float], Callable[[], ComponentHealth]]:
    """The real broker check, recording when it ran."""
    probes: list[float] = []

    def check() -> ComponentHealth:
        probes.append(time.monotonic())
        return kafka_health(kafka_bootstrap, topic_names.raw)

    return probes, check


@pytest.fixture
def live_api(engine, db_url: str, broker_probes) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real uvicorn serving the app on a free port; yields its base URL."""
    # One request per minute after a burst of 5: the refill during the storm is negligible even on a slow machine.
    settings = ApiSettings(classify_per_minute=1, classify_burst=5, db_pool_size=POOL_SIZE,
                           db_max_overflow=MAX_OVERFLOW, db_pool_timeout_s=10, health_cache_s=30)
    db = api_engine(db_url, settings)
    app = create_app(ApiDependencies(settings=settings, provider=StaticProvider(engine), db=db,
                                     broker_check=broker_probes[1]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", limit_concurrency=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        db.dispose()


def _api_connections(db_url: str, stop: threading.Event, peak: list[int]) -> None:
    """Sample how many connections the API holds on the test database (by application_name)."""
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            while not stop.is_set():
                count = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                          " AND pid <> pg_backend_pid() AND application_name <> 'worker-probe'"))
                peak.append(int(count.scalar_one()))
                conn.commit()
                time.sleep(0.01)
    finally:
        engine.dispose()


def _worker_write(db_url: str, prefix: str) -> float:
    """The worker's micro-batch write (one transaction of 20 scored articles), timed."""
    engine = make_engine(db_url, poolclass=NullPool, connect_args={"application_name": "worker-probe"})
    items = [ScoredArticle(id=f"{prefix}-{i}", title=f"{prefix} story {i}", model_version="v1", topic="Markets",
                           topic_confidence=0.9, sentiment="neutral", p_negative=0.1, p_neutral=0.8, p_positive=0.1,
                           score=0.0, published_at=datetime(2026, 12, 1, tzinfo=timezone.utc), story_key=f"{prefix}{i}")
             for i in range(20)]
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            assert upsert_scored_batch(conn, items).articles_inserted == 20
    finally:
        engine.dispose()
    return time.monotonic() - started


async def _storm(base: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        requests = (
            [client.get("/health") for _ in range(100)]
            + [client.post("/classify", json={"texts": ["Oil prices jump on supply fears"]}) for _ in range(60)]
            + [client.get("/alerts") for _ in range(30)]
            + [client.post("/alerts/1/ack") for _ in range(10)]  # unauthenticated writes: refused, no DB
        )
        return list(await asyncio.gather(*requests))


def test_200_concurrent_unauthenticated_requests_leave_the_database_alone(
    live_api: str, db_url: str, broker_probes: tuple[list[float], Callable[[], ComponentHealth]]
) -> None:
    baseline = _worker_write(db_url, "before")  # the write's usual time on this machine, without the storm
    stop, peak = threading.Event(), []
    sampler = threading.Thread(target=_api_connections, args=(db_url, stop, peak), daemon=True)
    sampler.start()
    writes: list[float] = []

    def write_during_storm() -> None:
        time.sleep(0.5)  # the storm is in full swing by then
        writes.append(_worker_write(db_url, "during"))

    writer = threading.Thread(target=write_during_storm, daemon=True)
    try:
        started = time.monotonic()
        writer.start()
        responses = asyncio.run(_storm(live_api))
        storm_s = time.monotonic() - started
        writer.join(30)
        health = httpx.get(f"{live_api}/health", timeout=5)  # still responsive right after
    finally:
        stop.set()
        sampler.join(10)

    by_path: dict[str, list[int]] = {}
    for response in responses:
        by_path.setdefault(response.request.url.path, []).append(response.status_code)
    assert set(by_path["/health"]) == {200}, by_path["/health"]
    assert set(by_path["/alerts"]) == {200}, by_path["/alerts"]
    assert set(by_path["/alerts/1/ack"]) == {401}
    classify = by_path["/classify"]
    assert classify.count(200) in {5, 6} and classify.count(429) == 60 - classify.count(200), classify
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and "rate limit" in refused.json()["detail"]

    assert max(peak) <= POOL_SIZE + MAX_OVERFLOW, f"API held {max(peak)} connections (pool ceiling 3)"
    assert len(broker_probes[0]) == 1, "one broker probe per cache period, not one per request"
    assert health.status_code == 200 and health.elapsed.total_seconds() < 1.0
    assert writes and writes[0] < max(2.0, 5 * baseline), (writes, baseline, storm_s)


def test_rate_limit_is_per_client_and_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, max_clients=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)  # one token per second
    assert limiter.acquire("b") == 0.0  # another client has its own bucket
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0  # refilled
    limiter.acquire("c")  # a third client: the least recently seen ("b") is forgotten
    assert set(limiter._buckets) == {"a", "c"}
    assert RateLimiter(per_minute=0, burst=1).acquire("x") == 0.0  # 0 disables the limit
    assert limiter.retry_after(0.2) == "1" and limiter.retry_after(2.1) == "3"


def test_an_ipv6_client_is_one_bucket_across_its_64() -> None:
    """A client holding a /64 picks a new address per request: per address it never ran out of burst."""
    limiter = RateLimiter(per_minute=60, burst=2)
    rotating = [f"2001:db8:1:2:{n:x}::{n:x}" for n in range(1, 4)]
    assert [limiter.acquire(client_key(host)) for host in rotating][-1] > 0  # the third request is refused
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")  # the next /64 is another client
    assert client_key("203.0.113.7") == client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("203.0.113.7") != client_key("203.0.113.8")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("testclient") == "testclient" and client_key(None) == client_key("") == "unknown"


def test_an_ipv6_client_rotating_addresses_gets_429(make_client: Callable[..., TestClient]) -> None:
    client = make_client(classify_per_minute=6, classify_burst=2)
    codes = []
    for n in range(1, 4):
        client._transport.client = (f"2001:db8::{n:x}", 50000)  # type: ignore[attr-defined]
        codes.append(client.post("/classify", json={"texts": ["Stocks rally"]}).status_code)
    assert codes == [200, 200, 429]


def test_classify_answers_429_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    client = make_client(classify_per_minute=6, classify_burst=2)
    codes = [client.post("/classify", json={"texts": ["Stocks rally"]}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = client.post("/classify", json={"texts": ["Stocks rally"]})
    # 6 per minute: at most 10 s, less when the bucket refilled while slow requests ran (a loaded CI host)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 10
    assert client.get("/health").status_code in {200, 503}  # other routes are not limited
    spec = client.get("/openapi.json").json()
    assert "429" in spec["paths"]["/classify"]["post"]["responses"]


def test_sentiment_answers_429_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    """GET /sentiment is anonymous and may run a query for up to the statement timeout: unlimited, one client
    held every pooled connection and the other endpoints answered 503. Limited per client like /classify."""
    client = make_client(sentiment_per_minute=6, sentiment_burst=2)
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "interval": "1h"}
    codes = [client.get("/sentiment", params=params).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = client.get("/sentiment", params=params)
    # 6 per minute: at most 10 s, less when the bucket refilled while slow requests ran (a loaded CI host)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 10
    assert "per minute" in refused.json()["detail"]
    assert client.post("/classify", json={"texts": ["Stocks rally"]}).status_code == 200  # its own bucket
    spec = client.get("/openapi.json").json()
    assert "429" in spec["paths"]["/sentiment"]["get"]["responses"]
    assert ApiSettings().sentiment_per_minute > 0  # on by default


def test_pool_exhaustion_is_503_not_a_hang(engine, db_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = ApiSettings(db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.5)
    db = api_engine(db_url, settings)
    app = create_app(ApiDependencies(settings=settings, provider=StaticProvider(engine), db=db,
                                     broker_check=lambda: ComponentHealth(status="ok")))
    try:
        with db.connect(), TestClient(app) as client:  # the only connection is taken
            started = time.monotonic()
            response = client.get("/alerts")
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert time.monotonic() - started < 5
            body = client.get("/health").json()
            assert body["components"]["database"]["status"] == "degraded"
    finally:
        db.dispose()
