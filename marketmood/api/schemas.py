"""Request and response bodies of the HTTP API (they are also what OpenAPI documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(..., min_length=1, description="Headlines or short articles, scored in order.")


class PredictionOut(BaseModel):
    topic: str
    topic_confidence: float
    sentiment: Literal["negative", "neutral", "positive"]
    p_negative: float
    p_neutral: float
    p_positive: float
    score: float = Field(..., description="p(positive) - p(negative), in [-1, 1].")
    model_version: str


class ClassifyResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    rule: str
    scope_type: str
    scope: str
    severity: str
    state: str
    started_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    evidence: dict[str, Any] = {}


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    article_id: str | None = Field(None, description="Id of a stored article (its headline is trained on).")
    text: str | None = Field(None, description="The text itself, when there is no article id.")
    topic: str | None = Field(None, description="Corrected topic, e.g. 'Earnings' (case-insensitive).")
    sentiment: str | None = Field(None, description="Corrected sentiment: negative/neutral/positive (or bearish/bullish).")
    author: str | None = Field(None, description="Who corrected it; ignored when the token names its owner.")


class FeedbackResponse(BaseModel):
    id: int
    author: str


class ComponentHealth(BaseModel):
    status: Literal["ok", "degraded", "down"]
    detail: str | None = None
    info: dict[str, Any] = {}


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "down"]
    components: dict[str, ComponentHealth]
