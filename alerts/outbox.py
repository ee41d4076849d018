"""Outbox delivery: one notification per short transaction, at most once on channels that cannot de-duplicate.

Each row goes ``pending`` -> ``sending`` (claimed with ``FOR UPDATE SKIP LOCKED`` and committed *before*
the notifier is called) -> ``delivered`` | ``pending`` (retry at ``now + min(base * 2**attempts, max)``) |
``dead`` (a 4xx or SMTP 5xx that can never succeed, a message the notifier cannot build, or
``max_attempts``; and every pending row of a notifier that is no longer configured, once it is older than
``unconfigured_grace_s``). A crash, or a commit that fails after a send,
leaves the row in ``sending``; once its claim is older than ``claim_timeout_s`` the next sender recovers it:
PagerDuty and webhook rows are re-sent with the same dedup/idempotency key (the receiver drops the copy),
Slack and email rows become ``unknown``, as do their sends that went out and got no answer (a read timeout,
a connection dropped mid-message); ``unknown`` rows are never re-sent automatically (``marketmood alerts outbox
--dead`` lists them, ``marketmood alerts redrive`` re-queues them). So a state change reaches Slack or email
at most once, and PagerDuty/webhooks at least once, de-duplicated.

Runs apart from evaluation (its own thread or process), so a slow or dead notifier never delays detection.
After a notifier fails, its other pending rows wait for the same retry time (no hammering a dead endpoint).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import structlog
from sqlalchemy import Engine

from alerts.notifiers.base import DeliveryError, Notifier
from storage import alerts as db

log = structlog.get_logger("marketmood.alerts.outbox")

#: Notifier kinds whose receiver de-duplicates on the key we send (PagerDuty ``dedup_key``, the webhook's
#: ``Idempotency-Key``): an interrupted send may be repeated. Everything else is at-most-once.
RESEND_SAFE_KINDS = frozenset({"pagerduty", "webhook"})


@dataclass
class DeliveryReport:
    delivered: list[tuple[int, str, str]] = field(default_factory=list)  # (alert_id, notifier, event)
    failed: list[tuple[int, str, str, str]] = field(default_factory=list)  # (..., error)
    dead: list[tuple[int, str, str]] = field(default_factory=list)
    recovered: list[dict[str, object]] = field(default_factory=list)  # stale claims moved to pending/unknown


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Delay before attempt ``attempts + 1``: base, 2*base, 4*base, ... capped at ``max_s``."""
    return min(max_s, base_s * (2 ** min(attempts, 30)))


