"""SQL for the model registry (versions, aliases, alias history), the retrain lock and drift statistics.

The artifact travels as tar.gz bytes in ``model_versions.artifact`` so a worker on any machine can fetch
it with nothing but the database URL. Alias moves send ``NOTIFY marketmood_model`` so listeners react at
once; pollers see the same change through ``get_alias``. Functions run in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, and_, case, cast, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from storage.schema import Article, ModelAlias, ModelAliasHistory, ModelVersion, Score

ACTIVE_ALIAS = "active"
SHADOW_ALIAS = "shadow"
NOTIFY_CHANNEL = "marketmood_model"
# pg_advisory_lock takes a bigint: a stable one derived from a readable name.
RETRAIN_LOCK_KEY = int.from_bytes(hashlib.sha256(b"marketmood.retrain").digest()[:8], "big", signed=True)
BOOTSTRAP_LOCK_KEY = int.from_bytes(hashlib.sha256(b"marketmood.bootstrap").digest()[:8], "big", signed=True)
ALIAS_LOCK_KEY = int.from_bytes(hashlib.sha256(b"marketmood.aliases").digest()[:8], "big", signed=True)
# Versions that have served as the active model and were not rolled back: what an aliasless registry may activate.
SERVED_STATUSES = ("promoted", "retired")

_SUMMARY_COLUMNS = (
    ModelVersion.version,
    ModelVersion.created_at,
    ModelVersion.parent_version,
    ModelVersion.status,
    ModelVersion.base_encoder,
    ModelVersion.data_fingerprint,
    ModelVersion.metrics,
    ModelVersion.training_config,
    ModelVersion.artifact_sha256,
)


def open_listener(engine: Any) -> Any:
    """A dedicated autocommit psycopg2 connection LISTENing on ``NOTIFY_CHANNEL``; the caller closes it.

    Detached from the pool, so it is never handed back to other code still in autocommit and LISTEN state,
    and closed here if setting it up fails, so a lost listener never leaks a connection.
    """
    raw = engine.raw_connection()
    driver = raw.driver_connection  # the psycopg2 connection: select() on it, poll(), .notifies, close()
    raw.detach()
    try:
        driver.set_isolation_level(0)  # autocommit: notifications arrive outside transactions
        with driver.cursor() as cur:
            cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
    except Exception:
        driver.close()
        raise
    return driver


def insert_version(
    conn: Any,
    *,
    version: str,
    artifact: bytes,
    artifact_sha256: str,
    parent_version: str | None = None,
    status: str = "candidate",
    base_encoder: str | None = None,
    data_fingerprint: str | None = None,
    metrics: dict[str, Any] | None = None,
    training_config: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> None:
    """Add a version; a duplicate version name raises IntegrityError (versions are immutable)."""
    conn.execute(
        insert(ModelVersion).values(
            version=version,
            parent_version=parent_version,
            status=status,
            base_encoder=base_encoder,
            data_fingerprint=data_fingerprint,
            metrics=metrics or {},
            training_config=training_config or {},
            report=report,
            artifact_sha256=artifact_sha256,
            artifact=artifact,
        )
    )


def set_status(conn: Any, version: str, status: str) -> None:
    conn.execute(update(ModelVersion).where(ModelVersion.version == version).values(status=status))


def set_report(conn: Any, version: str, report: dict[str, Any]) -> None:
    conn.execute(update(ModelVersion).where(ModelVersion.version == version).values(report=report))


def get_version(conn: Any, version: str, *, with_report: bool = True) -> dict[str, Any] | None:
    """One version's metadata (never the artifact bytes: use ``get_artifact``)."""
    cols = (*_SUMMARY_COLUMNS, ModelVersion.report) if with_report else _SUMMARY_COLUMNS
    row = conn.execute(select(*cols).where(ModelVersion.version == version)).first()
    return dict(row._mapping) if row else None


def list_versions(conn: Any) -> list[dict[str, Any]]:
    """All versions, newest first, without reports or artifacts (cheap enough for a listing)."""
    stmt = select(*_SUMMARY_COLUMNS).order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc())
    return [dict(r._mapping) for r in conn.execute(stmt)]


