"""All SQL of the alerting area: window aggregation, detector state, alerts, silences and the outbox.

Aggregation is derived from ``current_scores(...)`` (the one definition of an article's current score,
``storage.scores``) on every evaluation, counting only novel articles, so worker restarts and replayed Kafka
messages, which the idempotent upsert absorbs, can never double count. Lifecycle writes run in the caller's
transaction: the alert row, the detector state and the outbox rows commit (or roll back) together. This
module takes payloads already rendered by ``alerts/`` (storage knows nothing about notification formats).

Outbox delivery is one short transaction per notification: ``claim_one`` moves a row to ``sending`` and
commits before the notifier is called; ``mark_delivered`` / ``mark_failed`` commit the outcome after. A row
left in ``sending`` by a dead sender is recovered by ``recover_stale_sending``: re-sent (same idempotency
key) for channels that de-duplicate, moved to ``unknown`` (never re-sent automatically) for the others.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from storage.scores import CURRENT_SCORES_FROM

WindowRow = tuple[int, int, int, float]  # negative, neutral, positive, score sum of one window

# Grafana annotation query over the alerts table (PostgreSQL datasource, "Annotations" with format table):
# one region per alert, from its start to its resolve time (open alerts run to now). Reuse it verbatim.
GRAFANA_ANNOTATIONS_SQL = """
SELECT
  extract(epoch FROM a.started_at) * 1000 AS "time",
  extract(epoch FROM COALESCE(a.resolved_at, now())) * 1000 AS "timeend",
  format('%s %s %s: %s%% negative vs %s%% baseline (n=%s) [%s]',
         upper(a.severity), a.scope_type, a.scope,
         round(((a.evidence->>'current_share')::numeric) * 100),
         round(((a.evidence->>'baseline_share')::numeric) * 100),
         a.evidence->>'volume', a.state) AS "text",
  ARRAY['marketmood', 'alert', a.severity, a.state, a.scope_type || ':' || a.scope, 'rule:' || a.rule] AS "tags"
FROM alerts a
WHERE a.started_at <= $__timeTo() AND COALESCE(a.resolved_at, now()) >= $__timeFrom()
ORDER BY a.started_at
""".strip()

_LATEST_SCORES = f"""
  SELECT s.article_id, s.topic, s.sentiment, s.score, s.p_negative, s.event_time, a.tickers, a.title, a.url,
         a.source
  FROM {CURRENT_SCORES_FROM}
  WHERE a.novel
"""

_SCOPE_EXPR = {
    "topic": ("l.topic", ""),
    "ticker": ("t.ticker", "CROSS JOIN LATERAL unnest(l.tickers) AS t(ticker)"),
}


def window_counts(
    conn: Connection,
    scope_type: str,
    start: datetime,
    end: datetime,
    window_s: int,
    scopes: tuple[str, ...] | None = None,
) -> dict[str, dict[int, WindowRow]]:
    """Per scope, per window start (epoch s), (negative, neutral, positive, score sum) of novel articles in
    [start, end). Plain tuples: the caller builds its own count type."""
    expr, join = _SCOPE_EXPR[scope_type]
    where = f"WHERE {expr} = ANY(:scopes)" if scopes is not None else ""
    sql = text(f"""
        WITH l AS ({_LATEST_SCORES})
        SELECT {expr} AS scope,
               (floor(extract(epoch FROM l.event_time) / :w) * :w)::bigint AS bucket,
               count(*) FILTER (WHERE l.sentiment = 'negative') AS neg,
               count(*) FILTER (WHERE l.sentiment = 'neutral') AS neu,
               count(*) FILTER (WHERE l.sentiment = 'positive') AS pos,
               COALESCE(sum(l.score), 0) AS score_sum
        FROM l {join} {where}
        GROUP BY 1, 2
    """)
    params: dict[str, Any] = {"start": start, "end": end, "w": window_s}
    if scopes is not None:
        params["scopes"] = list(scopes)
    out: dict[str, dict[int, WindowRow]] = defaultdict(dict)
    for scope, bucket, neg, neu, pos, score_sum in conn.execute(sql, params):
        out[scope][int(bucket)] = (int(neg), int(neu), int(pos), float(score_sum))
    return dict(out)


def top_negative_headlines(
    conn: Connection, scope_type: str, scope: str, start: datetime, end: datetime, limit: int = 5
) -> list[dict[str, Any]]:
    """The most negative novel headlines of a scope in [start, end): the evidence an on-call reads first."""
    expr, join = _SCOPE_EXPR[scope_type]
    sql = text(f"""
        WITH l AS ({_LATEST_SCORES})
        SELECT l.article_id, l.title, l.url, l.source, l.score, l.p_negative, l.event_time
        FROM l {join}
        WHERE {expr} = :scope AND l.sentiment = 'negative'
        ORDER BY l.score ASC, l.event_time DESC
        LIMIT :limit
    """)
    rows = conn.execute(sql, {"start": start, "end": end, "scope": scope, "limit": limit}).mappings()
    return [
        {"article_id": r["article_id"], "title": r["title"], "url": r["url"], "source": r["source"],
         "score": round(float(r["score"]), 3), "p_negative": round(float(r["p_negative"]), 3),
         "published_at": r["event_time"].isoformat()}
        for r in rows
    ]


def dominant_topic(conn: Connection, ticker: str, start: datetime, end: datetime) -> str | None:
    """The topic most of a ticker's novel articles in [start, end) belong to (ties: alphabetical)."""
    row = conn.execute(
        text(f"""SELECT s.topic FROM {CURRENT_SCORES_FROM}
                 WHERE a.novel AND :ticker = ANY(a.tickers)
                 GROUP BY s.topic ORDER BY count(*) DESC, s.topic LIMIT 1"""),
        {"start": start, "end": end, "ticker": ticker},
    ).first()
    return row[0] if row else None


