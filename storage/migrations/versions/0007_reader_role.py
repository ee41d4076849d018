"""Only the application may take advisory locks: revoke the advisory-lock functions from PUBLIC.

PostgreSQL lets every role call ``pg_advisory_lock`` & friends. The worker serialises story-key buckets
with ``pg_advisory_xact_lock``, so Grafana's read-only role (or any other login) could take those locks
and stall every batch. This revision revokes EXECUTE from PUBLIC in this database and grants it to the
roles the application runs as (the migrating role, the database owner, the owner of schema public);
``storage.roles.grant_advisory_locks`` adds another application role. It needs a superuser (the
functions' owner); run as anything else it changes nothing and logs a warning.

The reader role itself (login, password, timeouts, SELECT allow-list) is not schema: MarketMood applies
it after every upgrade with ``storage.roles.ensure_reader_role``.

Revision ID: 0007_reader_role
Revises: 0006_dashboards
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from storage import roles

revision: str = "0007_reader_role"
down_revision: str | Sequence[str] | None = "0006_dashboards"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    roles.restrict_advisory_locks(op.get_bind())


def downgrade() -> None:
    roles.unrestrict_advisory_locks(op.get_bind())