def count_versions(conn: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(ModelVersion)).scalar_one())


def get_artifact(conn: Any, version: str) -> tuple[bytes, str] | None:
    """(tar.gz bytes, sha256) of a version, or None when the version or its artifact is missing."""
    row = conn.execute(
        select(ModelVersion.artifact, ModelVersion.artifact_sha256).where(ModelVersion.version == version)
    ).first()
    if row is None or row.artifact is None:
        return None
    return bytes(row.artifact), row.artifact_sha256


def get_artifact_sha256(conn: Any, version: str) -> str | None:
    """The sha256 recorded for a version's artifact without reading its bytes; None when the version or its
    artifact is missing, "" when the artifact is stored without one."""
    row = conn.execute(
        select(ModelVersion.artifact_sha256, ModelVersion.artifact.is_not(None).label("stored"))
        .where(ModelVersion.version == version)
    ).first()
    if row is None or not row.stored:
        return None
    return row.artifact_sha256 or ""


def _lock_alias_moves(conn: Any) -> None:
    """Serialise every transaction that moves an alias (``pg_advisory_xact_lock``, re-entrant, released at
    commit), taken before any alias row lock: row locks alone deadlocked a promotion (active, then shadow)
    against a shadow verdict (shadow, then active), and locked nothing when the alias had no row yet (two first
    promotions both ended "promoted")."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ALIAS_LOCK_KEY})


def get_alias(conn: Any, alias: str = ACTIVE_ALIAS, *, for_update: bool = False) -> str | None:
    """The version ``alias`` points at; ``for_update`` holds every alias move off until the transaction ends, so
    a decision taken on it (rollback, a gated promotion, a shadow verdict) cannot race another move."""
    stmt = select(ModelAlias.version).where(ModelAlias.alias == alias)
    if for_update:
        _lock_alias_moves(conn)
        stmt = stmt.with_for_update()
    return conn.execute(stmt).scalar_one_or_none()


def newest_served_version(conn: Any) -> str | None:
    """The newest version that has been active and was not rejected (see ``SERVED_STATUSES``)."""
    stmt = (select(ModelVersion.version).where(ModelVersion.status.in_(SERVED_STATUSES))
            .order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc()).limit(1))
    return conn.execute(stmt).scalar_one_or_none()


def lock_bootstrap(conn: Any) -> None:
    """Serialise first starts (``pg_advisory_xact_lock``, released at commit): two processes finding an
    empty registry would both insert the bundled model and one would crash on the primary key."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BOOTSTRAP_LOCK_KEY})


def set_alias(conn: Any, version: str, *, alias: str = ACTIVE_ALIAS, by: str | None, reason: str) -> str | None:
    """Point ``alias`` at ``version``, record the move, mark statuses and notify; return the old version.

    Alias moves are serialised (:func:`_lock_alias_moves`) so two concurrent promotions do not both record the
    same "previous" version.
    """
    _lock_alias_moves(conn)
    previous = conn.execute(
        select(ModelAlias.version).where(ModelAlias.alias == alias).with_for_update()
    ).scalar_one_or_none()
    stmt = pg_insert(ModelAlias).values(alias=alias, version=version, updated_by=by)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[ModelAlias.alias],
            set_={"version": version, "updated_by": by, "updated_at": func.now()},
        )
    )
    conn.execute(insert(ModelAliasHistory).values(alias=alias, version=version, changed_by=by, reason=reason))
    if alias == ACTIVE_ALIAS:
        if previous is not None and previous != version:
            set_status(conn, previous, "retired")
        set_status(conn, version, "promoted")
        shadow = get_alias(conn, SHADOW_ALIAS, for_update=True)
        if shadow == version:
            # Promoted before its shadow verdict: left in place, a later verdict would re-promote it even after
            # a rollback had rejected it.
            clear_alias(conn, SHADOW_ALIAS, by=by, reason=f"{version} made active directly")
        elif shadow is not None and previous != version:
            # The shadow version passed the gate against ``previous``, not against ``version`` (a rollback, a manual
            # promotion): its verdict would promote it over a model it was never judged against. It leaves the
            # shadow stage as a candidate, like a retrain whose champion moved while it trained.
            clear_alias(conn, SHADOW_ALIAS, by=by, reason=f"active moved {previous} -> {version}; {shadow} was "
                        f"gated against {previous}")
            conn.execute(update(ModelVersion).where(ModelVersion.version == shadow, ModelVersion.status == "shadow")
                         .values(status="candidate"))
    elif alias == SHADOW_ALIAS:
        # A shadow version replaced before promotion was never in service: it leaves as a candidate.
        if previous is not None and previous != version:
            conn.execute(update(ModelVersion).where(ModelVersion.version == previous,
                                                    ModelVersion.status == "shadow").values(status="candidate"))
        set_status(conn, version, "shadow")
    payload = json.dumps({"alias": alias, "version": version})
    conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": payload})
    return previous


