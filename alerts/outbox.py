"""Outbox delivery: send due notifications, retry with exponential back-off, never lose one.

Runs apart from evaluation (its own thread or process), so a slow or dead notifier never delays detection,
let alone scoring. Rows are claimed with ``FOR UPDATE SKIP LOCKED``; a failure pushes the row (and the rest
of that notifier's batch) to ``now + min(base * 2**attempts, max)``; a non-retryable failure (HTTP 4xx) or
``max_attempts`` marks it ``dead``. When the notifier comes back the pending rows drain in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine

from alerts.notifiers.base import DeliveryError, Notifier
from storage import alerts as db


@dataclass
class DeliveryReport:
    delivered: list[tuple[int, str, str]] = field(default_factory=list)  # (alert_id, notifier, event)
    failed: list[tuple[int, str, str, str]] = field(default_factory=list)  # (..., error)
    dead: list[tuple[int, str, str]] = field(default_factory=list)


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Delay before attempt ``attempts + 1``: base, 2*base, 4*base, ... capped at ``max_s``."""
    return min(max_s, base_s * (2 ** min(attempts, 30)))


class OutboxSender:
    def __init__(self, engine: Engine, notifiers: Mapping[str, Notifier], *, base_s: float = 2.0,
                 max_s: float = 300.0, max_attempts: int = 0, batch: int = 50,
                 on_result: Callable[[str, str, bool], None] | None = None) -> None:
        self.engine, self.notifiers = engine, dict(notifiers)
        self.base_s, self.max_s, self.max_attempts, self.batch = base_s, max_s, max_attempts, batch
        self._on_result = on_result

    def deliver_due(self, now: datetime | None = None) -> DeliveryReport:
        """One pass over due rows; at most one failed attempt per notifier per pass."""
        now = now or datetime.now(timezone.utc)
        report = DeliveryReport()
        with self.engine.begin() as conn:
            rows = db.claim_due(conn, now, self.batch)
            down: dict[str, datetime] = {}  # notifier -> retry time, after its first failure in this pass
            for row in rows:
                key = (row["alert_id"], row["notifier"], row["event"])
                if row["notifier"] in down:
                    db.defer(conn, row["id"], down[row["notifier"]])  # not an attempt: the notifier is down
                    continue
                notifier = self.notifiers.get(row["notifier"])
                try:
                    if notifier is None:
                        raise DeliveryError(f"notifier {row['notifier']!r} is not configured")
                    try:
                        notifier.send(row["payload"])
                    except DeliveryError:
                        raise
                    except Exception as unexpected:  # noqa: BLE001 - a bug in one notifier must not roll back
                        # the pass: the rows already sent in it would be sent again and this one would block.
                        raise DeliveryError(f"{type(unexpected).__name__}: {unexpected}") from unexpected
                except DeliveryError as exc:
                    attempts = row["attempts"] + 1
                    dead = not exc.retryable or (self.max_attempts > 0 and attempts >= self.max_attempts)
                    retry_at = now + timedelta(seconds=backoff_s(row["attempts"], self.base_s, self.max_s))
                    db.mark_failed(conn, row["id"], str(exc), retry_at, dead=dead)
                    down[row["notifier"]] = retry_at
                    (report.dead if dead else report.failed).append(key if dead else (*key, str(exc)))
                    self._notify(row["notifier"], row["event"], False)
                    continue
                db.mark_delivered(conn, row["id"], datetime.now(timezone.utc))
                report.delivered.append(key)
                self._notify(row["notifier"], row["event"], True)
        return report

    def _notify(self, notifier: str, event: str, ok: bool) -> None:
        if self._on_result is not None:
            self._on_result(notifier, event, ok)
