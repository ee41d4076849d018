"""POST /classify with the real bundled model: predictions, limits and clear 4xx errors."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from models.labels import SENTIMENT_LABELS, TOPIC_LABELS


def test_classify_returns_one_prediction_per_text_in_order(client: TestClient, engine) -> None:  # type: ignore[no-untyped-def]
    texts = ["Apple shares plunge after weak iPhone sales", "Fed holds interest rates steady"]
    response = client.post("/classify", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == engine.model_version
    assert len(body["predictions"]) == 2
    expected = engine.classify(texts)
    for got, want in zip(body["predictions"], expected):
        assert got["topic"] in TOPIC_LABELS and got["sentiment"] in SENTIMENT_LABELS
        assert (got["topic"], got["sentiment"]) == (want.topic, want.sentiment)
        assert abs(got["p_negative"] + got["p_neutral"] + got["p_positive"] - 1) < 1e-4
        assert abs(got["score"] - (got["p_positive"] - got["p_negative"])) < 1e-9


def test_blank_text_is_422_naming_its_index(client: TestClient) -> None:
    response = client.post("/classify", json={"texts": ["Stocks rally", "   ", "Oil falls"]})
    assert response.status_code == 422
    assert response.json()["index"] == 1
    assert "index 1" in response.json()["detail"]


def test_a_zero_width_only_text_is_422_naming_its_index(client: TestClient) -> None:
    response = client.post("/classify", json={"texts": ["Stocks rally", "\u200b\u2060"]})
    assert response.status_code == 422, response.text
    assert response.json()["index"] == 1 and "no visible characters" in response.json()["detail"]


def test_a_lone_surrogate_is_422_naming_its_index(client: TestClient) -> None:
    response = client.post("/classify", content=b'{"texts": ["Stocks rally", "\\ud800 crash"]}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["index"] == 1 and "not valid Unicode" in response.json()["detail"]


def test_non_string_and_empty_batch_are_422(client: TestClient) -> None:
    response = client.post("/classify", json={"texts": ["ok", 42]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "texts", 1]
    assert client.post("/classify", json={"texts": []}).status_code == 422
    assert client.post("/classify", json={"text": "x"}).status_code == 422


def test_too_many_or_too_long_texts_are_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_texts=2, max_text_chars=50)
    response = client.post("/classify", json={"texts": ["a", "b", "c"]})
    assert response.status_code == 413
    assert response.json()["detail"] == "batch of 3 texts exceeds the limit of 2"
    response = client.post("/classify", json={"texts": ["short", "x" * 51]})
    assert response.status_code == 413
    assert response.json() == {"detail": "text at index 1 has 51 characters; the limit is 50", "index": 1}


def test_request_body_limit_declared_and_streamed(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=1024)
    big = '{"texts": ["' + "x" * 2000 + '"]}'
    response = client.post("/classify", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "1024 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold while the body streams
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"y" * 200
        yield b'"]}'

    response = client.post("/classify", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert client.post("/classify", json={"texts": ["small enough"]}).status_code == 200
