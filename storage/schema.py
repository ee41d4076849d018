"""Tables of the MarketMood database (SQLAlchemy 2.x declarative models).

Alembic migrations in ``storage/migrations`` are the source of truth for the live schema; these models
mirror them so queries are typed. Time columns are ``timestamptz`` throughout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    func,
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Article(Base):
    """One scraped article, keyed by the scraper's stable id."""

    __tablename__ = "articles"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ingested_at: Mapped[datetime] = _now()
    # COALESCE(published_at, ingested_at): the time every dashboard and alert window uses.
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    tickers: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=sql_text("'{}'"))
    lang: Mapped[str | None] = mapped_column(Text)
    # Syndication: normalized-headline key; only the first copy of a story within the window is novel.
    story_key: Mapped[str | None] = mapped_column(Text)
    novel: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=sql_text("true"))
    kafka_partition: Mapped[int | None] = mapped_column(Integer)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger)
    kafka_timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_sha256: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_articles_event_time", "event_time"),
        Index("ix_articles_story_key_event_time", "story_key", "event_time"),
        Index("ix_articles_tickers", "tickers", postgresql_using="gin"),
    )


class Score(Base):
    """A model's verdict on an article; one row per (article, model version)."""

    __tablename__ = "scores"

    article_id: Mapped[str] = mapped_column(Text, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False)
    model_version: Mapped[str] = mapped_column(Text, nullable=False)
    topic: Mapped[str] = mapped_column(Text, nullable=False)
    topic_confidence: Mapped[float] = mapped_column(Float, nullable=False)
    sentiment: Mapped[str] = mapped_column(Text, nullable=False)
    p_negative: Mapped[float] = mapped_column(Float, nullable=False)
    p_neutral: Mapped[float] = mapped_column(Float, nullable=False)
    p_positive: Mapped[float] = mapped_column(Float, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    scored_at: Mapped[datetime] = _now()

    __table_args__ = (
        PrimaryKeyConstraint("article_id", "model_version", name="pk_scores"),
        CheckConstraint("sentiment IN ('negative','neutral','positive')", name="ck_scores_sentiment"),
        Index("ix_scores_topic_event_time", "topic", "event_time"),
        Index("ix_scores_event_time", "event_time"),
        Index("ix_scores_scored_at", "scored_at"),  # 0010: the pipeline-health panels filter on it
    )


class IngestProgress(Base):
    """Per partition, what the workers have committed (written in the batch transaction; see storage.progress)."""

    __tablename__ = "ingest_progress"

    topic: Mapped[str] = mapped_column(Text, nullable=False)
    partition: Mapped[int] = mapped_column(Integer, nullable=False)
    next_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    log_end_offset: Mapped[int | None] = mapped_column(BigInteger)
    max_event_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()
    end_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # log end asked at

    __table_args__ = (PrimaryKeyConstraint("topic", "partition", name="pk_ingest_progress"),)


class ModelVersion(Base):
    """Model registry: every trained version with its metrics, lineage and artifact."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = _now()
    parent_version: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=sql_text("'candidate'"))
    base_encoder: Mapped[str | None] = mapped_column(Text)
    data_fingerprint: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sql_text("'{}'"))
    training_config: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sql_text("'{}'"))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    artifact_sha256: Mapped[str | None] = mapped_column(Text)
    artifact: Mapped[bytes | None] = mapped_column(LargeBinary)  # tar.gz of the artifact folder

    __table_args__ = (
        CheckConstraint("status IN ('candidate','shadow','promoted','rejected','retired')", name="ck_model_status"),
    )


class ModelAlias(Base):
    """Named pointer (``active``) to a model version; workers follow it."""

    __tablename__ = "model_aliases"

    alias: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[str] = mapped_column(Text, ForeignKey("model_versions.version"), nullable=False)
    updated_at: Mapped[datetime] = _now()
    updated_by: Mapped[str | None] = mapped_column(Text)


class ModelAliasHistory(Base):
    """Every alias move, so ``models rollback`` knows where to go back to."""

    __tablename__ = "model_alias_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[str] = mapped_column(Text, nullable=False)
    changed_at: Mapped[datetime] = _now()
    changed_by: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)


class Feedback(Base):
    """An analyst's corrected label(s) for an article or a raw text."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    article_id: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(Text)
    sentiment: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(Text, nullable=False)
    origin: Mapped[str] = mapped_column(Text, nullable=False, server_default=sql_text("'api'"))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("topic IS NOT NULL OR sentiment IS NOT NULL", name="ck_feedback_has_label"),
        CheckConstraint("article_id IS NOT NULL OR text IS NOT NULL", name="ck_feedback_has_subject"),
        Index("ix_feedback_created_at", "created_at"),
        Index("ix_feedback_author", "author"),  # 0004_retraining
    )


