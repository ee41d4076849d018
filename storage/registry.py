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

from sqlalchemy import DateTime, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from storage.schema import ModelAlias, ModelAliasHistory, ModelVersion, Score

ACTIVE_ALIAS = "active"
NOTIFY_CHANNEL = "marketmood_model"
# pg_advisory_lock takes a bigint: a stable one derived from a readable name.
RETRAIN_LOCK_KEY = int.from_bytes(hashlib.sha256(b"marketmood.retrain").digest()[:8], "big", signed=True)

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


def get_alias(conn: Any, alias: str = ACTIVE_ALIAS) -> str | None:
    return conn.execute(select(ModelAlias.version).where(ModelAlias.alias == alias)).scalar_one_or_none()


def set_alias(conn: Any, version: str, *, alias: str = ACTIVE_ALIAS, by: str | None, reason: str) -> str | None:
    """Point ``alias`` at ``version``, record the move, mark statuses and notify; return the old version.

    The alias row is locked (``FOR UPDATE``) so two concurrent promotions serialize instead of both
    recording the same "previous" version.
    """
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
    payload = json.dumps({"alias": alias, "version": version})
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


def last_retrain_at(conn: Any) -> datetime | None:
    """When the newest retrained version (one with a ``retrain`` record) was registered."""
    return conn.execute(
        select(func.max(ModelVersion.created_at)).where(ModelVersion.training_config.has_key("retrain"))
    ).scalar_one()


def try_advisory_lock(conn: Any, key: int = RETRAIN_LOCK_KEY) -> bool:
    """Session-level lock held until ``advisory_unlock`` or the connection closes (a crash frees it)."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())


def advisory_unlock(conn: Any, key: int = RETRAIN_LOCK_KEY) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def label_counts(
    conn: Any, *, start: datetime, end: datetime, column: str = "sentiment", model_version: str | None = None
) -> dict[str, int]:
    """Predicted-label histogram of scores with ``start <= event_time < end`` (one model version if given)."""
    label_col = {"sentiment": Score.sentiment, "topic": Score.topic}[column]
    stmt = (
        select(label_col, func.count())
        .where(Score.event_time >= start, Score.event_time < end)
        .group_by(label_col)
    )
    if model_version is not None:
        stmt = stmt.where(Score.model_version == model_version)
    return {label: int(n) for label, n in conn.execute(stmt)}


def mean_confidence(
    conn: Any, *, start: datetime, end: datetime, model_version: str | None = None
) -> tuple[float | None, int]:
    """(mean of the top sentiment probability, row count) over the window."""
    top = func.greatest(Score.p_negative, Score.p_neutral, Score.p_positive)
    stmt = select(func.avg(top), func.count()).where(Score.event_time >= start, Score.event_time < end)
    if model_version is not None:
        stmt = stmt.where(Score.model_version == model_version)
    mean, n = conn.execute(stmt).one()
    return (float(mean) if mean is not None else None), int(n)
