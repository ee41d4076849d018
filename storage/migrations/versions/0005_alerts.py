"""Alerts on-call can trust: a ``sending`` claim per notification, ``unknown`` for an interrupted send, and
the alert's group key.

* ``notification_outbox.status`` gains ``sending`` (claimed and committed before the notifier is called)
  and ``unknown`` (the sender died mid-send on a channel that cannot de-duplicate: never re-sent
  automatically, listed by ``marketmood alerts outbox --dead`` and re-driven by an operator).
* ``claimed_at`` / ``claimed_by``: which sender holds a ``sending`` row and since when (stale claims are
  recovered by the next sender).
* ``alerts.group_key``: alerts fired by one rule for one route share it (Grafana and receivers group on it).

Revision ID: 0005_alerts
Revises: 0004_retraining
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_alerts"
down_revision: str | Sequence[str] | None = "0004_retraining"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES_NEW = "status IN ('pending','sending','delivered','dead','unknown')"
_STATUSES_OLD = "status IN ('pending','delivered','dead')"


def upgrade() -> None:
    op.drop_constraint("ck_outbox_status", "notification_outbox", type_="check")
    op.create_check_constraint("ck_outbox_status", "notification_outbox", _STATUSES_NEW)
    op.add_column("notification_outbox", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notification_outbox", sa.Column("claimed_by", sa.Text(), nullable=True))
    op.add_column("alerts", sa.Column("group_key", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("alerts", "group_key")
    op.drop_column("notification_outbox", "claimed_by")
    op.drop_column("notification_outbox", "claimed_at")
    # an interrupted or in-flight send becomes pending again under the old, simpler states
    op.execute("UPDATE notification_outbox SET status = 'pending' WHERE status IN ('sending', 'unknown')")
    op.drop_constraint("ck_outbox_status", "notification_outbox", type_="check")
    op.create_check_constraint("ck_outbox_status", "notification_outbox", _STATUSES_OLD)
