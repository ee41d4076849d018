"""GET /health (database, broker, model each reported), GET /metrics and the OpenAPI document."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fastapi.testclient import TestClient

from marketmood.api.health import kafka_health
from marketmood.api.server import broker_check
from marketmood.settings import TopicSettings, load_settings
from streams.broker import STATE_FILE


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_reports_each_component(make_client: Callable[..., TestClient], kafka_bootstrap: str,
                                       topic_names: TopicSettings, engine) -> None:  # type: ignore[no-untyped-def]
    client = make_client(broker_check=partial(kafka_health, kafka_bootstrap, topic_names.raw))
    response = client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert {name: c["status"] for name, c in body["components"].items()} == {
        "database": "ok", "broker": "ok", "model": "ok"}
    assert body["components"]["model"]["info"]["model_version"] == engine.model_version
    assert body["components"]["database"]["info"]["schema"]  # at the migrations' head


def test_health_is_503_when_the_broker_is_down_or_topic_missing(make_client: Callable[..., TestClient],
                                                               kafka_bootstrap: str) -> None:
    down = make_client(broker_check=partial(kafka_health, f"127.0.0.1:{_closed_port()}", "news.raw", 1.0))
    response = down.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["components"]["broker"]["status"] == "down"
    assert body["components"]["database"]["status"] == "ok"  # the others are still reported

    missing = make_client(broker_check=partial(kafka_health, kafka_bootstrap, "no.such.topic"))
    body = missing.get("/health").json()
    assert body["status"] == "degraded" and "no.such.topic" in body["components"]["broker"]["detail"]


def test_metrics_count_requests_by_route(client: TestClient) -> None:
    client.post("/classify", json={"texts": ["Oil prices jump", "Bank profits fall"]})
    client.post("/classify", json={"texts": [" "]})
    text = client.get("/metrics").text
    assert 'marketmood_api_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
    assert 'marketmood_api_requests_total{method="POST",route="/classify",status="422"} 1.0' in text
    assert "marketmood_api_classified_texts_total 2.0" in text
    assert 'marketmood_api_request_seconds_bucket{le="0.005",route="/classify"}' in text
    for i in range(3):  # invented methods share one series: they cannot grow /metrics
        client.request(f"M{i:05d}", "/health")
    text = client.get("/metrics").text
    assert "M00000" not in text and 'method="other"' in text, text


def test_openapi_documents_endpoints_and_bearer_auth(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/classify", "/alerts", "/alerts/{alert_id}/ack", "/feedback", "/health", "/metrics"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" in spec["paths"]["/feedback"]["post"]
    assert "security" not in spec["paths"]["/classify"]["post"]
    assert client.get("/docs").status_code == 200


def test_a_check_that_raises_is_reported_down_not_a_500(make_client: Callable[..., TestClient],
                                                         tmp_path: Path) -> None:
    """The broker check of ``marketmood api`` reads the embedded broker's state file and signals its pids: a pid
    out of range there raised OverflowError, and /health was a bare 500 (database and model unreported, and
    every probe re-ran the checks, since a failure is not cached)."""
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / STATE_FILE).write_text(json.dumps({"pid": 99999999999, "port": 1, "owner_pid": os.getpid()}))
    check = broker_check(load_settings(home=tmp_path, kafka_bootstrap=None))
    response = make_client(broker_check=check).get("/health")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["components"]["broker"]["status"] == "down"
    assert body["components"]["broker"]["detail"].startswith("check failed: OverflowError")
    assert body["components"]["database"]["status"] == "ok"


def test_metrics_count_bodies_refused_before_routing(make_client: Callable[..., TestClient]) -> None:
    """A declared Content-Length over the limit is refused before routing: those 413s were missing from
    /metrics, so a flood of oversize posts did not show."""
    client = make_client(max_body_bytes=1024)
    response = client.post("/classify", content=b"x" * 2048, headers={"content-type": "application/json"})
    assert response.status_code == 413
    text = client.get("/metrics").text
    assert 'marketmood_api_requests_total{method="POST",route="unmatched",status="413"} 1.0' in text, text
