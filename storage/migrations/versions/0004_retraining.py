"""Retraining safeguards: a ``shadow`` model status and drift labelling requests.

* ``model_versions.status`` may be ``shadow``: a challenger that passed the gate and scores live traffic
  under the ``shadow`` alias before it may become active. ``current_scores()`` (0003) already leaves its
  scores out of dashboards and alerts (only promoted/retired versions and the active one count).
* ``labelling_requests`` / ``labelling_request_items``: when drift is detected the scheduler stores the most
  uncertain texts of the drifted slice for analysts to label (active learning) instead of retraining on
  the labels it already has or paging anyone.
* ``ix_feedback_author``: the per-author views of feedback (caps, reports).

Revision ID: 0004_retraining
Revises: 0003_pipeline
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_retraining"
down_revision: str | Sequence[str] | None = "0003_pipeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES_NEW = "('candidate','shadow','promoted','rejected','retired')"
STATUSES_OLD = "('candidate','promoted','rejected','retired')"


def upgrade() -> None:
    op.execute("ALTER TABLE model_versions DROP CONSTRAINT IF EXISTS ck_model_status")
    op.execute(f"ALTER TABLE model_versions ADD CONSTRAINT ck_model_status CHECK (status IN {STATUSES_NEW})")
    op.execute(
        """
        CREATE TABLE labelling_requests (
          id bigserial PRIMARY KEY,
          created_at timestamptz NOT NULL DEFAULT now(),
          status text NOT NULL DEFAULT 'open',
          model_version text,
          window_start timestamptz NOT NULL,
          window_end timestamptz NOT NULL,
          reasons jsonb NOT NULL DEFAULT '[]'::jsonb,
          drifted_slice jsonb NOT NULL DEFAULT '{}'::jsonb,
          CONSTRAINT ck_labelling_request_status CHECK (status IN ('open','closed'))
        )
        """
    )
    op.execute("CREATE INDEX ix_labelling_requests_created_at ON labelling_requests (created_at)")
    op.execute(
        """
        CREATE TABLE labelling_request_items (
          request_id bigint NOT NULL REFERENCES labelling_requests (id) ON DELETE CASCADE,
          article_id text NOT NULL,
          title text,
          sentiment text,
          topic text,
          uncertainty double precision NOT NULL,
          CONSTRAINT pk_labelling_request_items PRIMARY KEY (request_id, article_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_feedback_author ON feedback (author)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_feedback_author")
    op.execute("DROP TABLE IF EXISTS labelling_request_items")
    op.execute("DROP TABLE IF EXISTS labelling_requests")
    op.execute("UPDATE model_versions SET status = 'candidate' WHERE status = 'shadow'")
    op.execute("ALTER TABLE model_versions DROP CONSTRAINT IF EXISTS ck_model_status")
    op.execute(f"ALTER TABLE model_versions ADD CONSTRAINT ck_model_status CHECK (status IN {STATUSES_OLD})")
