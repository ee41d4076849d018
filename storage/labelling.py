"""SQL for drift labelling requests: the uncertain texts of a drifted slice, stored for analysts.

Drift says the inputs changed; only new labels can tell the model how. A request lists what to label
first (``marketmood feedback requests``); analysts answer through the normal feedback paths.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update

from storage.schema import LabellingRequest, LabellingRequestItem

REQUEST_LOCK_KEY = int.from_bytes(hashlib.sha256(b"marketmood.labelling_requests").digest()[:8], "big", signed=True)


def lock_requests(conn: Any) -> None:
    """Serialise "is there a recent request? if not, open one" (``pg_advisory_xact_lock``, released at commit):
    scheduler replicas that see the same drift at the same tick would otherwise both find none and both open one."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REQUEST_LOCK_KEY})


def create_request(
    conn: Any, *, model_version: str | None, window_start: datetime, window_end: datetime, reasons: list[str],
    drifted_slice: dict[str, Any], items: list[dict[str, Any]],
) -> int:
    """Store one request with its items (``article_id``, ``title``, ``sentiment``, ``topic``, ``uncertainty``)."""
    request_id = int(conn.execute(insert(LabellingRequest).values(
        model_version=model_version, window_start=window_start, window_end=window_end, reasons=reasons,
        drifted_slice=drifted_slice).returning(LabellingRequest.id)).scalar_one())
    if items:
        keys = ("article_id", "title", "sentiment", "topic", "uncertainty")
        conn.execute(insert(LabellingRequestItem).values([{**{k: i.get(k) for k in keys}, "request_id": request_id}
                                                          for i in items]))
    return request_id


def list_requests(conn: Any, *, status: str | None = "open") -> list[dict[str, Any]]:
    """Requests newest first, with their item counts."""
    n_items = (select(func.count()).where(LabellingRequestItem.request_id == LabellingRequest.id)
               .correlate(LabellingRequest).scalar_subquery())
    cols = [LabellingRequest.id, LabellingRequest.created_at, LabellingRequest.status, LabellingRequest.model_version,
            LabellingRequest.window_start, LabellingRequest.window_end, LabellingRequest.reasons,
            LabellingRequest.drifted_slice]
    stmt = select(*cols, n_items.label("items")).order_by(LabellingRequest.id.desc())
    if status is not None:
        stmt = stmt.where(LabellingRequest.status == status)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def request_items(conn: Any, request_id: int) -> list[dict[str, Any]]:
    stmt = (select(LabellingRequestItem.article_id, LabellingRequestItem.title, LabellingRequestItem.sentiment,
                   LabellingRequestItem.topic, LabellingRequestItem.uncertainty)
            .where(LabellingRequestItem.request_id == request_id)
            .order_by(LabellingRequestItem.uncertainty.desc(), LabellingRequestItem.article_id))
    return [dict(r._mapping) for r in conn.execute(stmt)]


def latest_request_time(conn: Any, model_version: str | None = None) -> datetime | None:
    stmt = select(func.max(LabellingRequest.created_at))
    if model_version is not None:
        stmt = stmt.where(LabellingRequest.model_version == model_version)
    return conn.execute(stmt).scalar_one()


def close_request(conn: Any, request_id: int) -> bool:
    result = conn.execute(update(LabellingRequest).where(LabellingRequest.id == request_id,
                                                         LabellingRequest.status == "open").values(status="closed"))
    return bool(result.rowcount)