def clear_alias(conn: Any, alias: str, *, by: str | None, reason: str) -> str | None:
    """Remove ``alias`` (e.g. the shadow alias after its verdict); the history keeps the move. Returns
    the version it pointed at."""
    _lock_alias_moves(conn)
    previous = conn.execute(select(ModelAlias.version).where(ModelAlias.alias == alias).with_for_update()
                            ).scalar_one_or_none()
    if previous is None:
        return None
    conn.execute(ModelAlias.__table__.delete().where(ModelAlias.alias == alias))
    conn.execute(insert(ModelAliasHistory).values(alias=alias, version=previous, changed_by=by,
                                                  reason=f"cleared: {reason}"))
    payload = json.dumps({"alias": alias, "version": None})
    conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": payload})
    return previous


def alias_history(conn: Any, alias: str = ACTIVE_ALIAS) -> list[dict[str, Any]]:
    """Alias moves, oldest first."""
    stmt = (
        select(ModelAliasHistory.version, ModelAliasHistory.changed_at, ModelAliasHistory.changed_by,
               ModelAliasHistory.reason)
        .where(ModelAliasHistory.alias == alias)
        .order_by(ModelAliasHistory.id)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def alias_changed_at(conn: Any, alias: str = ACTIVE_ALIAS) -> datetime | None:
    return conn.execute(select(ModelAlias.updated_at).where(ModelAlias.alias == alias)).scalar_one_or_none()


def last_feedback_cutoff(conn: Any) -> datetime | None:
    """Newest feedback time any retrain has already seen (``training_config.retrain.feedback_until``)."""
    value = conn.execute(
        select(func.max(ModelVersion.training_config["retrain"]["feedback_until"].astext.cast(DateTime(timezone=True))))
    ).scalar_one()
    return value


def last_registered_at(conn: Any) -> datetime | None:
    """When the newest version (bundled, registered by hand or by a retrain, rejected ones included) was registered:
    the scheduler's record of the last run, so that a scheduled run missed while it was stopped is caught up."""
    return conn.execute(select(func.max(ModelVersion.created_at))).scalar_one()


def try_advisory_lock(conn: Any, key: int = RETRAIN_LOCK_KEY) -> bool:
    """Session-level lock held until ``advisory_unlock`` or the connection closes (a crash frees it)."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())


def advisory_unlock(conn: Any, key: int = RETRAIN_LOCK_KEY) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def window_stats(
    conn: Any, *, windows: list[tuple[datetime, datetime]], model_version: str, low_confidence: float
) -> dict[str, Any]:
    """Label histograms and confidence statistics of one version's scores over the union of ``windows``.

    Returns {"sentiment": {label: n}, "topic": {label: n}, "n", "sentiment_confidence" (mean top
    probability), "topic_confidence" (mean), "low_confidence" (rows whose top sentiment probability or topic
    confidence is below ``low_confidence``)}.
    """
    if not windows:
        return {"sentiment": {}, "topic": {}, "n": 0, "sentiment_confidence": None, "topic_confidence": None,
                "low_confidence": 0}
    in_windows = or_(*[and_(Score.event_time >= a, Score.event_time < b) for a, b in windows])
    where = (Score.model_version == model_version, in_windows)
    top = func.greatest(Score.p_negative, Score.p_neutral, Score.p_positive)
    out: dict[str, Any] = {}
    for column, col in (("sentiment", Score.sentiment), ("topic", Score.topic)):
        out[column] = {label: int(n) for label, n in
                       conn.execute(select(col, func.count()).where(*where).group_by(col))}
    low = func.sum(case((or_(top < low_confidence, Score.topic_confidence < low_confidence), 1), else_=0))
    n, mean_top, mean_topic, n_low = conn.execute(
        select(func.count(), func.avg(top), func.avg(Score.topic_confidence), low).where(*where)).one()
    out.update(n=int(n), sentiment_confidence=None if mean_top is None else float(mean_top),
               topic_confidence=None if mean_topic is None else float(mean_topic), low_confidence=int(n_low or 0))
    return out


def uncertain_scores(
    conn: Any, *, start: datetime, end: datetime, model_version: str, column: str | None, labels: list[str],
    limit: int,
) -> list[dict[str, Any]]:
    """The ``limit`` least certain scores of one version in ``[start, end)`` (optionally only those whose
    predicted ``column`` is in ``labels``), with the article headline: what analysts should label first.

    Uncertainty = 1 - the smaller of the top sentiment probability and the topic confidence.
    """
    top = func.greatest(Score.p_negative, Score.p_neutral, Score.p_positive)
    uncertainty = (1.0 - func.least(top, Score.topic_confidence)).label("uncertainty")
    stmt = (select(Score.article_id, Article.title, Score.sentiment, Score.topic, uncertainty)
            .join(Article, Article.id == Score.article_id)
            .where(Score.model_version == model_version, Score.event_time >= start, Score.event_time < end)
            .order_by(uncertainty.desc(), Score.article_id).limit(limit))
    if column is not None and labels:
        stmt = stmt.where({"sentiment": Score.sentiment, "topic": Score.topic}[column].in_(labels))
    return [dict(r._mapping) for r in conn.execute(stmt)]


def shadow_pairs(conn: Any, *, shadow: str, champion: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Agreement and confidence of ``shadow`` vs ``champion`` on the articles both scored in ``[start, end)``."""
    s, c = Score.__table__.alias("s"), Score.__table__.alias("c")
    top_s = func.greatest(s.c.p_negative, s.c.p_neutral, s.c.p_positive)
    top_c = func.greatest(c.c.p_negative, c.c.p_neutral, c.c.p_positive)
    row = conn.execute(
        select(func.count(), func.avg(cast(s.c.sentiment == c.c.sentiment, Integer)),
               func.avg(cast(s.c.topic == c.c.topic, Integer)), func.avg(top_s), func.avg(top_c),
               func.avg(s.c.topic_confidence), func.avg(c.c.topic_confidence),
               func.min(s.c.event_time), func.max(s.c.event_time))
        .select_from(s.join(c, s.c.article_id == c.c.article_id))
        .where(s.c.model_version == shadow, c.c.model_version == champion,
               s.c.event_time >= start, s.c.event_time < end)
    ).one()
    n_shadow = conn.execute(select(func.count()).select_from(Score).where(
        Score.model_version == shadow, Score.event_time >= start, Score.event_time < end)).scalar_one()

    def f(v: Any) -> float | None:
        return None if v is None else float(v)

    return {"pairs": int(row[0]), "shadow_scores": int(n_shadow), "sentiment_agreement": f(row[1]),
            "topic_agreement": f(row[2]), "shadow_confidence": f(row[3]), "champion_confidence": f(row[4]),
            "shadow_topic_confidence": f(row[5]), "champion_topic_confidence": f(row[6]),
            "first_event": row[7], "last_event": row[8]}


def alias_set_at(conn: Any, alias: str, version: str) -> datetime | None:
    """When ``alias`` was last pointed at ``version`` (from the history)."""
    return conn.execute(select(func.max(ModelAliasHistory.changed_at)).where(
        ModelAliasHistory.alias == alias, ModelAliasHistory.version == version,
        ~ModelAliasHistory.reason.startswith("cleared"))).scalar_one()
