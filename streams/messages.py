"""The message contracts: ``news.raw`` (what scrapers send) and ``news.scored`` (what we publish).

Decisions (documented in docs/pipeline.md and in the JSON Schema):
- Unknown fields are ignored (forward compatible: scrapers may add fields before we read them).
- ``published_at`` must be ISO-8601 WITH a time zone; a naive or date-only value is dead-lettered, because
  guessing a zone silently shifts every dashboard window. It may be omitted (the ingest time is used).
- ``body`` (or ``summary``) longer than MAX_BODY_CHARS is accepted and truncated before storage; the model
  scores the title only, so the body never slows inference.
- NUL characters are removed from every string (PostgreSQL ``text`` cannot hold them; keeping them would
  make a valid-looking message fail the database write forever).
- ``tickers`` are upper-cased and de-duplicated.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from models.text_encoder import has_visible_characters

MAX_BODY_CHARS = 100_000
MAX_TITLE_CHARS = 2_000
EARLIEST_PUBLISHED = datetime(1900, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE_SKEW = timedelta(days=2)
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
RAW_SCHEMA_PATH = SCHEMA_DIR / "news_raw.schema.json"
SCORED_SCHEMA_PATH = SCHEMA_DIR / "news_scored.schema.json"

ShortStr = Annotated[str, Field(max_length=2048)]


def _strip_nul(value: Any) -> Any:
    return value.replace("\x00", "") if isinstance(value, str) else value


class NewsMessage(BaseModel):
    """One scraped article on ``news.raw`` (JSON object, UTF-8)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, title="news.raw message")

    id: str = Field(min_length=1, max_length=512, description="Stable id of the article (idempotency key).")
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS, description="Headline; what the model scores.")
    body: str | None = Field(None, description=f"Article text; truncated to {MAX_BODY_CHARS} characters.")
    summary: str | None = Field(None, description="Used as body when body is absent.")
    source: ShortStr | None = Field(None, description="Publisher, e.g. Reuters.")
    url: ShortStr | None = None
    published_at: AwareDatetime | None = Field(
        None, description="ISO-8601 with time zone, e.g. 2024-05-01T13:45:00Z; naive times are rejected."
    )
    tickers: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=100, description="Related ticker symbols."
    )
    lang: Annotated[str, Field(max_length=16)] | None = Field(None, description="Language code, e.g. en.")

    @field_validator("id", "title", "body", "summary", "source", "url", "lang", mode="before")
    @classmethod
    def _clean_text(cls, value: Any) -> Any:
        return _strip_nul(value)

    @field_validator("id", "title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not has_visible_characters(value):  # "" and a lone zero-width space alike
            raise ValueError("must not be blank")
        return value

    @field_validator("body", "summary")
    @classmethod
    def _truncate(cls, value: str | None) -> str | None:
        return value[:MAX_BODY_CHARS] if value is not None else None

    @field_validator("published_at")
    @classmethod
    def _plausible_time(cls, value: datetime | None) -> datetime | None:
        # A year-9999 or year-1 timestamp is a scraper bug; accepted, it would skew windows and watermarks.
        if value is not None and not (EARLIEST_PUBLISHED <= value <= datetime.now(timezone.utc) + MAX_FUTURE_SKEW):
            raise ValueError(f"published_at {value.isoformat()} is outside {EARLIEST_PUBLISHED.year}..now+{MAX_FUTURE_SKEW}")
        return value

    @field_validator("tickers")
    @classmethod
    def _normalize_tickers(cls, value: list[str]) -> list[str]:
        # A ticker is a scope name in alerts, e-mail subjects and URLs: control and zero-width characters are
        # dropped and any run of whitespace (a line break included) becomes one space ("BRK\nB" -> "BRK B").
        seen: dict[str, None] = {}
        for ticker in value:
            visible = "".join(ch for ch in ticker if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf"))
            seen.setdefault(" ".join(visible.split()).upper(), None)
        return [t for t in seen if t]

    @property
    def text(self) -> str:
        """What the classifier scores: the headline (the model was trained on headlines and tweets)."""
        return self.title

    @property
    def article_body(self) -> str | None:
        return self.body if self.body is not None else self.summary


class ScoredEvent(BaseModel):
    """One scored article on ``news.scored`` (published after the database commit; at-least-once)."""

    model_config = ConfigDict(frozen=True, title="news.scored message")

    id: str
    topic: str
    topic_confidence: float
    sentiment: str
    probabilities: dict[str, float]
    score: float = Field(description="p(positive) - p(negative), in [-1, 1].")
    model_version: str
    tickers: list[str] = Field(default_factory=list)
    source: str | None = None
    published_at: datetime | None
    scored_at: datetime


@dataclass(frozen=True)
class Rejection:
    """Why a raw message cannot enter the pipeline; ``reason`` is a short stable code."""

    reason: str  # not_utf8 | invalid_json | not_an_object | invalid_fields | empty | too_deep | unparseable
    detail: str


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_news(raw: bytes | None) -> NewsMessage | Rejection:
    """Decode and validate one ``news.raw`` value; never raises (any failure becomes a Rejection)."""
    try:
        return _parse_news(raw)
    except RecursionError:  # json/pydantic recursion on deeply nested values
        return Rejection("too_deep", "JSON nesting is too deep to parse")
    except Exception as exc:  # noqa: BLE001 - the contract: a poison value never escapes as an exception
        return Rejection("unparseable", f"{type(exc).__name__}: {exc}"[:500])


def _parse_news(raw: bytes | None) -> NewsMessage | Rejection:
    if not raw:
        return Rejection("empty", "message value is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"value is not UTF-8: {exc}")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Rejection("invalid_json", f"value is not JSON: {exc}")
    if not isinstance(data, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    try:
        # strict=True keeps "id": 123 from becoming "123"; JSON-mode parsing still reads ISO datetimes.
        return NewsMessage.model_validate_json(text)
    except ValidationError as exc:
        return Rejection("invalid_fields", _describe(exc))


def stored_id(value: Any) -> str | None:
    """The id the contract stores for ``value`` (NUL removed, stripped), or None when it refuses it (not a string,
    blank, too long). For code that derives ids from a record's (a replay run's ``ID@RUN``): it tags only ids the
    worker would accept, by the contract's own rules rather than a copy of them."""
    try:
        return NewsMessage.model_validate({"id": value, "title": "-"}).id
    except ValidationError:
        return None


def raw_json_schema() -> dict[str, Any]:
    schema = NewsMessage.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/marketmood/marketmood/streams/schema/news_raw.schema.json"
    schema["description"] = (
        "A scraped news article on the news.raw Kafka topic (UTF-8 JSON). Unknown fields are ignored; "
        "published_at must carry a time zone; bodies over 100000 characters are truncated."
    )
    schema["additionalProperties"] = True
    return schema


def scored_json_schema() -> dict[str, Any]:
    schema = ScoredEvent.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = "A scored article on the news.scored Kafka topic (UTF-8 JSON, key = article id)."
    return schema


def render_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas() -> None:
    """Rewrite the committed schema files (``python -m streams.messages``)."""
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    RAW_SCHEMA_PATH.write_text(render_schema(raw_json_schema()))
    SCORED_SCHEMA_PATH.write_text(render_schema(scored_json_schema()))


if __name__ == "__main__":
    export_schemas()
    print(f"wrote {RAW_SCHEMA_PATH} and {SCORED_SCHEMA_PATH}")
