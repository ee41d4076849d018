"""Index ``scores.scored_at``: the pipeline-health panels (model versions in use, scored per minute, scoring
latency) filter on it with ``$__timeFilter(scored_at)`` every 30 s; without an index each refresh scanned the
whole table, one row per article and model version, until it met the reader's statement timeout.

A plain (not CONCURRENTLY) build: migrations run in one transaction under a lock. It holds inserts into
``scores`` for as long as the build takes (seconds per million rows); on a large deployment, create the index
``CONCURRENTLY`` by hand first (same name) and this revision skips it.

Revision ID: 0010_scores_scored_at
Revises: 0009_progress_end_checked_at
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_scores_scored_at"
down_revision: str | Sequence[str] | None = "0009_progress_end_checked_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_scores_scored_at", "scores", ["scored_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_scores_scored_at", table_name="scores")
