"""``ingest_progress.end_checked_at``: when the partition's log end was asked of the broker.

A caught-up partition holds the event-time watermark at the moment the worker *learned* that it had read
to the log's end, not at the moment it wrote the row: a worker that was frozen, or whose commit waited out
a database outage, would otherwise write "caught up, now" with a log end it saw minutes earlier, and the
watermark would run ahead of records still waiting in Kafka. NULL (old rows, batch commits) claims nothing.

Revision ID: 0009_progress_end_checked_at
Revises: 0008_grouped_notifications
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_progress_end_checked_at"
down_revision: str | Sequence[str] | None = "0008_grouped_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ingest_progress", sa.Column("end_checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("ingest_progress", "end_checked_at")
