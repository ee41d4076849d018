"""Grouped notifications: alerts of one rule that fire (or resolve) in one evaluation go out as one message.

* ``notification_outbox.status`` gains ``grouped``: the row's notification is carried by another row of the
  same notifier and event (the group's lead), named by ``grouped_into``. A grouped row is never claimed; its
  alert still counts as triggered for that notifier, so acknowledges and resolves follow as usual, and a
  later row of the alert waits until the lead is delivered (a resolve never overtakes its grouped trigger).

Downgrade marks grouped rows ``delivered`` (their lead carried them) and drops the column.

Revision ID: 0008_grouped_notifications
Revises: 0007_reader_role
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_grouped_notifications"
down_revision: str | Sequence[str] | None = "0007_reader_role"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES_NEW = "status IN ('pending','sending','delivered','dead','unknown','grouped')"
_STATUSES_OLD = "status IN ('pending','sending','delivered','dead','unknown')"


def upgrade() -> None:
    op.add_column("notification_outbox", sa.Column(
        "grouped_into", sa.BigInteger(), sa.ForeignKey("notification_outbox.id", ondelete="SET NULL",
                                                       name="fk_outbox_grouped_into"), nullable=True))
    op.drop_constraint("ck_outbox_status", "notification_outbox", type_="check")
    op.create_check_constraint("ck_outbox_status", "notification_outbox", _STATUSES_NEW)


def downgrade() -> None:
    op.execute("UPDATE notification_outbox SET status = 'delivered' WHERE status = 'grouped'")
    op.drop_constraint("ck_outbox_status", "notification_outbox", type_="check")
    op.create_check_constraint("ck_outbox_status", "notification_outbox", _STATUSES_OLD)
    op.drop_column("notification_outbox", "grouped_into")
