"""``marketmood scheduler``: retrain on a cron schedule when enough feedback arrived, or on drift.

Each tick reads the state from PostgreSQL (new feedback since the last retrain's cutoff, drift of the
active model's scores), decides with the pure ``decide`` and, when it says so, runs ``run_retrain``,
whose advisory lock makes sure only one replica trains at a time; the others log a skip.
"""

from __future__ import annotations

import structlog
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from sqlalchemy.engine import Engine

from storage import feedback as feedback_sql
from storage import registry as registry_sql
from training.drift import DriftReport, check_drift, thresholds_from
from training.retrain import RetrainOutcome, run_retrain

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def validate_schedule(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValueError(f"invalid cron expression {expression!r} (e.g. '0 3 * * 1' = Mondays 03:00 UTC)")
    return expression


def next_fire(expression: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after`` (UTC)."""
    return croniter(validate_schedule(expression), after.astimezone(UTC)).get_next(datetime)


@dataclass(frozen=True)
class Decision:
    run: bool
    trigger: str | None  # schedule | drift
    reason: str


def decide(
    *,
    now: datetime,
    schedule_due: bool,
    new_feedback: int,
    min_new_feedback: int,
    drift: DriftReport | None,
    last_retrain_at: datetime | None,
    drift_cooldown: timedelta,
) -> Decision:
    """Whether to retrain now. Drift bypasses the feedback minimum but not a cooldown after a retrain,
    so a persistent shift does not retrain in a loop."""
    if drift is not None and drift.drifted:
        if last_retrain_at is not None and now - last_retrain_at < drift_cooldown:
            cooldown_note = f"drift ({'; '.join(drift.reasons)}) ignored: last retrain {last_retrain_at.isoformat()}"
            if not schedule_due:
                return Decision(False, None, cooldown_note)
        else:
            return Decision(True, "drift", "; ".join(drift.reasons))
    if schedule_due:
        if new_feedback >= min_new_feedback:
            return Decision(True, "schedule", f"{new_feedback} new feedback rows (minimum {min_new_feedback})")
        return Decision(False, None, f"scheduled run skipped: {new_feedback} new feedback rows < {min_new_feedback}")
    return Decision(False, None, "not due")


class Scheduler:
    """Cron + drift loop. ``tick`` is one step (tests drive it with their own clock)."""

    def __init__(
        self,
        engine: Engine,
        settings: Any,
        *,
        clock: Callable[[], datetime] = utcnow,
        train_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.train_overrides = train_overrides
        self.next_due = next_fire(settings.retrain.schedule, clock())

    def drift(self, now: datetime) -> DriftReport:
        r = self.settings.retrain
        return check_drift(self.engine, window=timedelta(hours=r.drift_window_hours),
                           reference_window=timedelta(hours=r.drift_reference_hours),
                           thresholds=thresholds_from(self.settings), now=now)

    def tick(self) -> tuple[Decision, RetrainOutcome | None]:
        r = self.settings.retrain
        now = self.clock()
        due = now >= self.next_due
        with self.engine.connect() as conn:
            new_feedback = feedback_sql.count_feedback(conn, since=registry_sql.last_feedback_cutoff(conn))
            last = registry_sql.last_retrain_at(conn)
        decision = decide(now=now, schedule_due=due, new_feedback=new_feedback, min_new_feedback=r.min_new_feedback,
                          drift=self.drift(now), last_retrain_at=last,
                          drift_cooldown=timedelta(hours=r.drift_window_hours))
        if due:
            self.next_due = next_fire(r.schedule, now)
        if not decision.run:
            if decision.reason != "not due":
                log.info("scheduler.skip", reason=decision.reason, next_due=self.next_due.isoformat())
            return decision, None
        log.info("scheduler.retrain", trigger=decision.trigger, reason=decision.reason)
        outcome = run_retrain(self.engine, self.settings, by="scheduler", trigger=decision.trigger or "schedule",
                              train_overrides=self.train_overrides)
        log.info("scheduler.done", status=outcome.status, version=outcome.version, reason=outcome.reason)
        return decision, outcome

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every ``check_interval_s`` (sooner when the next cron time comes first) until ``stop``."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed run must not kill the schedule
                log.exception("scheduler.tick_failed")
            wait = min(self.settings.retrain.check_interval_s, max(1.0, (self.next_due - self.clock()).total_seconds()))
            stop.wait(wait)
