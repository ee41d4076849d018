"""Cron schedules of the retraining job: validation and the next fire time (pure; croniter only).

Kept apart from ``training.scheduler`` (which drives retrains) so that settings can validate a schedule at
start-up without importing the training stack.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
