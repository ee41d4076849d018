"""Cron schedules of the retraining job: validation, the next fire time, and the first run of a scheduler that
starts (pure; croniter only).

Kept apart from ``training.scheduler`` (which drives retrains) so that settings can validate a schedule at
start-up without importing the training stack.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

EXAMPLE = "'0 3 * * 1' = Mondays 03:00 UTC"


def validate_schedule(expression: str) -> str:
    """``expression`` if it is a cron expression that fires at some time, else ValueError saying why."""
    if not croniter.is_valid(expression):
        raise ValueError(f"invalid cron expression {expression!r} (e.g. {EXAMPLE})")
    try:
        croniter(expression, datetime(2001, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {expression!r} never fires (a date that does not exist, e.g. "
                         f"February 31; e.g. {EXAMPLE})") from None
    return expression


def next_fire(expression: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after`` (UTC)."""
    return croniter(validate_schedule(expression), after.astimezone(UTC)).get_next(datetime)


def previous_fire(expression: str, at: datetime) -> datetime:
    """The newest cron time not later than ``at`` (UTC): ``at`` itself when it is a fire time."""
    return croniter(validate_schedule(expression), at.astimezone(UTC) + timedelta(microseconds=1)).get_prev(datetime)


def first_due(expression: str, now: datetime, last_run: datetime | None) -> datetime:
    """When a scheduler starting at ``now`` should first run.

    The newest fire time not later than ``now`` when nothing was registered since it (``last_run`` older): a run
    missed while the scheduler was stopped (a deploy across 03:00) is caught up, and ``scheduler --once`` started by
    an external cron at the fire time runs. Otherwise (or with no registry record at all) the next fire time.
    """
    missed = previous_fire(expression, now)
    if last_run is not None and last_run < missed:
        return missed
    return next_fire(expression, now)
