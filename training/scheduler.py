"""``marketmood scheduler``: retrain on a cron schedule when enough new labels arrived; watch drift; finish
the shadow stage.

Each tick reads the state from PostgreSQL and decides with pure functions:
* retrain (``run_retrain``, one replica at a time by advisory lock) when the cron time is due and at least
  ``min_new_feedback`` distinct texts were labelled since the last retrain's cutoff;
* drift of the active model's scores opens a labelling request (the uncertain texts of the drifted slice)
  at most once per drift window; it never retrains on the labels it already has and pages nobody;
* a shadow version is promoted once its period passed with agreement and confidence in range, or rejected
  as soon as they leave it.
"""

from __future__ import annotations

import structlog
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from storage import feedback as feedback_sql
from storage import labelling as labelling_sql
from storage import registry as registry_sql
from training.drift import DriftReport, check_drift, open_labelling_request, thresholds_from
from training.registry import ShadowCriteria, finish_shadow
from training.retrain import RetrainOutcome, run_retrain
from training.schedule import first_due, next_fire

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Decision:
    run: bool
    trigger: str | None  # schedule
    reason: str
    labelling_request: bool = False  # drift: ask analysts for labels


def decide(
    *,
    now: datetime,
    schedule_due: bool,
    new_feedback: int,
    min_new_feedback: int,
    drift: DriftReport | None,
    last_request_at: datetime | None,
    request_cooldown: timedelta,
) -> Decision:
    """Whether to retrain now and whether to open a labelling request.

    Drift never retrains: the model would learn from the labels it already has, which cannot describe the
    new inputs. It asks for labels instead, at most once per ``request_cooldown``.
    """
    request = bool(drift is not None and drift.drifted and
                   (last_request_at is None or now - last_request_at >= request_cooldown))
    note = f"drift ({'; '.join(drift.reasons)}): labelling request" if request and drift else ""
    if schedule_due:
        if new_feedback >= min_new_feedback:
            return Decision(True, "schedule", f"{new_feedback} newly labelled texts (minimum {min_new_feedback})",
                            request)
        return Decision(False, None, f"scheduled run skipped: {new_feedback} newly labelled texts < "
                        f"{min_new_feedback}" + (f"; {note}" if note else ""), request)
    return Decision(False, None, note or "not due", request)


def shadow_criteria_from(settings: Any) -> ShadowCriteria:
    r = settings.retrain
    return ShadowCriteria(hours=r.shadow_hours, min_scores=r.shadow_min_scores,
                          min_agreement=r.shadow_min_agreement, max_confidence_drop=r.shadow_max_confidence_drop)


class Scheduler:
    """Cron + drift + shadow loop. ``tick`` is one step (tests drive it with their own clock)."""

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
        with engine.connect() as conn:
            last_run = registry_sql.last_registered_at(conn)
        self.next_due = first_due(settings.retrain.schedule, clock(), last_run)
        self.last_shadow: dict[str, Any] | None = None

    def drift(self, now: datetime) -> tuple[DriftReport, str | None]:
        r = self.settings.retrain
        return check_drift(self.engine, window=timedelta(hours=r.drift_window_hours),
                           reference_weeks=r.drift_reference_weeks, thresholds=thresholds_from(self.settings), now=now)

    def tick(self) -> tuple[Decision, RetrainOutcome | None]:
        r = self.settings.retrain
        now = self.clock()
        self.last_shadow = finish_shadow(self.engine, now=now, criteria=shadow_criteria_from(self.settings),
                                         by="scheduler")
        if self.last_shadow and self.last_shadow["action"] != "none":
            log.info("scheduler.shadow", action=self.last_shadow["action"], version=self.last_shadow["shadow"],
                     problems=self.last_shadow["problems"])
        due = now >= self.next_due
        drift, version = self.drift(now)
        with self.engine.connect() as conn:
            new_feedback = feedback_sql.count_feedback(conn, since=registry_sql.last_feedback_cutoff(conn))
            last_request = labelling_sql.latest_request_time(conn, version)
        decision = decide(now=now, schedule_due=due, new_feedback=new_feedback, min_new_feedback=r.min_new_feedback,
                          drift=drift, last_request_at=last_request,
                          request_cooldown=timedelta(hours=r.drift_window_hours))
        if decision.labelling_request and version is not None:
            request_id = open_labelling_request(self.engine, drift, model_version=version, now=now,
                                                window=timedelta(hours=r.drift_window_hours),
                                                size=r.labelling_request_size,
                                                cooldown=timedelta(hours=r.drift_window_hours))
            if request_id is not None:  # None: another replica opened it since this tick read the last request
                log.warning("scheduler.drift", request=request_id, reasons=drift.reasons, model_version=version)
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
