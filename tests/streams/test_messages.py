"""The news.raw contract: validation decisions and the committed JSON Schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from streams.messages import (
    MAX_BODY_CHARS,
    RAW_SCHEMA_PATH,
    SCORED_SCHEMA_PATH,
    NewsMessage,
    Rejection,
    parse_news,
    raw_json_schema,
    render_schema,
    scored_json_schema,
)

VALID = {"id": "x1", "title": "Oil jumps", "published_at": "2024-05-01T13:45:00Z", "tickers": ["xom", "XOM"]}


def test_tickers_lose_line_breaks_and_invisible_characters() -> None:
    """A ticker becomes an alert scope, an e-mail subject and a URL parameter: one line, visible characters."""
    raw = {"id": "t1", "title": "Berkshire buys", "tickers": ["brk\nb", "\u200bmsft", " BRK  B ", "\x07"]}
    msg = parse_news(json.dumps(raw).encode())
    assert isinstance(msg, NewsMessage) and msg.tickers == ["BRK B", "MSFT"]


def test_valid_message_is_normalized() -> None:
    msg = parse_news(json.dumps(VALID).encode())
    assert isinstance(msg, NewsMessage)
    assert msg.tickers == ["XOM"] and msg.published_at is not None and msg.published_at.utcoffset() is not None
    assert msg.text == "Oil jumps"


@pytest.mark.parametrize(
    ("raw", "reason", "detail_part"),
    [
        (b"", "empty", "empty"),
        (b"\xff\xfe", "not_utf8", "UTF-8"),
        (b"{nope", "invalid_json", "JSON"),
        (b"[1, 2]", "not_an_object", "list"),
        (b'{"title": "t"}', "invalid_fields", "id"),
        (b'{"id": "a", "title": "  "}', "invalid_fields", "blank"),
        (b'{"id": "a", "title": "\\u200b\\u200c "}', "invalid_fields", "blank"),
        (b'{"id": 7, "title": "t"}', "invalid_fields", "id"),
        (b'{"id": "a", "title": "t", "tickers": "AAPL"}', "invalid_fields", "tickers"),
        (b'{"id": "a", "title": "t", "published_at": "2024-05-01T10:00:00"}', "invalid_fields", "timezone"),
        (b'{"id": "a", "title": "t", "published_at": "2024-05-01"}', "invalid_fields", "published_at"),
    ],
)
def test_rejections_carry_a_reason_and_detail(raw: bytes, reason: str, detail_part: str) -> None:
    result = parse_news(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert detail_part in result.detail


def test_unknown_fields_are_ignored_and_big_bodies_truncated() -> None:
    msg = parse_news(json.dumps({**VALID, "extra": {"a": 1}, "body": "b" * (MAX_BODY_CHARS + 5)}).encode())
    assert isinstance(msg, NewsMessage)
    assert not hasattr(msg, "extra")
    assert msg.article_body is not None and len(msg.article_body) == MAX_BODY_CHARS


def test_nul_characters_are_removed_and_summary_is_the_fallback_body() -> None:
    msg = parse_news(json.dumps({"id": "a\u0000b", "title": "t\u0000", "summary": "s"}).encode())
    assert isinstance(msg, NewsMessage)
    assert msg.id == "ab" and msg.title == "t" and msg.article_body == "s"


def test_committed_schemas_are_in_sync_with_the_models() -> None:
    assert RAW_SCHEMA_PATH.read_text() == render_schema(raw_json_schema()), "run: python -m streams.messages"
    assert SCORED_SCHEMA_PATH.read_text() == render_schema(scored_json_schema()), "run: python -m streams.messages"


def test_schema_agrees_with_the_validator_on_examples() -> None:
    schema = json.loads(RAW_SCHEMA_PATH.read_text())
    jsonschema.validate(VALID, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "a"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": 1, "title": "t"}, schema)
