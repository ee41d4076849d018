"""Sub-day buckets on the days a market's clocks change: one row per real hour, every article in the bucket
holding its instant. Local wall-clock binning breaks there (a spring-forward day maps local 02:00 and 03:00 to
one instant, doubling a row; a fall-back day folds two real hours into one local 01:00 bucket), while daily
buckets must still start at local midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from storage import dashboards as sql
from tests.marketmood.dashboards.conftest import seed_one_per_instant

NEW_YORK = "America/New_York"
# 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01: 02:00 EDT -> 01:00 EST (06:00 UTC).
SPRING_FORWARD = datetime(2026, 3, 8, 7, tzinfo=UTC)
FALL_BACK = datetime(2026, 11, 1, 6, tzinfo=UTC)


def _seed(db_url: str, make_scored, instants: list[datetime]) -> None:  # type: ignore[no-untyped-def]
    """One negative Earnings article (scored by the active model v1) at each instant."""
    seed_one_per_instant(db_url, make_scored, instants)


@pytest.mark.parametrize("change", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
def test_hourly_buckets_are_real_hours_across_a_clock_change(db_url: str, make_scored, run_on, change) -> None:  # type: ignore[no-untyped-def]
    # One article every 20 minutes from 3 h before the change to 3 h after: 3 per real hour.
    instants = [change - timedelta(hours=3) + timedelta(minutes=20 * i + 5) for i in range(18)]
    _seed(db_url, make_scored, instants)
    t_from, t_to = change - timedelta(hours=3), change + timedelta(hours=3)
    _, rows = run_on(db_url, sql.SENTIMENT_SELECTION, t_from, t_to, interval=timedelta(hours=1), tz=NEW_YORK)

    times = [r["time"] for r in rows]
    assert len(times) == len(set(times)), times  # no bucket twice
    assert all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:])), times
    assert [r["articles"] for r in rows] == [3] * 6, [(t.isoformat(), r["articles"]) for t, r in zip(times, rows)]
    assert times[0] == t_from


@pytest.mark.parametrize("change", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
def test_daily_buckets_still_start_at_local_midnight_across_a_clock_change(db_url: str, make_scored, run_on,  # type: ignore[no-untyped-def]
                                                                          change) -> None:
    days = [change - timedelta(days=1), change, change + timedelta(days=1)]
    _seed(db_url, make_scored, days)
    _, rows = run_on(db_url, sql.SENTIMENT_SELECTION, change - timedelta(days=2), change + timedelta(days=2),
                     interval=timedelta(days=1), tz=NEW_YORK)
    local = [r["time"].astimezone(ZoneInfo(NEW_YORK)) for r in rows]
    assert all((t.hour, t.minute) == (0, 0) for t in local), local
    assert len(local) == len(set(local))
    assert sum(r["articles"] for r in rows) == 3
    # The volume panel's rate divides by the day's real length: 23 h on a spring-forward day, 25 h on a fall-back.
    starts = [r["time"] for r in rows]
    lengths = {a: b - a for a, b in zip(starts, starts[1:])}
    assert set(lengths.values()) == {timedelta(hours=24), timedelta(hours=23 if change == SPRING_FORWARD else 25)}
    _, volume = run_on(db_url, sql.ARTICLE_VOLUME, change - timedelta(days=2), change + timedelta(days=2),
                       interval=timedelta(days=1), tz=NEW_YORK)
    rates = {r["time"]: r["novel per hour"] for r in volume if r["novel per hour"]}
    assert len(rates) == 3 and set(rates) <= set(lengths)
    for start, rate in rates.items():  # one article a day
        assert float(rate) * (lengths[start] / timedelta(hours=1)) == pytest.approx(1.0), (start, rate, lengths[start])