class Alert(Base):
    """A negative-sentiment spike in one scope (topic or ticker), through its lifecycle."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(Text, nullable=False)
    scope_type: Mapped[str] = mapped_column(Text, nullable=False)  # topic | ticker
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False)  # firing | acknowledged | silenced | resolved
    dedup_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = _now()
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sql_text("'{}'"))
    group_key: Mapped[str | None] = mapped_column(Text)  # migration 0005_alerts

    __table_args__ = (
        CheckConstraint("scope_type IN ('topic','ticker')", name="ck_alerts_scope_type"),
        CheckConstraint("state IN ('firing','acknowledged','silenced','resolved')", name="ck_alerts_state"),
        Index("ix_alerts_started_at", "started_at"),
        # At most one open alert per rule and scope.
        Index(
            "ux_alerts_open_scope",
            "rule",
            "scope_type",
            "scope",
            unique=True,
            postgresql_where=sql_text("state <> 'resolved'"),
        ),
    )


class AlertScopeState(Base):
    """Detector memory per (rule, scope): pending fire/resolve since, cooldown; makes restarts safe."""

    __tablename__ = "alert_scope_state"

    rule: Mapped[str] = mapped_column(Text, nullable=False)
    scope_type: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sql_text("'{}'"))
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (PrimaryKeyConstraint("rule", "scope_type", "scope", name="pk_alert_scope_state"),)


class NotificationOutbox(Base):
    """One notification per (alert, notifier, state change), delivered with retries and back-off."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False)
    notifier: Mapped[str] = mapped_column(Text, nullable=False)
    event: Mapped[str] = mapped_column(Text, nullable=False)  # trigger | acknowledge | resolve
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=sql_text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    next_attempt_at: Mapped[datetime] = _now()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # migration 0005_alerts
    claimed_by: Mapped[str | None] = mapped_column(Text)
    # migration 0008: the group lead carrying this row's notification (status 'grouped')
    grouped_into: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("notification_outbox.id", ondelete="SET NULL", name="fk_outbox_grouped_into"))

    __table_args__ = (
        UniqueConstraint("alert_id", "notifier", "event", name="uq_outbox_alert_notifier_event"),
        CheckConstraint("status IN ('pending','sending','delivered','dead','unknown','grouped')",
                        name="ck_outbox_status"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )


class Silence(Base):
    """Mutes notifications for a scope until ``ends_at`` (alerts still recorded, state ``silenced``)."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    scope_type: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    starts_at: Mapped[datetime] = _now()
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_by: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabellingRequest(Base):
    """Drift found: the most uncertain texts of the drifted slice, for analysts to label (0004_retraining)."""

    __tablename__ = "labelling_requests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = _now()
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=sql_text("'open'"))
    model_version: Mapped[str | None] = mapped_column(Text)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reasons: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sql_text("'[]'::jsonb"))
    drifted_slice: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sql_text("'{}'::jsonb"))

    __table_args__ = (
        CheckConstraint("status IN ('open','closed')", name="ck_labelling_request_status"),
        Index("ix_labelling_requests_created_at", "created_at"),
    )


class LabellingRequestItem(Base):
    """One text of a labelling request, with the active model's prediction and its uncertainty."""

    __tablename__ = "labelling_request_items"

    request_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("labelling_requests.id", ondelete="CASCADE"))
    article_id: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    sentiment: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(Text)
    uncertainty: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (PrimaryKeyConstraint("request_id", "article_id", name="pk_labelling_request_items"),)