def sender_identity() -> str:
    """Who holds a claim: host, pid and a random suffix (a restarted process never matches its old claims)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxSender:
    def __init__(self, engine: Engine, notifiers: Mapping[str, Notifier], *, base_s: float = 2.0,
                 max_s: float = 300.0, max_attempts: int = 0, batch: int = 50, claim_timeout_s: float = 60.0,
                 send_deadline_s: float | None = None, unconfigured_grace_s: float = 600.0,
                 on_result: Callable[[str, str, bool], None] | None = None) -> None:
        self.engine, self.notifiers = engine, dict(notifiers)
        self.base_s, self.max_s, self.max_attempts, self.batch = base_s, max_s, max_attempts, batch
        self.claim_timeout_s = claim_timeout_s
        # A notifier's own timeouts bound each network read, not the whole send: a receiver that trickles its
        # answer (or an SMTP tarpit) held the one delivery thread, and every other notification, for as long as
        # it liked, and outlived the claim. A send is abandoned at this deadline, inside its claim.
        self.send_deadline_s = send_deadline_s if send_deadline_s is not None else 0.8 * claim_timeout_s
        # A notifier removed from the rules file leaves rows that could only retry "not configured" for ever. They
        # are killed once this old: a replica still on the old rules in a rolling deploy that *adds* a notifier
        # must not kill the new notifier's fresh rows (the new replicas deliver them meanwhile).
        self.unconfigured_grace_s = unconfigured_grace_s
        self.identity = sender_identity()
        self._on_result = on_result

    def recover(self) -> list[dict[str, object]]:
        """Release claims of dead senders: re-send safe channels, park the others as ``unknown``."""
        resend = tuple(name for name, n in self.notifiers.items() if n.kind in RESEND_SAFE_KINDS)
        with self.engine.begin() as conn:
            rows = db.recover_stale_sending(conn, self.claim_timeout_s, resend)
        for r in rows:
            log.warning("outbox_claim_recovered", outbox_id=r["id"], alert_id=r["alert_id"], notifier=r["notifier"],
                        notification_event=r["event"], status=r["status"])
        return rows

    def retire_unconfigured(self, now: datetime) -> list[tuple[int, str, str]]:
        """Mark dead the pending rows of notifiers this sender does not have, enqueued over
        ``unconfigured_grace_s`` before ``now``: retried, they fail the same way for ever (pending in the
        gauge, never dead), and a trigger's dead row would hold its later rows pending for ever too."""
        before = now - timedelta(seconds=self.unconfigured_grace_s)
        with self.engine.begin() as conn:
            rows = db.retire_unconfigured(conn, tuple(sorted(self.notifiers)), before)
        for r in rows:  # a config change, not an outage: a warning, with the notifier named in the reason
            log.warning("notification_dead", outbox_id=r["id"], alert_id=r["alert_id"], notifier=r["notifier"],
                        notification_event=r["event"], error=r["last_error"])
        return [(r["alert_id"], r["notifier"], r["event"]) for r in rows]

    def deliver_due(self, now: datetime | None = None, *, stop: Callable[[], bool] | None = None) -> DeliveryReport:
        """One pass: up to ``batch`` due rows, each claimed, sent and settled in its own transactions.

        ``stop`` is asked before each claim: a shutdown waits for the send under way only, not for a whole
        backlog (a process killed mid-send leaves a Slack or e-mail row ``unknown``)."""
        now = now or datetime.now(timezone.utc)
        report = DeliveryReport(recovered=self.recover())
        report.dead += self.retire_unconfigured(now)
        down: set[str] = set()  # notifiers that failed in this pass: not tried again in it
        for _ in range(self.batch):
            if stop is not None and stop():
                break
            with self.engine.begin() as conn:
                row = db.claim_one(conn, now, self.identity, skip_notifiers=tuple(sorted(down)))
            if row is None:
                break
            key = (row["alert_id"], row["notifier"], row["event"])
            error = self._send(row)
            if error is None:
                with self.engine.begin() as conn:
                    mine = db.mark_delivered(conn, row["id"], datetime.now(timezone.utc), self.identity)
                if not mine:
                    log.warning("outbox_claim_lost", outbox_id=row["id"], notifier=row["notifier"])
                report.delivered.append(key)
                self._notify(row["notifier"], row["event"], True)
                continue
            attempts = row["attempts"]  # already counts this attempt (claim_one increments)
            dead = not error.retryable or (self.max_attempts > 0 and attempts >= self.max_attempts)
            # sent but unanswered, on a channel that cannot drop a copy: parked like a crashed send, not retried
            unknown = not dead and error.maybe_delivered and self._kind(row["notifier"]) not in RESEND_SAFE_KINDS
            retry_at = now + timedelta(seconds=backoff_s(attempts - 1, self.base_s, self.max_s))
            with self.engine.begin() as conn:
                db.mark_failed(conn, row["id"], str(error), retry_at, dead=dead, unknown=unknown,
                               claimed_by=self.identity)
                db.defer_notifier(conn, row["notifier"], retry_at)
            down.add(row["notifier"])
            if unknown:
                log.error("notification_unknown", outbox_id=row["id"], alert_id=row["alert_id"],
                          notifier=row["notifier"], notification_event=row["event"], error=str(error))
                report.failed.append((*key, str(error)))
            elif dead:
                report.dead.append(key)
                log.error("notification_dead", outbox_id=row["id"], alert_id=row["alert_id"],
                          notifier=row["notifier"], notification_event=row["event"], error=str(error))
            else:
                log.warning("notification_failed", outbox_id=row["id"], alert_id=row["alert_id"],
                            notifier=row["notifier"], notification_event=row["event"], attempts=attempts,
                            retry_at=retry_at.isoformat(), error=str(error))
                report.failed.append((*key, str(error)))
            self._notify(row["notifier"], row["event"], False)
        return report

    def _kind(self, name: str) -> str | None:
        notifier = self.notifiers.get(name)
        return notifier.kind if notifier is not None else None

    def _send(self, row: dict) -> DeliveryError | None:
        notifier = self.notifiers.get(row["notifier"])
        if notifier is None:
            return DeliveryError(f"notifier {row['notifier']!r} is not configured "
                                 f"(its rows go dead {self.unconfigured_grace_s:g}s after they were enqueued)")
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                notifier.send(row["payload"])
            except BaseException as exc:  # noqa: BLE001 - judged below, in the sender's thread
                outcome.append(exc)
            else:
                outcome.append(None)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, name=f"outbox-send-{row['id']}", daemon=True)
        worker.start()
        worker.join(self.send_deadline_s)
        if not outcome:  # still sending: left to finish or fail on its own, its result ignored
            return DeliveryError(f"no outcome within the send deadline of {self.send_deadline_s:g}s "
                                 f"(gave up after {time.monotonic() - started:.1f}s)", maybe_delivered=True)
        try:
            if outcome[0] is not None:
                raise outcome[0]
        except DeliveryError as exc:
            return exc
        except Exception as unexpected:  # noqa: BLE001 - a bug in one notifier must not stop the others
            # Not a network or receiver failure (those are DeliveryErrors) but a message this code cannot build
            # or send (a header with a line break, a payload a notifier does not understand): the same row would
            # fail the same way forever and, being the oldest, hold the notifier's queue. Dead at once, visible
            # in `marketmood alerts outbox --dead`, re-drivable after a fix.
            return DeliveryError(f"{type(unexpected).__name__}: {unexpected}", retryable=False)
        return None

    def _notify(self, notifier: str, event: str, ok: bool) -> None:
        if self._on_result is not None:
            self._on_result(notifier, event, ok)
