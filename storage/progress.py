"""Per-partition ingest progress: what the workers have committed, and the event-time watermark it implies.

The worker writes one row per (topic, partition) inside each batch transaction (``record_progress``), so
the progress never runs ahead of the stored rows. The alert service reads it (``read_progress``) and judges
a window only when ``event_time_watermark`` has passed the window's end plus an allowed lateness: a window
is never judged on data the workers have not committed yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """One partition's committed position. ``log_end_offset`` is the partition's end as the worker last knew
    it; ``end_checked_at`` is when the worker asked the broker for that end (None: not asked, e.g. a batch
    commit, whose end comes from a fetch response of unknown age)."""

    topic: str
    partition: int
    next_offset: int
    log_end_offset: int | None
    max_event_time: datetime | None
    updated_at: datetime | None = None
    end_checked_at: datetime | None = None

    @property
    def caught_up(self) -> bool:
        """True when everything the broker had at commit time is committed (an idle partition)."""
        return self.log_end_offset is not None and self.next_offset >= self.log_end_offset


def record_progress(conn: Connection, rows: Sequence[PartitionProgress]) -> None:
    """Upsert progress rows in the caller's transaction; offsets and event times only move forward."""
    if not rows:
        return
    conn.execute(
        text(
            """
            INSERT INTO ingest_progress (topic, partition, next_offset, log_end_offset, max_event_time, updated_at,
                                         end_checked_at)
            VALUES (:topic, :partition, :next_offset, :log_end_offset, :max_event_time, now(), :end_checked_at)
            ON CONFLICT (topic, partition) DO UPDATE SET
              next_offset = GREATEST(ingest_progress.next_offset, EXCLUDED.next_offset),
              log_end_offset = GREATEST(ingest_progress.log_end_offset, EXCLUDED.log_end_offset),
              max_event_time = GREATEST(ingest_progress.max_event_time, EXCLUDED.max_event_time),
              end_checked_at = GREATEST(ingest_progress.end_checked_at, EXCLUDED.end_checked_at),
              updated_at = now()
            """
        ),
        [
            {"topic": r.topic, "partition": r.partition, "next_offset": r.next_offset,
             "log_end_offset": r.log_end_offset, "max_event_time": r.max_event_time,
             "end_checked_at": r.end_checked_at}
            for r in rows
        ],
    )


def placeholders(topic: str, partitions: Sequence[int]) -> list[PartitionProgress]:
    """Rows saying "this partition exists and nothing of it is committed yet" (offset 0, no end, no event time):
    written with ``record_progress``, whose upsert only moves forward, so an existing row is left as it is.
    Every worker writes them for all partitions of the topic when it is assigned, so a partition whose own
    worker crash-loops before its first commit holds the watermark back instead of being left out of it."""
    return [PartitionProgress(topic, p, 0, None, None) for p in sorted(partitions)]


def read_progress(conn: Connection, topic: str) -> list[PartitionProgress]:
    """Every partition of ``topic`` the workers have registered or committed, by partition."""
    result = conn.execute(
        text(
            """SELECT topic, partition, next_offset, log_end_offset, max_event_time, updated_at, end_checked_at
               FROM ingest_progress WHERE topic = :topic ORDER BY partition"""
        ),
        {"topic": topic},
    )
    return [PartitionProgress(*row) for row in result]


def event_time_watermark(progress: Sequence[PartitionProgress], now: datetime) -> datetime | None:
    """The event time up to which every partition is committed, or None when nothing was committed yet or a
    known partition has committed nothing with an event time (see :func:`placeholders`).

    A partition the worker had read to the end of, by the broker's answer at ``end_checked_at``, holds
    nothing back before that moment (every record appended before it is committed; later ones carry later
    event times). Not the row's ``updated_at``: a worker frozen (or retrying a down database) between
    learning the end and writing the row would claim a backlog as read. Otherwise a partition holds the
    watermark at its largest committed event time. The result never exceeds ``now``.
    """
    if not progress:
        return None
    marks: list[datetime] = []
    for p in progress:
        if p.caught_up and p.end_checked_at is not None:
            mark = max(p.end_checked_at, p.max_event_time) if p.max_event_time else p.end_checked_at
        elif p.max_event_time is not None:
            mark = p.max_event_time
        else:  # a partition with nothing committed yet (its worker crash-looping, say) holds everything back
            return None
        marks.append(mark)
    return min(min(marks), now) if marks else None