# --- detector state -------------------------------------------------------------------------------------

_CURSOR_SCOPE_TYPE, _CURSOR_SCOPE = "_cursor", "*"


def get_cursor(conn: Connection, rule: str) -> int | None:
    """End (epoch s) of the last window the rule has judged, or None before its first evaluation."""
    row = conn.execute(
        text("SELECT state FROM alert_scope_state WHERE rule = :r AND scope_type = :t AND scope = :s FOR UPDATE"),
        {"r": rule, "t": _CURSOR_SCOPE_TYPE, "s": _CURSOR_SCOPE},
    ).first()
    return None if row is None else row[0].get("last_window_end")


def set_cursor(conn: Connection, rule: str, last_window_end: int) -> None:
    save_scope_state(conn, rule, _CURSOR_SCOPE_TYPE, _CURSOR_SCOPE, {"last_window_end": last_window_end})


def load_scope_states(conn: Connection, rule: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Non-idle detector states of a rule, keyed by (scope_type, scope)."""
    rows = conn.execute(
        text("SELECT scope_type, scope, state FROM alert_scope_state WHERE rule = :r AND scope_type <> :c"),
        {"r": rule, "c": _CURSOR_SCOPE_TYPE},
    )
    return {(r[0], r[1]): r[2] for r in rows}


def save_scope_state(conn: Connection, rule: str, scope_type: str, scope: str, state: dict[str, Any] | None) -> None:
    """Upsert a detector state; ``None`` deletes it (idle scopes are not stored)."""
    key = {"r": rule, "t": scope_type, "s": scope}
    if state is None:
        conn.execute(text("DELETE FROM alert_scope_state WHERE rule = :r AND scope_type = :t AND scope = :s"), key)
        return
    conn.execute(
        text("""
            INSERT INTO alert_scope_state (rule, scope_type, scope, state, updated_at)
            VALUES (:r, :t, :s, CAST(:state AS jsonb), now())
            ON CONFLICT (rule, scope_type, scope) DO UPDATE SET state = EXCLUDED.state, updated_at = now()
        """),
        {**key, "state": _json(state)},
    )


# --- alerts ---------------------------------------------------------------------------------------------

_ALERT_COLUMNS = (
    "id, rule, scope_type, scope, severity, state, dedup_key, started_at, updated_at, acknowledged_at, "
    "acknowledged_by, resolved_at, evidence, group_key"
)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def get_alert(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    row = conn.execute(text(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = :id"), {"id": alert_id}).mappings().first()
    return dict(row) if row else None


def open_alert(conn: Connection, rule: str, scope_type: str, scope: str) -> dict[str, Any] | None:
    """The rule's unresolved alert for a scope (at most one, by the partial unique index)."""
    row = conn.execute(
        text(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = :r AND scope_type = :t AND scope = :s "
             "AND state <> 'resolved' FOR UPDATE"),
        {"r": rule, "t": scope_type, "s": scope},
    ).mappings().first()
    return dict(row) if row else None


def firing_alerts(conn: Connection, rule: str) -> list[dict[str, Any]]:
    """The rule's alerts in state ``firing`` (not acknowledged, not silenced): the ones reminders go to."""
    rows = conn.execute(
        text(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = :r AND state = 'firing' ORDER BY id"), {"r": rule}
    ).mappings()
    return [dict(r) for r in rows]


def list_alerts(conn: Connection, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest alerts first; ``state`` filters (firing | acknowledged | silenced | resolved, or 'open')."""
    where, params = "", {"limit": limit}
    if state == "open":
        where = "WHERE state <> 'resolved'"
    elif state is not None:
        where, params["state"] = "WHERE state = :state", state
    rows = conn.execute(
        text(f"SELECT {_ALERT_COLUMNS} FROM alerts {where} ORDER BY started_at DESC, id DESC LIMIT :limit"), params
    ).mappings()
    return [dict(r) for r in rows]


def insert_alert(
    conn: Connection, *, rule: str, scope_type: str, scope: str, severity: str, state: str, dedup_key: str,
    started_at: datetime, evidence: dict[str, Any], group_key: str | None = None,
) -> dict[str, Any]:
    row = conn.execute(
        text(f"""
            INSERT INTO alerts (rule, scope_type, scope, severity, state, dedup_key, started_at, updated_at, evidence,
                                group_key)
            VALUES (:rule, :scope_type, :scope, :severity, :state, :dedup_key, :started_at, now(),
                    CAST(:evidence AS jsonb), :group_key)
            RETURNING {_ALERT_COLUMNS}
        """),
        {"rule": rule, "scope_type": scope_type, "scope": scope, "severity": severity, "state": state,
         "dedup_key": dedup_key, "started_at": started_at, "evidence": _json(evidence), "group_key": group_key},
    ).mappings().one()
    return dict(row)


def update_alert(conn: Connection, alert_id: int, **fields: Any) -> dict[str, Any]:
    """Set the given columns (state, resolved_at, acknowledged_*, evidence) and return the row."""
    allowed = {"state", "resolved_at", "acknowledged_at", "acknowledged_by", "evidence"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"can only update {sorted(allowed)}")
    sets = ", ".join(f"{k} = CAST(:{k} AS jsonb)" if k == "evidence" else f"{k} = :{k}" for k in fields)
    params = {k: _json(v) if k == "evidence" else v for k, v in fields.items()}
    row = conn.execute(
        text(f"UPDATE alerts SET {sets}, updated_at = now() WHERE id = :id RETURNING {_ALERT_COLUMNS}"),
        {**params, "id": alert_id},
    ).mappings().one()
    return dict(row)


def lock_alert(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    """The alert row, locked for this transaction (acknowledge and resolve must not interleave)."""
    row = conn.execute(
        text(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = :id FOR UPDATE"), {"id": alert_id}
    ).mappings().first()
    return dict(row) if row else None


# --- silences -------------------------------------------------------------------------------------------

def create_silence(conn: Connection, scope_type: str, scope: str, duration: timedelta, *, by: str | None = None,
                   reason: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    row = conn.execute(
        text("""
            INSERT INTO silences (scope_type, scope, starts_at, ends_at, created_by, reason)
            VALUES (:t, :s, COALESCE(:now, now()), COALESCE(:now, now()) + :d, :by, :reason)
            RETURNING id, scope_type, scope, starts_at, ends_at, created_by, reason, cancelled_at
        """),
        {"t": scope_type, "s": scope, "now": now, "d": duration, "by": by, "reason": reason},
    ).mappings().one()
    return dict(row)


def cancel_silences(conn: Connection, *, silence_id: int | None = None, scope_type: str | None = None,
                    scope: str | None = None) -> int:
    """Cancel one silence by id, or every active silence of a scope; returns how many were cancelled."""
    if silence_id is not None:
        result = conn.execute(
            text("UPDATE silences SET cancelled_at = now() WHERE id = :id AND cancelled_at IS NULL"), {"id": silence_id}
        )
    else:
        result = conn.execute(
            text("UPDATE silences SET cancelled_at = now() WHERE scope_type = :t AND scope = :s "
                 "AND cancelled_at IS NULL AND ends_at > now()"),
            {"t": scope_type, "s": scope},
        )
    return result.rowcount


def list_silences(conn: Connection, *, active_at: datetime | None = None) -> list[dict[str, Any]]:
    """Silences not cancelled and not expired at ``active_at`` (default now)."""
    rows = conn.execute(
        text("""SELECT id, scope_type, scope, starts_at, ends_at, created_by, reason FROM silences
                WHERE cancelled_at IS NULL AND starts_at <= COALESCE(:at, now()) AND ends_at > COALESCE(:at, now())
                ORDER BY ends_at"""),
        {"at": active_at},
    ).mappings()
    return [dict(r) for r in rows]


def is_silenced(conn: Connection, scope_type: str, scope: str, at: datetime) -> bool:
    return conn.execute(
        text("""SELECT 1 FROM silences WHERE scope_type = :t AND scope = :s AND cancelled_at IS NULL
                AND starts_at <= :at AND ends_at > :at LIMIT 1"""),
        {"t": scope_type, "s": scope, "at": at},
    ).first() is not None


def open_alerts_silence_mismatch(conn: Connection, at: datetime) -> list[dict[str, Any]]:
    """Open alerts whose state disagrees with silences at ``at``: firing but silenced, or silenced but not.
    An alert held by inhibition (``evidence.inhibited_by.alert_id``) counts as silenced while that alert is
    open, and is released (paged) when it resolves."""
    rows = conn.execute(
        text(f"""
            SELECT {_ALERT_COLUMNS}, silenced_now FROM (
              SELECT a.*, (EXISTS (SELECT 1 FROM silences s WHERE s.scope_type = a.scope_type AND s.scope = a.scope
                                   AND s.cancelled_at IS NULL AND s.starts_at <= :at AND s.ends_at > :at)
                           OR EXISTS (SELECT 1 FROM alerts src
                                      WHERE src.id = (a.evidence->'inhibited_by'->>'alert_id')::bigint
                                        AND src.state <> 'resolved')) AS silenced_now
              FROM alerts a WHERE a.state IN ('firing', 'silenced')
            ) x
            WHERE (state = 'firing' AND silenced_now) OR (state = 'silenced' AND NOT silenced_now)
        """),
        {"at": at},
    ).mappings()
    return [dict(r) for r in rows]


# --- outbox ---------------------------------------------------------------------------------------------

def enqueue(conn: Connection, alert_id: int, notifiers: list[str] | tuple[str, ...], event: str,
            payload: dict[str, Any]) -> int:
    """One outbox row per notifier for this alert event (trigger / acknowledge / resolve, or ``repeat:<n>``
    for the n-th reminder), carrying the already-rendered ``payload``; a repeat of the same (alert,
    notifier, event) is ignored, so a state change (or a reminder) is enqueued once."""
    if not notifiers:
        return 0
    result = conn.execute(
        text("""
            INSERT INTO notification_outbox (alert_id, notifier, event, payload)
            SELECT :alert_id, n, :event, CAST(:payload AS jsonb) FROM unnest(CAST(:notifiers AS text[])) AS n
            ON CONFLICT (alert_id, notifier, event) DO NOTHING
        """),
        {"alert_id": alert_id, "event": event, "payload": _json(payload), "notifiers": list(notifiers)},
    )
    return result.rowcount


def pending_rows(conn: Connection, alert_ids: list[int] | tuple[int, ...], notifier: str, event: str) -> list[dict[str, Any]]:
    """The still-pending rows of ``event`` for these alerts and one notifier, locked, by alert id (the rows a
    group may merge: enqueued in the caller's transaction, so nobody has claimed them)."""
    rows = conn.execute(
        text("""SELECT id, alert_id FROM notification_outbox
                WHERE alert_id = ANY(CAST(:ids AS bigint[])) AND notifier = :notifier AND event = :event
                  AND status = 'pending'
                ORDER BY alert_id FOR UPDATE"""),
        {"ids": list(alert_ids), "notifier": notifier, "event": event},
    ).mappings()
    return [dict(r) for r in rows]


def merge_into(conn: Connection, lead_id: int, member_ids: list[int], payload: dict[str, Any]) -> int:
    """Make ``lead_id`` carry the group's ``payload`` and mark the members ``grouped`` into it."""
    conn.execute(text("UPDATE notification_outbox SET payload = CAST(:payload AS jsonb) WHERE id = :id"),
                 {"id": lead_id, "payload": _json(payload)})
    result = conn.execute(
        text("""UPDATE notification_outbox SET status = 'grouped', grouped_into = :lead
                WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'pending'"""),
        {"lead": lead_id, "ids": list(member_ids)},
    )
    return result.rowcount


def triggered_notifiers(conn: Connection, alert_id: int) -> list[str]:
    """Notifiers that were sent (or still owe) this alert's trigger: acks and resolves go to them only."""
    rows = conn.execute(
        text("SELECT notifier FROM notification_outbox WHERE alert_id = :id AND event = 'trigger' ORDER BY notifier"),
        {"id": alert_id},
    )
    return [r[0] for r in rows]


_CLAIM_COLUMNS = "id, alert_id, notifier, event, payload, attempts, claimed_by"


def claim_one(conn: Connection, now: datetime, claimed_by: str, *,
              skip_notifiers: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Move the oldest ``pending`` row due at ``now`` to ``sending`` (the caller commits at once, before
    sending).

    SKIP LOCKED lets several senders (replicas) run; the committed ``sending`` state is what keeps a crashed
    or failed-commit send from being repeated blindly. A row waits while an older row of the same alert and
    notifier is pending, being sent or dead, so a resolve never overtakes its trigger (a dead trigger holds
    its resolve until it is re-driven; an ``unknown`` one, which may have arrived, does not); a ``grouped``
    older row holds it while the group's lead row does."""
    row = conn.execute(
        text(f"""
            UPDATE notification_outbox SET status = 'sending', claimed_at = now(), claimed_by = :by,
                   attempts = attempts + 1
            WHERE id = (
              SELECT o.id FROM notification_outbox o
              WHERE o.status = 'pending' AND o.next_attempt_at <= :now
                AND NOT (o.notifier = ANY(CAST(:skip AS text[])))
                AND NOT EXISTS (SELECT 1 FROM notification_outbox p
                                LEFT JOIN notification_outbox lead ON lead.id = p.grouped_into
                                WHERE p.alert_id = o.alert_id AND p.notifier = o.notifier AND p.id < o.id
                                  -- a grouped row is as far along as the group's lead row that carries it
                                  AND COALESCE(lead.status, p.status) IN ('pending', 'sending', 'dead'))
              ORDER BY o.id
              LIMIT 1
              FOR UPDATE OF o SKIP LOCKED
            )
            RETURNING {_CLAIM_COLUMNS}
        """),
        {"now": now, "by": claimed_by, "skip": list(skip_notifiers)},
    ).mappings().first()
    return dict(row) if row else None


def mark_delivered(conn: Connection, outbox_id: int, at: datetime, claimed_by: str) -> bool:
    """Record a successful send; False if the row is no longer this sender's claim (it was recovered)."""
    result = conn.execute(
        text("UPDATE notification_outbox SET status = 'delivered', delivered_at = :at, last_error = NULL "
             "WHERE id = :id AND status = 'sending' AND claimed_by = :by"),
        {"id": outbox_id, "at": at, "by": claimed_by},
    )
    return result.rowcount == 1


def mark_failed(conn: Connection, outbox_id: int, error: str, next_attempt_at: datetime, *, dead: bool,
                claimed_by: str, unknown: bool = False) -> bool:
    """Record a failed attempt: back to ``pending`` at ``next_attempt_at``, ``dead`` (never retried), or
    ``unknown`` (it may have arrived on a channel that cannot de-duplicate: never re-sent by itself)."""
    result = conn.execute(
        text("UPDATE notification_outbox SET last_error = :err, next_attempt_at = :next, "
             "status = CASE WHEN :dead THEN 'dead' WHEN :unknown THEN 'unknown' ELSE 'pending' END "
             "WHERE id = :id AND status = 'sending' AND claimed_by = :by"),
        {"id": outbox_id, "err": error[:2000], "next": next_attempt_at, "dead": dead, "unknown": unknown,
         "by": claimed_by},
    )
    return result.rowcount == 1


def defer_notifier(conn: Connection, notifier: str, next_attempt_at: datetime) -> int:
    """Postpone every pending row of a notifier that just failed, without counting an attempt (no hammering
    a dead endpoint with its whole backlog)."""
    result = conn.execute(
        text("UPDATE notification_outbox SET next_attempt_at = GREATEST(next_attempt_at, :next) "
             "WHERE notifier = :n AND status = 'pending'"),
        {"n": notifier, "next": next_attempt_at},
    )
    return result.rowcount


def retire_unconfigured(conn: Connection, configured: tuple[str, ...],
                        created_before: datetime) -> list[dict[str, Any]]:
    """Mark ``dead`` the pending rows of notifiers not in ``configured`` (removed from the rules file) that were
    enqueued before ``created_before``; returns them. Every pending row, due or not and even one held behind
    its dead trigger, so none is left pending for ever; ``redrive`` re-queues them once the notifier is back."""
    rows = conn.execute(
        text("""
            UPDATE notification_outbox SET status = 'dead',
              last_error = format('notifier %L is not configured (removed from the rules file?): not retried',
                                  notifier)
            WHERE status = 'pending' AND NOT (notifier = ANY(CAST(:configured AS text[])))
              AND created_at < :before
            RETURNING id, alert_id, notifier, event, last_error
        """),
        {"configured": list(configured), "before": created_before},
    ).mappings()
    return [dict(r) for r in rows]


def recover_stale_sending(conn: Connection, older_than_s: float, resend_notifiers: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows stuck in ``sending`` for more than ``older_than_s`` seconds of real time (their sender died, hung
    or lost its commit; claims use the database clock, not the caller's simulated one).

    Rows of ``resend_notifiers`` (channels that de-duplicate on the key we send: PagerDuty, webhooks) go back
    to ``pending`` and are re-sent with the same key; every other row goes to ``unknown``: it may or may not
    have reached Slack/email, and sending it again could duplicate it, so only an operator re-drives it."""
    rows = conn.execute(
        text("""
            UPDATE notification_outbox SET
              status = CASE WHEN notifier = ANY(CAST(:resend AS text[])) THEN 'pending' ELSE 'unknown' END,
              last_error = 'sender stopped during the send (claimed by ' || COALESCE(claimed_by, '?') || ')',
              next_attempt_at = now()
            WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => :older)
            RETURNING id, alert_id, notifier, event, status
        """),
        {"older": float(older_than_s), "resend": list(resend_notifiers)},
    ).mappings()
    return [dict(r) for r in rows]


def redrive(conn: Connection, *, outbox_ids: tuple[int, ...] = (), all_dead: bool = False) -> list[dict[str, Any]]:
    """Put ``dead`` / ``unknown`` rows back to ``pending`` (an operator fixed the notifier's config, or checked
    that an ``unknown`` Slack/email message did not arrive); returns the rows re-queued."""
    if not outbox_ids and not all_dead:
        return []
    rows = conn.execute(
        text("""
            UPDATE notification_outbox SET status = 'pending', next_attempt_at = now(), claimed_by = NULL,
                   claimed_at = NULL, last_error = 'redriven; was: ' || COALESCE(last_error, status)
            WHERE status IN ('dead', 'unknown') AND (:all OR id = ANY(CAST(:ids AS bigint[])))
            RETURNING id, alert_id, notifier, event, status
        """),
        {"all": all_dead, "ids": list(outbox_ids)},
    ).mappings()
    return [dict(r) for r in rows]


def try_lead(conn: Connection, name: str) -> bool:
    """Transaction-scoped advisory lock on ``name``: True for exactly one replica at a time (the leader of
    that rule for this pass); released at commit/rollback, so a dead replica never holds it."""
    key = zlib.crc32(f"marketmood-alerts/{name}".encode())
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar_one())


def outbox_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """Rows per (notifier, status), for metrics and the CLI."""
    rows = conn.execute(text("SELECT notifier, status, count(*) FROM notification_outbox GROUP BY 1, 2"))
    return {(r[0], r[1]): int(r[2]) for r in rows}


def list_outbox(conn: Connection, *, alert_id: int | None = None, statuses: tuple[str, ...] | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Outbox rows, oldest first; ``statuses`` filters (e.g. ``("dead", "unknown")`` for what needs a human)."""
    rows = conn.execute(
        text("""SELECT id, alert_id, notifier, event, status, attempts, next_attempt_at, last_error, created_at,
                       delivered_at, claimed_at, claimed_by, grouped_into, payload
                FROM notification_outbox
                WHERE (CAST(:a AS bigint) IS NULL OR alert_id = :a)
                  AND (CAST(:st AS text[]) IS NULL OR status = ANY(CAST(:st AS text[])))
                ORDER BY id LIMIT :limit"""),
        {"a": alert_id, "st": list(statuses) if statuses is not None else None, "limit": limit},
    ).mappings()
    return [dict(r) for r in rows]
