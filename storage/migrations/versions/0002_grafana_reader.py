"""Read-only role for Grafana's PostgreSQL datasource: now managed outside the migrations.

This revision used to create the role with the password from MarketMood's settings, once. Role name and
password are deployment settings, not schema, and a password changed later never reached the database, so
the role is now created and updated by ``storage.roles.ensure_reader_role``, which MarketMood calls after
every migration run (``marketmood db upgrade``, services). The revision stays (databases are stamped with
it) and does nothing; ``0006_reader_role`` restricts the advisory-lock functions.

Revision ID: 0002_grafana_reader
Revises: 0001_initial
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0002_grafana_reader"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing: see ``storage.roles.ensure_reader_role``."""


def downgrade() -> None:
    """Nothing: the role is cluster-wide and managed by ``storage.roles`` (``drop_reader_role`` removes it)."""
